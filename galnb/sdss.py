"""The real SDSS pipeline: the CFM paper's selection from SkyServer, cutouts, the common store.

Three steps, each resumable, each usable alone:

1. ``query_catalog`` runs the selection (``selection_sql``) on SkyServer in objID-ordered
   chunks through ``astroquery.sdss`` and caches the answer as ``catalog_raw.csv``.
2. ``clean_catalog`` maps MPA-JHU / photometric columns to the book's names, derives A_V
   and M_BH, and drops rows with sentinel or non-finite values.
3. ``download_cutouts`` fetches gri JPEGs from SkyServer's ImgCutout service at the native
   0.396"/px into ``cutouts/<objid>.jpg`` (a few threads, retries with back-off, every
   JPEG validated, atomic writes); ``download_sdss`` chains all three and writes the store
   with ``galnb.data.write_store``.

Where the book's columns come from (DR17 table.column):

=================  ================================================================
``objid``          PhotoObj.objID (the spectrum's SpecObj.bestObjID)
``z``              SpecObj.z
``log_mstar``      galSpecExtra.lgm_tot_p50 (total stellar mass, median of the PDF)
``log_sfr``        galSpecExtra.sfr_tot_p50 (total SFR, Brinchmann et al. 2004)
``oh12``           galSpecExtra.oh_p50 (Tremonti et al. 2004)
``dn4000``         galSpecIndx.d4000_n (Balogh et al. 1999 narrow definition)
``av``             stellar-continuum A_V from the Balmer decrement (see ``balmer_av``)
``av_gas``         nebular A_V from the same decrement
``flux_*``         galSpecLine.{h_alpha,h_beta,nii_6584,oiii_5007}_flux [1e-17 erg/s/cm2]
``sigma_v``        SpecObj.velDisp [km/s]
``log_mbh``        M-sigma of McConnell & Ma (2013): 8.32 + 5.64 log10(sigma_v / 200 km/s)
``oh_detectable``  True: BPT class 1 has S/N > 3 in all four BPT lines, so O/H is measured
``mag_*``          PhotoObj.modelMag_{u,g,r,i,z} (not corrected for Galactic extinction)
``magerr_*``       PhotoObj.modelMagErr_{u,g,r,i,z}
=================  ================================================================

MPA-JHU gives no A_V column, so A_V is derived here from the Balmer decrement of
galSpecLine as Calzetti (2000) did when she found the 0.44 ratio: the gas reddening is
measured with the Galactic curve (Cardelli et al. 1989, R_V = 3.1; k(Ha) = 2.53, k(Hb) = 3.61),
E(B-V)_gas = 2.5 / (k(Hb) - k(Ha)) log10[(Ha/Hb) / 2.86] and A_V,gas = 3.1 E(B-V)_gas; the
stellar continuum sees E(B-V)_stars = 0.44 E(B-V)_gas through the Calzetti curve (R_V = 4.05),
A_V = 4.05 x 0.44 E(B-V)_gas, the quantity the simulated survey's ``av`` also is. Decrements
below the case-B value 2.86 give A_V = 0. Caveat: the DR7 MPA-JHU Hbeta fluxes are slightly
low (Groves, Brinchmann & Walcher 2012), which raises Balmer-decrement A_V by ~0.1 mag; no
correction is applied.

Velocity dispersions of star-forming (disk-dominated) spectra are less reliable than those of
the spheroids the SDSS fit was designed for, so ``log_mbh`` from M-sigma is rough for this
sample; rows without a positive dispersion error are removed. ``log_sfr`` is the MPA-JHU total
SFR: fibre SFR from the lines (Brinchmann et al. 2004) with the aperture correction of
Salim et al. (2007).

References:
    Yunus, Wu & Holwerda 2025, the CFM paper, Section 2 (selection).
    Brinchmann et al. 2004, MNRAS 351, 1151 (arXiv:astro-ph/0311060), MPA-JHU SFRs, BPT classes.
    Tremonti et al. 2004, ApJ 613, 898 (arXiv:astro-ph/0405537), O/H.
    Calzetti et al. 2000, ApJ 533, 682 (arXiv:astro-ph/9911459), attenuation curve.
    Cardelli, Clayton & Mathis 1989, ApJ 345, 245, Galactic extinction curve.
    Groves, Brinchmann & Walcher 2012, MNRAS 419, 1402 (arXiv:1109.2597), Hbeta in MPA-JHU.
    Salim et al. 2007, ApJS 173, 267 (arXiv:0704.3611), SFR aperture corrections.
    McConnell & Ma 2013, ApJ 764, 184 (arXiv:1211.2816), M_BH-sigma.
    Strauss et al. 2002, AJ 124, 1810 (arXiv:astro-ph/0206225), Main Galaxy Sample.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import random
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .data import Store, StoreError, load_store, stack_cutouts, write_store
from .io import atomic_write, temporary_memmap
from .properties import BANDS, LINES, MAG_COLUMNS, MAGERR_COLUMNS
from .runs import SCALES
from .survey import PIXEL_SCALE, R_MAX, R_MIN, balmer_av, mbh_from_sigma

__all__ = [
    "SKYSERVER",
    "DATA_RELEASE",
    "CUTOUT_PATH",
    "RAW_COLUMNS",
    "CATALOG_COLUMNS",
    "FUNNEL_STAGES",
    "SdssError",
    "selection_sql",
    "query_catalog",
    "clean_catalog",
    "cutout_url",
    "download_cutouts",
    "download_sdss",
    "main",
]

#: SkyServer's root URL.
SKYSERVER = "https://skyserver.sdss.org"
#: SDSS data release of the SQL and cutout endpoints (DR17; Abdurro'uf et al. 2022, ApJS 259, 35).
DATA_RELEASE = 17
#: SkyServer's ImgCutout service, below ``SKYSERVER``.
CUTOUT_PATH = "/dr{dr}/SkyServerWS/ImgCutout/getjpeg"

#: Columns of the SQL answer (aliases in ``selection_sql``), cached in ``catalog_raw.csv``.
RAW_COLUMNS: tuple[str, ...] = (
    "objid", "specobjid", "ra", "dec", "z", "veldisp", "veldisperr", "bptclass",
    "lgm_tot_p50", "sfr_tot_p50", "oh_p50", "d4000_n",
    "h_alpha_flux", "h_beta_flux", "nii_6584_flux", "oiii_5007_flux",
    *(f"modelmag_{b}" for b in BANDS), *(f"modelmagerr_{b}" for b in BANDS), "petror90_r",
)
#: Columns of the store's catalog.
CATALOG_COLUMNS: tuple[str, ...] = (
    "objid", "ra", "dec", "z", "log_mstar", "log_sfr", "oh12", "dn4000", "av", "av_gas",
    "sigma_v", "log_mbh", *LINES, "oh_detectable", *MAG_COLUMNS, *MAGERR_COLUMNS, "petro_r90",
)
_LINE_SOURCES = dict(zip(LINES, ("h_alpha_flux", "h_beta_flux", "nii_6584_flux", "oiii_5007_flux")))
#: The cuts from the SkyServer answer to the store, as written to ``funnel.csv``: (stage, description).
FUNNEL_STAGES: tuple[tuple[str, str], ...] = (
    ("SkyServer selection", "spectroscopic galaxies, BPT star-forming (bptclass = 1), 16 < modelMag_r < 17.78, "
                            "valid M*, SFR, O/H, Dn4000, Balmer lines and ugriz (the SQL)"),
    ("finite/physical", "all catalog values finite, sigma_v > 0 (for M_BH)"),
    ("sampled", "random subset of the requested size (seeded)"),
)


class SdssError(RuntimeError):
    """SkyServer answered badly (error, empty, missing column, broken cutout after retries)."""


class _Retryable(Exception):
    """A transient failure (HTTP 5xx/429, time-out, dropped connection, broken JPEG)."""


def selection_sql(top: int, after: int = 0) -> str:
    """The CFM paper's sample as SkyServer (DR17) SQL: one objID-ordered chunk.

    Spectroscopic galaxies (SpecObj.class = 'GALAXY', science primary, zWarning = 0, reliable
    MPA-JHU fit), BPT star-forming (galSpecExtra.bptclass = 1), 16 < PhotoObj.modelMag_r <
    17.78, and no sentinel (-9999, -99.9, -1) in stellar mass, SFR, O/H, Dn4000, the Balmer
    lines or the ugriz magnitudes. Non-finite values are dropped later by ``clean_catalog``.

    Arguments:
        top: at most this many rows (``SELECT TOP``).
        after: only objIDs above this one (paging; rows come ordered by objID).
    Returns:
        the SQL text; its columns are ``RAW_COLUMNS``.

    Example:
        >>> sql = selection_sql(10)
        >>> "e.bptclass = 1" in sql and "p.modelMag_r > 16" in sql and "p.modelMag_r < 17.78" in sql
        True
    """
    mags = ", ".join(f"p.modelMag_{b} AS modelmag_{b}" for b in BANDS)
    errs = ", ".join(f"p.modelMagErr_{b} AS modelmagerr_{b}" for b in BANDS)
    valid_mags = " AND ".join(f"p.modelMag_{b} BETWEEN 0 AND 40 AND p.modelMagErr_{b} > 0" for b in BANDS)
    return f"""SELECT TOP {int(top)}
  p.objID AS objid, CAST(s.specObjID AS VARCHAR(20)) AS specobjid, p.ra AS ra, p.dec AS dec,
  s.z AS z, s.velDisp AS veldisp, s.velDispErr AS veldisperr, e.bptclass AS bptclass,
  e.lgm_tot_p50 AS lgm_tot_p50, e.sfr_tot_p50 AS sfr_tot_p50, e.oh_p50 AS oh_p50, x.d4000_n AS d4000_n,
  l.h_alpha_flux AS h_alpha_flux, l.h_beta_flux AS h_beta_flux,
  l.nii_6584_flux AS nii_6584_flux, l.oiii_5007_flux AS oiii_5007_flux,
  {mags},
  {errs},
  p.petroR90_r AS petror90_r
FROM SpecObj AS s
  JOIN galSpecInfo AS i ON i.specObjID = s.specObjID
  JOIN galSpecExtra AS e ON e.specObjID = s.specObjID
  JOIN galSpecIndx AS x ON x.specObjID = s.specObjID
  JOIN galSpecLine AS l ON l.specObjID = s.specObjID
  JOIN PhotoObj AS p ON p.objID = s.bestObjID
WHERE s.class = 'GALAXY' AND s.sciencePrimary = 1 AND s.zWarning = 0 AND i.reliable = 1
  AND e.bptclass = 1
  AND p.modelMag_r > {R_MIN:g} AND p.modelMag_r < {R_MAX:g}
  AND e.lgm_tot_p50 > 0 AND e.sfr_tot_p50 > -99 AND e.oh_p50 > 0 AND x.d4000_n > 0
  AND l.h_alpha_flux > 0 AND l.h_beta_flux > 0
  AND {valid_mags}
  AND p.objID > {int(after)}
ORDER BY p.objID"""


# --------------------------------------------------------------------------- retries


def _with_retries(attempt: Callable[[], object], what: str, *, retries: int, backoff: float,
                  stop: threading.Event | None = None):
    """Call ``attempt`` until it succeeds; on ``_Retryable`` wait backoff * 2**k (+ jitter)."""
    for k in range(retries + 1):
        if stop is not None and stop.is_set():
            raise SdssError(f"{what}: cancelled because another download failed")
        try:
            return attempt()
        except _Retryable as err:
            if k == retries:
                raise SdssError(f"{what}: {err} (gave up after {retries + 1} attempts)") from err
            delay = backoff * 2**k * (1 + 0.25 * random.random())
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- catalog


def _sql_chunk(sql: str, *, base_url: str, data_release: int, timeout: float) -> tuple[pd.DataFrame, str]:
    """One SQL request through astroquery; the answer as a DataFrame and the endpoint URL.

    ``SDSS.query_sql_async`` (not ``query_sql``) is used so that we see the HTTP status (to
    retry 5xx) and parse the CSV ourselves with pandas: astroquery's parser returns ``None``
    for an empty answer and turns IDs into uint64 astropy columns.
    """
    import requests
    from astroquery.sdss import SDSS, conf

    with conf.set_temp("skyserver_baseurl", base_url.rstrip("/")):
        try:
            response = SDSS.query_sql_async(sql, timeout=timeout, data_release=data_release, cache=False)
        except (requests.Timeout, requests.ConnectionError) as err:
            raise _Retryable(f"{type(err).__name__}: {err}") from err
    url = response.url.split("?")[0]
    if response.status_code >= 500 or response.status_code == 429:
        raise _Retryable(f"HTTP {response.status_code} from {url}")
    if response.status_code >= 400:
        raise SdssError(f"{url}: HTTP {response.status_code}: {response.text[:300]!r}")
    return _parse_csv(response.text, url), url


def _parse_csv(text: str, url: str) -> pd.DataFrame:
    """SkyServer's CSV (a ``#Table1`` line, a header, rows) as a DataFrame with ``RAW_COLUMNS``."""
    if "error_message" in text or text.lstrip().startswith("<"):
        raise SdssError(f"{url}: SkyServer returned an error instead of CSV: {text.strip()[:300]!r}")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise SdssError(f"{url}: empty answer (no header, no rows) to the selection query")
    header = [c.strip().lower() for c in lines[0].split(",")]
    missing = [c for c in RAW_COLUMNS if c not in header]
    if missing:
        raise SdssError(f"{url}: the answer lacks column(s) {missing}; got {header}")
    frame = pd.read_csv(io.StringIO("\n".join(lines)), dtype={"specobjid": str})
    frame.columns = header
    try:
        frame["objid"] = frame["objid"].astype(np.int64)
    except (TypeError, ValueError) as err:
        raise SdssError(f"{url}: column objid is not integer ({err})") from err
    return frame[list(RAW_COLUMNS)]


def query_catalog(path: str | Path | None = None, *, base_url: str = SKYSERVER, data_release: int = DATA_RELEASE,
                  chunk: int = 50_000, max_rows: int | None = None, timeout: float = 300.0, retries: int = 4,
                  backoff: float = 2.0, progress: bool = True) -> pd.DataFrame:
    """The selection's rows (``RAW_COLUMNS``), from the cache at ``path`` or from SkyServer.

    The query is sent in chunks of ``chunk`` rows ordered by objID, each asking for objIDs
    above the last one received, so no chunk runs into SkyServer's row or time limits. The
    whole answer is written atomically to ``path`` (with ``path.with_suffix('.json')``
    recording the SQL), so an interrupted query leaves no cache and a rerun reuses a
    complete one.

    Arguments:
        path: cache file (``catalog_raw.csv``), or None for no cache.
        base_url: SkyServer root (tests point it at 127.0.0.1).
        data_release: SDSS data release of the SQL endpoint.
        chunk: rows per request.
        max_rows: stop after this many rows (None: the whole selection).
        timeout: seconds per request.
        retries, backoff: extra attempts on HTTP 5xx / time-outs, waiting backoff * 2**k s.
    Returns:
        (N rows) the raw answer, ordered by objid.
    Raises:
        SdssError naming the URL when the answer is empty, lacks a column or is an error.
    """
    sql_key = hashlib.sha256(selection_sql(0).encode()).hexdigest()[:16]
    if path is not None:
        path = Path(path)
        sidecar = path.with_suffix(".json")
        if path.exists() and sidecar.exists():
            info = json.loads(sidecar.read_text())
            if info.get("sql_sha") == sql_key and info.get("data_release") == data_release \
                    and info.get("max_rows") == max_rows:
                return _parse_csv(path.read_text(), str(path))
    frames: list[pd.DataFrame] = []
    after, total, url = 0, 0, base_url
    while max_rows is None or total < max_rows:
        top = chunk if max_rows is None else min(chunk, max_rows - total)
        what = f"SQL query to {base_url} (rows after objID {after})"
        frame, url = _with_retries(
            lambda: _sql_chunk(selection_sql(top, after), base_url=base_url, data_release=data_release,
                               timeout=timeout),
            what, retries=retries, backoff=backoff)
        if len(frame) == 0:
            break
        last = int(frame["objid"].max())
        if last <= after:
            raise SdssError(f"{url}: paging failed, the answer holds no objID above {after}")
        frames.append(frame)
        total += len(frame)
        after = last
        if progress:
            print(f"SkyServer: {total} rows", file=sys.stderr)
        if len(frame) < top:
            break
    if not frames:
        raise SdssError(f"{url}: the selection query returned no rows (SQL:\n{selection_sql(chunk)})")
    raw = pd.concat(frames, ignore_index=True).drop_duplicates("objid").sort_values("objid", ignore_index=True)
    if path is not None:
        with atomic_write(path, "w") as fh:
            fh.write("#Table1\n")
            raw.to_csv(fh, index=False)
        with atomic_write(sidecar, "w") as fh:
            json.dump({"sql_sha": sql_key, "data_release": data_release, "max_rows": max_rows, "base_url": base_url,
                       "rows": len(raw), "sql": selection_sql(chunk)}, fh, indent=1)
    return raw


def clean_catalog(raw: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The raw answer in the book's columns (``CATALOG_COLUMNS``), unphysical rows removed.

    Arguments:
        raw: (N rows) with ``RAW_COLUMNS``.
    Returns:
        (catalog with M <= N rows, ordered by objid; M).
    """
    av, av_gas = balmer_av(raw["h_alpha_flux"].to_numpy(float), raw["h_beta_flux"].to_numpy(float))
    sigma = raw["veldisp"].to_numpy(float)
    cat = pd.DataFrame({
        "objid": raw["objid"].astype(np.int64),
        "ra": raw["ra"].astype(float), "dec": raw["dec"].astype(float), "z": raw["z"].astype(float),
        "log_mstar": raw["lgm_tot_p50"].astype(float), "log_sfr": raw["sfr_tot_p50"].astype(float),
        "oh12": raw["oh_p50"].astype(float), "dn4000": raw["d4000_n"].astype(float),
        "av": av, "av_gas": av_gas, "sigma_v": sigma, "log_mbh": mbh_from_sigma(sigma),
        **{line: raw[src].astype(float) for line, src in _LINE_SOURCES.items()},
        "oh_detectable": np.ones(len(raw), dtype=bool),
        **{f"mag_{b}": raw[f"modelmag_{b}"].astype(float) for b in BANDS},
        **{f"magerr_{b}": raw[f"modelmagerr_{b}"].astype(float) for b in BANDS},
        "petro_r90": raw["petror90_r"].astype(float),
    })
    values = cat.drop(columns=["objid", "oh_detectable"]).to_numpy(float)
    keep = (np.isfinite(values).all(axis=1) & (values > -99).all(axis=1) & (sigma > 0)
            & (raw["veldisperr"].to_numpy(float) > 0))
    keep &= (cat["mag_r"] > R_MIN).to_numpy() & (cat["mag_r"] < R_MAX).to_numpy()
    cat = cat[keep].sort_values("objid", ignore_index=True)
    return cat[list(CATALOG_COLUMNS)], len(cat)


# --------------------------------------------------------------------------- cutouts


def cutout_url(ra: float, dec: float, *, base_url: str = SKYSERVER, data_release: int = DATA_RELEASE,
               image_size: int = 128, pixel_scale: float = PIXEL_SCALE) -> str:
    """SkyServer's ImgCutout URL for a gri JPEG centred on (ra, dec) [deg].

    Arguments:
        ra, dec: centre in degrees.
        base_url: SkyServer root; data_release: its data release.
        image_size: side in pixels; pixel_scale: arcsec per pixel (SDSS native by default).
    Returns:
        the URL.

    Example:
        >>> cutout_url(180.0, 1.5, image_size=64)
        'https://skyserver.sdss.org/dr17/SkyServerWS/ImgCutout/getjpeg?ra=180.000000&dec=1.500000&scale=0.396&width=64&height=64'
    """
    query = f"ra={ra:.6f}&dec={dec:.6f}&scale={pixel_scale:g}&width={image_size}&height={image_size}"
    return base_url.rstrip("/") + CUTOUT_PATH.format(dr=data_release) + "?" + query


def _check_jpeg(data: bytes, image_size: int) -> None:
    """Raise ``_Retryable`` unless ``data`` is a complete RGB JPEG of image_size x image_size."""
    from PIL import Image

    if not data.startswith(b"\xff\xd8"):
        raise _Retryable(f"not a JPEG ({len(data)} bytes starting {data[:16]!r})")
    if b"\xff\xd9" not in data[-64:]:  # Pillow can be told to accept truncated files; we never do
        raise _Retryable(f"truncated JPEG ({len(data)} bytes, no end-of-image marker)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            shape = np.asarray(im).shape
    except (OSError, SyntaxError, ValueError) as err:
        raise _Retryable(f"unreadable JPEG ({err})") from err
    if shape != (image_size, image_size, 3):
        raise _Retryable(f"JPEG is {shape}, expected ({image_size}, {image_size}, 3)")


def _fetch(url: str, timeout: float) -> bytes:
    """GET ``url`` (urllib: one plain request per cutout needs no session or astroquery)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        if err.code >= 500 or err.code == 429:
            raise _Retryable(f"HTTP {err.code}") from err
        raise SdssError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise _Retryable(f"{type(err).__name__}: {reason or 'connection dropped'}") from err


def _valid_file(path: Path, image_size: int) -> bool:
    try:
        _check_jpeg(path.read_bytes(), image_size)
    except (_Retryable, OSError):
        return False
    return True


def download_cutouts(catalog: pd.DataFrame, folder: str | Path, *, base_url: str = SKYSERVER,
                     data_release: int = DATA_RELEASE, image_size: int = 128, workers: int = 4,
                     timeout: float = 30.0, retries: int = 5, backoff: float = 1.0,
                     progress: bool = True) -> list[Path]:
    """Fetch the gri cutout of every row into ``folder/<objid>.jpg``, skipping valid ones.

    A few threads share the work; each request has a time-out; HTTP 5xx/429, time-outs,
    dropped connections and broken JPEGs are retried with exponential back-off; every JPEG
    is opened fully by Pillow and must be image_size x image_size RGB before it is written
    (to a temporary file, then renamed). On the first cutout that stays broken the
    remaining downloads are cancelled and the error raised; the cutouts already written are
    complete and are kept for the next run.

    Arguments:
        catalog: (N rows) with ``objid``, ``ra``, ``dec``.
        folder: where the JPEGs go.
        image_size: cutout side in pixels at 0.396"/px.
        workers: concurrent requests (be gentle with SkyServer: a few).
        timeout: seconds per request; retries, backoff: as in ``query_catalog``.
    Returns:
        the N paths, in catalog order.
    Raises:
        SdssError naming the URL and the problem.
    """
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # left by a killed process (atomic_write cleans up otherwise)
        stale.unlink(missing_ok=True)
    paths = [folder / f"{int(objid)}.jpg" for objid in catalog["objid"]]
    stop = threading.Event()

    def one(path: Path, ra: float, dec: float) -> None:
        if path.exists() and _valid_file(path, image_size):
            return
        url = cutout_url(ra, dec, base_url=base_url, data_release=data_release, image_size=image_size)

        def attempt() -> bytes:
            data = _fetch(url, timeout)
            _check_jpeg(data, image_size)
            return data

        data = _with_retries(attempt, f"{url} -> {path}", retries=retries, backoff=backoff, stop=stop)
        with atomic_write(path) as fh:
            fh.write(data)

    bar = tqdm(total=len(paths), disable=not progress, desc="SDSS cutouts")
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sdss-cutout")
    try:
        pending = {pool.submit(one, p, float(ra), float(dec))
                   for p, ra, dec in zip(paths, catalog["ra"], catalog["dec"])}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            bar.update(len(done))
            for future in done:
                future.result()  # the first failure raises here
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
    return paths


# --------------------------------------------------------------------------- the store


def download_sdss(root: str | Path, n: int | None, seed: int, base_url: str = SKYSERVER, workers: int = 4,
                  image_size: int = 128, progress: bool = True, *, data_release: int = DATA_RELEASE,
                  chunk: int = 50_000, timeout: float = 30.0, retries: int = 5, backoff: float = 1.0) -> Store:
    """The CFM paper's SDSS sample in the common store at ``root``, downloading what is missing.

    ``root`` keeps the raw answer (``catalog_raw.csv``) and the JPEGs (``cutouts/``), so a
    rerun after an interruption fetches only what it lacks; a store already written with
    the same parameters is returned as it is. ``n`` galaxies are drawn at random (``seed``)
    from the whole selection; if the selection is smaller, all of it is used (with a
    warning). The 80/10/10 split uses ``seed`` as well.

    Arguments:
        root: the store's folder (``Run.data_dir``).
        n: number of galaxies, or None for the whole selection.
        seed: seed of the subset and of the split.
        base_url: SkyServer root (tests point it at 127.0.0.1).
        workers: concurrent cutout requests.
        image_size: cutout side in pixels at 0.396"/px (128 in the papers).
        timeout: seconds per cutout request (the SQL gets ten times as long).
    Returns:
        the store, opened by ``galnb.data.load_store``; ``funnel.csv`` beside it counts the cuts.
    Raises:
        SdssError naming the URL or file and the problem; nothing half-written is left.
    """
    root = Path(root)
    raw = query_catalog(root / "catalog_raw.csv", base_url=base_url, data_release=data_release, chunk=chunk,
                        timeout=10 * timeout, retries=retries, backoff=backoff, progress=progress)
    catalog, n_clean = clean_catalog(raw)
    if n_clean == 0:
        raise SdssError(f"{root / 'catalog_raw.csv'}: none of its {len(raw)} rows has finite, physical values")
    n_used = n_clean if n is None else min(n, n_clean)
    if n is not None and n > n_clean:
        warnings.warn(f"asked for {n} SDSS galaxies but the selection has {n_clean}; using all of them", stacklevel=2)
    if n_used < n_clean:
        rows = np.sort(np.random.default_rng(seed).choice(n_clean, n_used, replace=False))
        catalog = catalog.iloc[rows].reset_index(drop=True)
    params = {"n": n, "n_used": n_used, "n_selected": n_clean, "image_size": image_size, "seed": seed,
              "data_release": data_release, "pixel_scale": PIXEL_SCALE, "base_url": base_url,
              "sql": selection_sql(chunk)}
    if (root / "meta.json").exists():
        with_params = json.loads((root / "meta.json").read_text()).get("params")
        if with_params == params:
            return load_store(root)
    paths = download_cutouts(catalog, root / "cutouts", base_url=base_url, data_release=data_release,
                             image_size=image_size, workers=workers, timeout=timeout, retries=retries,
                             backoff=backoff, progress=progress)
    images = _stack(paths, image_size, root)
    with temporary_memmap(images):
        store = write_store(root, catalog, images, seed=seed, source="sdss", params=params)
    funnel = pd.DataFrame({"stage": [s for s, _ in FUNNEL_STAGES], "n": [len(raw), n_clean, n_used],
                           "description": [d for _, d in FUNNEL_STAGES]})
    with atomic_write(root / "funnel.csv", "w") as fh:
        funnel.to_csv(fh, index=False)
    return store


def _stack(paths: Sequence[Path], image_size: int, root: Path) -> np.ndarray:
    """``galnb.data.stack_cutouts``, naming the cutout that became unreadable after download."""
    try:
        return stack_cutouts(list(paths), image_size, root)
    except StoreError as err:
        raise SdssError(f"{err}; delete that cutout and rerun") from err


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m galnb.sdss --run-dir runs --scale paper``: download into ``<run-dir>/<scale>-sdss-seed<seed>/data``.

    Arguments:
        argv: command-line arguments (None: ``sys.argv[1:]``).
    Returns:
        0 (the exit status); errors are raised.
    """
    from .runs import start_chapter

    parser = argparse.ArgumentParser(prog="python -m galnb.sdss", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs", help="root of the run directories ($GALNB_RUN_DIR overrides)")
    parser.add_argument("--scale", default="paper", choices=tuple(SCALES),
                        help="n_galaxies and image_size of this scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-url", default=SKYSERVER)
    parser.add_argument("--data-release", type=int, default=DATA_RELEASE)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per cutout request")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    run = start_chapter("sdss", scale=args.scale, data="sdss", seed=args.seed, device="cpu", run_dir=args.run_dir,
                        show=False)
    store = download_sdss(run.data_dir, run.scale.n_galaxies, args.seed, base_url=args.base_url, workers=args.workers,
                          image_size=run.scale.image_size, progress=not args.quiet, data_release=args.data_release,
                          timeout=args.timeout)
    print(f"SDSS store: {store.root} ({len(store.catalog)} galaxies, {store.image_size} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
