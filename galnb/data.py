"""The on-disk data store shared by every source, splits and standardisation."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .io import atomic_write, file_hash, temporary_memmap
from .properties import ALIASES, MAG_COLUMNS, TARGETS

if TYPE_CHECKING:
    from .runs import Run

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_COLUMNS",
    "Store",
    "StoreError",
    "Standardizer",
    "load_store",
    "write_store",
    "training_stats",
    "ensure_store",
    "split_indices",
    "images_to_tensor",
    "random_orientations",
    "import_folder",
    "stack_cutouts",
    "read_cutout",
]

#: Bumped whenever the layout changes; older stores are refused with a clear error.
FORMAT_VERSION = 1
#: Columns every simulated or SDSS store has; a reader's own catalog needs only ``objid``
#: and one of the target properties (chapters name what else they need).
REQUIRED_COLUMNS: tuple[str, ...] = ("objid", "z", *TARGETS, *MAG_COLUMNS)
USER_REQUIRED: tuple[str, ...] = ("objid",)
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
_FILES = ("catalog.parquet", "images.npy", "splits.npz", "meta.json")


class StoreError(ValueError):
    """A data store (or a file in it) is missing, corrupt or from another version."""


@dataclass(frozen=True)
class Standardizer:
    """Zero-mean, unit-variance transform of the columns of an array.

    Arguments:
        mean: (D,) column means of the training split.
        std: (D,) column standard deviations of the training split.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        x = np.asarray(x, dtype=np.float64)
        return cls(x.mean(axis=0), x.std(axis=0) + 1e-12)

    def forward(self, x):
        return (x - self.mean) / self.std

    def inverse(self, y):
        return y * self.std + self.mean

    @property
    def log_det(self) -> float:
        """log |d standardised / d physical|: add it to a standardised-space log-density."""
        return float(-np.log(self.std).sum())

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardizer":
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]))


@dataclass
class Store:
    """A data set in the common format, opened read-only.

    Files in ``root``: ``catalog.parquet`` (one row per galaxy), ``images.npy``
    (uint8 ``(N, H, W, 3)``, read memory-mapped), ``splits.npz`` (train/val/test
    row indices), ``meta.json`` (format version, source, generating parameters,
    standardisation statistics of the training split, file hashes).
    """

    root: Path
    catalog: pd.DataFrame
    images: np.ndarray
    splits: dict[str, np.ndarray]
    meta: dict

    def standardizer(self, columns: tuple[str, ...]) -> Standardizer:
        """The training-split standardisation of ``columns`` saved with the store."""
        stats = self.meta["stats"]
        missing = [c for c in columns if c not in stats]
        if missing:
            raise StoreError(f"{self.root / 'meta.json'} has no statistics for {missing}")
        return Standardizer(np.array([stats[c]["mean"] for c in columns]), np.array([stats[c]["std"] for c in columns]))

    def require_columns(self, columns: tuple[str, ...], purpose: str) -> None:
        """Raise a StoreError naming the columns ``purpose`` needs that this data set lacks."""
        missing = [c for c in columns if c not in self.catalog.columns]
        if missing:
            raise StoreError(
                f"{self.root / 'catalog.parquet'}: {purpose} needs column(s) {missing}, which this data set lacks"
            )

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def fingerprint(self) -> str:
        """A short hash that names this data set in manifests of downstream artifacts."""
        return self.meta["hashes"]["catalog.parquet"] + "-" + self.meta["hashes"]["images.npy"]


def split_indices(n: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic 80/10/10 train/val/test row indices for ``n`` rows and ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(round(0.8 * n)), int(round(0.1 * n))
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


def _check_catalog(catalog: pd.DataFrame, source: Path | str, required: tuple[str, ...] = REQUIRED_COLUMNS) -> None:
    missing = [c for c in required if c not in catalog.columns]
    if missing:
        raise StoreError(f"{source}: missing column(s) {missing}; required: {list(required)}")
    if required == USER_REQUIRED and not any(c in catalog.columns for c in TARGETS):
        raise StoreError(f"{source}: no target property column; expected at least one of {list(TARGETS)}")
    numeric = catalog.select_dtypes(include=[np.number])
    values = numeric.to_numpy(dtype=float)
    invalid = ~np.isfinite(values) | (values <= -9999)  # -9999: SDSS's "not measured"
    bad = numeric.columns[invalid.any(axis=0)]
    if len(bad):
        rows = int(invalid.any(axis=1).sum())
        raise StoreError(
            f"{source}: {rows} row(s) with NaN/inf or -9999 in column(s) {list(bad)}; remove or fill them first"
        )


def _check_images(images: np.ndarray, n: int, source: Path | str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise StoreError(f"{source}: images must be uint8 (N, H, H, 3); got {images.dtype} {images.shape}")
    if images.shape[0] != n:
        raise StoreError(f"{source}: {images.shape[0]} images for {n} catalog rows")


def write_store(root: str | Path, catalog: pd.DataFrame, images: np.ndarray, *, seed: int, source: str,
                params: dict) -> Store:
    """Write a data set in the common format and return it opened.

    Every file is written to a temporary name and renamed, and ``meta.json`` (which
    marks the store complete) goes last, so a crash leaves no store that loads.

    Arguments:
        root: folder of the store.
        catalog: (N rows) with at least ``REQUIRED_COLUMNS``.
        images: uint8 (N, H, H, 3) gri composites.
        seed: seed of the 80/10/10 split.
        source: "mock", "sdss" or "user".
        params: generating parameters, recorded in ``meta.json``.
    """
    root = Path(root)
    _check_catalog(catalog, "catalog", USER_REQUIRED if source == "user" else REQUIRED_COLUMNS)
    _check_images(images, len(catalog), "images")
    root.mkdir(parents=True, exist_ok=True)
    meta_path = root / "meta.json"
    if meta_path.exists():  # an old store is invalid from the first byte we change
        meta_path.unlink()
    catalog = catalog.reset_index(drop=True)
    splits = split_indices(len(catalog), seed)
    with atomic_write(root / "catalog.parquet") as fh:
        catalog.to_parquet(fh, index=False)
    with atomic_write(root / "images.npy") as fh:
        np.save(fh, np.ascontiguousarray(images))
    with atomic_write(root / "splits.npz") as fh:
        np.savez(fh, **splits)
    numeric = [c for c in catalog.select_dtypes(include=[np.number]).columns if c != "objid"]
    stats = training_stats(catalog.iloc[splits["train"]][numeric])
    meta = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "params": params,
        "seed": seed,
        "n": len(catalog),
        "image_size": int(images.shape[1]),
        "split_sizes": {k: int(len(v)) for k, v in splits.items()},
        "stats": stats,
        "hashes": {name: file_hash(root / name) for name in _FILES[:3]},
    }
    with atomic_write(meta_path, "w") as fh:
        json.dump(meta, fh, indent=1)
    return load_store(root)


def training_stats(train: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each column of the training split, as ``meta.json`` keeps them
    (the standard deviation with ddof=0, plus 1e-12 so a constant column standardises to zero).

    Example:
        >>> training_stats(pd.DataFrame({"x": [1.0, 3.0]}))
        {'x': {'mean': 2.0, 'std': 1.000000000001}}
    """
    return {c: {"mean": float(train[c].mean()), "std": float(train[c].std(ddof=0)) + 1e-12} for c in train}


def load_store(root: str | Path, verify: bool = False) -> Store:
    """Open a store read-only (images memory-mapped), checking version and shapes.

    Arguments:
        root: the store's folder.
        verify: also re-hash every file against ``meta.json`` (slow for big stores).
    Raises:
        StoreError naming the file and the problem.
    """
    root = Path(root)
    meta_path = root / "meta.json"
    if not meta_path.exists():
        raise StoreError(f"{root}: no complete data store here (meta.json missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise StoreError(f"{meta_path}: not valid JSON ({err})") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{meta_path}: store format version {meta.get('format_version')!r}, this galnb reads version "
            f"{FORMAT_VERSION}; regenerate it (chapter 01) into a new run_dir"
        )
    for name in _FILES[:3]:
        if not (root / name).exists():
            raise StoreError(f"{root / name}: missing from the store")
    if verify:
        for name, digest in meta["hashes"].items():
            if file_hash(root / name) != digest:
                raise StoreError(f"{root / name}: contents differ from the hash in meta.json (corrupt or edited)")
    try:
        catalog = pd.read_parquet(root / "catalog.parquet")
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise StoreError(f"{root / 'catalog.parquet'}: cannot be read ({err})") from err
    try:
        images = np.load(root / "images.npy", mmap_mode="r")
    except (ValueError, OSError) as err:
        raise StoreError(f"{root / 'images.npy'}: cannot be read, truncated or corrupt ({err})") from err
    required = USER_REQUIRED if meta.get("source") == "user" else REQUIRED_COLUMNS
    _check_catalog(catalog, root / "catalog.parquet", required)
    _check_images(images, len(catalog), root / "images.npy")
    with np.load(root / "splits.npz") as z:
        splits = {k: z[k] for k in ("train", "val", "test")}
    return Store(root, catalog, images, splits, meta)


def _mock_params(run: "Run") -> dict:
    from .simulation import SIMULATION_VERSION

    return {"n": run.scale.n_galaxies, "image_size": run.scale.image_size, "seed": run.seed,
            "simulation_version": SIMULATION_VERSION}


def ensure_store(run: "Run", progress: bool = True) -> Store:
    """The run's data set: loaded if present, else made (``mock``) or imported (a folder).

    A store is reused only if its generating parameters match the run's; a mismatch
    is an error rather than a silent overwrite. ``data="sdss"`` needs the download
    of ``galnb.sdss`` first (network access). The catalog comes with the structure
    measured on the cutouts (:func:`galnb.morphology.with_measured_structure`; measured
    once, then read from the store's folder).
    """
    from .morphology import with_measured_structure

    return with_measured_structure(_open_or_make_store(run, progress), progress)


def _open_or_make_store(run: "Run", progress: bool) -> Store:
    root = run.data_dir
    if (root / "meta.json").exists():
        store = load_store(root)
        if run.data == "mock" and store.meta["params"] != _mock_params(run):
            raise StoreError(
                f"{root}: holds a data set made with {store.meta['params']}, but this run asks for "
                f"{_mock_params(run)}; use another run_dir or delete that folder"
            )
        return store
    if run.data == "mock":
        from .simulation import simulate_survey

        params = _mock_params(run)
        # rendered chunks survive a killed run here and are reused by the next one
        work = root.parent / f".{root.name}.partial"
        marker = work / "params.json"
        if work.exists() and (not marker.exists() or json.loads(marker.read_text()) != params):
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        with atomic_write(marker, "w") as fh:
            json.dump(params, fh)
        catalog, images, funnel = simulate_survey(params["n"], params["image_size"], run.seed, progress=progress,
                                                  work_dir=work)
        store = write_store(root, catalog, images, seed=run.seed, source="mock", params=params)
        with atomic_write(root / "funnel.csv", "w") as fh:
            funnel.to_csv(fh, index=False)
        del images
        shutil.rmtree(work)
        return store
    if run.data == "sdss":
        raise StoreError(
            f"{root}: no SDSS store yet. Download it on a machine with network access with "
            f"`python -m galnb.sdss --run-dir {run.dir.parent} --scale {run.scale.name} --seed {run.seed}`"
        )
    return import_folder(Path(run.data), root, seed=run.seed, image_size=run.scale.image_size)


def import_folder(folder: Path, root: Path, *, seed: int, image_size: int) -> Store:
    """Import a reader's folder: a galnb store, or cutouts plus a CSV catalog.

    A folder that already is a store is copied. Otherwise the catalog is ``catalog.csv``
    or every CSV in ``catalogs/`` (concatenated); it needs an ``objid`` column (or
    SkyServer's ``objID``) and at least one target property, under the book's names or
    the MPA-JHU ones in ``galnb.properties.ALIASES``. Each row's cutout is the
    ``<objid>.jpg`` (or .jpeg/.png) anywhere under the folder. Cutouts larger than
    ``image_size`` are centre-cropped, keeping their pixel scale.
    """
    if (folder / "meta.json").exists():
        load_store(folder)  # validate before copying
        shutil.copytree(folder, root, dirs_exist_ok=True)
        return load_store(root)
    single = folder / "catalog.csv"
    csvs = [single] if single.exists() else sorted((folder / "catalogs").glob("*.csv"))
    if not csvs:
        raise StoreError(f"{folder}: neither a galnb store (meta.json) nor a folder with catalog.csv or catalogs/*.csv")
    catalog = pd.concat([pd.read_csv(c) for c in csvs], ignore_index=True).rename(columns=ALIASES)
    _check_catalog(catalog, ", ".join(map(str, csvs)), USER_REQUIRED)
    cutouts = {p.stem: p for ext in ("jpg", "jpeg", "png") for p in folder.rglob(f"*.{ext}")}
    missing = [str(o) for o in catalog["objid"] if str(o) not in cutouts]
    if missing:
        raise StoreError(f"{folder}: no cutout for {len(missing)} catalog row(s), e.g. objid {missing[:3]}")
    images = stack_cutouts([cutouts[str(o)] for o in catalog["objid"]], image_size, root)
    with temporary_memmap(images):  # stack_cutouts' cube on disk, if it made one
        return write_store(root, catalog, images, seed=seed, source="user",
                           params={"folder": str(folder), "image_size": image_size})


def stack_cutouts(paths: list[Path], image_size: int, root: Path) -> np.ndarray:
    """The cutouts as uint8 (N, H, H, 3), memory-mapped in ``root`` beyond 1 GB (paper scale: 5 GB),
    so that importing them needs no more memory than training does."""
    shape = (len(paths), image_size, image_size, 3)
    if np.prod(shape) > 1 << 30:
        root.mkdir(parents=True, exist_ok=True)
        images = np.lib.format.open_memmap(root / ".images-building.npy", mode="w+", dtype=np.uint8, shape=shape)
    else:
        images = np.empty(shape, dtype=np.uint8)
    for i, path in enumerate(paths):
        images[i] = read_cutout(path, image_size)
    return images


def read_cutout(path: Path, image_size: int) -> np.ndarray:
    """A JPEG cutout as uint8 (image_size, image_size, 3), centre-cropped if larger."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise StoreError(f"{path}: not a readable JPEG cutout ({err})") from err
    h, w, _ = arr.shape
    if h < image_size or w < image_size:
        raise StoreError(f"{path}: cutout is {h}x{w} px, smaller than image_size={image_size}")
    top, left = (h - image_size) // 2, (w - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def images_to_tensor(images: np.ndarray, size: int | None = None):
    """uint8 (B, H, W, 3) → float32 torch tensor (B, 3, H, W) in [0, 1].

    Arguments:
        images: uint8 (B, H, W, 3) cutouts (a memmap slice is fine).
        size: resample to (size, size) pixels: area averaging when shrinking, bilinear
            interpolation when enlarging (default: as given).
    Returns:
        float32 (B, 3, H, W), or (B, 3, size, size).
    """
    import torch

    x = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and x.shape[-1] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = torch.nn.functional.interpolate(x, size=(size, size), mode=mode)
    return x


def random_orientations(images, rng: np.random.Generator):
    """Each image in one of its 8 orientations on the sky (4 quarter turns, each mirrored or not), drawn at random.

    A galaxy's properties do not depend on how its cutout is oriented, so these are exact
    symmetries of the problem; training on them is data augmentation without approximation.

    Arguments:
        images: (B, C, H, H) tensor.
        rng: draws the orientations.
    Returns:
        (B, C, H, H), a new tensor.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2).repeat(64, 1, 1, 1)
        >>> turned = random_orientations(x, np.random.default_rng(0))
        >>> len({tuple(t.flatten().tolist()) for t in turned})  # all 8 orientations of a 2x2 image
        8
    """
    import torch

    which = rng.integers(0, 8, len(images))
    out = torch.empty_like(images)
    for k in np.unique(which):
        members = torch.from_numpy(np.flatnonzero(which == k))
        view = images[members].flip(-1) if k >= 4 else images[members]
        out[members] = torch.rot90(view, int(k % 4), dims=(-2, -1))
    return out
