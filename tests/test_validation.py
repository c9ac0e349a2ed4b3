"""Tests of galnb.validation: the real SDSS sample, the blue cloud, matched weights, colour distances."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from galnb import simulation as sim
from galnb import validation
from galnb.properties import MAG_COLUMNS


def test_real_sdss_photometry_and_colour_distances_are_bounded():
    real = validation.real_sdss_photometry()
    assert len(real) > 5000 and ((real.mag_r > 16) & (real.mag_r < 17.78)).all()
    assert set(MAG_COLUMNS) <= set(real.columns)
    cat, _, _ = sim.simulate_survey(300, 8, seed=5, progress=False)
    wd = validation.compare_photometry(cat, real).set_index("quantity")["wasserstein"]
    assert (wd[["u-g", "g-r", "r-i", "i-z"]] < 0.3).all()
    matched = validation.compare_photometry(cat, real).set_index("quantity")["wasserstein_matched"]
    assert (matched[["u-g", "g-r", "r-i", "i-z"]] < 0.2).all()  # 0.1 at the ci scale and above (bench_simulation)


def test_blue_cloud_and_photometry_value():
    cat = pd.DataFrame({"z": [0.05, 0.1], "mag_u": [18.0, 20.0], "mag_g": [17.2, 18.6], "mag_r": [17.0, 17.5]})
    assert validation.blue_cloud(cat).tolist() == [True, False]  # u - r = 1.0 and 2.5; Strateva: 2.22
    colour = validation.photometry_value(cat, "u-g")
    assert colour.dtype == np.float64
    np.testing.assert_array_equal(colour, (cat.mag_u - cat.mag_g).to_numpy())
    np.testing.assert_array_equal(validation.photometry_value(cat, "r"), cat.mag_r.to_numpy())
    np.testing.assert_array_equal(validation.photometry_value(cat, "z"), cat.z.to_numpy())


def test_matched_weights_give_the_simulation_the_real_z_r_distribution():
    rng = np.random.default_rng(0)
    sim_cat = pd.DataFrame({"z": rng.uniform(0.0, 0.3, 20_000), "mag_r": rng.uniform(16.0, 17.78, 20_000)})
    real = pd.DataFrame({"z": rng.uniform(0.0, 0.15, 5_000), "mag_r": rng.uniform(16.0, 17.0, 5_000)})
    w = validation.matched_weights(sim_cat, real)
    assert w.shape == (len(sim_cat),) and (w >= 0).all()
    assert np.all(w[sim_cat.z > 0.16] == 0) and np.all(w[sim_cat.mag_r > 17.2] == 0)  # cells: 0.02 in z, 0.3 mag in r
    assert abs(np.average(sim_cat.z, weights=w) - real.z.mean()) < 0.01
    assert abs(np.average(sim_cat.mag_r, weights=w) - real.mag_r.mean()) < 0.05


def test_real_sdss_dir_comes_from_the_parameter_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(validation.REAL_SDSS_ENV, raising=False)
    assert validation.real_sdss_dir() is None and validation.real_sdss_dir("") is None
    assert validation.real_sdss_dir(tmp_path) == tmp_path
    monkeypatch.setenv(validation.REAL_SDSS_ENV, str(tmp_path))
    assert validation.real_sdss_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="real_sdss = .*not a folder"):
        validation.real_sdss_dir(tmp_path / "missing")
    monkeypatch.setenv(validation.REAL_SDSS_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="GALNB_REAL_SDSS"):
        validation.real_sdss_dir()
    with pytest.raises(FileNotFoundError, match="nair-abraham-2010.fits is absent"):
        validation.nair_abraham(tmp_path)


def test_cutout_statistics_see_a_red_centre_and_compare_with_errors():
    # A red core in a blue disk gives a positive colour gradient; the comparison reports medians,
    # their difference and a bootstrap error.
    yy, xx = np.indices((128, 128)) - 63.5
    r = np.hypot(xx, yy)
    disk, core = 150 * np.exp(-r / 15), 150 * np.exp(-r / 5)
    rgb = np.stack([disk + core, disk + 0.5 * core, 1.3 * disk + 0.1 * core], axis=-1)
    rng = np.random.default_rng(0)
    images = np.clip(20 + rgb[None] + rng.normal(0, 2, (4, 128, 128, 3)), 0, 255).astype(np.uint8)
    stats = validation.cutout_statistics(images)
    assert (stats.colour_gradient > 0.03).all() and stats.concentration.notna().all()
    table = validation.compare_statistics(stats, stats.assign(colour_gradient=stats.colour_gradient + 0.2))
    row = table.set_index("statistic").loc["colour_gradient"]
    assert abs(row.difference - 0.2) < 1e-9 and row.difference_se >= 0


def test_structure_measured_on_two_processes_equals_one_pass():
    # measure_structure and cutout_statistics spread their images over worker processes; each
    # image is measured on its own, so the table must not depend on how many there are.
    cat = sim.simulate_catalog(6, seed=3, internal=True)
    r_band = sim.render_bands(cat, 64, seed=0)[:, 1]
    one = validation.measure_structure(r_band, sim.SKY_SIGMA["r"], sim.PIXEL_SCALE, workers=1)
    two = validation.measure_structure(r_band, sim.SKY_SIGMA["r"], sim.PIXEL_SCALE, workers=2)
    assert len(one) == 6 and one.r50_arcsec.notna().sum() >= 4
    pd.testing.assert_frame_equal(one, two)
    rgb = sim.render_images(cat, 64, seed=0)
    pd.testing.assert_frame_equal(validation.cutout_statistics(rgb, workers=1),
                                  validation.cutout_statistics(rgb, workers=2))


def test_render_bands_keeps_surface_brightness_at_any_pixel_scale():
    cat = sim.simulate_catalog(2, seed=4, internal=True)
    native = sim.render_bands(cat, 64, seed=0)
    coarse = sim.render_bands(cat, 32, seed=0, pixel_scale=2 * sim.PIXEL_SCALE)
    # the same 25" field: values are per native pixel area, so a coarse pixel holds 4x its value
    np.testing.assert_allclose(4 * coarse.sum(axis=(2, 3)), native.sum(axis=(2, 3)), rtol=0.1)
    assert native.shape == (2, 3, 64, 64) and native.dtype == np.float32


def test_balmer_decrement_table_and_reddening_verdict_say_what_the_numbers_say():
    # The Balmer table bins detected galaxies only and carries Garn & Best's value at each bin's
    # median mass; the verdict counts a bin as agreeing when the difference is under twice the
    # combined standard error.
    from galnb.survey import garn_best_balmer_decrement

    catalog = pd.DataFrame({"log_mstar": [9.2, 9.3, 9.4, 10.2, 10.3], "flux_ha": [3.0, 3.2, 3.4, 4.0, 50.0],
                            "flux_hb": [1.0, 1.0, 1.0, 1.0, 1.0], "oh_detectable": [1, 1, 1, 1, 0]})
    table = validation.balmer_decrement_by_mass(catalog, mass_bins=(9.0, 9.5, 10.0, 10.5))
    assert table.n.tolist() == [3, 0, 1]
    assert table["median"][0] == pytest.approx(3.2) and np.isnan(table["median"][1])
    assert table.garn_best[0] == pytest.approx(garn_best_balmer_decrement(np.array([9.3]))[0])
    real = pd.DataFrame({"mass": ["a", "b"], "n": [50, 50], "reddening": [0.02, 0.09], "se": [0.01, 0.01]})
    simulated = real.assign(reddening=[0.03, 0.02], se=[0.02, 0.02])
    verdict = validation.describe_reddening({"real g-r": real, "simulated g-r": simulated})
    assert "a: +0.030 ± 0.020 against +0.020 ± 0.010" in verdict and "in 1 of 2 bins" in verdict
    assert validation.describe_reddening({}) == ""


def test_photometric_residuals_are_cross_fitted_and_skip_samples_without_inputs():
    # A label that is a quadratic of the magnitudes plus noise leaves the noise, also with more
    # inputs than it depends on (the residual is cross-fitted, so it does not shrink); a sample without u, i, z
    # (a catalog fetched from VizieR) gets no row, and the verdict says the comparison was skipped.
    rng = np.random.default_rng(3)
    mags = pd.DataFrame(rng.normal(16.5, 0.6, (2000, 5)), columns=list(MAG_COLUMNS))
    mags["z"] = rng.uniform(0.02, 0.1, 2000)
    noisy = mags.assign(y=0.3 * (mags.mag_g - mags.mag_r) ** 2 - 0.4 * mags.mag_r + rng.normal(0.0, 0.2, 2000))
    table = validation.photometric_residuals({"noisy": noisy, "no u": noisy.assign(mag_u=np.nan)}, targets=("y",))
    assert set(table["sample"]) == {"noisy"} and table.inputs.tolist() == ["ugriz", "ugriz + z"]
    assert table.scatter.to_numpy() == pytest.approx(0.2, abs=0.02)
    assert (table.se > 0.002).all() and (table.se < 0.01).all()
    assert "skipped" in validation.describe_label_scatter(table, "real")
    assert "within twice" in validation.describe_label_scatter(
        pd.concat([table, table.assign(sample="real")]), "real")


def test_nair_abraham_sfr_columns_differ_by_morphology():
    # The real catalog's SFRM falls with morphological type as MPA-JHU sSFRs do (Brinchmann et al.
    # 2004); its SFRT - log M* hardly does (ssfr_by_morphology; the book and bench_information
    # therefore use both).
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-sdss"
    if not (folder / validation.NAIR_ABRAHAM_FILE).exists():
        pytest.skip(f"real SDSS check skipped: {folder / validation.NAIR_ABRAHAM_FILE} is absent")
    table = validation.ssfr_by_morphology(validation.nair_abraham(folder)).set_index("type")
    assert (table.n > 200).all()
    assert table.SFRM["Sd-Irr"] - table.SFRM["E"] > 1.2
    assert table["SFRT - LGM"]["Sd-Irr"] - table["SFRT - LGM"]["E"] < 0.7


def test_compare_label_scatter_tries_both_real_sfr_columns_on_star_formers_only():
    rng = np.random.default_rng(4)
    mags = pd.DataFrame(rng.normal(16.5, 0.6, (1200, 5)), columns=list(MAG_COLUMNS))
    mags["z"] = rng.uniform(0.02, 0.1, 1200)
    mass = 10.0 - 0.4 * (mags.mag_r - 16.5) + rng.normal(0.0, 0.1, 1200)
    ssfr = np.where(np.arange(1200) < 1000, -10.0, -12.0) + rng.normal(0.0, 0.2, 1200)  # 200 quiescent
    real = mags.assign(log_mstar=mass, log_ssfr=ssfr, log_sfr=mass + ssfr + rng.normal(0.0, 0.3, 1200))
    table = validation.compare_label_scatter(real, real.assign(log_sfr=real.log_ssfr + real.log_mstar))
    assert (table.n == 1000).all()  # star formers only
    assert set(table.target) == {"log M*", "log SFR"}
    sfr = table[(table.target == "log SFR") & (table.inputs == "ugriz + z")].set_index("sample").scatter
    assert sfr["real"] > sfr["real, SFRM + log M*"] + 0.1  # SFRT carries 0.3 dex more
    assert sfr["real, SFRM + log M*"] == pytest.approx(sfr["simulated"], abs=0.02)  # the same labels
    assert "simulated, true labels" not in set(table["sample"])
    # Given the true values behind the labels, the same galaxies are scored against them too.
    noisy = real.assign(log_mstar_true=real.log_mstar, log_sfr_true=real.log_sfr,
                        log_mstar=real.log_mstar + rng.normal(0.0, 0.2, 1200))
    mass = validation.compare_label_scatter(real, noisy)
    mass = mass[(mass.target == "log M*") & (mass.inputs == "ugriz + z")].set_index("sample").scatter
    assert mass["simulated, true labels"] == pytest.approx(mass["real"], abs=0.01)
    assert mass["simulated"] > mass["simulated, true labels"] + 0.08
