"""Structure measured on the book's 8-bit cutouts: the three numbers an astronomer measures by hand.

The **measured-structure reference** of chapters 03 and 05 is the photometry model conditioned
also on the axis ratio b/a, the half-light radius R50 and the concentration R90/R50, measured on
the same cutouts the image model sees. A CNN that cannot beat these three numbers has not
learned the images (issue 19). Unlike the true-structure reference, it needs no truth, so it
runs on real SDSS stores too.

The cutouts are 8-bit RGB made with the Lupton et al. (2004) asinh stretch. The light is
recovered by inverting the stretch the simulation used (``simulation.RGB_STRETCH``,
``simulation.RGB_Q``). SkyServer's JPEGs were stretched with parameters of their own, so on
real stores the numbers describe a (monotonically) stretched light: comparable between galaxies,
not equal to SDSS's catalogued b/a or Petrosian radii.

The galaxy is the photutils segment (1.5 sigma above the sky, after a 1.5-px Gaussian
smoothing) under the cutout's centre. b/a comes from the segment's second moments; R50 and R90
are the radii of circular apertures holding 50 and 90 % of its Kron flux (photutils), the Kron
counterpart of SDSS's Petrosian R50 and R90 (Blanton et al. 2001). About 2 ms per cutout.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .data import training_stats
from .io import atomic_write
from .parallel import map_processes

if TYPE_CHECKING:
    from .data import Store

__all__ = ["MEASURED_STRUCTURE_COLUMNS", "MEASURED_FILE", "linear_light", "measure_cutouts", "measure_store",
           "with_measured_structure"]

#: The measured-structure reference's extra condition columns (R50 in pixels of the cutout).
MEASURED_STRUCTURE_COLUMNS: tuple[str, ...] = ("axis_ratio_measured", "r50_measured_px", "concentration_measured")
#: The store's file that caches the measurement, next to ``catalog.parquet``.
MEASURED_FILE = "measured_structure.parquet"
_BORDER = 4  # pixels of each edge that estimate the sky
_CHUNK = 1000  # cutouts read from the memory map and measured at once (bounds memory at paper scale)


def linear_light(images: np.ndarray, stretch: float | None = None, q: float | None = None) -> np.ndarray:
    """The light behind 8-bit asinh-stretched RGB cutouts: the inverse of ``make_lupton_rgb``.

    ``make_lupton_rgb`` (astropy's ``AsinhMapping``) maps the mean intensity I of the three
    bands to 25.5 asinh(Q I / stretch) / asinh(Q / 10) and keeps the colour, so the mean of the
    three 8-bit channels is that value wherever no channel saturates. Pixels it clipped
    (negative sky noise, saturated cores) are not recovered.

    Arguments:
        images: (N, S, S, 3) uint8.
        stretch, q: the stretch's parameters; None takes the simulation's.

    Returns:
        (N, S, S) float64 mean intensity of the scaled i, r, g bands, in nanomaggies per pixel for
        the simulated cutouts.

    Example:
        >>> from astropy.visualization import make_lupton_rgb
        >>> from galnb.simulation import RGB_Q, RGB_STRETCH
        >>> flux = np.full((4, 4), 0.3)
        >>> rgb = make_lupton_rgb(flux, flux, flux, minimum=0.0, stretch=RGB_STRETCH, Q=RGB_Q)
        >>> round(float(linear_light(rgb[None]).mean()), 2)
        0.3
    """
    from .simulation import RGB_Q, RGB_STRETCH

    stretch = RGB_STRETCH if stretch is None else stretch
    q = RGB_Q if q is None else q
    mean = np.asarray(images, dtype=np.float64).mean(axis=-1)
    return np.sinh(mean * np.arcsinh(q / 10) / 25.5) * stretch / q


def measure_cutouts(images: np.ndarray) -> pd.DataFrame:
    """b/a, R50 and R90/R50 of the galaxy at the centre of each 8-bit cutout (see the module docstring).

    The sky level and noise are the mean and standard deviation of a 4-pixel border (the mean,
    because the stretch clipped negative noise to zero).

    Arguments:
        images: (N, S, S, 3) uint8 RGB cutouts centred on their galaxy.

    Returns:
        One row per cutout, columns ``MEASURED_STRUCTURE_COLUMNS``; NaN where no segment covers
        the centre or the Kron aperture fails.

    Example:
        >>> from galnb.simulation import simulate_survey
        >>> _, images, _ = simulate_survey(3, 32, seed=1, progress=False)
        >>> table = measure_cutouts(images)
        >>> list(table.columns) == list(MEASURED_STRUCTURE_COLUMNS), bool((table.concentration_measured > 1).all())
        (True, True)
    """
    from astropy.convolution import Gaussian2DKernel, convolve
    from photutils.segmentation import SourceCatalog, detect_sources

    kernel = Gaussian2DKernel(1.5)
    rows = []
    with warnings.catch_warnings():  # photutils warns of blank cutouts and of Kron apertures off the edge
        warnings.simplefilter("ignore")
        for light in linear_light(images):
            border = np.concatenate([light[:_BORDER].ravel(), light[-_BORDER:].ravel(),
                                     light[:, :_BORDER].ravel(), light[:, -_BORDER:].ravel()])
            light = light - border.mean()
            segments = detect_sources(convolve(light, kernel), 1.5 * border.std(), 10)
            centre = light.shape[0] // 2
            label = 0 if segments is None else int(segments.data[centre, centre])
            if label == 0:
                rows.append((np.nan, np.nan, np.nan))
                continue
            segments.keep_labels([label])
            source = SourceCatalog(light, segments)[0]
            r50, r90 = (float(source.fluxfrac_radius(f).value) for f in (0.5, 0.9))
            rows.append((1.0 - float(source.ellipticity.value), r50, r90 / r50))
    return pd.DataFrame(rows, columns=list(MEASURED_STRUCTURE_COLUMNS))


def _measure_rows(images_path: Path, start: int, stop: int) -> pd.DataFrame:
    """``measure_cutouts`` of rows ``start:stop`` of a memory-mapped image file (one worker's share)."""
    return measure_cutouts(np.load(images_path, mmap_mode="r")[start:stop])


def measure_store(images_path: str | Path, workers: int | None = None) -> pd.DataFrame:
    """``measure_cutouts`` of every cutout in a store's ``images.npy``, in chunks, on ``workers`` processes.

    Each worker maps the file itself and reads its chunk, so memory stays at a few chunks even
    for the ``paper`` set (5 GB of cutouts); the result does not depend on ``workers``. Workers
    are spawned, not forked: a fork of a process whose torch has started OpenMP threads can hang.

    Arguments:
        images_path: the store's ``images.npy``.
        workers: processes; None takes one per CPU core (at most one per chunk of 1,000 cutouts).
    """
    n = len(np.load(images_path, mmap_mode="r"))
    starts = range(0, n, _CHUNK)
    parts = map_processes(_measure_rows, [images_path] * len(starts), starts, [a + _CHUNK for a in starts],
                          workers=workers)
    return pd.concat(parts, ignore_index=True)


def with_measured_structure(store: "Store", progress: bool = False) -> "Store":
    """``store`` with ``MEASURED_STRUCTURE_COLUMNS`` in its catalog and their training-split statistics.

    The measurement is made once and cached in the store's folder (``MEASURED_FILE``), tagged
    with the hash of the images it was made on; a cache of other images is measured again.
    Cutouts where it fails take the training split's median (their number is in
    ``store.meta["measured_failures"]``; on cutouts of pure noise every one fails).

    Arguments:
        store: an opened store (not modified; a new one is returned).
        progress: print a line while measuring.
    """
    path = store.root / MEASURED_FILE
    images_hash = store.meta["hashes"]["images.npy"]
    measured = None
    if path.exists():
        cached = pd.read_parquet(path)
        if cached.attrs.get("images_hash") == images_hash and len(cached) == len(store.catalog):
            measured = cached
    if measured is None:
        if progress:
            print(f"measuring b/a, R50 and R90/R50 on {len(store.catalog):,} cutouts (about 2 ms each, per core)")
        measured = measure_store(store.root / "images.npy")
        measured.attrs["images_hash"] = images_hash
        with atomic_write(path) as fh:
            measured.to_parquet(fh, index=False)
    failed = measured.isna().any(axis=1)
    train = measured.iloc[store.splits["train"]]
    measured = measured.fillna(train.median()).fillna(0.0)  # 0: a column measured on no training cutout
    stats = training_stats(measured.iloc[store.splits["train"]])
    catalog = pd.concat([store.catalog.drop(columns=list(measured), errors="ignore"), measured], axis=1)
    meta = {**store.meta, "stats": {**store.meta["stats"], **stats}, "measured_failures": int(failed.sum())}
    return replace(store, catalog=catalog, meta=meta)
