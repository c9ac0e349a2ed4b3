"""Same parameters and seed on CPU give the same numbers: chapters rerun at ci scale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def _papermill(notebook: str, out: Path, run_dir: Path, *params: str) -> None:
    env = {**os.environ, "GALNB_RUN_DIR": str(run_dir),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("GALNB_SCALE", None)
    flags = [x for p in params for x in ("-p", *p.split("="))]
    result = subprocess.run([sys.executable, "-m", "papermill", f"notebooks/{notebook}.ipynb",
                             str(out / f"{notebook}.ipynb"), *flags],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]


def test_rerun_with_the_same_seed_reproduces_weights_posteriors_and_metric_tables(built_book, tmp_path):
    first = built_book["runs"] / "ci-mock-seed0"
    second = tmp_path / "runs" / "ci-mock-seed0"
    shutil.copytree(first, second)
    # retrain the photometry model; recompute every CFM posterior and every metric table
    shutil.rmtree(second / "models" / "phot")
    shutil.rmtree(second / "metrics")
    for name in ("phot", "image"):
        (second / "posteriors" / f"{name}.npz").unlink()
    _papermill("03_train", tmp_path, tmp_path / "runs", "model=phot")
    _papermill("05_evaluation", tmp_path, tmp_path / "runs")
    _papermill("06_degeneracy", tmp_path, tmp_path / "runs")

    a = torch.load(first / "models" / "phot" / "best.pt", weights_only=False)["model"]
    b = torch.load(second / "models" / "phot" / "best.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("phot", "image"):
        with np.load(first / "posteriors" / f"{name}.npz") as pa, np.load(second / "posteriors" / f"{name}.npz") as pb:
            for key in ("test_index", "samples", "log_prob_true", "log_prob_samples"):
                np.testing.assert_array_equal(pa[key], pb[key], err_msg=f"{name}: {key}")
    tables = sorted(p.name for p in (first / "metrics").glob("*.csv"))
    assert tables and tables == sorted(p.name for p in (second / "metrics").glob("*.csv"))
    timed = ["s per 1,000 draws"]  # wall-clock measurements: the one thing a rerun may change

    def untimed(tab: pd.DataFrame) -> pd.DataFrame:  # a timed column, or timed rows of a long table
        tab = tab.drop(columns=timed, errors="ignore")
        return tab[~tab.measure.isin(timed)] if "measure" in tab else tab

    for table in tables:
        a_tab, b_tab = (untimed(pd.read_csv(d / "metrics" / table, index_col=0)) for d in (first, second))
        pd.testing.assert_frame_equal(a_tab, b_tab, check_exact=True, obj=table)
