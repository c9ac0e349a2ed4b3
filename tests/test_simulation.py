"""Tests of galnb.simulation: determinism, selection, published scaling relations, real data.

The real-vs-simulated photometry checks are in test_validation.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from galnb import simulation as sim
from galnb.properties import LINES, MAGERR_COLUMNS

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-sdss"
N = 1500


def _robust_std(x: np.ndarray) -> float:
    lo, hi = np.percentile(x, [16, 84])
    return float(hi - lo) / 2


@pytest.fixture(scope="module")
def survey() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    return sim.simulate_survey(N, 16, seed=3, progress=False)


def test_same_seed_gives_identical_arrays_and_other_seed_differs():
    a_cat, a_img, a_f = sim.simulate_survey(40, 16, seed=11, progress=False)
    b_cat, b_img, b_f = sim.simulate_survey(40, 16, seed=11, progress=False)
    c_cat, _, _ = sim.simulate_survey(40, 16, seed=12, progress=False)
    pd.testing.assert_frame_equal(a_cat, b_cat)
    pd.testing.assert_frame_equal(a_f, b_f)
    np.testing.assert_array_equal(a_img, b_img)
    assert not np.allclose(a_cat["log_mstar"], c_cat["log_mstar"])


def test_shapes_dtypes_and_all_columns_finite(survey):
    cat, img, funnel = survey
    assert len(cat) == N and img.shape == (N, 16, 16, 3) and img.dtype == np.uint8
    assert list(cat.columns) == list(sim.CATALOG_COLUMNS)
    assert cat["objid"].dtype == np.int64 and cat["objid"].is_unique
    assert cat["oh_detectable"].dtype == bool
    floats = [c for c in cat.columns if c not in ("objid", "oh_detectable")]
    assert all(cat[c].dtype == np.float64 for c in floats)
    assert np.isfinite(cat[floats].to_numpy()).all()
    assert img.std() > 5  # not blank
    assert list(funnel.columns) == ["stage", "n", "description"]
    assert funnel["n"].is_monotonic_decreasing and funnel["n"].iloc[-1] == N


def test_selection_cuts_mgs_magnitude_and_bpt_star_forming(survey):
    cat, _, _ = survey
    assert ((cat.mag_r > 16.0) & (cat.mag_r < 17.78)).all()
    det = cat.oh_detectable
    n2 = np.log10(cat.flux_nii6584[det] / cat.flux_ha[det])
    o3 = np.log10(cat.flux_oiii5007[det] / cat.flux_hb[det])
    assert ((n2 < 0.05) & (o3 < 0.61 / (n2 - 0.05) + 1.3)).all()  # Kauffmann et al. 2003
    assert (np.log10(cat.flux_nii6584[~det].clip(1e-9) / cat.flux_ha[~det]) < -0.4).all()
    assert 0.3 < det.mean() < 1.0
    assert cat[list(MAGERR_COLUMNS)].gt(0).all().all()


def test_mass_metallicity_relation_matches_tremonti_slope_and_scatter(survey):
    # Tremonti et al. 2004: median within 0.05 dex in mass bins; scatter 0.10 +/- 0.03 dex.
    cat, _, _ = survey
    m = cat.log_mstar
    t04 = -1.492 + 1.847 * m - 0.08026 * m**2
    res = cat.oh12 - t04
    for lo in (9.5, 10.0, 10.5):
        sel = (m > lo) & (m < lo + 0.5)
        assert abs(np.median(res[sel])) < 0.05
    assert 0.07 < _robust_std(res) < 0.13
    slope = np.polyfit(m[(m > 9) & (m < 10)], cat.oh12[(m > 9) & (m < 10)], 1)[0]
    assert 0.2 < slope < 0.5  # T04 slope at log M = 9.5 is 0.32


def test_main_sequence_scatter_is_about_0p3_dex(survey):
    # Renzini & Peng 2015: log SFR = 0.76 log M* - 7.64 with 0.3 dex scatter. The quenched tail that
    # passes the low-S/N BPT class is one-sided, so the scatter is read from the upper half
    # (84th - 50th percentile of on-sequence residuals); tolerance 0.08 dex.
    cat, _, _ = survey
    res = cat.log_sfr - (0.76 * cat.log_mstar - 7.64 + 2.8 * np.log10((1 + cat.z) / 1.05))
    on = res > -1.0
    p50, p84 = np.percentile(res[on], [50, 84])
    assert abs(p50) < 0.15
    assert 0.22 < p84 - p50 < 0.38


def test_dn4000_increases_as_ssfr_falls(survey):
    cat, _, _ = survey
    rho = spearmanr(cat.dn4000, cat.log_sfr - cat.log_mstar).statistic
    assert rho < -0.6


@pytest.fixture(scope="module")
def internal() -> pd.DataFrame:
    """A simulated MGS sample with the internal columns (true values behind the measured labels)."""
    return sim.simulate_catalog(1500, seed=5, internal=True)


def test_continuum_reddens_with_inclination_but_birth_clouds_do_not(internal):
    # The disk's continuum attenuation rises with inclination; the birth clouds' screen does not
    # depend on it, so the Balmer decrement stays nearly flat (Yip et al. 2010).
    c = internal
    sel = (c.log_mstar > 10.0) & (c.log_mstar < 10.8)
    assert spearmanr(c.inclination[sel], c.av_continuum[sel]).statistic > 0.3
    # the same galaxy seen face-on and edge-on: one birth-cloud screen, a redder disk
    wave = np.array([4500.0, 5500.0, 6500.0])
    zeros = np.zeros((2, 3))
    comps = sim._Components(zeros, zeros, zeros, np.ones((2, 3)), zeros, zeros, zeros)
    dust = sim._attenuation(wave, comps, np.array([1.0, 1.0]), np.array([1.0, 0.2]), np.array([0.155, 0.155]))
    assert dust.a_bc_v[0] == dust.a_bc_v[1] and (dust.tr_disk[1] < dust.tr_disk[0]).all()
    det = c.oh_detectable
    balmer = np.log10(c.flux_ha[det] / c.flux_hb[det])
    assert abs(spearmanr(c.inclination[det], balmer).statistic) < 0.15
    assert spearmanr(c.inclination, c.axis_ratio).statistic < -0.9


def test_stars_see_0p44_of_the_gas_reddening_on_average(internal):
    # E(B-V)_stars = 0.44 E(B-V)_gas (Calzetti 2000), on average over orientations.
    from galnb.survey import R_V_MW, balmer_av

    det = internal.oh_detectable
    ebv_gas = balmer_av(internal.flux_ha[det].to_numpy(), internal.flux_hb[det].to_numpy())[1] / R_V_MW
    ebv_stars = internal.av_continuum[det] / 4.05
    assert 0.36 < ebv_stars.mean() / ebv_gas.mean() < 0.52


def test_balmer_decrements_follow_garn_and_best_by_mass(internal):
    # The median Halpha/Hbeta of galaxies with all four lines detected rises with mass and stays
    # within 0.05 dex of the relation Garn & Best (2010) measured on SDSS star formers (measured:
    # +0.022, +0.025, -0.000, -0.022 dex from 10^9 to 10^11 Msun).
    from galnb import validation

    table = validation.balmer_decrement_by_mass(internal, mass_bins=(9.0, 9.5, 10.0, 10.5, 11.0))
    assert (table.n > 30).all()
    assert (np.abs(np.log10(table["median"] / table.garn_best)) < 0.05).all()
    assert np.all(np.diff(table["median"]) > 0)


def test_bpt_line_ratios_sit_on_the_real_star_forming_locus(internal):
    # Medians within 0.1 dex of the PP04 N2 / O3N2 calibrations (T04 scale, KE08) at each galaxy's
    # O/H, and of real SDSS star formers with 16 < r < 17.78 (issue 18: log [N II]/Halpha -0.47,
    # log [O III]/Hbeta -0.27); the [O III]/Hbeta 16-84 % width within 50 % of the real 0.59 dex.
    from galnb.survey import n2_from_oh, o3hb_from_oh

    det = internal[internal.oh_detectable]
    n2 = np.log10(det.flux_nii6584 / det.flux_ha)
    o3 = np.log10(det.flux_oiii5007 / det.flux_hb)
    assert abs(np.median(n2 - n2_from_oh(det.oh12))) < 0.1
    assert abs(np.median(o3 - o3hb_from_oh(det.oh12, n2_from_oh(det.oh12)))) < 0.1
    assert abs(np.median(n2) + 0.47) < 0.1 and abs(np.median(o3) + 0.27) < 0.1
    width = np.subtract(*np.percentile(o3, [84, 16]))
    assert 0.5 * 0.59 < width < 1.5 * 0.59


def test_labels_are_measured_like_the_catalogs(internal):
    # Dn4000 and sigma carry measurement noise; M_BH is the fixed M-sigma function of the measured
    # sigma; A_V is the Balmer-decrement A_V of the noisy fibre lines, as in galnb.sdss.
    from galnb.survey import balmer_av, mbh_from_sigma

    c = internal
    np.testing.assert_allclose(c.log_mbh, mbh_from_sigma(c.sigma_v))
    np.testing.assert_allclose(c.av, balmer_av(c.flux_ha.to_numpy(), c.flux_hb.to_numpy())[0])
    dn_noise = _robust_std(c.dn4000 - c.dn4000_true)
    assert 0.015 < dn_noise < 0.05
    assert _robust_std(np.log10(c.sigma_v / c.sigma_v_true)) > 0.03
    # log M* and log SFR are off their true values by the catalog's errors, unbiased and independent.
    mass_error, sfr_error = c.log_mstar - c.log_mstar_true, c.log_sfr - c.log_sfr_true
    for error, name in ((mass_error, "log_mstar"), (sfr_error, "log_sfr")):
        assert _robust_std(error) == pytest.approx(sim.LABEL_ERRORS[name], rel=0.1)
        assert abs(np.median(error)) < 0.015
    assert abs(np.corrcoef(mass_error, sfr_error)[0, 1]) < 0.1


def test_nair_abraham_radii_are_kilo_parsecs():
    # Read as kpc, the catalog's Petrosian R50 follows the late-type size-mass relation
    # (slope ~0.2, scatter ~0.2 dex; Shen et al. 2003) and converts to angular radii no smaller
    # than the seeing; read as arcsec it would give slope 0.47 and 0.26 dex.
    from galnb import validation

    real = validation.nair_abraham(_needs_real("nair-abraham-2010.fits").parent)
    real = real[validation.star_forming(real)]
    slope, intercept = np.polyfit(real.log_mstar, np.log10(real.r50_kpc), 1)
    scatter = np.std(np.log10(real.r50_kpc) - (slope * real.log_mstar + intercept))
    assert 0.1 < slope < 0.35 and scatter < 0.22
    assert np.quantile(real.r50_arcsec, 0.01) > 1.0
    np.testing.assert_allclose(real.r90_kpc / real.r50_kpc, real.concentration)


def test_structure_measured_on_images_against_nair_abraham():
    # Real and simulated star formers selected alike (g < 16, 0.01 < z < 0.1), structure measured
    # on the images of both (statmorph): the inclination reddening of g - r within 0.1 mag plus
    # twice its standard error of the real one in each mass bin; the size-mass median within
    # 0.25 dex and its scatter at least half the real one; the median R90/R50 within 0.3 plus twice
    # its standard error in each sSFR bin (the lowest bin holds ~50 simulated galaxies, and the
    # catalog's sSFR errors let bulge-dominated ones in from below, as they do in the real catalog).
    from galnb import validation

    real = validation.nair_abraham(_needs_real("nair-abraham-2010.fits").parent)
    cmp = validation.compare_structure(real, validation.simulated_structure(300, seed=1))
    r, s = cmp.reddening["real g-r"], cmp.reddening["simulated g-r"]
    assert (np.abs(s.reddening - r.reddening) < 0.1 + 2 * np.hypot(s.se, r.se)).all()
    r, s = cmp.sizes["real"], cmp.sizes["simulated"]
    assert (np.abs(s["median"] - r["median"]) < 0.25).all()
    assert (s["scatter"] > 0.5 * r["scatter"]).all()
    r, s = cmp.concentration["real"], cmp.concentration["simulated"]
    assert (np.abs(s["median"] - r["median"]) < 0.3 + 2 * np.hypot(s.se, r.se)).all()


def test_measured_axis_ratio_and_radius_track_the_truth():
    # On bulge-light galaxies the image-moment b/a and the Petrosian R50 follow the true disk values.
    from galnb import validation

    measured = validation.simulated_structure(40, seed=2)
    disky = measured.axis_ratio_true > 0.5
    assert spearmanr(measured.axis_ratio, measured.axis_ratio_true).statistic > 0.8
    assert np.median(np.abs(np.log10(measured.r50_kpc / measured.r50_true_kpc))[disky]) < 0.15


def test_dn4000_of_old_bagpipes_population_exceeds_young():
    import bagpipes

    wave = np.arange(3700.0, 4300.0, 1.0)
    out = {}
    for name, sfh in (("old", {"burst": {"age": 10.0, "massformed": 10.0, "metallicity": 1.0}}),
                      ("young", {"constant": {"age_max": 0.2, "age_min": 0.0, "massformed": 10.0,
                                              "metallicity": 1.0}})):
        model = bagpipes.model_galaxy({"redshift": 0.01, **sfh}, spec_wavs=wave * 1.01)
        out[name] = float(sim.measure_dn4000(wave, model.spectrum[:, 1]))
    assert out["old"] > 1.8 > 1.2 > out["young"]


def test_library_photometry_matches_bagpipes_model_galaxy(tmp_path):
    import bagpipes
    import speclite.filters

    paths = []
    for f, b in zip(speclite.filters.load_filters("sdss2010-g", "sdss2010-r", "sdss2010-i"), "gri"):
        p = tmp_path / f"{b}.txt"
        np.savetxt(p, np.c_[f.wavelength, f.response])
        paths.append(str(p))
    z = 0.1
    model = bagpipes.model_galaxy({"redshift": z, "exponential": {"age": 8.0, "tau": 3.0, "massformed": 10.5,
                                                                  "metallicity": 1.0}},
                                  filt_list=paths, phot_units="mujy")
    ref = -2.5 * np.log10(model.photometry * 1e-6 / 3631)
    lib = sim.spectral_library()
    mf = sim._mass_formed(np.array([8.0]), np.array([1 / 3.0]), lib.age_edges)
    mf *= 10**10.5 / mf.sum()
    w_old, w_young, _ = sim._component_weights(mf, np.zeros(1), np.array([-3.0]), np.zeros(1))
    spec = (w_old @ lib.stellar.reshape(-1, lib.wave.size)
            + w_young @ lib.stellar[:, : lib.n_young].reshape(-1, lib.wave.size))
    fw, fr = sim._filters()
    dl = sim._lum_dist(np.array([z]))[0] * sim._MPC
    for j, b in enumerate((1, 2, 3)):
        t = np.interp(lib.wave * (1 + z), fw[b], fr[b], left=0, right=0)
        fnu = (spec[0] * t * lib.wave).sum() * sim._DWAVE * (1 + z) * sim._LSUN / (4 * np.pi * dl**2)
        fnu /= np.trapezoid(fr[b] / fw[b], fw[b]) * 2.998e18
        assert abs(-2.5 * np.log10(fnu / 3631e-23) - ref[j]) < 0.03


def test_quenched_galaxies_rarely_pass_the_star_forming_cut(survey):
    # SDSS BPT star-forming galaxies rarely have Dn4000 > 1.9 or lie > 1 dex below the main
    # sequence: the weak lines of retired galaxies have LINER-like ratios (HOLMES).
    cat, _, _ = survey
    ms = 0.76 * cat.log_mstar - 7.64
    assert (cat.dn4000 >= 1.9).mean() < 0.10
    assert (cat.log_sfr < ms - 1.0).mean() < 0.10


def _needs_real(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"real SDSS check skipped: {path} is absent (see ../shared/data/real-sdss/README.md)")
    return path


def test_mass_sfr_plane_matches_nair_abraham_star_formers(survey):
    # Median log SFR of star-forming galaxies (log sSFR > -11) in mass bins within 0.35 dex.
    from astropy.io import fits

    with fits.open(_needs_real("nair-abraham-2010.fits")) as h:
        d = h[1].data
        lgm, sfr = np.asarray(d["LGM"], float), np.asarray(d["SFRT"], float)
    ok = np.isfinite(lgm) & np.isfinite(sfr) & (sfr - lgm > -11)
    cat, _, _ = survey
    sf = cat.log_sfr - cat.log_mstar > -11
    for lo in (9.75, 10.25, 10.75):
        r = ok & (lgm > lo) & (lgm < lo + 0.5)
        s = sf & (cat.log_mstar > lo) & (cat.log_mstar < lo + 0.5)
        assert r.sum() > 50 and s.sum() > 30
        assert abs(np.median(sfr[r]) - np.median(cat.log_sfr[s])) < 0.35


def test_metallicity_marginal_matches_wu_boada_sample(survey):
    # 16/50/84 percentiles of 12+log(O/H) within 0.1 dex of the real MPA-JHU values.
    real = pd.read_csv(_needs_real("wu-boada-oh_p50-20466.csv"))["oh_p50"].dropna()
    cat, _, _ = survey
    q = [16, 50, 84]
    np.testing.assert_allclose(np.percentile(cat.oh12, q), np.percentile(real, q), atol=0.1)


def test_emission_line_columns_are_in_sdss_units(survey):
    cat, _, _ = survey
    assert np.median(cat[LINES[0]]) > 20  # Halpha of MGS star formers: tens to thousands x 1e-17


def test_simulate_catalog_refuses_an_unknown_selection():
    with pytest.raises(ValueError, match="band must be one of"):
        sim.simulate_catalog(3, seed=1, selection=sim.Selection(band="y"))
    with pytest.raises(ValueError, match="z_min < z_max"):
        sim.simulate_catalog(3, seed=1, selection=sim.Selection(z_min=0.2, z_max=0.1))


def test_images_do_not_depend_on_how_many_processes_render_them(tmp_path):
    # Each chunk has its own noise stream, so one process, two, or any executor give the same cutouts.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    args = dict(n=60, image_size=16, seed=2, progress=False, chunk_size=20)
    _, one, _ = sim.simulate_survey(**args, workers=1)
    _, two, _ = sim.simulate_survey(**args, workers=2)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        _, pooled, _ = sim.simulate_survey(**args, executor=pool, work_dir=tmp_path)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, pooled)


def test_disk_size_gives_the_galaxy_its_half_light_radius():
    # The disk radius solved for is the one that makes bulge + disk have the drawn radius.
    rng = np.random.default_rng(0)
    hlr_galaxy, frac_bulge = rng.uniform(1.0, 8.0, 200), rng.uniform(0.0, 0.3, 200)
    hlr_bulge = hlr_galaxy * rng.uniform(0.1, 0.8, 200)
    hlr_disk = sim._disk_hlr_for(hlr_galaxy, frac_bulge, hlr_bulge)
    assert (hlr_disk > 0.999 * hlr_galaxy).all()
    np.testing.assert_allclose(sim._composite_hlr(frac_bulge, hlr_bulge, hlr_disk), hlr_galaxy, rtol=1e-6)


def test_decoupled_inclination_keeps_the_catalog_and_draws_another_galaxys_axis_ratio():
    # The ablation of issue 19: the same galaxies, labels and photometry; only the disks' drawn
    # inclination is another galaxy's, so the axis ratio measured on the image no longer follows
    # the catalog's (which set the dust).
    from galnb.morphology import measure_cutouts

    cat, img, _ = sim.simulate_survey(80, 32, seed=2, progress=False)
    cat_d, img_d, _ = sim.simulate_survey(80, 32, seed=2, progress=False, decouple_inclination=True)
    pd.testing.assert_frame_equal(cat, cat_d)
    assert not np.array_equal(img, img_d)
    rho = [spearmanr(measure_cutouts(i).axis_ratio_measured, cat.axis_ratio, nan_policy="omit").statistic
           for i in (img, img_d)]
    assert rho[0] > 0.6 and abs(rho[1]) < 0.3
