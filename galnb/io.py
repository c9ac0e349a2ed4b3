"""Files: atomic writes, content hashes, versioned model checkpoints, temporary memory maps."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "atomic_write",
    "file_hash",
    "save_checkpoint",
    "load_checkpoint",
    "temporary_memmap",
]

#: Bumped whenever any checkpoint's layout changes; older files are refused on load.
CHECKPOINT_VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of another version or kind, or of another data set."""


def file_hash(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 (first 16 hex digits) of a file's bytes.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> _ = p.write_text("galaxy")
        >>> file_hash(p)
        'eba4ae33f54ae0f9'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` and rename it over ``path`` on success.

    A crash mid-write leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, kind: str, payload: dict) -> Path:
    """Write ``payload`` (tensors, numbers, strings, lists and dicts of them) as a galnb checkpoint.

    The file is a ``torch.save`` dict with ``format = "galnb-<kind>"`` and
    ``version = CHECKPOINT_VERSION`` beside the payload's entries, written atomically.

    Arguments:
        path: the file to write.
        kind: what the file holds (``"cfm"``, ``"vaenf"``); :func:`load_checkpoint` checks it.
        payload: the entries to store.
    """
    import torch

    with atomic_write(path) as fh:
        torch.save({"format": f"galnb-{kind}", "version": CHECKPOINT_VERSION, **payload}, fh)
    return Path(path)


def load_checkpoint(path: str | Path, kind: str, remedy: str) -> dict:
    """Read a file written by :func:`save_checkpoint` with the same ``kind``.

    Only tensors and plain containers are unpickled (``weights_only=True``).

    Arguments:
        path: the checkpoint file.
        kind: the kind it must hold.
        remedy: what to do about a refused file, e.g. ``"retrain with chapter 03"``.
    Raises:
        CheckpointError naming the file when it is missing, unreadable, of another kind or
        of another version.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; {remedy}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or damaged files
        raise CheckpointError(f"{path}: cannot be read, truncated or corrupt ({err}); {remedy}") from err
    if not isinstance(blob, dict) or blob.get("format") != f"galnb-{kind}":
        raise CheckpointError(f"{path}: not a galnb {kind} checkpoint; {remedy}")
    if blob.get("version") != CHECKPOINT_VERSION:
        found = blob.get("version")
        raise CheckpointError(
            f"{path}: checkpoint version {found!r}, this galnb reads version {CHECKPOINT_VERSION}; {remedy}"
        )
    return blob


@contextlib.contextmanager
def temporary_memmap(array: np.ndarray) -> Iterator[np.ndarray]:
    """Yield ``array``; afterwards delete the file behind it if it is a ``np.memmap``.

    For the image cubes that are stacked on disk (beyond 1 GB) only to be copied into a
    store: the temporary file goes whether the copy succeeds or fails.
    """
    try:
        yield array
    finally:
        if isinstance(array, np.memmap) and array.filename:
            Path(array.filename).unlink(missing_ok=True)
