"""SDSS survey constants and published relations, shared by the simulated and the real survey."""

from __future__ import annotations

import numpy as np

__all__ = [
    "PIXEL_SCALE",
    "R_MIN",
    "R_MAX",
    "R_V_CALZETTI",
    "STARS_TO_GAS",
    "BALMER_CASE_B",
    "MM13_ALPHA",
    "MM13_BETA",
    "mbh_from_sigma",
]

#: Arcsec per pixel of SDSS imaging and of SkyServer's native cutouts (Gunn et al. 1998, AJ 116, 3040).
PIXEL_SCALE = 0.396
#: The CFM paper's cut on model r: the Main Galaxy Sample's limit (Strauss et al. 2002, AJ 124, 1810,
#: arXiv:astro-ph/0206225) and a bright cut.
R_MIN, R_MAX = 16.0, 17.78
#: R_V = k(V) of the Calzetti et al. (2000) attenuation curve (ApJ 533, 682, arXiv:astro-ph/9911459).
R_V_CALZETTI = 4.05
#: E(B-V)_stars / E(B-V)_gas (Calzetti et al. 2000, ApJ 533, 682, arXiv:astro-ph/9911459).
STARS_TO_GAS = 0.44
#: Intrinsic Halpha/Hbeta, case B recombination at T = 1e4 K (Osterbrock & Ferland 2006).
BALMER_CASE_B = 2.86
#: M_BH-sigma of McConnell & Ma (2013, ApJ 764, 184, arXiv:1211.2816), all galaxies:
#: log M_BH = alpha + beta log10(sigma / 200 km/s).
MM13_ALPHA, MM13_BETA = 8.32, 5.64


def mbh_from_sigma(sigma_v: np.ndarray) -> np.ndarray:
    """log10 M_BH [Msun] from the velocity dispersion [km/s] (McConnell & Ma 2013, all galaxies).

    Arguments:
        sigma_v: (N,) stellar velocity dispersion in km/s.

    Returns:
        (N,) log10 M_BH / Msun, without the relation's 0.38 dex scatter (non-finite where
        sigma_v <= 0).

    References:
        McConnell & Ma 2013, ApJ 764, 184 (arXiv:1211.2816).

    Example:
        >>> float(mbh_from_sigma(np.array([200.0]))[0])
        8.32
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return MM13_ALPHA + MM13_BETA * np.log10(np.asarray(sigma_v, dtype=float) / 200.0)
