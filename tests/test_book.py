"""The whole book at ci scale: every notebook executes, the README's papermill command works
verbatim, and the rendered pages load in headless Chromium with every figure drawn."""

import json
import shutil
from importlib import metadata
from pathlib import Path

import nbformat
import pytest

from galnb.book import CHAPTERS, executions

pytestmark = pytest.mark.book
PAGES = [ex.page for ex in executions()]


def test_readme_papermill_command_works_verbatim(built_book):
    proc = built_book["papermill"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = nbformat.reads(proc.stdout, as_version=4)  # papermill prints the notebook to stdout
    assert executed.metadata["papermill"]["parameters"]["model"] == "image"
    checkpoint = built_book["runs"] / "ci-mock-seed0" / "models" / "image" / "best.pt"
    assert checkpoint.exists(), "the image model's checkpoint must be where 05_evaluation looks"


def test_book_build_succeeds(built_book):
    build = built_book["build"]
    assert build.returncode == 0, (build.stdout + build.stderr)[-5000:]
    assert (built_book["html"] / "index.html").exists()


@pytest.mark.parametrize("page", PAGES)
def test_every_chapter_executed_without_errors(built_book, page):
    nb = nbformat.read(built_book["site"] / "notebooks" / f"{page}.ipynb", as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    card_cell = next(c for c in nb.cells if "start_chapter(" in c.source)
    card = [o for o in card_cell.get("outputs", []) if o.get("output_type") == "display_data"]
    assert card and "wall time" in card[0]["data"]["text/html"], "the first output is the run card, with its wall time"
    assert "running" not in card[0]["data"]["text/html"], "finish() updated the card"


def test_every_chapter_and_the_results_page_are_rendered(built_book):
    html = built_book["html"]
    for page in PAGES:
        assert (html / "notebooks" / f"{page}.html").exists(), page
    results = (html / "book" / "results.html").read_text()
    for chapter in CHAPTERS:
        assert f"{chapter}.html" in results, f"results page links no figure back to {chapter}"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromedriver are needed (make setup installs Debian's chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


@pytest.mark.parametrize("page", [f"notebooks/{p}" for p in PAGES]
                         + ["book/results", "book/execution", "book/benchmarks", "book/intro"])
def test_page_loads_with_every_figure_drawn_and_no_error_output(built_book, browser, page):
    path = built_book["html"] / f"{page}.html"
    browser.get(path.as_uri())
    assert browser.title, f"{page}: no title"
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('main img'))"
        ".map(i => [i.src, i.complete, i.naturalWidth, i.naturalHeight])")
    broken = [s for s in sizes if not (s[1] and s[2] > 0 and s[3] > 0)]
    assert not broken, f"{page}: images with no size: {broken[:5]}"
    text = browser.execute_script("return document.querySelector('main').innerText")
    assert "Traceback" not in text, f"{page}: shows a traceback"
    assert "Bagpipes:" not in text, f"{page}: shows bagpipes' start-up notes"
    stderr = browser.execute_script(
        "return document.querySelectorAll('.output.stderr, .output.error, .output.traceback').length")
    assert stderr == 0, f"{page}: {stderr} error/stderr output blocks"
    if page.startswith("notebooks/") or page == "book/results":
        assert sizes, f"{page}: no figures at all"
    footer = browser.execute_script("return document.body.innerText")
    version = metadata.version("galnb")
    assert f"galnb {version}, commit" in footer and "CC BY 4.0" in footer, f"{page}: no version and licence footer"
    shot = built_book["site"] / "screenshots" / (page.replace("/", "_") + ".png")
    shot.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(shot))


@pytest.mark.parametrize("page", PAGES)
def test_exercise_solutions_ran_at_ci_scale_and_are_collapsed(built_book, page):
    nb = nbformat.read(built_book["site"] / "notebooks" / f"{page}.ipynb", as_version=4)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) >= 2, f"{page}: at least two exercises with solutions"
    for cell in solutions:
        assert "hide-cell" in cell.metadata["tags"]
        assert cell.get("execution_count"), "the solution was executed by the build"
        assert not [o for o in cell.outputs if o.get("output_type") == "error"]


def test_built_book_has_toggles_glossary_links_and_bibliography(built_book):
    html = built_book["html"]
    chapter = (html / "notebooks" / "05_evaluation.html").read_text()
    assert "toggle" in chapter.lower() or "<details" in chapter, "solutions sit behind a toggle"
    assert "glossary.html#term-" in chapter, "first uses link to the glossary"
    bibliography = (html / "book" / "bibliography.html").read_text()
    for key in ("Yunus", "Siddiqa", "Lipman", "Lemos"):
        assert key in bibliography
    assert (html / "book" / "glossary.html").exists() and (html / "book" / "adapting.html").exists()


def test_benchmarks_page_shows_each_record_and_names_the_command_for_a_missing_one(tmp_path):
    from galnb.book import BENCHMARKS, _write_benchmarks_page

    record = {"benchmark": "cfm", "command": "python benchmarks/bench_cfm.py --json benchmarks/results/cfm.json",
              "date": "2026-01-02 03:04:05 UTC", "wall_s": 321.0, "load_average_at_start": 0.1,
              "git": {"commit": "abc1234", "dirty": True},
              "hardware": {"cpu": "Test CPU 9000", "cores": 2, "ram_gb": 8.0, "torch_threads": 2},
              "packages": {"torch": "2.13.0", "galnb": "0.1.0"}, "notes": [],
              "sections": [{"title": "Posterior sampling throughput, RK4-100", "notes": ["(4 objects x 1000 draws)"],
                            "rows": [{"model": "image 128 px", "galnb [draws/s]": 1234.5678, "speed-up [x]": 3.4567}]}]}
    results = tmp_path / "results"
    results.mkdir()
    (results / "cfm.json").write_text(json.dumps(record))
    page = tmp_path / "benchmarks.md"
    shutil.copy(Path(__file__).resolve().parents[1] / "book" / "benchmarks.md", page)
    _write_benchmarks_page(page, results)
    text = page.read_text()
    assert "galnb:benchmark-tables" not in text, "the placeholder is replaced"
    for shown in (record["command"], "2026-01-02 03:04:05 UTC", "abc1234", "uncommitted", "Test CPU 9000",
                  "| model", "galnb [draws/s]", "image 128 px", "1,235", "3.46", "(4 objects x 1000 draws)"):
        assert shown in text, shown
    assert "1234.5678" not in text, "numbers are rounded for the page"
    missing = [name for name in BENCHMARKS if name != "cfm"]
    assert text.count("Not yet recorded") == len(missing)
    for name in missing:
        assert (f"Not yet recorded. Run `python benchmarks/bench_{name}.py "
                f"--json benchmarks/results/{name}.json`") in text


@pytest.mark.parametrize("galaxy, ok", [(3, True), (100_000, False)])
def test_degeneracy_chapter_reruns_on_any_test_galaxy_and_refuses_one_out_of_range(built_book, tmp_path, galaxy, ok):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GALNB_SCALE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    out = tmp_path / "06.ipynb"
    proc = subprocess.run(["papermill", "notebooks/06_degeneracy.ipynb", str(out), "-p", "galaxy", str(galaxy),
                           "-p", "scale", "ci", "-p", "run_dir", str(built_book["runs"])],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600)
    if not ok:
        assert proc.returncode != 0
        assert "galaxy=100000 is not valid; choose -1" in proc.stdout + proc.stderr, proc.stderr[-2000:]
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    shown = next(c for c in nb.cells if "if galaxy >= 0" in c.source)
    assert [o for o in shown.outputs if "image/png" in o.get("data", {})], "the chosen galaxy's figure is drawn"


def test_a_page_of_a_notebook_run_several_times_gets_its_own_title_and_a_collapsed_parameters_cell(tmp_path):
    import nbformat

    from galnb.book import _finish_page, executions

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Training the CFM models\n\nWhich model."),
                                         nbformat.v4.new_code_cell("model = 'measured'",
                                                                   metadata={"tags": ["injected-parameters"]})])
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    _finish_page(path, "Training the measured-structure reference")
    done = nbformat.read(path, as_version=4)
    assert done.cells[0].source == "# Training the measured-structure reference\n\nWhich model."
    assert "hide-cell" in done.cells[1].metadata["tags"]
    # every page made from chapter 03 has a title of its own in the book's navigation
    titles = [ex.title for ex in executions("mock") if ex.notebook == "03_train"]
    assert len(set(titles)) == len(titles)
