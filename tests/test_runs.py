"""galnb.runs: scales, parameter validation, the run directory."""

import os
from pathlib import Path

import pytest

from galnb import io, runs


def test_auto_scale_is_ci_without_cuda(monkeypatch):
    monkeypatch.delenv("GALNB_SCALE", raising=False)
    monkeypatch.setattr(runs, "_cuda_available", lambda: False)
    assert runs.resolve_scale("auto").name == "ci"
    monkeypatch.setattr(runs, "_cuda_available", lambda: True)
    assert runs.resolve_scale("auto").name == "paper"


def test_explicit_parameter_beats_environment_which_beats_default(monkeypatch, tmp_path):
    monkeypatch.setattr(runs, "_cuda_available", lambda: False)
    monkeypatch.setenv("GALNB_SCALE", "small")
    assert runs.resolve_scale("ci").name == "ci"
    assert runs.resolve_scale(None).name == "small"
    monkeypatch.setenv("GALNB_SCALE", "huge")
    with pytest.raises(ValueError, match=r"\$GALNB_SCALE='huge'.*'ci', 'small', 'paper', 'auto'"):
        runs.resolve_scale(None)
    assert runs.resolve_scale("paper").name == "paper"
    monkeypatch.delenv("GALNB_SCALE")
    assert runs.resolve_scale(None).name == "ci"  # "auto" without CUDA
    monkeypatch.setenv("GALNB_RUN_DIR", str(tmp_path / "from-env"))
    assert runs.run_folder(None, "ci", "mock", 0) == tmp_path / "from-env" / "ci-mock-seed0"
    assert runs.run_folder(tmp_path / "given", "ci", "mock", 0) == tmp_path / "given" / "ci-mock-seed0"
    monkeypatch.delenv("GALNB_RUN_DIR")
    assert runs.run_folder(None, "ci", "mock", 0) == runs.project_root() / "runs" / "ci-mock-seed0"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": "huge"}, r"scale='huge'.*'ci', 'small', 'paper', 'auto'"),
        ({"device": "tpu"}, r"device='tpu'.*'auto', 'cpu', 'cuda'"),
        ({"model": "foo"}, r"model='foo'.*'phot', 'image'"),
        ({"data": "/no/such/folder"}, r"data='/no/such/folder'.*'mock', 'sdss'"),
        ({"seed": -1}, r"seed=-1"),
    ],
)
def test_bad_parameters_name_the_valid_choices(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.delenv("GALNB_SCALE", raising=False)
    params = {"scale": "ci", "data": "mock", "seed": 0, "device": "cpu", "run_dir": str(tmp_path), "show": False,
              **kwargs}
    with pytest.raises(ValueError, match=message):
        runs.start_chapter("test", **params)


def test_cuda_without_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(runs, "_cuda_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        runs.resolve_device("cuda")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_run_dir_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="not a writable folder"):
        runs.start_chapter("t", scale="ci", data="mock", seed=0, device="cpu", run_dir=str(locked / "x"), show=False)


def test_run_dir_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="run_dir=.*not a writable folder"):
        runs.start_chapter("t", scale="ci", data="mock", seed=0, device="cpu", run_dir=str(blocker), show=False)


def test_run_directory_is_keyed_by_scale_data_and_seed(tmp_path, monkeypatch):
    monkeypatch.delenv("GALNB_SCALE", raising=False)
    monkeypatch.delenv("GALNB_RUN_DIR", raising=False)
    run = runs.start_chapter("t", scale="ci", data="mock", seed=3, device="cpu", run_dir=str(tmp_path), show=False)
    assert run.dir == tmp_path / "ci-mock-seed3"
    assert run.model_dir("image") == run.dir / "models" / "image"


def test_missing_artifact_names_the_chapter_and_command(tmp_path, monkeypatch):
    # the command carries the reader's run directory and device, so that it makes the missing file there
    monkeypatch.delenv("GALNB_SCALE", raising=False)
    monkeypatch.delenv("GALNB_RUN_DIR", raising=False)
    run_dir = tmp_path / "my runs"
    run = runs.start_chapter("05", scale="ci", data="mock", seed=0, device="cpu", run_dir=str(run_dir), show=False)
    with pytest.raises(runs.MissingArtifact,
                       match=r"(?s)chapter 03_train.*papermill notebooks/03_train.ipynb .*-p model phot") as err:
        run.require(run.model_dir("phot") / "best.pt", "03_train", model="phot")
    assert "-p device cpu" in str(err.value) and f"-p run_dir '{run_dir}'" in str(err.value)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_write(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_finish_writes_a_manifest_entry_with_parameters_and_artifact_hashes(tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("GALNB_SCALE", raising=False)
    run = runs.start_chapter("03_train", scale="ci", data="mock", seed=0, device="cpu", run_dir=str(tmp_path),
                             show=False, model="phot")
    ckpt = run.model_dir("phot") / "best.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    run.finish(artifacts=[ckpt])
    entry = json.loads((run.dir / "manifest.json").read_text())["03_train-phot"]
    assert entry["parameters"] == {"scale": "ci", "data": "mock", "seed": 0, "device": "cpu", "model": "phot"}
    assert entry["artifacts"] == {"models/phot/best.pt": io.file_hash(ckpt)}
    assert entry["wall_s"] >= 0 and "torch" in entry["packages"] and entry["git_commit"]


def test_project_root_is_found_from_the_notebooks_folder():
    root = Path(__file__).resolve().parents[1]
    assert runs.project_root(root / "notebooks") == root


def test_run_card_says_when_auto_chose_the_scale(tmp_path, monkeypatch):
    monkeypatch.delenv("GALNB_SCALE", raising=False)
    monkeypatch.delenv("GALNB_RUN_DIR", raising=False)
    monkeypatch.setattr(runs, "_cuda_available", lambda: True)
    run = runs.start_chapter("t", scale="auto", data="mock", seed=0, device="cpu", run_dir=str(tmp_path), show=False)
    assert run.scale.name == "paper" and "chosen by scale='auto'" in run.card()["scale"]
    assert "106,800" in run.card()["scale"]
    chosen = runs.start_chapter("t", scale="ci", data="mock", seed=0, device="cpu", run_dir=str(tmp_path), show=False)
    assert chosen.card()["scale"] == "ci"
