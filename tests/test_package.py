"""The package's shape: every import path the chapters and the README use works, and every module
declares its public API in ``__all__``."""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import galnb

ROOT = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*from (galnb(?:\.\w+)*) import ([\w, ()\n]+?)$", re.M)


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(galnb.__path__, "galnb.")
                  if not m.name.endswith(("__main__", "conftest")))


def _imports(text: str) -> list[tuple[str, str]]:
    return [(module, name.strip()) for module, names in IMPORT.findall(text)
            for name in names.strip("()").split(",") if name.strip()]


@pytest.mark.parametrize("source", [*sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")), ROOT / "README.md"],
                         ids=lambda p: p.name)
def test_every_name_a_chapter_or_the_readme_imports_from_galnb_exists(source):
    text = source.read_text()
    for module, name in _imports(text):
        target = importlib.import_module(module)
        if importlib.util.find_spec(f"{module}.{name}") if hasattr(target, "__path__") else False:
            whole = importlib.import_module(f"{module}.{name}")  # a module imported whole: check its `name.attr` uses
            for attr in set(re.findall(rf"\b{name}\.(\w+)", text)):
                assert hasattr(whole, attr), f"{source.name}: {module}.{name} has no {attr}"
        else:
            assert hasattr(target, name), f"{source.name}: {module} has no {name}"


@pytest.mark.parametrize("name", _modules())
def test_every_module_lists_exactly_its_public_names_in_all(name):
    module = importlib.import_module(name)
    assert module.__doc__ and module.__doc__.strip(), f"{name} has no docstring"
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    defined_here = [n for n, obj in vars(module).items()
                    if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                    and getattr(obj, "__module__", None) == name]
    unlisted = sorted(set(defined_here) - set(exported))
    assert not unlisted, f"{name} defines public {unlisted} but leaves them out of __all__"
