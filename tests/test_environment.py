"""The two install routes list the same dependencies, and torch stays pinned."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {_name(r) for r in extra}
    return names


def _environment() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        elif not dep.startswith(("python=", "pip")):
            names.add(_name(dep))
    return {"torch" if n == "pytorch" else n for n in names}


def test_environment_yml_and_pyproject_list_the_same_packages():
    assert _pyproject() == _environment(), (
        f"only in pyproject.toml: {sorted(_pyproject() - _environment())}; "
        f"only in environment.yml: {sorted(_environment() - _pyproject())}"
    )


def test_torch_is_pinned_to_the_cpu_build_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]


def test_installed_torch_is_the_pinned_cpu_build():
    import torch

    assert torch.__version__.startswith("2.13.0")


def test_jupyter_book_stays_on_1x():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "jupyter-book>=1.0.4.post1,<2" in project["optional-dependencies"]["book"]


def test_licences_and_citation_agree_with_the_package():
    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "MIT License" in (ROOT / "LICENSE").read_text() and project["license"]["text"] == "MIT"
    assert "CC BY 4.0" in (ROOT / "LICENSE-CONTENT.md").read_text()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == project["version"] and citation["license"] == "MIT"
    assert len(citation["references"]) == 2, "the two papers the book accompanies"
