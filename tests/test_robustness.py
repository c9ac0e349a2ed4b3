"""Faults tried for real: training and data generation killed with SIGKILL resume to valid results."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from galnb import simulation
from galnb.training import TrainConfig, load_trained, train_cfm

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(model="phot", lr=1e-3, batch_size=16, max_epochs=40, patience=40, hidden=256, depth=3)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_training_killed_mid_epoch_resumes_from_the_last_complete_checkpoint(tiny_store, tmp_path):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})
        from galnb.data import load_store
        from galnb.training import TrainConfig, train_cfm
        train_cfm(load_store({str(tiny_store.root)!r}), {str(tmp_path / 'm')!r}, TrainConfig(**{CONFIG!r}),
                  progress=False)
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
    assert trained.sample(trained.condition(tiny_store, tiny_store.splits["test"][:2]), 4, steps=4).shape == (2, 4, 5)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_data_generation_killed_while_rendering_resumes_and_matches_an_uninterrupted_run(tmp_path):
    args = dict(n=120, image_size=24, seed=4, chunk_size=20)
    work = tmp_path / "partial"
    # one process, so that the kill stops all rendering (spawned workers would finish their chunk)
    script = (f"from galnb.simulation import simulate_survey; "
              f"simulate_survey(**{args!r}, progress=False, work_dir={str(work)!r}, workers=1)")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.time() + 180
    while time.time() < deadline and len(list(work.glob("images-*.npy"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(work.glob("images-*.npy"))
    assert proc.returncode == -signal.SIGKILL and 2 <= len(done) < 6, "killed after some chunks, before the end"
    stamps = {p.name: p.stat().st_mtime_ns for p in done}

    catalog, images, _ = simulation.simulate_survey(**args, progress=False, work_dir=work)
    assert {p.name: p.stat().st_mtime_ns for p in done} == stamps, "finished chunks were reused, not redrawn"
    assert not list(work.glob(".*.tmp")), "no half-written chunk left behind"
    ref_catalog, ref_images, _ = simulation.simulate_survey(**args, progress=False)
    np.testing.assert_array_equal(images, ref_images)
    assert catalog.equals(ref_catalog)
