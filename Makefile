# Two commands for a fresh machine:  `make book`  (set up + build at ci scale)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCALE ?= ci
# Real SDSS pieces for the checks against real galaxies (tests and chapter 01), never part of
# the repository: the shared folder beside the checkout when there is one.
REAL_SDSS ?= $(wildcard $(CURDIR)/../shared/data/real-sdss)
export GALNB_REAL_SDSS ?= $(REAL_SDSS)

.PHONY: setup browser book lint test sync clean

setup: $(VENV)/.installed browser

# torch first, pinned to the CPU build on machines that have it, so that no other
# package's requirement pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[book,test]"
	@$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

# Headless Chromium checks the built pages (tests/test_book.py).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Only the tests need a browser, so the book builds without root.
book: $(VENV)/.installed
	$(BIN)/python -m galnb book --scale $(SCALE)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

# ruff, then every test and every docstring example (pyproject.toml's pytest options)
test: setup lint
	$(BIN)/python -m pytest -ra

sync: $(VENV)/.installed
	$(BIN)/python -m galnb sync

clean:
	rm -rf _build runs
