"""Real-vs-simulated checks: the simulated survey compared with real SDSS.

Two kinds of real data are used. The 10,000 SDSS galaxies that ship inside ``kcorrect``
(photometry only) are always available. The other real pieces (the Nair & Abraham 2010 catalog
and more) are not part of the project and are found in a folder given by a parameter or by the
environment variable ``GALNB_REAL_SDSS`` (``real_sdss_dir``). The Nair & Abraham catalog can
also be fetched from VizieR (``fetch_nair_abraham``, cached on disk); ``load_nair_abraham`` tries
the folder, then the cache, then VizieR. Without any, the checks that need them say how to get
them and are skipped.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import median_abs_deviation

from .io import atomic_write
from .parallel import map_chunks
from .properties import MAG_COLUMNS, QUANTITIES
from .survey import R_MAX, R_MIN, garn_best_balmer_decrement

__all__ = [
    "REAL_SDSS_ENV",
    "NAIR_ABRAHAM_FILE",
    "real_sdss_dir",
    "nair_abraham",
    "NAIR_ABRAHAM_VIZIER",
    "NAIR_ABRAHAM_CACHE",
    "CatalogFetchError",
    "fetch_nair_abraham",
    "NairAbraham",
    "load_nair_abraham",
    "simulated_structure",
    "star_forming",
    "concentration_by_ssfr",
    "inclination_reddening",
    "size_mass",
    "balmer_decrement_by_mass",
    "describe_reddening",
    "measure_structure",
    "real_cutouts",
    "framed_like_skyserver",
    "cutout_statistics",
    "compare_statistics",
    "StructureComparison",
    "compare_structure",
    "MORPHOLOGY_CLASSES",
    "ssfr_by_morphology",
    "RESIDUAL_INPUTS",
    "photometric_residuals",
    "with_sfrm_sfr",
    "compare_label_scatter",
    "describe_label_scatter",
    "real_sdss_photometry",
    "blue_cloud",
    "matched_weights",
    "compare_photometry",
    "photometry_value",
]

#: Environment variable naming the folder of real SDSS pieces (CI points it at ../shared/data/real-sdss).
REAL_SDSS_ENV = "GALNB_REAL_SDSS"
#: File name of the Nair & Abraham (2010) catalog inside that folder.
NAIR_ABRAHAM_FILE = "nair-abraham-2010.fits"
#: The VizieR table of the Nair & Abraham (2010) catalog (14,034 galaxies).
NAIR_ABRAHAM_VIZIER = "J/ApJS/186/427/table2"
#: File name of the catalog fetched from VizieR, in the cache folder (``fetch_nair_abraham``).
NAIR_ABRAHAM_CACHE = "nair-abraham-2010-vizier.csv"
_H0, _OM0 = 70.0, 0.3  # the cosmology of the simulation and of MPA-JHU
_MIN_LOG_SSFR = -10.8  # star formers: log sSFR [1/yr] above this

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


# ------------------------------------------------------------------ structure vs real galaxies
def real_sdss_dir(path: str | Path | None = None) -> Path | None:
    """The folder of real SDSS pieces: ``path`` if given, else ``$GALNB_REAL_SDSS``, else None.

    Arguments:
        path: a folder, or None to read the environment variable.

    Returns:
        The folder, or None when neither names one.

    Raises:
        FileNotFoundError: ``path`` (or the variable) names something that is not a folder.
    """
    chosen = path if path not in (None, "") else os.environ.get(REAL_SDSS_ENV) or None
    if chosen is None:
        return None
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        source = "real_sdss" if path not in (None, "") else f"${REAL_SDSS_ENV}"
        raise FileNotFoundError(f"{source} = {chosen!r} is not a folder; give the folder that holds "
                                f"{NAIR_ABRAHAM_FILE} (see ../shared/data/real-sdss/README.md)")
    return folder


def _kpc_per_arcsec(z: np.ndarray) -> np.ndarray:
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=_H0, Om0=_OM0).kpc_proper_per_arcmin(np.asarray(z, dtype=float)).value / 60.0


def nair_abraham(folder: str | Path) -> pd.DataFrame:
    """The Nair & Abraham (2010) catalog of bright SDSS galaxies, in the book's column names.

    Masses and SFRs are MPA-JHU's: ``log_sfr`` is the catalog's ``SFRT`` and ``log_ssfr`` its
    ``SFRM``, which disagree (``ssfr_by_morphology``: only ``SFRM`` falls with type as MPA-JHU
    sSFRs do, so ``SFRM`` + ``log_mstar`` is the likelier median total SFR); star formers are
    selected on ``log_ssfr``. b/a and the Petrosian radii are SDSS measurements (the
    authors' own release names the radii ``Rp50_g``/``Rp90_g``, g band, while the simulated ones
    are measured in r); colours are observed-frame model colours, and ugriz is rebuilt from r and
    them. Rows with sentinel values are dropped.

    The catalog's ``RP50``/``RP90`` are physical radii in kpc (H0 = 70), not arcsec: read as kpc,
    log R50 rises with log M* with slope 0.22 and 0.19 dex scatter, as the Shen et al. (2003)
    late-type relation does, and 99.9 % have R50 above 1.5" once converted, about the seeing; read as
    arcsec, the slope would be 0.47 with 0.26 dex scatter, and 0.4 % of galaxies would be smaller
    than the seeing allows. Angular radii are the physical ones over the angular scale at ``z``.

    Arguments:
        folder: the folder holding ``nair-abraham-2010.fits`` (see ``real_sdss_dir``).

    Returns:
        DataFrame with ``z``, ``log_mstar``, ``log_ssfr``, ``log_sfr``, ``axis_ratio``, ``r50_kpc``,
        ``r90_kpc``, ``r50_arcsec``, ``concentration``, ``u_g``, ``g_r``, ``mag_u`` ... ``mag_z``
        and ``t_type``.

    Raises:
        FileNotFoundError: the file is not in ``folder``.

    References:
        Nair & Abraham 2010, ApJS 186, 427 (arXiv:1001.2401); VizieR J/ApJS/186/427.
    """
    from astropy.table import Table

    path = Path(folder) / NAIR_ABRAHAM_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is absent: the Nair & Abraham (2010) catalog (VizieR J/ApJS/186/427) "
                                f"is read from there; see ../shared/data/real-sdss/README.md")
    t = Table.read(path).to_pandas()
    r, g = t["RMAG"], t["RMAG"] + t["GR"]
    return _book_frame(pd.DataFrame({
        "z": t["Z"], "log_mstar": t["LGM"], "log_sfr": t["SFRT"], "log_ssfr": t["SFRM"], "axis_ratio": t["B_A"],
        "r50_kpc": t["RP50"], "r90_kpc": t["RP90"], "mag_g": g, "mag_r": r, "g_r": t["GR"], "t_type": t["T_TYPE"],
        "u_g": t["UG"], "mag_u": g + t["UG"], "mag_i": r - t["RI"], "mag_z": r - t["RI"] - t["IZ"]}))


def _valid_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows without sentinels; a column that is NaN throughout (absent from the source) is not checked."""
    checks = {"log_mstar": df.log_mstar > 7, "log_ssfr": df.log_ssfr > -20, "log_sfr": df.log_sfr > -5,
              "axis_ratio": df.axis_ratio.between(0.01, 1.0), "r50_kpc": df.r50_kpc > 0,
              "u_g": df.u_g.between(-1, 4), "g_r": df.g_r.between(-1, 2), "t_type": df.t_type > -10,
              **{c: df[c].between(8, 25) for c in MAG_COLUMNS}}
    ok = np.ones(len(df), dtype=bool)
    for column, check in checks.items():
        if df[column].notna().any():
            ok &= check.to_numpy()
    return df[ok].reset_index(drop=True)


# ----------------------------------------------------------- Nair & Abraham from VizieR, cached
#: Book quantity -> labels it may carry in the VizieR table, tried in order (case and punctuation
#: ignored). ``TT``, ``Bar``, ``Ring``, ``Pair`` and ``SDSS`` are VizieR's labels as public code reads
#: them; the others follow the authors' own column names (``Mass``, ``SFRT``, ``SFRM``, ``bOverA``,
#: ``Rp50_g``, ``Rp90_g``, ``g``, ``r``, ``g-r``, ``TType``) and CDS's usual labels for them.
_VIZIER_LABELS: dict[str, tuple[str, ...]] = {
    "z": ("z",),
    "log_mstar": ("logM", "logM*", "logMass", "Mass", "LGM"),
    "log_sfr": ("SFRT", "logSFRT", "logSFR", "SFRt", "SFR"),
    "log_ssfr": ("SFRM", "logSFRM", "logsSFR", "sSFR"),
    "axis_ratio": ("b/a", "bOverA", "B_A"),
    "r50": ("Rp50", "Rp50_g", "R50"),
    "r90": ("Rp90", "Rp90_g", "R90"),
    "mag_g": ("gmag", "g"),
    "mag_r": ("rmag", "r"),
    "g_r": ("g-r", "(g-r)"),
    "t_type": ("TT", "TType", "T_TYPE"),
}
#: Quantities a usable fetched table must have (one of log_sfr / log_ssfr is enough: the other follows).
_VIZIER_REQUIRED = ("z", "log_mstar", "axis_ratio", "r50", "r90", "t_type")
#: The cache's columns, in order.
_CACHE_COLUMNS = ("z", "log_mstar", "log_sfr", "log_ssfr", "axis_ratio", "r50_kpc", "r90_kpc",
                  "mag_g", "mag_r", "g_r", "t_type")
#: Linear units of the logarithmic quantities, for a table that gives them unlogged.
_LINEAR_UNITS = {"log_mstar": "solMass", "log_sfr": "solMass / yr", "log_ssfr": "1 / yr"}


class CatalogFetchError(RuntimeError):
    """VizieR could not be reached, answered badly, or its table lacks a column the book needs."""


def _label_key(label: str) -> str:
    return re.sub(r"[^0-9a-z]", "", label.lower())


def _match_labels(names: list[str]) -> dict[str, str]:
    """Book quantity -> the VizieR label carrying it (exact label first, then ignoring case and punctuation)."""
    by_key = {_label_key(n): n for n in names}
    found = {}
    for quantity, candidates in _VIZIER_LABELS.items():
        exact = [c for c in candidates if c in names]
        loose = [by_key[_label_key(c)] for c in candidates if len(c) > 1 and _label_key(c) in by_key]
        if exact or loose:
            found[quantity] = (exact or loose)[0]
    return found


def _missing_quantities(found: dict[str, str]) -> list[str]:
    missing = [q for q in _VIZIER_REQUIRED if q not in found]
    if "log_sfr" not in found and "log_ssfr" not in found:
        missing.append("log_sfr or log_ssfr")
    return missing


def _float_values(column, sentinels: bool = True) -> np.ndarray:
    """A (masked) table column as float64, blanks (and sentinels, |x| >= 9999) as NaN."""
    values = np.ma.asarray(column).astype(np.float64).filled(np.nan)
    return np.where(np.abs(values) < 9999, values, np.nan) if sentinels else values


def _unit(column):
    """The column's unit read as VizieR writes units (CDS format: ``Msun`` is a solar mass), or None.

    A logarithmic unit (``[Msun]``) or one astropy cannot read comes back as its text.
    """
    from astropy import units as u

    if column.unit is None or str(column.unit) in ("", "---"):
        return None
    text = str(column.unit)
    if text.startswith("["):
        return text
    for fmt in ("cds", None):
        try:
            return u.Unit(text, format=fmt)
        except ValueError:
            continue
    return text


def _log_values(column, quantity: str) -> np.ndarray:
    """log10 of a mass or (s)SFR: as given when the unit is a log one ("[Msun]") or absent, else logged."""
    from astropy import units as u

    unit = _unit(column)
    if unit is None or isinstance(unit, str):
        return _float_values(column)
    linear = u.Unit(_LINEAR_UNITS[quantity])
    if not unit.is_equivalent(linear):
        raise CatalogFetchError(f"VizieR column {column.name!r} ({quantity}) has unit {unit}, "
                                f"neither logarithmic nor {linear}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10((_float_values(column, sentinels=False) * unit).to_value(linear))


def _kpc_values(column, z: np.ndarray) -> np.ndarray:
    """A Petrosian radius in kpc: kpc as given (also when no unit is stated), angles through the scale at z."""
    from astropy import units as u

    unit = _unit(column)
    values = _float_values(column)
    if unit is None:
        return values
    if not isinstance(unit, str) and unit.is_equivalent(u.kpc):
        return (values * unit).to_value(u.kpc)
    if not isinstance(unit, str) and unit.is_equivalent(u.arcsec):
        return (values * unit).to_value(u.arcsec) * _kpc_per_arcsec(np.nan_to_num(z))
    raise CatalogFetchError(f"VizieR column {column.name!r} (a Petrosian radius) has unit {unit}, "
                            "neither a length nor an angle")


def _vizier_cache_frame(table, labels: dict[str, str]) -> pd.DataFrame:
    """The VizieR rows in the cache's columns (``_CACHE_COLUMNS``); what VizieR lacks is NaN."""
    z = _float_values(table[labels["z"]])
    out = {"z": z, "log_mstar": _log_values(table[labels["log_mstar"]], "log_mstar")}
    for quantity in ("log_sfr", "log_ssfr"):
        out[quantity] = _log_values(table[labels[quantity]], quantity) if quantity in labels else None
    if out["log_sfr"] is None:
        out["log_sfr"] = out["log_ssfr"] + out["log_mstar"]
    if out["log_ssfr"] is None:
        out["log_ssfr"] = out["log_sfr"] - out["log_mstar"]
    out["axis_ratio"] = _float_values(table[labels["axis_ratio"]])
    out["r50_kpc"] = _kpc_values(table[labels["r50"]], z)
    out["r90_kpc"] = _kpc_values(table[labels["r90"]], z)
    nan = np.full(len(z), np.nan)
    for quantity in ("mag_g", "mag_r", "g_r", "t_type"):
        out[quantity] = _float_values(table[labels[quantity]]) if quantity in labels else nan
    if "g_r" not in labels:
        out["g_r"] = out["mag_g"] - out["mag_r"]
    return pd.DataFrame(out)[list(_CACHE_COLUMNS)]


def _book_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """``nair_abraham``'s columns from the file's or the cache's (``_CACHE_COLUMNS``), with the angular
    R50 and the concentration derived; u - g, u, i and z, absent from VizieR's table, stay NaN there."""
    scale = _kpc_per_arcsec(raw["z"].fillna(0.0).to_numpy())
    nan = pd.Series(np.nan, index=raw.index)
    df = pd.DataFrame({"z": raw.z, "log_mstar": raw.log_mstar, "log_ssfr": raw.log_ssfr, "axis_ratio": raw.axis_ratio,
                       "r50_kpc": raw.r50_kpc, "u_g": raw.get("u_g", nan), "g_r": raw.g_r, "mag_r": raw.mag_r,
                       "r90_kpc": raw.r90_kpc, "r50_arcsec": raw.r50_kpc / scale,
                       "concentration": raw.r90_kpc / raw.r50_kpc, "log_sfr": raw.log_sfr,
                       "mag_u": raw.get("mag_u", nan), "mag_g": raw.mag_g, "mag_i": raw.get("mag_i", nan),
                       "mag_z": raw.get("mag_z", nan), "t_type": raw.t_type}).astype(float)
    return _valid_rows(df)


def _vizier_answer(server: str | None, timeout: float, columns: list[str], row_limit: int):
    """One VizieR query of the Nair & Abraham table: (its astropy Table, the endpoint URL)."""
    import requests
    from astropy.io import votable
    from astroquery.vizier import Vizier

    kwargs = {"vizier_server": server} if server else {}
    vizier = Vizier(columns=columns, row_limit=row_limit, timeout=timeout, **kwargs)
    url = f"https://{vizier.VIZIER_SERVER}/viz-bin/votable"
    try:
        response = vizier.query_constraints_async(catalog=NAIR_ABRAHAM_VIZIER, cache=False)
    except requests.RequestException as err:
        raise CatalogFetchError(f"{url}: {type(err).__name__}: {err}") from err
    if response.status_code != 200:
        raise CatalogFetchError(f"{url}: HTTP {response.status_code}: {response.text[:200]!r}")
    if not response.content.lstrip().startswith(b"<?xml"):
        raise CatalogFetchError(f"{url}: the answer is not a VOTable: {response.text[:200]!r}")
    try:
        tree = votable.parse(io.BytesIO(response.content), verify="ignore")
    except Exception as err:  # astropy raises several kinds on a broken VOTable
        raise CatalogFetchError(f"{url}: unreadable VOTable ({err})") from err
    every = list(tree.iter_tables())
    tables = [t for t in every if t.name == NAIR_ABRAHAM_VIZIER] or (every if len(every) == 1 else [])
    if not tables:
        said = [f"{i.name}: {i.value or i.content}" for r in [tree, *tree.resources] for i in r.infos
                if "error" in (i.name or "").lower() or "warning" in (i.name or "").lower()]
        raise CatalogFetchError(f"{url}: the answer holds no table {NAIR_ABRAHAM_VIZIER}" + (f"; VizieR said {said}"
                                                                                           if said else ""))
    return tables[0].to_table(use_names_over_ids=True), url


def _read_cache(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, comment="#")
    missing = [c for c in _CACHE_COLUMNS if c not in raw.columns]
    if missing or len(raw) == 0:
        raise ValueError(f"{path} is not a Nair & Abraham cache (missing {missing}, {len(raw)} rows)")
    return raw[list(_CACHE_COLUMNS)].astype(float)


def _cache_folder(cache_dir: str | Path) -> Path:
    if not isinstance(cache_dir, (str, Path)) or str(cache_dir) == "":
        raise ValueError(f"cache_dir = {cache_dir!r} is not valid: give a folder (str or Path) for the VizieR cache")
    folder = Path(cache_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cache_dir = {str(cache_dir)!r} is a file, not a folder")
    return folder


def fetch_nair_abraham(cache_dir: str | Path, *, server: str | None = None, timeout: float = 60.0,
                       refresh: bool = False) -> pd.DataFrame:
    """The Nair & Abraham (2010) catalog from VizieR (``J/ApJS/186/427/table2``), cached in ``cache_dir``.

    A cache file ``cache_dir/nair-abraham-2010-vizier.csv`` answers every call after the first
    (no request is made). Otherwise two queries go to VizieR through ``astroquery.vizier``: one
    row with all columns, to find the labels and units of the columns needed, then all 14,034
    rows (``row_limit=-1``) with only those columns. The cache is written to a temporary file and
    renamed, so a failed fetch never damages an existing cache.

    What VizieR gives and what it lacks, compared with ``nair_abraham``'s file (a copy from
    github.com/jbrinchmann/MLD2019 with ugriz colours merged in): the authors' table carries the
    redshift, the log stellar mass and log total SFR and sSFR (their ``Mass``, ``SFRT``, ``SFRM``:
    MPA-JHU estimates), b/a, the Petrosian R50 and R90 (named ``Rp50_g``/``Rp90_g``: g-band, in
    kpc), the g and r magnitudes with g - r, and the T-type. It has no u, i or z photometry, so
    ``u_g``, ``mag_u``, ``mag_i`` and ``mag_z`` are NaN: g - r checks work, u - g checks find no
    galaxies. Masses and SFRs given as linear values and radii given in arcsec are converted by
    the units VizieR states; a radius without a unit is read as kpc, as in the authors' table.

    Where the labels come from: ``TT``, ``Bar``, ``Ring``, ``SDSS`` as public Galaxy Zoo DECaLS
    scripts read them after fetching this catalogue with astroquery, and ``_RA``, ``_DE``,
    ``Bar``, ``Pair``, ``Int`` as a public script reads its VizieR CSV of
    ``J/ApJS/186/427/table2``; the authors' own names (``z``, ``Mass``, ``SFRT``, ``SFRM``,
    ``bOverA``, ``Rp50_g``, ``Rp90_g``, ``g``, ``r``, ``g-r``, ``TType``) as a notebook prints them
    from their FITS release (github.com/mhuertascompany/IAC_XXX_WINTER). The VizieR ReadMe
    itself could not be read when this was written, so each quantity is matched against several
    likely labels (``_VIZIER_LABELS``, found from the first query's one row), and a table lacking
    one raises an error naming it.

    Arguments:
        cache_dir: folder for the cache file (created if absent).
        server: a VizieR mirror host (default ``astroquery.vizier.conf.server``); tests give 127.0.0.1.
        timeout: seconds per request.
        refresh: query VizieR even when a cache exists (the cache is replaced only on success).

    Returns:
        DataFrame with ``nair_abraham``'s columns; rows with sentinels or blanks dropped.

    Raises:
        ValueError: ``cache_dir`` is not a folder.
        CatalogFetchError: VizieR unreachable or answering an error, or its table lacks a quantity
            the book needs; the message names the URL and what is missing.

    References:
        Nair & Abraham 2010, ApJS 186, 427 (arXiv:1001.2401); VizieR J/ApJS/186/427.
    """
    folder = _cache_folder(cache_dir)
    path = folder / NAIR_ABRAHAM_CACHE
    if path.exists() and not refresh:
        try:
            return _book_frame(_read_cache(path))
        except (ValueError, OSError, pd.errors.ParserError):
            pass  # unreadable: fetched again below, and replaced only if that succeeds
    probe, url = _vizier_answer(server, timeout, ["**"], 1)
    labels = _match_labels(list(probe.colnames))
    missing = _missing_quantities(labels)
    if missing:
        looked_for = {q: _VIZIER_LABELS[q.split()[0]] for q in missing}
        raise CatalogFetchError(f"{url}: {NAIR_ABRAHAM_VIZIER} has no column for {missing} (looked for "
                                f"{looked_for}; it has {list(probe.colnames)})")
    table, url = _vizier_answer(server, timeout, list(dict.fromkeys(labels.values())), -1)
    absent = [label for label in labels.values() if label not in table.colnames]
    if absent or len(table) < 2:
        raise CatalogFetchError(f"{url}: the full query returned {len(table)} rows and lacks {absent}")
    raw = _vizier_cache_frame(table, labels)
    header = (f"# Nair & Abraham (2010), VizieR {NAIR_ABRAHAM_VIZIER} via {url}; "
              + ", ".join(f"{q} <- {label}" for q, label in labels.items()) + "\n")
    with atomic_write(path, "w") as fh:
        fh.write(header)
        raw.to_csv(fh, index=False)
    return _book_frame(raw)


class NairAbraham(NamedTuple):
    """The Nair & Abraham catalog if it could be found, where it came from, and a note for the book."""

    data: pd.DataFrame | None
    source: str  # "folder", "cache", "vizier" or "none"
    note: str


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "galnb"


def load_nair_abraham(real_sdss: str | Path | None = None, cache_dir: str | Path | None = None, fetch: bool = True,
                      *, server: str | None = None, timeout: float = 60.0) -> NairAbraham:
    """The Nair & Abraham (2010) catalog from wherever it can be found, or None and how to get it.

    In order: the folder ``real_sdss`` (else ``$GALNB_REAL_SDSS``) when it holds
    ``nair-abraham-2010.fits`` (``nair_abraham``); the VizieR cache in ``cache_dir``; a fetch from
    VizieR (``fetch_nair_abraham``) when ``fetch``, network errors caught. With none of them,
    ``data`` is None and ``note`` says how to get the catalog, so a chapter can skip the section
    and run on.

    Arguments:
        real_sdss: folder of real SDSS pieces, or None for ``$GALNB_REAL_SDSS``.
        cache_dir: folder of the VizieR cache; None: ``$XDG_CACHE_HOME/galnb`` (``~/.cache/galnb``).
        fetch: whether VizieR may be asked when no file or cache is found.
        server, timeout: passed to ``fetch_nair_abraham``.

    Returns:
        ``NairAbraham(data, source, note)``: ``source`` is ``"folder"``, ``"cache"``, ``"vizier"``
        or ``"none"``; ``note`` is one paragraph for the book (what was read, what is missing).

    Raises:
        FileNotFoundError: ``real_sdss`` (or the variable) names something that is not a folder.
        ValueError: ``cache_dir`` is not a folder or ``fetch`` is not a bool.
    """
    if not isinstance(fetch, bool):
        raise ValueError(f"fetch = {fetch!r} is not valid: give True (ask VizieR if needed) or False")
    folder = real_sdss_dir(real_sdss)
    cache = _cache_folder(_default_cache_dir() if cache_dir is None else cache_dir)
    notes = []
    if folder is not None:
        if (folder / NAIR_ABRAHAM_FILE).exists():
            return NairAbraham(nair_abraham(folder), "folder",
                               f"Nair & Abraham (2010) read from {NAIR_ABRAHAM_FILE} in the real-SDSS folder.")
        notes.append(f"{folder} holds no {NAIR_ABRAHAM_FILE}.")
    vizier_note = (f"Nair & Abraham (2010) from VizieR {NAIR_ABRAHAM_VIZIER} (cached in {cache / NAIR_ABRAHAM_CACHE}); "
                   "that table has no u, i or z photometry, so the u - g checks are empty.")
    if (cache / NAIR_ABRAHAM_CACHE).exists():
        try:
            return NairAbraham(_book_frame(_read_cache(cache / NAIR_ABRAHAM_CACHE)), "cache", vizier_note)
        except (ValueError, OSError, pd.errors.ParserError) as err:
            notes.append(f"The cache could not be read ({err}).")
    if fetch:
        try:
            return NairAbraham(fetch_nair_abraham(cache, server=server, timeout=timeout, refresh=True),
                               "vizier", vizier_note)
        except (CatalogFetchError, OSError) as err:
            notes.append(f"Fetching it from VizieR failed: {err}.")
    how = (f"The Nair & Abraham (2010) catalog is not available, so this section is skipped. To show it, set "
           f"${REAL_SDSS_ENV} (or pass real_sdss=FOLDER) to a folder holding {NAIR_ABRAHAM_FILE} (see "
           f"../shared/data/real-sdss/README.md), or let the book reach VizieR once: it then fetches "
           f"{NAIR_ABRAHAM_VIZIER} with astroquery and caches it in {cache}.")
    return NairAbraham(None, "none", " ".join([how, *notes]))


def measure_structure(images: np.ndarray, sky_sigma: float, pixel_scale: float, workers: int | None = None
                      ) -> pd.DataFrame:
    """Structure of the central galaxy of each image, measured as SDSS measures it (statmorph).

    The galaxy is the segment (photutils, 1.5 sigma above the sky after a 1.5-px Gaussian
    smoothing) under the image centre. b/a comes from its second moments; R50 and R90 are
    circular Petrosian radii: the radii holding 50 % and 90 % of the flux within twice the
    Petrosian radius (eta = 0.2), as in the SDSS photometric pipeline (Blanton et al. 2001).

    Arguments:
        images: (N, S, S) one band (e.g. r) in linear flux units, sky-subtracted.
        sky_sigma: sky noise per pixel, in the images' units.
        pixel_scale: arcsec per pixel.
        workers: processes measuring side by side (about 0.5-1.5 s per image each); None: one
            per CPU core. The result does not depend on it.

    Returns:
        One row per image: ``axis_ratio``, ``r50_arcsec``, ``r90_arcsec``, ``concentration``
        (R90/R50), ``asymmetry``, ``smoothness`` and statmorph's ``flag`` (0 good, 1 suspect,
        2 bad; 2 also where no segment covers the centre).

    References:
        Rodriguez-Gomez et al. 2019, MNRAS 483, 4140 (arXiv:1809.08239), statmorph.
        Blanton et al. 2001, AJ 121, 2358 (arXiv:astro-ph/0012085), SDSS Petrosian radii.
    """
    return map_chunks(_measure_structure, np.asarray(images), sky_sigma, pixel_scale, workers=workers)


def _measure_structure(images: np.ndarray, sky_sigma: float, pixel_scale: float) -> pd.DataFrame:
    """:func:`measure_structure` in this process."""
    import warnings

    import statmorph
    from astropy.convolution import Gaussian2DKernel, convolve
    from photutils.aperture import CircularAperture, aperture_photometry
    from photutils.segmentation import detect_sources

    rows = []
    for image in np.asarray(images, dtype=np.float64):
        centre = image.shape[0] // 2
        segments = detect_sources(convolve(image, Gaussian2DKernel(1.5)), 1.5 * sky_sigma, 10)
        label = 0 if segments is None else int(segments.data[centre, centre])
        if label == 0:
            rows.append({**dict.fromkeys(("axis_ratio", "r50_arcsec", "r90_arcsec", "concentration", "asymmetry",
                                          "smoothness"), np.nan), "flag": 2})
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            morph = statmorph.source_morphology(image, (segments.data == label).astype(np.int32),
                                                weightmap=np.full(image.shape, sky_sigma))[0]
            radii = np.linspace(0.5, 2 * morph.rpetro_circ, 200)
            growth = aperture_photometry(image, [CircularAperture((morph.xc_centroid, morph.yc_centroid), r)
                                                 for r in radii])
        flux = np.maximum.accumulate([growth[f"aperture_sum_{k}"][0] for k in range(len(radii))])
        r50, r90 = (float(np.interp(f * flux[-1], flux, radii)) for f in (0.5, 0.9))
        rows.append({"axis_ratio": 1.0 - morph.ellipticity_centroid, "r50_arcsec": r50 * pixel_scale,
                     "r90_arcsec": r90 * pixel_scale, "concentration": r90 / r50, "asymmetry": morph.asymmetry,
                     "smoothness": morph.smoothness, "flag": morph.flag})
    return pd.DataFrame(rows)


def simulated_structure(n: int, seed: int, image_size: int = 192) -> pd.DataFrame:
    """Simulated star formers selected like Nair & Abraham (2010), their structure measured on images.

    Galaxies are drawn with ``simulation.NAIR_ABRAHAM``, star formers kept (``star_forming``),
    their r-band images rendered at 0.396"/px and measured with ``measure_structure``, as SDSS
    measures real ones: b/a, R50 and R90 are not the simulation's true values.

    Arguments:
        n: star-forming galaxies to measure (about 0.5 s each).
        seed: random seed.
        image_size: cutout side in pixels. At the default, 192 px = 76", doubling it changes the
            median R50 by less than 0.01 dex and R90/R50 by 0.05 (150 galaxies); 96 px cut off the
            largest disks' Petrosian apertures and put the median R50 0.04 dex low.

    Returns:
        DataFrame with the columns of ``nair_abraham`` (but ``t_type``), ``asymmetry``, and the
        true ``axis_ratio_true``, ``r50_true_kpc``, ``log_mstar_true`` and ``log_sfr_true``; rows
        statmorph flags as bad are dropped.
    """
    from . import simulation

    drawn = simulation.simulate_catalog(3 * n, seed, simulation.NAIR_ABRAHAM, internal=True)
    cat = drawn[(drawn.log_sfr - drawn.log_mstar).to_numpy() > _MIN_LOG_SSFR].head(n).reset_index(drop=True)
    bands = simulation.render_bands(cat, image_size, seed)
    measured = measure_structure(bands[:, 1], simulation.SKY_SIGMA["r"], simulation.PIXEL_SCALE)
    scale = _kpc_per_arcsec(cat.z)
    out = pd.DataFrame({"z": cat.z, "log_mstar": cat.log_mstar, "log_ssfr": cat.log_sfr - cat.log_mstar,
                        "axis_ratio": measured.axis_ratio, "r50_kpc": measured.r50_arcsec * scale,
                        "u_g": cat.mag_u - cat.mag_g, "g_r": cat.mag_g - cat.mag_r, "mag_r": cat.mag_r,
                        "r90_kpc": measured.r90_arcsec * scale, "r50_arcsec": measured.r50_arcsec,
                        "concentration": measured.concentration, "log_sfr": cat.log_sfr,
                        **{c: cat[c] for c in MAG_COLUMNS if c != "mag_r"},
                        "asymmetry": measured.asymmetry, "axis_ratio_true": cat.axis_ratio,
                        "r50_true_kpc": cat.r_half * scale, "log_mstar_true": cat.log_mstar_true,
                        "log_sfr_true": cat.log_sfr_true})
    return out[measured.flag.to_numpy() < 2].reset_index(drop=True)


def star_forming(df: pd.DataFrame, min_log_ssfr: float = _MIN_LOG_SSFR) -> np.ndarray:
    """Boolean mask: log sSFR [1/yr] above ``min_log_ssfr`` (the blue cloud of Brinchmann et al. 2004)."""
    return (df["log_ssfr"] > min_log_ssfr).to_numpy()


def _median_se(values: np.ndarray) -> float:
    """Standard error of the median of roughly normal values, 1.2533 sd / sqrt(n) (NaN below 2 values)."""
    return 1.2533 * float(np.std(values)) / np.sqrt(len(values)) if len(values) > 1 else np.nan


def concentration_by_ssfr(df: pd.DataFrame, ssfr_bins=(-10.8, -10.3, -9.9, -9.5, -8.5)) -> pd.DataFrame:
    """Median Petrosian concentration R90/R50 in bins of log sSFR (disks are less concentrated).

    Arguments:
        df: rows with ``log_ssfr`` and ``r50_kpc``, ``r90_kpc``.
        ssfr_bins: edges in log sSFR [1/yr].

    Returns:
        One row per bin: ``ssfr``, ``n``, ``median`` R90/R50 and ``se`` (standard error of the median).
    """
    rows = []
    for lo, hi in zip(ssfr_bins[:-1], ssfr_bins[1:]):
        c = (df.r90_kpc / df.r50_kpc)[(df.log_ssfr > lo) & (df.log_ssfr < hi)].to_numpy()
        rows.append({"ssfr": f"{lo:g}-{hi:g}", "n": len(c), "median": np.median(c) if len(c) else np.nan,
                     "se": _median_se(c)})
    return pd.DataFrame(rows)


def inclination_reddening(df: pd.DataFrame, colour: str = "g_r", mass_bins=(9.5, 10.0, 10.5, 11.0),
                          edge_on: float = 0.3, face_on: float = 0.9, n_boot: int = 200,
                          seed: int = 0) -> pd.DataFrame:
    """How much redder edge-on disks are than face-on ones at fixed stellar mass.

    A straight line of colour against log10(b/a) is fitted in each mass bin, and its
    difference between b/a = ``edge_on`` and b/a = ``face_on`` reported: the slope uses every
    galaxy, which keeps it measurable on samples with few edge-on disks. Rows without the colour
    (NaN, e.g. u - g in the VizieR table) are left out.

    Arguments:
        df: ``nair_abraham`` or ``simulated_structure`` rows (select star formers first).
        colour: ``"g_r"`` or ``"u_g"``.
        mass_bins: edges in log M*.
        edge_on, face_on: the two axis ratios compared.
        n_boot: bootstrap resamples for the standard error.
        seed: seeds the bootstrap.

    Returns:
        One row per mass bin: ``mass``, ``n``, ``reddening`` (fitted colour at ``edge_on`` minus
        at ``face_on``, mag) and ``se`` (its bootstrap standard error).
    """
    rng = np.random.default_rng(seed)
    lever = np.log10(edge_on) - np.log10(face_on)
    rows = []
    for lo, hi in zip(mass_bins[:-1], mass_bins[1:]):
        inside = df[(df.log_mstar > lo) & (df.log_mstar < hi) & (df.axis_ratio > 0) & np.isfinite(df[colour])]
        x, y = np.log10(inside.axis_ratio.to_numpy()), inside[colour].to_numpy()
        if len(x) < 10:
            rows.append({"mass": f"{lo:g}-{hi:g}", "n": len(x), "reddening": np.nan, "se": np.nan})
            continue
        boot = [np.polyfit(x[i], y[i], 1)[0] for i in rng.integers(0, len(x), (n_boot, len(x)))]
        rows.append({"mass": f"{lo:g}-{hi:g}", "n": len(x), "reddening": float(np.polyfit(x, y, 1)[0] * lever),
                     "se": float(np.std(boot) * abs(lever))})
    return pd.DataFrame(rows)


def balmer_decrement_by_mass(catalog: pd.DataFrame, mass_bins=(9.0, 9.5, 10.0, 10.5, 11.0)) -> pd.DataFrame:
    """Median Balmer decrement of star-forming galaxies by stellar mass, against Garn & Best (2010).

    Arguments:
        catalog: rows with ``log_mstar``, ``flux_ha``, ``flux_hb`` and ``oh_detectable`` (all four
            lines detected), e.g. the simulated store's catalog.
        mass_bins: edges in log M*.

    Returns:
        One row per bin: ``mass``, ``n``, ``median`` Halpha/Hbeta of the detected galaxies with its
        standard error ``se`` (1.25 sd / sqrt(n)), and ``garn_best`` (their relation at the bin's
        median mass, ``galnb.survey.garn_best_balmer_decrement``).
    """
    detected = catalog[catalog.oh_detectable.astype(bool)]
    rows = []
    for lo, hi in zip(mass_bins[:-1], mass_bins[1:]):
        inside = detected[(detected.log_mstar > lo) & (detected.log_mstar < hi)]
        ratio = (inside.flux_ha / inside.flux_hb).to_numpy()
        mass = float(np.median(inside.log_mstar)) if len(inside) else (lo + hi) / 2
        rows.append({"mass": f"{lo:g}-{hi:g}", "n": len(ratio),
                     "median": float(np.median(ratio)) if len(ratio) else np.nan,
                     "se": _median_se(ratio),
                     "garn_best": float(garn_best_balmer_decrement(np.array([mass]))[0])})
    return pd.DataFrame(rows)


def describe_reddening(reddening: dict[str, pd.DataFrame]) -> str:
    """One paragraph comparing simulated and real inclination reddening, bin by bin, from ``compare_structure``.

    Arguments:
        reddening: ``StructureComparison.reddening`` (keys ``"real g-r"``, ``"simulated g-r"``, ...);
            empty when the real catalog was not available.

    Returns:
        Markdown: for each colour, the simulated and real reddening with standard errors per mass
        bin, and in how many bins they differ by less than twice the combined standard error.
    """
    sentences = []
    for colour in ("g-r", "u-g"):
        real, sim = reddening.get(f"real {colour}"), reddening.get(f"simulated {colour}")
        if real is None or sim is None or real.reddening.isna().all():
            continue
        diff = sim.reddening - real.reddening
        agree = int((diff.abs() < 2 * np.hypot(sim.se, real.se)).sum())
        pairs = "; ".join(f"{m}: {s:+.3f} ± {se:.3f} against {r:+.3f} ± {rse:.3f}" for m, s, se, r, rse
                          in zip(real["mass"], sim.reddening, sim.se, real.reddening, real.se))
        sentences.append(f"In {colour.replace('-', ' − ')}, simulated against real, by log M* bin "
                         f"(mag from b/a = 0.9 to 0.3): {pairs}; they agree within twice the combined "
                         f"standard error in {agree} of {len(diff)} bins.")
    return " ".join(sentences)


def size_mass(df: pd.DataFrame, mass_bins=(9.5, 10.0, 10.5, 11.0)) -> pd.DataFrame:
    """Median and scatter of log R50 [kpc] in bins of stellar mass.

    Arguments:
        df: ``nair_abraham`` or ``simulated_structure`` rows.
        mass_bins: edges in log M*.

    Returns:
        One row per bin: ``mass``, ``n``, ``median`` and ``scatter`` (half the 16-84 % range) of log10 R50.
    """
    rows = []
    for lo, hi in zip(mass_bins[:-1], mass_bins[1:]):
        r = np.log10(df.loc[(df.log_mstar > lo) & (df.log_mstar < hi), "r50_kpc"].to_numpy())
        p16, p50, p84 = np.percentile(r, [16, 50, 84]) if len(r) else (np.nan,) * 3
        rows.append({"mass": f"{lo:g}-{hi:g}", "n": len(r), "median": p50, "scatter": (p84 - p16) / 2})
    return pd.DataFrame(rows)


class StructureComparison(NamedTuple):
    """Real against simulated star formers: one table, and the reddening, size and concentration tables."""

    table: pd.DataFrame
    reddening: dict[str, pd.DataFrame]
    sizes: dict[str, pd.DataFrame]
    concentration: dict[str, pd.DataFrame]
    note: str


def compare_structure(real: pd.DataFrame, simulated: pd.DataFrame) -> StructureComparison:
    """Inclination reddening (g - r, u - g) and the size-mass relation of real and simulated star formers.

    Arguments:
        real: ``nair_abraham`` rows; simulated: ``simulated_structure`` rows (measured on images).

    Returns:
        ``table`` (one row per mass bin, columns per sample and quantity), the
        ``inclination_reddening`` tables keyed ``"real g-r"``, ``"simulated u-g"``..., the
        ``size_mass`` and ``concentration_by_ssfr`` tables keyed ``"real"``/``"simulated"``, and a
        one-line ``note``.
    """
    samples = {"real": real[star_forming(real)], "simulated": simulated[star_forming(simulated)]}
    reddening = {f"{kind} {c.replace('_', '-')}": inclination_reddening(d, c)
                 for c in ("g_r", "u_g") for kind, d in samples.items()}
    sizes = {kind: size_mass(d) for kind, d in samples.items()}
    concentration = {kind: concentration_by_ssfr(d) for kind, d in samples.items()}
    table = pd.concat({k: t.set_index("mass")[["reddening", "se"]] for k, t in reddening.items()}
                      | {f"{k} log R50": t.set_index("mass")[["median", "scatter"]] for k, t in sizes.items()}, axis=1)
    note = (f"{len(samples['real']):,} real and {len(samples['simulated']):,} simulated star-forming galaxies; "
            "structure measured on the images of both; reddening in magnitudes with bootstrap standard errors, "
            "radii in log kpc.")
    return StructureComparison(table, reddening, sizes, concentration, note)


#: Morphological classes of ``ssfr_by_morphology``: name -> inclusive T-type range (Nair & Abraham 2010).
MORPHOLOGY_CLASSES = {"E": (-5, -4), "S0": (-3, 0), "Sa": (1, 2), "Sb": (3, 4), "Sc": (5, 6), "Sd-Irr": (7, 10)}


def ssfr_by_morphology(real: pd.DataFrame) -> pd.DataFrame:
    """The Nair & Abraham catalog's two specific SFRs by morphological type, all galaxies.

    ``log_sfr - log_mstar`` comes from the catalog's ``SFRT`` and ``log_ssfr`` from its ``SFRM``
    (a table fetched from VizieR with only one of them derives the other, and the two agree).
    MPA-JHU specific SFRs fall by about two dex from late-type disks to ellipticals
    (Brinchmann et al. 2004), so a column that barely changes with type is not their median.

    Arguments:
        real: ``nair_abraham`` rows (with ``t_type``).

    Returns:
        One row per ``MORPHOLOGY_CLASSES`` entry: ``type``, ``n``, the median ``SFRT - LGM`` and
        ``SFRM`` with standard errors (``se SFRT``, ``se SFRM``).
    """
    ssfr_t = (real.log_sfr - real.log_mstar).to_numpy()
    ssfr_m = real.log_ssfr.to_numpy()
    rows = []
    for name, (lo, hi) in MORPHOLOGY_CLASSES.items():
        sel = ((real.t_type >= lo) & (real.t_type <= hi)).to_numpy()
        rows.append({"type": name, "n": int(sel.sum()),
                     "SFRT - LGM": np.median(ssfr_t[sel]), "se SFRT": _median_se(ssfr_t[sel]),
                     "SFRM": np.median(ssfr_m[sel]), "se SFRM": _median_se(ssfr_m[sel])})
    return pd.DataFrame(rows)


#: Inputs of ``photometric_residuals``: the five magnitudes, alone and with the redshift.
RESIDUAL_INPUTS = {"ugriz": MAG_COLUMNS, "ugriz + z": (*MAG_COLUMNS, "z")}


def photometric_residuals(samples: dict[str, pd.DataFrame], targets=("log_mstar", "log_sfr"),
                          inputs: dict[str, tuple[str, ...]] | None = None, n_boot: int = 300,
                          seed: int = 0) -> pd.DataFrame:
    """How tightly photometry pins each label, in each sample: the scatter a regression leaves.

    Each label is regressed on a quadratic in the inputs (least squares), cross-fitted: the
    galaxies are split in two random halves and each half is predicted by the fit to the other.
    The residuals' robust scatter (the median absolute deviation scaled to a Gaussian sigma,
    1.4826 x) is reported with its bootstrap standard error over galaxies. Without the redshift
    the scatter is mostly the unknown distance; with it, it is what the colours cannot tell
    (mass-to-light ratio, sSFR) plus the label's own noise.

    Arguments:
        samples: name -> rows with the input columns and the ``targets``.
        targets: label columns.
        inputs: name -> input columns (default ``RESIDUAL_INPUTS``).
        n_boot: bootstrap resamples. seed: seeds the split and the bootstrap.

    Returns:
        One row per inputs, target and sample: ``inputs``, ``target``, ``sample``, ``n``,
        ``scatter`` and ``se`` (dex). A sample with fewer than four galaxies per fitted term
        (after dropping rows without the inputs) gets no row.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> mags = pd.DataFrame(rng.normal(17.0, 0.5, (400, 5)), columns=list(MAG_COLUMNS))
        >>> sharp = mags.assign(y=-0.4 * mags.mag_r + rng.normal(0, 0.1, 400))
        >>> blurred = mags.assign(y=-0.4 * mags.mag_r + rng.normal(0, 0.3, 400))
        >>> table = photometric_residuals({"sharp": sharp, "blurred": blurred}, ("y",), {"ugriz": MAG_COLUMNS})
        >>> [round(v, 1) for v in table.scatter]
        [0.1, 0.3]
    """
    rng = np.random.default_rng(seed)

    def design(x: np.ndarray) -> np.ndarray:
        centred = x - x.mean(axis=0)
        k = centred.shape[1]
        pairs = [centred[:, i] * centred[:, j] for i in range(k) for j in range(i, k)]
        return np.column_stack([np.ones(len(x)), centred, *pairs])

    rows = []
    for inputs_name, columns in (inputs or RESIDUAL_INPUTS).items():
        for target in targets:
            for name, df in samples.items():
                d = df[[*columns, target]].dropna()
                x, y = design(d[list(columns)].to_numpy(float)), d[target].to_numpy(float)
                if len(d) < 4 * x.shape[1]:  # too few galaxies with these inputs to fit (e.g. no u, i, z)
                    continue
                half = rng.permutation(len(d)) < len(d) // 2
                residual = np.empty(len(d))
                for fit in (half, ~half):
                    coef = np.linalg.lstsq(x[fit], y[fit], rcond=None)[0]
                    residual[~fit] = y[~fit] - x[~fit] @ coef
                boot = rng.integers(0, len(d), (n_boot, len(d)))
                rows.append({"inputs": inputs_name, "target": target, "sample": name, "n": len(d),
                             "scatter": float(median_abs_deviation(residual, scale="normal")),
                             "se": float(np.std(median_abs_deviation(residual[boot], axis=1, scale="normal")))})
    return pd.DataFrame(rows)


def with_sfrm_sfr(real: pd.DataFrame) -> pd.DataFrame:
    """Nair & Abraham rows with ``log_sfr`` taken as ``SFRM`` + log M* (``log_ssfr + log_mstar``), not ``SFRT``.

    The likelier MPA-JHU median total SFR of the two columns (``ssfr_by_morphology``).
    """
    return real.assign(log_sfr=real.log_ssfr + real.log_mstar)


def compare_label_scatter(real: pd.DataFrame, simulated: pd.DataFrame) -> pd.DataFrame:
    """``photometric_residuals`` of log M* and log SFR for real and simulated star formers, for reading.

    The real log SFR is tried both ways (``SFRT``, and ``SFRM`` + log M* as ``with_sfrm_sfr``);
    where the simulated rows carry the true values behind their catalog labels, the same
    galaxies are also scored against those (sample ``simulated, true labels``), which shows how
    much of the scatter the catalog's errors make. Targets are given by their short names.

    Arguments:
        real: ``nair_abraham`` rows. simulated: ``simulated_structure`` rows (or any with ``z``,
            the magnitudes, ``log_mstar``, ``log_sfr`` and ``log_ssfr``; optionally
            ``log_mstar_true`` and ``log_sfr_true``).

    Returns:
        The ``photometric_residuals`` table, samples ``real``, ``real, SFRM + log M*`` (log SFR only),
        ``simulated`` and, with the true columns, ``simulated, true labels``.
    """
    real, simulated = real[star_forming(real)], simulated[star_forming(simulated)]
    sims = {"simulated": simulated}
    if {"log_mstar_true", "log_sfr_true"} <= set(simulated.columns):
        sims["simulated, true labels"] = simulated.assign(log_mstar=simulated.log_mstar_true,
                                                          log_sfr=simulated.log_sfr_true)
    table = pd.concat([
        photometric_residuals({"real": real, **sims}, targets=("log_mstar",)),
        photometric_residuals({"real": real, "real, SFRM + log M*": with_sfrm_sfr(real), **sims},
                              targets=("log_sfr",))], ignore_index=True)
    return table.assign(target=[QUANTITIES[t].short for t in table.target])


def describe_label_scatter(table: pd.DataFrame, reference: str) -> str:
    """One sentence per inputs and label of a ``photometric_residuals`` table, against ``reference``.

    Each other sample's scatter is compared with the reference sample's, and said to agree when
    within twice the combined standard error. An empty table gives a note that the check was skipped.

    Example:
        >>> t = pd.DataFrame({"inputs": ["ugriz + z"] * 2, "target": ["log_sfr"] * 2, "sample": ["real", "sim"],
        ...                   "n": [900, 800], "scatter": [0.15, 0.11], "se": [0.01, 0.01]})
        >>> print(describe_label_scatter(t, "real"))  # doctest: +NORMALIZE_WHITESPACE
        From ugriz + z, log SFR: real 0.150 ± 0.010 dex; sim 0.110 ± 0.010 (-0.040 ± 0.014, outside twice
        the combined error).
    """
    if table.empty or reference not in set(table["sample"]):
        return (f"The comparison was skipped: no {reference} sample had the inputs and the labels (a catalog "
                "fetched from VizieR has no u, i or z magnitudes).")
    sentences = []
    for (inputs, target), rows in table.groupby(["inputs", "target"], sort=False):
        if reference not in set(rows["sample"]):
            continue
        ref = rows[rows["sample"] == reference].iloc[0]
        parts = [f"{reference} {ref.scatter:.3f} ± {ref.se:.3f} dex"]
        for _, row in rows[rows["sample"] != reference].iterrows():
            diff, se = row.scatter - ref.scatter, float(np.hypot(row.se, ref.se))
            agree = "within" if abs(diff) <= 2 * se else "outside"
            parts.append(f"{row['sample']} {row.scatter:.3f} ± {row.se:.3f} ({diff:+.3f} ± {se:.3f}, "
                         f"{agree} twice the combined error)")
        name = QUANTITIES[target].short if target in QUANTITIES else target
        sentences.append(f"From {inputs}, {name}: " + "; ".join(parts) + ".")
    return " ".join(sentences)


# --------------------------------------------------------------------- cutouts vs real cutouts
#: Folder of the 500 real SkyServer cutouts (Wu & Boada 2019 sample) inside the real-SDSS folder.
_REAL_CUTOUTS = "wu-boada-500"


def real_cutouts(folder: str | Path, n: int, seed: int = 0) -> np.ndarray:
    """Real SDSS gri JPEG cutouts of MGS star formers, each spanning twice its Petrosian R90.

    Arguments:
        folder: the real-SDSS folder (``real_sdss_dir``) holding ``wu-boada-500/``.
        n: cutouts to read (a random subset of the 500).
        seed: chooses the subset.

    Returns:
        (n, 128, 128, 3) uint8.

    Raises:
        FileNotFoundError: the cutouts are not there.

    References:
        Wu & Boada 2019, MNRAS 484, 4683 (arXiv:1810.12913).
    """
    from PIL import Image

    paths = sorted((Path(folder) / _REAL_CUTOUTS).glob("*/*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no cutouts in {Path(folder) / _REAL_CUTOUTS}/*/*.jpg "
                                "(see ../shared/data/real-sdss/README.md)")
    chosen = np.random.default_rng(seed).choice(len(paths), size=min(n, len(paths)), replace=False)
    return np.stack([np.asarray(Image.open(paths[k]).convert("RGB")) for k in sorted(chosen)])


def framed_like_skyserver(n: int, seed: int, size: int = 128, field_in_r90: float = 5.0) -> np.ndarray:
    """Simulated MGS star formers framed as the real cutouts are: the field a fixed multiple of R90.

    R90 is measured (``measure_structure``) on an r-band image at the native 0.396"/px, then
    the galaxy is drawn again at the pixel scale that makes ``size`` pixels span
    ``field_in_r90`` x R90. The real cutouts' README says about 2 x petroR90, but their galaxies'
    half-light radius in the displayed light is 17 px of 128, which the simulated galaxies reach
    at about 5 x R90; the default frames them alike on that measured size.

    Arguments:
        n: galaxies. seed: random seed. size: cutout side in pixels.
        field_in_r90: field width in units of the measured Petrosian R90.

    Returns:
        (n, size, size, 3) uint8 RGB, stretched as the book's cutouts are.
    """
    from . import simulation

    cat = simulation.simulate_catalog(n, seed, internal=True)
    r_band = simulation.render_bands(cat, 96, seed)[:, 1]
    r90 = measure_structure(r_band, simulation.SKY_SIGMA["r"], simulation.PIXEL_SCALE).r90_arcsec
    r90 = r90.fillna(3.0 * cat.r_half).to_numpy()
    return simulation.render_images(cat, size, seed, pixel_scale=field_in_r90 * r90 / size)


def cutout_statistics(images: np.ndarray, workers: int | None = None) -> pd.DataFrame:
    """Scale-free statistics of RGB cutouts centred on a galaxy that spans the field.

    On the summed R + G + B light: statmorph's concentration C = 5 log10(r80/r20), asymmetry
    and smoothness (clumpiness). Colour gradient: log10(R/B) of the sky-subtracted light within
    the inner eighth of the field's width minus in the ring from a quarter to seven-sixteenths
    of it (positive: a redder centre, as a yellow bulge in a blue disk). The sky level and
    noise are read from a 6-pixel border.

    Arguments:
        images: (N, S, S, 3) uint8 RGB, both sets stretched for display (the simulated ones as
            ``make_lupton_rgb``, SkyServer's with its own asinh stretch), so the statistics are
            compared, not read as physical.
        workers: processes measuring side by side; None: one per CPU core. The result does not
            depend on it.

    Returns:
        One row per image: ``colour_gradient``, ``concentration``, ``asymmetry``, ``smoothness``.
    """
    return map_chunks(_cutout_statistics, np.asarray(images), workers=workers)


def _cutout_statistics(images: np.ndarray) -> pd.DataFrame:
    """:func:`cutout_statistics` in this process."""
    import warnings

    import statmorph
    from photutils.segmentation import detect_sources

    rows = []
    for rgb in np.asarray(images, dtype=np.float64):
        size = rgb.shape[0]
        light = rgb.sum(axis=2)
        border = np.concatenate([light[:6].ravel(), light[-6:].ravel(), light[:, :6].ravel(), light[:, -6:].ravel()])
        sky, noise = np.median(border), median_abs_deviation(border, scale="normal") + 1e-3
        light = light - sky
        yy, xx = np.indices(light.shape) - (size - 1) / 2
        radius = np.hypot(xx, yy)
        inner, ring = radius < size / 8, (radius > size / 4) & (radius < 7 * size / 16)
        edge = np.concatenate([rgb[:6].reshape(-1, 3), rgb[-6:].reshape(-1, 3), rgb[:, :6].reshape(-1, 3),
                               rgb[:, -6:].reshape(-1, 3)])
        red, blue = (rgb[..., c] - np.median(edge[:, c]) for c in (0, 2))  # sky-subtracted R and B

        def log_ratio(region: np.ndarray) -> float:
            return float(np.log10(max(red[region].mean(), 1e-3) / max(blue[region].mean(), 1e-3)))

        gradient = log_ratio(inner) - log_ratio(ring)
        segments = detect_sources(light, 2.0 * noise, 10)
        label = 0 if segments is None else int(segments.data[size // 2, size // 2])
        row = {"colour_gradient": gradient, "concentration": np.nan, "asymmetry": np.nan, "smoothness": np.nan}
        if label:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                morph = statmorph.source_morphology(light, (segments.data == label).astype(np.int32),
                                                    weightmap=np.full(light.shape, noise))[0]
            if morph.flag < 2:
                row.update(concentration=morph.concentration, asymmetry=morph.asymmetry, smoothness=morph.smoothness)
        rows.append(row)
    return pd.DataFrame(rows)


def compare_statistics(real: pd.DataFrame, simulated: pd.DataFrame, n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Median of each column for real and simulated rows, their difference, and bootstrap errors.

    Arguments:
        real, simulated: rows of the same columns (e.g. ``cutout_statistics``).
        n_boot: bootstrap resamples. seed: seeds them.

    Returns:
        One row per column: ``real``, ``simulated``, ``difference`` (simulated - real) and
        ``difference_se`` (bootstrap standard error of the difference of medians).
    """
    rng = np.random.default_rng(seed)

    def boot_medians(values: np.ndarray) -> np.ndarray:
        values = values[np.isfinite(values)]
        return np.median(values[rng.integers(0, len(values), (n_boot, len(values)))], axis=1)

    rows = []
    for column in real.columns:
        a, b = real[column].to_numpy(float), simulated[column].to_numpy(float)
        rows.append({"statistic": column, "real": np.nanmedian(a), "simulated": np.nanmedian(b),
                     "difference": np.nanmedian(b) - np.nanmedian(a),
                     "difference_se": float(np.std(boot_medians(b) - boot_medians(a)))})
    return pd.DataFrame(rows)
