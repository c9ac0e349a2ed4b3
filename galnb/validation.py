"""Real-vs-simulated checks: the simulated survey compared with real SDSS."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .properties import MAG_COLUMNS
from .survey import R_MAX, R_MIN

__all__ = [
    "real_sdss_photometry",
    "blue_cloud",
    "matched_weights",
    "compare_photometry",
    "photometry_value",
]

#: SDSS magnitudes to AB: u_AB = u_SDSS - 0.04, z_AB = z_SDSS + 0.02 (ugriz order).
_AB_OFFSET = np.array([-0.04, 0.0, 0.0, 0.0, 0.02])


def real_sdss_photometry(r_range: tuple[float, float] = (R_MIN, R_MAX),
                         z_range: tuple[float, float] = (0.0, 0.3)) -> pd.DataFrame:
    """The 10,000 real SDSS galaxies shipped in ``kcorrect``, as AB model magnitudes.

    Magnitudes are 22.5 - 2.5 log10(MODELFLUX) minus Galactic extinction, with the SDSS
    AB offsets (u - 0.04, z + 0.02); rows with non-positive fluxes are dropped.

    Arguments:
        r_range: keep lo < mag_r < hi.
        z_range: keep lo < z < hi.

    Returns:
        DataFrame with ``z`` and ``mag_u`` ... ``mag_z``.

    References:
        Blanton & Roweis 2007, AJ 133, 734 (arXiv:astro-ph/0606170), kcorrect.
    """
    import importlib.resources

    from astropy.io import fits

    path = importlib.resources.files("kcorrect") / "data" / "test" / "gst_tests_small.fits"
    with importlib.resources.as_file(path) as p, fits.open(p) as hdul:
        d = hdul[1].data
        flux = np.asarray(d["MODELFLUX"], dtype=np.float64)
        ext = np.asarray(d["EXTINCTION"], dtype=np.float64)
        z = np.asarray(d["Z"], dtype=np.float64)
    good = np.all(flux > 0, axis=1)
    mags = 22.5 - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)) - ext + _AB_OFFSET
    df = pd.DataFrame({"z": z, **{c: mags[:, i] for i, c in enumerate(MAG_COLUMNS)}})
    keep = good & (df.mag_r > r_range[0]) & (df.mag_r < r_range[1]) & (df.z > z_range[0]) & (df.z < z_range[1])
    return df[keep].reset_index(drop=True)


def blue_cloud(catalog: pd.DataFrame) -> np.ndarray:
    """Boolean mask of blue-cloud galaxies, u - r < 2.22 (Strateva et al. 2001).

    Arguments:
        catalog: with ``mag_u`` and ``mag_r``.

    Returns:
        (N,) bool.

    References:
        Strateva et al. 2001, AJ 122, 1861 (arXiv:astro-ph/0107201).
    """
    return np.asarray(catalog["mag_u"] - catalog["mag_r"] < 2.22)


def matched_weights(sim: pd.DataFrame, real: pd.DataFrame, z_bins: int = 15, r_bins: int = 6) -> np.ndarray:
    """Weights that give ``sim`` the joint (redshift, r) distribution of ``real``.

    The real comparison sample is not a complete flux-limited survey (its counts fall beyond
    r ~ 17.2, where a flux-limited sample's keep rising), and colours depend on redshift
    through the K-correction, so colours are compared at matched (z, r): each simulated galaxy
    is weighted by the ratio of the two normalised 2-D histograms in its cell (0 where the
    simulation has no galaxy in a cell the real sample fills).

    Arguments:
        sim, real: catalogs with ``z`` and ``mag_r``.
        z_bins, r_bins: cells over 0 < z < 0.3 and 16 < r < 17.78.

    Returns:
        (len(sim),) non-negative weights.
    """
    zb = np.linspace(0.0, 0.3, z_bins + 1)
    rb = np.linspace(R_MIN, R_MAX, r_bins + 1)
    hs = np.histogram2d(sim["z"], sim["mag_r"], [zb, rb])[0]
    hr = np.histogram2d(real["z"], real["mag_r"], [zb, rb])[0]
    ratio = np.divide(hr / hr.sum(), hs / hs.sum(), out=np.zeros_like(hr), where=hs > 0)
    iz = np.clip(np.digitize(sim["z"], zb) - 1, 0, z_bins - 1)
    ir = np.clip(np.digitize(sim["mag_r"], rb) - 1, 0, r_bins - 1)
    return ratio[iz, ir]


def compare_photometry(sim: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    """1-D Wasserstein distances of r, z, u-g, g-r, r-i, i-z between two blue-cloud samples.

    Arguments:
        sim: simulated catalog (``mag_*``, ``z``).
        real: real catalog, e.g. :func:`real_sdss_photometry`.

    Returns:
        DataFrame with ``quantity``, ``wasserstein`` (as drawn), ``wasserstein_matched`` (the
        simulated galaxies weighted to the real (z, r) distribution, :func:`matched_weights`),
        ``median_sim``, ``median_real``, ``n_sim``, ``n_real`` (blue-cloud galaxies only).

    References:
        Strateva et al. 2001, AJ 122, 1861 (arXiv:astro-ph/0107201).
    """
    from scipy.stats import wasserstein_distance

    s = sim[blue_cloud(sim)]
    r = real[blue_cloud(real)]
    w = matched_weights(s, r)
    rows = []
    for q in ("r", "z", "u-g", "g-r", "r-i", "i-z"):
        vs, vr = photometry_value(s, q), photometry_value(r, q)
        rows.append({"quantity": q, "wasserstein": float(wasserstein_distance(vs, vr)),
                     "wasserstein_matched": float(wasserstein_distance(vs, vr, u_weights=w)),
                     "median_sim": float(np.median(vs)), "median_real": float(np.median(vr)),
                     "n_sim": len(vs), "n_real": len(vr)})
    return pd.DataFrame(rows)


def photometry_value(catalog: pd.DataFrame, quantity: str) -> np.ndarray:
    """``r``, ``z`` or a colour such as ``u-g`` of a catalog, as float64.

    Arguments:
        catalog: with ``mag_*`` (and ``z`` for ``quantity="z"``).
        quantity: ``"r"``, ``"z"`` or ``"<band>-<band>"``.

    Returns:
        (N,) the magnitude, redshift or colour.

    Example:
        >>> photometry_value(pd.DataFrame({"mag_g": [17.5], "mag_r": [17.0]}), "g-r").tolist()
        [0.5]
    """
    if quantity in ("r", "z"):
        return np.asarray(catalog["mag_r"] if quantity == "r" else catalog["z"], dtype=np.float64)
    a, b = quantity.split("-")
    return np.asarray(catalog[f"mag_{a}"] - catalog[f"mag_{b}"], dtype=np.float64)
