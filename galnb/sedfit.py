"""SED fitting of a galaxy's five SDSS magnitudes with bagpipes: the yardstick of the VAE–NF paper's speed claim.

The VAE–NF paper says its inference is "over 100× faster than SED fitting". Chapter 04 measures
that on the same machine: a bagpipes fit (Carnall et al. 2018) of a few simulated galaxies,
against the flows' seconds per galaxy (chapter 05 times the CFM models' draws). The fit is the usual
photometric one: the catalog redshift fixed, an exponentially declining star-formation
history, Calzetti dust, nebular emission at a fixed ionisation parameter, sampled with
nautilus (bagpipes' sampler when MultiNest is absent).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pandas as pd

__all__ = ["SEDFit", "fit_photometry", "fit_table", "photometry_mujy", "sed_fit_settings"]

_BANDS = ("u", "g", "r", "i", "z")
_AB_ZERO_MUJY = 3631e6  # AB zero point in μJy
#: Error floor added in quadrature to each band (a common allowance for calibration and model error).
_FLOOR = 0.05



def sed_fit_settings(n_live: int = 400) -> dict[str, str]:
    """The fit's settings with ``n_live`` nautilus live points, stated in the book beside the timing."""
    return {
        "star formation history": "exponential: age 0.1 Gyr to the age of the universe at z, τ 0.3-10 Gyr, "
                                  "log formed mass 6-13, Z/Z_sun 0.2-2.5",
        "dust": "Calzetti, A_V 0-3 mag",
        "nebular": "log U = -3",
        "redshift": "fixed at the catalog's",
        "photometry": "ugriz, magnitude errors with a 5 % floor",
        "sampler": f"nautilus, {n_live} live points, one CPU thread",
    }


@dataclass(frozen=True)
class SEDFit:
    """One galaxy's fit: wall time and posterior medians of log M* and log SFR."""

    seconds: float
    log_mstar: float
    log_sfr: float


def photometry_mujy(row: pd.Series) -> np.ndarray:
    """``(5, 2)`` ugriz fluxes and errors in μJy from a catalog row's ``mag_*`` and ``magerr_*``.

    Example:
        >>> row = pd.Series({**{f"mag_{b}": 23.9 for b in "ugriz"}, **{f"magerr_{b}": 0.0 for b in "ugriz"}})
        >>> photometry_mujy(row)[0].round(3).tolist()
        [1.0, 0.05]
    """
    mags = row[[f"mag_{b}" for b in _BANDS]].to_numpy(float)
    errs = row[[f"magerr_{b}" for b in _BANDS]].to_numpy(float)
    flux = _AB_ZERO_MUJY * 10 ** (-0.4 * mags)
    relative = np.hypot(0.4 * np.log(10) * errs, _FLOOR)
    return np.column_stack([flux, relative * flux])


def _filter_files(folder: Path) -> list[str]:
    """SDSS filter curves from speclite, written as the two-column text files bagpipes reads."""
    import speclite.filters

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for band in _BANDS:
        response = speclite.filters.load_filter(f"sdss2010-{band}")
        path = folder / f"sdss_{band}.txt"
        np.savetxt(path, np.column_stack([response.wavelength, response.response]))
        paths.append(str(path))
    return paths


def fit_photometry(row: pd.Series, n_live: int = 400) -> SEDFit:
    """Fit one galaxy's ugriz photometry with bagpipes and time it.

    bagpipes writes its files under ``pipes/`` in the working directory and reloads a fit it
    finds there; the fit runs in a temporary folder, so it is always a fresh one and leaves
    nothing behind.

    Arguments:
        row: a catalog row with ``z``, ``mag_*`` and ``magerr_*``.
        n_live: nautilus live points.
    Returns:
        the wall time of the fit (the sampling alone) and the posterior medians of log M* and
        log SFR.
    """
    from threadpoolctl import threadpool_limits

    with contextlib.redirect_stdout(io.StringIO()):  # bagpipes prints its start-up notes on import
        import bagpipes
        from bagpipes.utils import cosmo

    workdir = Path(tempfile.mkdtemp(prefix="galnb-sedfit-"))
    filters = _filter_files(workdir / "filters")
    z = float(row["z"])
    age_max = float(cosmo.age(z).value)  # Gyr, in bagpipes' own cosmology
    instructions = {
        "redshift": z,
        "exponential": {"age": (0.1, age_max), "tau": (0.3, 10.0), "massformed": (6.0, 13.0),
                        "metallicity": (0.2, 2.5)},
        "dust": {"type": "Calzetti", "Av": (0.0, 3.0)},
        "nebular": {"logU": -3.0},
    }
    phot = photometry_mujy(row)
    try:
        # bagpipes makes its folders in the directory it was imported from (utils.working_dir),
        # then opens them relative to the current one: point both at the temporary folder.
        with (contextlib.chdir(workdir), patch.object(bagpipes.utils, "working_dir", str(workdir)),
              contextlib.redirect_stdout(io.StringIO()), threadpool_limits(1)):
            galaxy = bagpipes.galaxy("galaxy", lambda _: phot, spectrum_exists=False, filt_list=filters)
            fit = bagpipes.fit(galaxy, instructions, run="speed")
            start = time.perf_counter()
            fit.fit(verbose=False, n_live=n_live, sampler="nautilus", use_MPI=False)
            seconds = time.perf_counter() - start
            samples = fit.posterior.samples
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return SEDFit(seconds, float(np.median(samples["stellar_mass"])), float(np.median(np.log10(samples["sfr"]))))


def fit_table(catalog: pd.DataFrame, rows: np.ndarray, n_live: int = 400) -> pd.DataFrame:
    """:func:`fit_photometry` of each of ``rows``, with the catalog's values beside the fit's."""
    out = []
    for row in np.asarray(rows):
        fit = fit_photometry(catalog.iloc[row], n_live)
        out.append({"row": int(row), **asdict(fit), "catalog log_mstar": catalog.iloc[row]["log_mstar"],
                    "catalog log_sfr": catalog.iloc[row]["log_sfr"]})
    return pd.DataFrame(out)

