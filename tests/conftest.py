"""Shared fixtures: a small synthetic store, and the book built once at ci scale."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_SDSS = ROOT.parent / "shared" / "data" / "real-sdss"


def synthetic_catalog(n: int, seed: int = 0) -> pd.DataFrame:
    """A catalog with the store's columns and a learnable link from magnitudes to properties.

    Not physics: only for tests of the data format, training loop and metrics.
    """
    from galnb.properties import MAG_COLUMNS, TARGETS

    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(n, len(TARGETS)))
    mags = 17 + 0.5 * theta @ rng.normal(size=(len(TARGETS), len(MAG_COLUMNS))) * 0.3 + 0.05 * rng.normal(size=(n, 5))
    cat = pd.DataFrame(theta, columns=list(TARGETS)).assign(**dict(zip(MAG_COLUMNS, mags.T)))
    cat["objid"] = np.arange(n, dtype=np.int64) + 1_000
    cat["z"] = rng.uniform(0.02, 0.2, n)
    return cat


@pytest.fixture
def tiny_store(tmp_path):
    from galnb.data import write_store

    cat = synthetic_catalog(240)
    images = np.random.default_rng(1).integers(0, 255, size=(240, 16, 16, 3), dtype=np.uint8)
    return write_store(tmp_path / "store", cat, images, seed=0, source="mock", params={"n": 240, "test": True})


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """Run the README's papermill command verbatim, then build the whole book at ci scale.

    Both use one temporary run directory (``$GALNB_RUN_DIR``), so the book build finds the
    image model trained by the papermill command, as chapter 05 would.
    """
    base = tmp_path_factory.mktemp("book")
    env = {**os.environ, "GALNB_RUN_DIR": str(base / "runs")}
    env.pop("GALNB_SCALE", None)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    t0 = time.time()
    papermill = subprocess.run(["papermill", "notebooks/03_train.ipynb", "-p", "model", "image"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    t1 = time.time()
    build = subprocess.run([sys.executable, "-m", "galnb", "book", "--scale", "ci", "--out", str(base / "site")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    t2 = time.time()
    (base / "build.log").write_text(build.stdout + build.stderr)
    print(f"\npapermill 03_train (image): {t1 - t0:.0f} s; book build: {t2 - t1:.0f} s; log {base / 'build.log'}")
    return {"papermill": papermill, "build": build, "html": base / "site" / "_build" / "html",
            "site": base / "site", "runs": base / "runs"}
