"""Build the book: execute every chapter once with papermill, then render with Jupyter Book."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .runs import (
    RUN_DIR_ENV,
    SCALE_CHOICES,
    SCALE_ENV,
    git_commit,
    manifest_key,
    project_root,
    requested_scale,
    resolve_scale,
    run_folder,
)

__all__ = ["CHAPTERS", "BENCHMARKS", "Execution", "executions", "sync_notebooks", "build_book"]

CHAPTERS: tuple[str, ...] = ("01_data", "02_cfm_theory", "03_train", "04_vae_nf", "05_evaluation", "06_degeneracy")

#: The benchmarks the book's Benchmarks page expects: ``benchmarks/bench_<name>.py`` writes the
#: record ``benchmarks/results/<name>.json``; name -> heading on the page.
BENCHMARKS: dict[str, str] = {
    "cfm": "Flow matching: sampler, log-density and solvers",
    "simulation": "Survey simulation: speed and colours",
    "memory": "Memory of paper-scale data loading",
    "information": "Structure beside photometry: real and simulated galaxies",
    "ablation": "Images without the inclination–dust coupling: what is left of the image gain",
}


@dataclass(frozen=True)
class Execution:
    """One papermill execution of a chapter: the source notebook, the page it becomes, extra parameters,
    and the page's title where it differs from the notebook's (one notebook, several pages)."""

    notebook: str
    page: str
    params: tuple[tuple[str, object], ...] = ()
    title: str | None = None


def executions(data: str = "mock") -> list[Execution]:
    """Chapters in dependency order.

    Chapter 03 runs once per CFM model, each on its own page: the photometry and image models,
    the measured-structure reference, and on the simulated survey (``data="mock"``, whose
    galaxies' true structure is known) the true-structure reference.
    """
    structure = [Execution("03_train", "03_train_structure", (("model", "structure"),),
                           "Training the true-structure reference")] if data == "mock" else []
    return [
        Execution("01_data", "01_data"),
        Execution("02_cfm_theory", "02_cfm_theory"),
        Execution("03_train", "03_train_phot", (("model", "phot"),), "Training the photometry model"),
        Execution("03_train", "03_train", (("model", "image"),)),
        Execution("03_train", "03_train_measured", (("model", "measured"),),
                  "Training the measured-structure reference"),
        *structure,
        Execution("04_vae_nf", "04_vae_nf"),
        Execution("05_evaluation", "05_evaluation"),
        Execution("06_degeneracy", "06_degeneracy"),
    ]


def sync_notebooks(root: Path | None = None) -> list[Path]:
    """Write each ``notebooks/NN_name.ipynb`` from its reviewed ``.py`` (no outputs, kernel python3)."""
    import jupytext

    root = root or project_root()
    written = []
    for py in sorted((root / "notebooks").glob("[0-9][0-9]_*.py")):
        nb = jupytext.read(py)
        for i, cell in enumerate(nb.cells):  # stable ids, so an unchanged notebook gives no diff
            cell.id = hashlib.sha1(f"{i}:{cell.source}".encode()).hexdigest()[:8]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        jupytext.write(nb, py.with_suffix(".ipynb"))
        written.append(py.with_suffix(".ipynb"))
    return written


def _finish_page(path: Path, title: str | None = None) -> None:
    """Show papermill's injected-parameters cell collapsed (a toggle) in the rendered page, and give
    the page ``title`` (its first level-1 heading) if one is given."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
    heading = next((c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("# ")), None)
    if title and heading is not None:
        _, newline, rest = heading.source.partition("\n")
        heading.source = f"# {title}{newline}{rest}"
    nbformat.write(nb, path)


def _stage_toc(source: Path, target: Path, pages: list[str]) -> None:
    """Copy the table of contents, leaving out the chapter pages this build does not execute."""
    lines = source.read_text().splitlines(keepends=True)
    kept = [line for line in lines
            if not (m := re.match(r"\s*- file: notebooks/(\S+)", line)) or m[1] in pages]
    target.write_text("".join(kept))


def _run(cmd: list[str], **kwargs) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def _stage_config(source: Path, target: Path) -> None:
    """The book's ``_config.yml`` with a footer naming the galnb version, the commit and the licences."""
    import yaml

    config = yaml.safe_load(source.read_text())
    config.setdefault("html", {})["extra_footer"] = (
        f"<p>galnb {metadata.version('galnb')}, commit {git_commit()}. Code: MIT licence; prose and figures: "
        f"<a href='https://creativecommons.org/licenses/by/4.0/'>CC BY 4.0</a> (LICENSE, LICENSE-CONTENT.md); "
        f"cite with CITATION.cff.</p>")
    target.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def _jupyter_book() -> str:
    """The jupyter-book command: beside this Python (a venv's bin/), else the first on PATH."""
    beside = Path(sys.executable).parent / "jupyter-book"
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if found is None:
        raise FileNotFoundError("jupyter-book is not installed beside this Python nor on PATH; "
                                "pip install -e '.[book]' installs it")
    return found


def build_book(
    scale: str | None = None,
    data: str = "mock",
    seed: int = 0,
    device: str = "auto",
    run_dir: str | None = None,
    out: str | Path = "_build/book",
    only: list[str] | None = None,
    render_only: bool = False,
) -> Path:
    """Execute every chapter once, in order, then render the executed notebooks.

    The book is rendered from a staging folder ``out`` holding the book pages and the
    executed notebooks, so Jupyter Book never executes anything itself. Sphinx
    warnings are errors, and a failing cell stops the build (papermill raises).

    Arguments:
        scale: None takes ``$GALNB_SCALE``, else ``"ci"``.
        run_dir: None takes ``$GALNB_RUN_DIR``, else ``"runs"``; every chapter is given it.
        only: execute just these notebooks and do not render (for authors).
        render_only: render the notebooks already executed into ``out`` (for authors).
    Returns:
        the folder holding ``index.html``.
    """
    scale = requested_scale(scale, default="ci")[0]
    resolved = resolve_scale(scale)  # fail on a bad scale or notebook name before any work
    folder = run_folder(run_dir, resolved.name, data, seed)  # run_dir None: $GALNB_RUN_DIR, else runs
    notebooks = list(dict.fromkeys(ex.notebook for ex in executions(data)))
    unknown = [name for name in only or () if name not in notebooks]
    if unknown:
        raise ValueError(f"only = {unknown} names no notebook of the book; choose among {notebooks}")
    root = project_root()
    out = (root / out).resolve() if not Path(out).is_absolute() else Path(out)
    staged_nb = out / "notebooks"
    if render_only and not staged_nb.exists():
        raise FileNotFoundError(f"{staged_nb}: no executed notebooks to render; build without --render-only first")
    # --only keeps the other chapters' executed notebooks, so that --render-only can follow
    for stale in (out / "book", out / "galnb", out / "_build", *([] if render_only or only else [staged_nb])):
        shutil.rmtree(stale, ignore_errors=True)
    staged_nb.mkdir(parents=True, exist_ok=True)
    _stage_config(root / "_config.yml", out / "_config.yml")
    _stage_toc(root / "_toc.yml", out / "_toc.yml", [ex.page for ex in executions(data)])
    shutil.copytree(root / "book", out / "book")
    # the package beside the pages, so that chapter 02's literalinclude shows the code that ran
    shutil.copytree(root / "galnb", out / "galnb", ignore=shutil.ignore_patterns("__pycache__"))
    common = {"scale": scale, "data": data, "seed": seed, "device": device, "run_dir": str(folder.parent.resolve())}
    timings: dict[str, float] = {}
    for ex in [] if render_only else executions(data):
        if only and ex.notebook not in only:
            continue
        params = {**common, **dict(ex.params)}
        flags = [x for k, v in params.items() for x in ("-p", k, str(v))]
        start = time.time()
        _run([sys.executable, "-m", "papermill", str(root / "notebooks" / f"{ex.notebook}.ipynb"),
              str(staged_nb / f"{ex.page}.ipynb"), "--cwd", str(root), "-k", "python3", "--log-output", *flags])
        timings[ex.page] = time.time() - start
        _finish_page(staged_nb / f"{ex.page}.ipynb", ex.title)
    for page, seconds in timings.items():
        print(f"executed {page:<16} {seconds:7.1f} s")

    if only:
        print("--only given: chapters executed, book not rendered (it needs every chapter)")
        return staged_nb
    _write_execution_page(out / "book" / "execution.md", folder / "manifest.json", staged_nb, data)
    _write_results_page(out / "book" / "results.md", staged_nb, data)
    _write_benchmarks_page(out / "book" / "benchmarks.md", root / "benchmarks" / "results")
    _run([_jupyter_book(), "build", str(out), "-W", "--keep-going"])
    html = out / "_build" / "html"
    print(f"book: {html / 'index.html'}")
    return html


_GLUE_FIGURE = re.compile(r"```\{glue:figure\}\s+(?P<key>\S+)\n(?P<opts>(?::[^\n]*\n)*)\n?(?P<caption>.*?)```", re.S)


def _glued_outputs(nb_path: Path) -> list[tuple[str, str]]:
    """(key, kind) of every glued figure or table in an executed notebook, in order."""
    import nbformat

    found = []
    for cell in nbformat.read(nb_path, as_version=4).cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            data = output.get("data", {})
            if name and any(k.endswith("image/png") for k in data):
                found.append((name, "figure"))
            elif name and any(k.endswith("text/html") for k in data):
                found.append((name, "table"))
    return found


def _captions(nb_path: Path) -> dict[str, tuple[str, str | None]]:
    """key → (caption, label) from the chapter's own ``glue:figure`` directives."""
    import nbformat

    out = {}
    for cell in nbformat.read(nb_path, as_version=4).cells:
        if cell.cell_type == "markdown":
            for m in _GLUE_FIGURE.finditer(cell.source):
                label = re.search(r":name:\s*(\S+)", m["opts"])
                out[m["key"]] = (" ".join(m["caption"].split()), label[1] if label else None)
    return out


def _title(nb_path: Path) -> str:
    import nbformat

    for cell in nbformat.read(nb_path, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            return cell.source.lstrip()[2:].splitlines()[0].strip()
    return nb_path.stem


def _rebase_roles(text: str, page: str) -> str:
    """Make a chapter caption's glue keys and document links work from ``book/results``."""
    # glue:text splits its format off at the last colon, so a doc path needs an explicit format
    text = re.sub(r"\{glue:text\}`(?![^`]*::)([^`:]+)`", r"{glue:text}`\1:s`", text)
    text = re.sub(r"\{(glue(?::\w+)?)\}`(?![^`]*::)([^`]+)`", rf"{{\1}}`../notebooks/{page}.ipynb::\2`", text)
    return re.sub(r"\{doc\}`(?!\.\./)([^`/]+)`", r"{doc}`../notebooks/\1`", text)


def _write_results_page(page: Path, staged_nb: Path, data: str = "mock") -> None:
    """Every glued figure and table of every chapter, each linking back to where it was made."""
    lines = [page.read_text().rstrip(), ""]
    for ex in executions(data):
        nb = staged_nb / f"{ex.page}.ipynb"
        doc = f"../notebooks/{ex.page}"
        captions = _captions(nb)
        items = _glued_outputs(nb)
        if not items:
            continue
        lines += [f"## {_title(nb)}" + (f" ({', '.join(f'{k}={v}' for k, v in ex.params)})" if ex.params else ""), ""]
        for key, kind in items:
            caption, label = captions.get(key, ("", None))
            caption = _rebase_roles(caption, ex.page)
            where = f"{{ref}}`in its chapter <{label}>`" if label else f"{{doc}}`in its chapter <{doc}>`"
            # ``glue:figure`` cannot paste from another page; the generic ``glue`` directive can.
            lines += [f"```{{glue}} {key}", f":doc: {doc}.ipynb", "```", "",
                      f"{caption} *(The {kind} `{key}`, made {where}.)*", ""]
    page.write_text("\n".join(lines))


def _write_execution_page(page: Path, manifest: Path, staged_nb: Path, data: str = "mock") -> None:
    import pandas as pd

    recorded = json.loads(manifest.read_text()) if manifest.exists() else {}
    rows = []
    for ex in executions(data):
        info = recorded.get(manifest_key(ex.notebook, dict(ex.params)), {})
        executed = staged_nb / f"{ex.page}.ipynb"
        # papermill records each execution's duration in the notebook it writes
        duration = (json.loads(executed.read_text())["metadata"].get("papermill", {}).get("duration")
                    if executed.exists() else None)
        rows.append({"page": ex.page, "scale": info.get("parameters", {}).get("scale", "?"),
                     "hardware": info.get("hardware", "?"), "chapter wall time [s]": info.get("wall_s", float("nan")),
                     "papermill wall time [s]": round(duration, 1) if duration is not None else float("nan"),
                     "finished": info.get("finished", "?"), "git commit": info.get("git_commit", "?")})
    page.write_text(page.read_text().replace("<!-- galnb:execution-table -->",
                                             pd.DataFrame(rows).to_markdown(index=False)))


def _benchmark_command(name: str) -> str:
    return f"python benchmarks/bench_{name}.py --json benchmarks/results/{name}.json"


def _format_cell(value: object) -> str:
    """A table cell for the page: floats to three significant digits, no exponent from 0.001 up."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        decimals = 2 - math.floor(math.log10(abs(value)))
        if decimals > 5:
            return f"{value:.2e}"
        return f"{value:,.{max(decimals, 0)}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")  # a bare pipe would end the markdown table cell


def _benchmark_table(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    align = ["right" if pd.api.types.is_numeric_dtype(df[c]) else "left" for c in df.columns]
    cells = df.astype(object).map(_format_cell).rename(columns=_format_cell)
    return cells.to_markdown(index=False, disable_numparse=True, colalign=align)


def _benchmark_record(name: str, path: Path, record: dict) -> list[str]:
    """Markdown lines for one record: its provenance, then each section's table and notes."""
    heading = BENCHMARKS.get(name, f"`bench_{name}.py`") + ("" if path.stem == name else f" (`{path.name}`)")
    git, hw = record.get("git", {}), record.get("hardware", {})
    machine = (f"{hw.get('cpu', '?')}, {hw.get('cores', '?')} cores, {hw.get('ram_gb', '?')} GB RAM; "
               f"torch threads: {hw.get('torch_threads', '?')}" + (f", {hw['gpu']}" if "gpu" in hw else ""))
    lines = [f"## {heading}", "",
             f"- **command:** `{record.get('command', '?')}`",
             f"- **recorded:** {record.get('date', '?')}, wall time {_format_cell(record.get('wall_s'))} s, "
             f"load average {record.get('load_average_at_start', '?')} at the start",
             f"- **commit:** `{git.get('commit', '?')}`" + (" with uncommitted changes" if git.get("dirty") else ""),
             f"- **machine:** {machine}",
             "- **packages:** " + ", ".join(f"{k} {v}" for k, v in record.get("packages", {}).items()),
             *[f"- {note}" for note in record.get("notes", [])], ""]
    for section in record.get("sections", []):
        lines += [f"### {section['title']}", ""]
        if section.get("rows"):
            lines += [_benchmark_table(section["rows"]), ""]
        lines += [*[f"- {note}" for note in section.get("notes", [])], ""]
    return lines


def _write_benchmarks_page(page: Path, results: Path) -> None:
    """Put every record in ``results/*.json`` on the page; for an expected one missing, name its command."""
    records = [(path, json.loads(path.read_text())) for path in sorted(results.glob("*.json"))]
    named = [(record.get("benchmark", path.stem), path, record) for path, record in records]
    lines = []
    for name in dict.fromkeys([*BENCHMARKS, *(n for n, _, _ in named)]):  # expected ones first, in order
        mine = [(path, record) for n, path, record in named if n == name]
        for path, record in mine:
            lines += _benchmark_record(name, path, record)
        if not mine:
            lines += [f"## {BENCHMARKS[name]}", "", f"Not yet recorded. Run `{_benchmark_command(name)}` "
                      "from the repository root, then rebuild the book.", ""]
    page.write_text(page.read_text().replace("<!-- galnb:benchmark-tables -->", "\n".join(lines).rstrip()))


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m galnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    book = sub.add_parser("book", help="execute every chapter and build the book",
                          epilog="An option given beats its environment variable, which beats the default.")
    book.add_argument("--scale", choices=SCALE_CHOICES,
                      help=f"size of the run (galnb/runs.py); default: ${SCALE_ENV}, else ci")
    book.add_argument("--data", default="mock", help="'mock', 'sdss' or a folder in the common format (default: mock)")
    book.add_argument("--seed", type=int, default=0, help="seeds the data, the training and the metrics (default: 0)")
    book.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                      help="auto: cuda if torch sees it (default: auto)")
    book.add_argument("--run-dir", help=f"where the chapters keep stores, models and posteriors; default: "
                                        f"${RUN_DIR_ENV}, else runs")
    book.add_argument("--out", default="_build/book",
                      help="staging folder; the HTML lands in OUT/_build/html (default: _build/book)")
    book.add_argument("--only", nargs="*",
                      help="execute only these notebooks (e.g. 01_data 02_cfm_theory), do not render")
    book.add_argument("--render-only", action="store_true", help="render the notebooks already executed into --out")
    sub.add_parser("sync", help="regenerate notebooks/*.ipynb from their .py sources")
    args = parser.parse_args(argv)
    if args.command == "sync":
        for path in sync_notebooks():
            print(f"wrote {path}")
        return 0
    try:
        build_book(args.scale, args.data, args.seed, args.device, args.run_dir, args.out, args.only, args.render_only)
    except ValueError as err:  # a bad option, found before any work
        parser.error(str(err))
    return 0
