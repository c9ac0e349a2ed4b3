"""Benchmark of the memory that loading ``paper``-scale training data needs.

Run from the repository root:

    python benchmarks/bench_memory.py                 # writes a 5.25 GB store, reads one epoch
    python benchmarks/bench_memory.py --batches 300   # only the first 300 train batches
    python benchmarks/bench_memory.py --store runs/paper-mock-seed0/data   # an existing store

At ``paper`` scale the image model trains on 106,800 cutouts of 128 x 128 x 3 bytes, a
5.25 GB image cube. The store keeps it as a ``.npy`` file that ``load_store`` memory-maps,
and training's batch iterator (``galnb.training._Batches``) gathers each batch's rows from
that map. Pages of the map count as RssFile: page cache that the kernel can drop at any
time. Only anonymous memory (RssAnon) has to fit in RAM, and the target is that it stays
under 4 GB besides the mapped file.

The benchmark writes a store of that size under ``--workdir``: the image cube is written
in chunks to a memory-mapped ``.npy`` and handed to ``write_store`` as a read-only map, so
the writer never holds it in memory. Its content is synthetic (random bytes and a random
catalog), because only the memory footprint is measured, not what a model could learn.
Writing runs in a process of its own; a second fresh process, which the writing cannot
pollute, then opens the store with ``load_store`` and iterates the train split's batches
(standardised torch tensors) as ``train_cfm`` does, without a model, reading
/proc/self/status after every batch. (A child started from the writer itself would
inherit the writer's peak RSS in ru_maxrss, which Linux keeps across exec.)

The rates depend on whether the file's pages are in the page cache (a store just written
mostly is); reading from disk is slower. GB means 10**9 bytes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from galnb.properties import MAG_COLUMNS, TARGETS
from galnb.runs import SCALES

from record import Record, add_json_option

GB = 1e9
TARGET_ANON = 4 * GB
DEFAULT_WORKDIR = Path(__file__).resolve().parents[1] / "_build" / "bench_memory"


def proc_memory() -> dict[str, int]:
    """This process's RssAnon and RssFile in bytes, from /proc/self/status."""
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("RssAnon", "RssFile")}


def random_catalog(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A catalog with the store's required columns and random values."""
    cat = pd.DataFrame(rng.normal(size=(n, len(TARGETS) + len(MAG_COLUMNS))), columns=[*TARGETS, *MAG_COLUMNS])
    cat["objid"] = np.arange(n, dtype=np.int64)
    cat["z"] = rng.uniform(0.02, 0.2, n)
    return cat


def write_paper_store(root: Path, chunk: int = 2000) -> None:
    """Write a ``paper``-sized store with random images to ``root``, chunk by chunk."""
    from galnb.data import write_store

    scale = SCALES["paper"]
    n, size = scale.n_galaxies, scale.image_size
    rng = np.random.default_rng(0)
    cube_path = root.parent / "cube.npy"
    start = time.perf_counter()
    cube = np.lib.format.open_memmap(cube_path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    for lo in range(0, n, chunk):
        cube[lo : lo + chunk] = rng.integers(0, 256, size=(min(chunk, n - lo), size, size, 3), dtype=np.uint8)
    cube.flush()
    del cube
    t_cube = time.perf_counter() - start
    images = np.load(cube_path, mmap_mode="r")
    write_store(root, random_catalog(n, rng), images, seed=0, source="mock",
                params={"n": n, "image_size": size, "benchmark": True})
    del images
    cube_path.unlink()
    print(f"wrote a {n} x {size} x {size} x 3 store in {time.perf_counter() - start:.0f} s "
          f"(image cube {t_cube:.0f} s, write_store the rest) to {root}")


def in_fresh_process(fn: Callable[..., None], *args) -> None:
    """Run ``fn(*args)`` in a new interpreter, so no process's memory shows in another's figures."""
    process = multiprocessing.get_context("spawn").Process(target=fn, args=args)
    process.start()
    process.join()
    if process.exitcode:
        raise SystemExit(f"{fn.__name__} failed with exit code {process.exitcode}")


def measure(root: Path, n_batches: int, batch_size: int, json_path: Path | None = None) -> None:
    """Iterate the train split's image batches of the store at ``root`` and print the memory figures.

    Arguments:
        n_batches: batches to read; 0 for a whole epoch.
        batch_size: images per batch.
        json_path: also write the figures there (``benchmarks/record.py``).
    """
    from galnb.data import load_store
    from galnb.training import TrainedCFM, _Batches, condition_columns

    with Record("memory", json_path) as rec:
        estimator = TrainedCFM.build("image")  # standardises the batches; built before the baseline is taken
        baseline = proc_memory()
        store = load_store(root)
        estimator.set_standardisation(store.standardizer(TARGETS), store.standardizer(condition_columns("image")))
        batches = _Batches(store, "train", estimator, batch_size, shuffle=True, seed=0)
        opened = proc_memory()
        n_batches = len(batches) if n_batches == 0 else min(n_batches, len(batches))
        peak = dict(opened)
        n_images = 0
        start = time.perf_counter()
        for i, (_, (images, _)) in enumerate(batches):
            n_images += len(images)
            now = proc_memory()
            peak = {key: max(peak[key], now[key]) for key in peak}
            if i + 1 == n_batches:
                break
        seconds = time.perf_counter() - start
        final = proc_memory()
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rec.section("Memory while reading one epoch of paper-scale training batches")
        rec.note(f"store: images {store.images.shape} {store.images.dtype}, "
                 f"mapped file {store.images.nbytes / GB:.2f} GB")
        rec.note(f"read {n_batches} of {len(batches)} train batches ({n_images} images, batch {batch_size}) "
                 f"in {seconds:.1f} s: {n_batches / seconds:.1f} batches/s, {n_images / seconds:.0f} images/s")
        table = pd.DataFrame([{"stage": label, "anonymous (RssAnon) [GB]": mem["RssAnon"] / GB,
                               "mapped file pages (RssFile) [GB]": mem["RssFile"] / GB}
                              for label, mem in [("after imports", baseline), ("after load_store + batches", opened),
                                                 ("peak over batches", peak), ("final", final)]])
        rec.table(table, float_format=lambda v: f"{v:.3f}")
        rec.note(f"peak RSS (ru_maxrss, anonymous + file pages): {max_rss / GB:.3f} GB")
        verdict = "PASS" if peak["RssAnon"] < TARGET_ANON else "FAIL"
        rec.note(f"target: peak RssAnon {peak['RssAnon'] / GB:.3f} GB < {TARGET_ANON / GB:.0f} GB besides the "
                 f"{store.images.nbytes / GB:.2f} GB mapped file: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=0, help="train batches to read; 0 for a whole epoch")
    parser.add_argument("--batch-size", type=int, default=SCALES["paper"].batch_size)
    parser.add_argument("--store", type=Path, help="measure this existing store; write nothing")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="parent folder of the temporary store")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    add_json_option(parser)
    args = parser.parse_args()
    if args.store:
        in_fresh_process(measure, args.store, args.batches, args.batch_size, args.json)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        in_fresh_process(write_paper_store, work / "store")
        in_fresh_process(measure, work / "store", args.batches, args.batch_size, args.json)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
