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
    "K_HALPHA_MW",
    "K_HBETA_MW",
    "R_V_MW",
    "mbh_from_sigma",
    "balmer_av",
    "kauffmann03",
    "kewley01",
    "n2_from_oh",
    "o3hb_from_oh",
    "garn_best_balmer_decrement",
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
#: Gas reddening with the Galactic curve (Cardelli, Clayton & Mathis 1989), as in Calzetti (2000):
#: k(Halpha), k(Hbeta) and R_V; the stars' attenuation uses the Calzetti curve
#: (``galnb.survey.R_V_CALZETTI``, ``galnb.survey.STARS_TO_GAS``).
K_HALPHA_MW, K_HBETA_MW, R_V_MW = 2.53, 3.61, 3.1


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


def balmer_av(flux_ha: np.ndarray, flux_hb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V-band attenuation of the stars and of the gas from the Balmer decrement.

    Arguments:
        flux_ha, flux_hb: (N,) Halpha and Hbeta fluxes (any common unit).
    Returns:
        (av_stars, av_gas), each (N,), clipped at 0 where Ha/Hb < 2.86.
    References:
        Calzetti et al. 2000, ApJ 533, 682 (arXiv:astro-ph/9911459).
        Cardelli, Clayton & Mathis 1989, ApJ 345, 245.

    Example:
        >>> stars, gas = balmer_av(np.array([2.86, 4.0]), np.array([1.0, 1.0]))
        >>> np.round(gas, 2).tolist(), np.round(stars, 2).tolist()
        ([0.0, 1.05], [0.0, 0.6])
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ebv_gas = 2.5 / (K_HBETA_MW - K_HALPHA_MW) * np.log10(np.asarray(flux_ha) / np.asarray(flux_hb) / BALMER_CASE_B)
    ebv_gas = np.clip(ebv_gas, 0.0, None)
    return R_V_CALZETTI * STARS_TO_GAS * ebv_gas, R_V_MW * ebv_gas


def kauffmann03(log_n2: np.ndarray) -> np.ndarray:
    """Upper log [O III]/Hbeta of star-forming galaxies on the BPT diagram (Kauffmann et al. 2003).

    Arguments:
        log_n2: (N,) log10 [N II] 6584 / Halpha; the curve is defined for log_n2 < 0.05.

    Returns:
        (N,) 0.61 / (log_n2 - 0.05) + 1.3 (NaN where log_n2 >= 0.05).

    References:
        Kauffmann et al. 2003, MNRAS 346, 1055 (arXiv:astro-ph/0304239), eq. 1.
    """
    return _bpt_curve(log_n2, 0.05, 1.3)


def kewley01(log_n2: np.ndarray) -> np.ndarray:
    """Maximum-starburst line of the BPT diagram (Kewley et al. 2001).

    Arguments:
        log_n2: (N,) log10 [N II] 6584 / Halpha; the curve is defined for log_n2 < 0.47.

    Returns:
        (N,) 0.61 / (log_n2 - 0.47) + 1.19 (NaN where log_n2 >= 0.47).

    References:
        Kewley et al. 2001, ApJ 556, 121 (arXiv:astro-ph/0106324), eq. 5.
    """
    return _bpt_curve(log_n2, 0.47, 1.19)


def _bpt_curve(log_n2: np.ndarray, asymptote: float, offset: float) -> np.ndarray:
    """0.61 / (log_n2 - asymptote) + offset left of the asymptote, NaN right of it."""
    x = np.asarray(log_n2, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x < asymptote, 0.61 / (x - asymptote) + offset, np.nan)


#: Kewley & Ellison (2008, ApJ 681, 1183, arXiv:0801.1849), Table 3: y = a + b x + c x^2 + d x^3.
#: PP04 N2 metallicity (x, valid 8.05-8.9) to T04 (y), and T04 (x, valid 8.05-9.2) to PP04 O3N2 (y).
_KE08_PP04N2_TO_T04 = (-1661.9380, 585.17650, -68.471750, 2.6766690)
_KE08_T04_TO_PP04O3N2 = (230.7820, -75.79752, 8.526986, -0.3162894)


def _cubic(coef: tuple[float, float, float, float], x: np.ndarray) -> np.ndarray:
    a, b, c, d = coef
    return a + b * x + c * x**2 + d * x**3


def n2_from_oh(oh12_t04: np.ndarray) -> np.ndarray:
    """log [N II]/Halpha that the Pettini & Pagel (2004) N2 calibration gives a T04 abundance.

    The T04 abundance is put on the PP04 N2 scale with the Kewley & Ellison (2008) conversion,
    then the PP04 cubic is inverted. Both are monotonic on their ranges of validity, and the
    input is clipped to them (T04 8.2-9.4; PP04 N2 -2.5 to -0.3).

    Arguments:
        oh12_t04: (N,) 12 + log(O/H) on the Tremonti et al. (2004) scale.

    Returns:
        (N,) log10 [N II] 6584 / Halpha.

    References:
        Pettini & Pagel 2004, MNRAS 348, L59 (arXiv:astro-ph/0401128), eq. 2.
        Kewley & Ellison 2008, ApJ 681, 1183 (arXiv:0801.1849), Table 3.

    Example:
        >>> np.round(n2_from_oh(np.array([8.6, 8.9, 9.1])), 2).tolist()
        [-0.84, -0.55, -0.41]
    """
    pp04 = np.linspace(8.05, 8.865, 1001)  # PP04 N2 reaches 8.865 at its limit N2 = -0.3
    n2 = np.linspace(-2.5, -0.3, 2201)
    pp04_of_n2 = 9.37 + 2.03 * n2 + 1.26 * n2**2 + 0.32 * n2**3
    x = np.interp(np.asarray(oh12_t04, dtype=float), _cubic(_KE08_PP04N2_TO_T04, pp04), pp04)
    return np.interp(x, pp04_of_n2, n2)


def o3hb_from_oh(oh12_t04: np.ndarray, log_n2: np.ndarray) -> np.ndarray:
    """log [O III]/Hbeta that the PP04 O3N2 calibration gives a T04 abundance and a log [N II]/Halpha.

    O3N2 = log([O III]/Hbeta) - log([N II]/Halpha) = (8.73 - O/H_PP04) / 0.32, with the T04
    abundance (clipped to 8.05-9.2) put on the PP04 O3N2 scale by Kewley & Ellison (2008).

    Arguments:
        oh12_t04: (N,) 12 + log(O/H) on the T04 scale.
        log_n2: (N,) log10 [N II] 6584 / Halpha of the same galaxies.

    Returns:
        (N,) log10 [O III] 5007 / Hbeta.

    References:
        Pettini & Pagel 2004, MNRAS 348, L59 (arXiv:astro-ph/0401128), eq. 3.
        Kewley & Ellison 2008, ApJ 681, 1183 (arXiv:0801.1849), Table 3.

    Example:
        >>> n2 = n2_from_oh(np.array([8.9]))
        >>> np.round(o3hb_from_oh(np.array([8.9]), n2), 2).tolist()
        [-0.24]
    """
    pp04 = _cubic(_KE08_T04_TO_PP04O3N2, np.clip(np.asarray(oh12_t04, dtype=float), 8.05, 9.2))
    return (8.73 - pp04) / 0.32 + np.asarray(log_n2, dtype=float)


def garn_best_balmer_decrement(log_mstar: np.ndarray) -> np.ndarray:
    """The Halpha/Hbeta ratio SDSS star-forming galaxies have on average at a stellar mass (Garn & Best 2010).

    Their fit A_Halpha = 0.91 + 0.77 X + 0.11 X^2 - 0.09 X^3, X = log10(M* / 10^10 Msun), is
    turned back into the Balmer decrement with the curve they used, Calzetti et al. (2000):
    k(Halpha) = 3.33 and k(Hbeta) = 4.60, so that it can be compared with any other curve's.

    Arguments:
        log_mstar: (N,) log10 stellar mass [Msun]; the fit covers about 8.5-11.5.

    Returns:
        (N,) Halpha/Hbeta.

    References:
        Garn & Best 2010, MNRAS 409, 421.

    Example:
        >>> round(float(garn_best_balmer_decrement(np.array([10.0]))[0]), 2)
        3.94
    """
    x = np.asarray(log_mstar, dtype=float) - 10.0
    a_halpha = 0.91 + 0.77 * x + 0.11 * x**2 - 0.09 * x**3
    return BALMER_CASE_B * 10 ** (0.4 * a_halpha * (4.60 - 3.33) / 3.33)
