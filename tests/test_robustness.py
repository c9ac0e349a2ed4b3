"""Faults tried for real: a training process killed with SIGKILL resumes to a valid model."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from galnb.training import TrainConfig, load_trained, train_cfm

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(model="phot", lr=1e-3, batch_size=16, max_epochs=40, patience=40, hidden=256, depth=3)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_training_killed_mid_epoch_resumes_from_the_last_complete_checkpoint(tiny_store, tmp_path):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})
        from galnb.data import load_store
        from galnb.training import TrainConfig, train_cfm
        train_cfm(load_store({str(tiny_store.root)!r}), {str(tmp_path / 'm')!r}, TrainConfig(**{CONFIG!r}), progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    last = tmp_path / "m" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not last.exists():
        time.sleep(0.05)
    assert last.exists(), "the training process never wrote a checkpoint"
    time.sleep(0.3)  # now somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    result = train_cfm(tiny_store, tmp_path / "m", TrainConfig(**CONFIG), progress=False)
    assert 1 <= result.resumed_from < CONFIG["max_epochs"], "resumed from a complete epoch before the end"
    assert list(result.history["epoch"]) == list(range(1, CONFIG["max_epochs"] + 1))
    assert not list((tmp_path / "m").glob(".*.tmp")), "no half-written checkpoint left behind"
    trained = load_trained(tmp_path / "m", tiny_store)
    assert trained.posterior(tiny_store, tiny_store.splits["test"][:2], 4, 4).samples.shape == (2, 4, 5)
