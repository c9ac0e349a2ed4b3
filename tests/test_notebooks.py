"""The paired notebooks: in step with their sources, parameterised, quick to refuse bad input."""

import os
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from galnb.book import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REQUIRED = {"scale", "data", "seed", "device", "run_dir"}


def _cells(nb):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_pair_has_not_drifted(chapter):
    py, ipynb = NOTEBOOKS / f"{chapter}.py", NOTEBOOKS / f"{chapter}.ipynb"
    assert py.exists() and ipynb.exists(), f"{chapter}: both .py and .ipynb must be committed"
    assert _cells(jupytext.read(py)) == _cells(jupytext.read(ipynb)), (
        f"{ipynb.name} differs from {py.name}: run `python -m galnb sync` (the .py is the reviewed source)"
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_ipynb_is_committed_without_outputs_and_with_kernel_python3(chapter):
    nb = nbformat.read(NOTEBOOKS / f"{chapter}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_parameters_cell_comes_first_and_names_the_shared_parameters(chapter):
    nb = jupytext.read(NOTEBOOKS / f"{chapter}.py")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged parameters"
    names = {line.split("=")[0].strip() for line in code[0].source.splitlines() if "=" in line}
    assert REQUIRED <= names, f"missing parameters: {REQUIRED - names}"
    if chapter == "03_train":
        assert "model" in names
    assert "start_chapter(" in code[1].source, "the run card must be the first output"


def _papermill(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "GALNB_SCALE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    start = time.time()
    proc = subprocess.run(["papermill", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - start


@pytest.mark.parametrize(
    "params, message",
    [(["-p", "model", "foo"], r"model='foo' is not valid; choose one of 'phot', 'image'"),
     (["-p", "scale", "huge"], r"scale='huge' is not valid; choose one of 'ci', 'small', 'paper', 'auto'")],
)
def test_bad_parameter_fails_within_seconds_naming_valid_values(tmp_path, params, message):
    import re

    proc, seconds = _papermill("notebooks/03_train.ipynb", str(tmp_path / "out.ipynb"), "-p", "run_dir", str(tmp_path),
                               *params)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-2000:]
    assert seconds < 60, f"took {seconds:.0f} s to refuse a bad parameter"
    assert not (tmp_path / "ci-mock-seed0" / "data").exists(), "no heavy work before validation"


def test_book_command_refuses_an_unknown_notebook_and_shows_its_defaults(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "keep.txt").write_text("a reader's file")
    cmd = [sys.executable, "-m", "galnb", "book", "--out", str(out)]
    typo = subprocess.run([*cmd, "--only", "03_trian"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2 and "only = ['03_trian'] names no notebook" in typo.stderr
    assert "03_train" in typo.stderr and (out / "keep.txt").exists(), "nothing on disk touched"
    helped = subprocess.run([*cmd, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "$GALNB_SCALE, else ci" in helped.stdout and "$GALNB_RUN_DIR, else runs" in helped.stdout
    assert "(default: mock)" in helped.stdout


def test_renderer_is_found_beside_python_or_on_path(tmp_path, monkeypatch):
    from galnb import book

    bare = tmp_path / "bare" / "python"  # a Python with no jupyter-book beside it
    bare.parent.mkdir()
    monkeypatch.setattr(sys, "executable", str(bare))
    tools = tmp_path / "tools"
    tools.mkdir()
    fake = tools / "jupyter-book"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    assert book._jupyter_book() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="jupyter-book is not installed"):
        book._jupyter_book()
