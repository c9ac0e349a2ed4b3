"""Print a benchmark's tables and notes and, with ``--json PATH``, keep them in a JSON record.

The record holds what is needed to trace the numbers (the command, UTC date, git commit,
machine, package versions) so the book's Benchmarks page can show them without anyone
retyping a number. A script uses it as::

    add_json_option(parser)
    args = parser.parse_args()
    with Record("cfm", args.json) as rec:     # writes args.json on a clean exit, if given
        rec.section("Posterior sampling throughput")
        rec.table(df, formatters={...})       # prints df.to_string(index=False, ...)
        rec.note("(4 objects x 1000 draws)")  # prints the line

The record's name is the script's name without ``bench_`` (``galnb.book`` expects
``benchmarks/results/<name>.json`` from ``benchmarks/bench_<name>.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import pandas as pd

from galnb.io import atomic_write
from galnb.runs import git_commit, package_versions


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--json PATH`` to a benchmark's command line."""
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the tables, command, commit and machine to this JSON file "
                             "(benchmarks/results/<name>.json is what the book shows)")


def hardware() -> dict[str, object]:
    """CPU model, cores, RAM and torch threads (and the GPU, if torch sees one)."""
    import torch

    cpu = platform.processor() or platform.machine()
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    try:  # /proc names the CPU model; platform.processor() is often empty on Linux
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    hw: dict[str, object] = {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(ram_gb, 1),
                             "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        hw["gpu"] = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return hw


class Record:
    """One benchmark run: its printed tables and notes, grouped into sections, and its provenance."""

    def __init__(self, name: str, path: str | Path | None = None) -> None:
        self.name = name
        self.path = Path(path) if path else None
        self.notes: list[str] = []  # printed before the first section
        self.sections: list[dict] = []

    def __enter__(self) -> Record:
        # commit and tree state as the run starts: files edited during a long run are not what ran
        commit = git_commit()
        self.provenance = {
            "benchmark": self.name,
            "command": shlex.join(["python", *sys.argv]),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "git": {"commit": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty")},
            "hardware": hardware(),
            "packages": package_versions(),
            # other processes slow a benchmark down; the load average says whether there were any
            "load_average_at_start": round(os.getloadavg()[0], 2),
        }
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None and self.path is not None:
            self._save(time.perf_counter() - self.started)

    def section(self, title: str) -> None:
        """Start a section: its tables and notes follow until the next one."""
        print(f"\n== {title} ==")
        self.sections.append({"title": title, "rows": [], "notes": []})

    def table(self, df: pd.DataFrame, **to_string: object) -> None:
        """Print ``df`` (``to_string`` options, e.g. ``formatters``) and keep its rows, unrounded."""
        if not self.sections or self.sections[-1]["rows"]:
            raise ValueError("each table needs its own section(): the record keeps one table per section")
        # at least two spaces between columns: formatted ones would otherwise sit one apart
        to_string.setdefault("col_space", {c: len(str(c)) + 1 for c in df.columns})
        print(df.to_string(index=False, **to_string))
        # object dtype gives plain Python numbers (json cannot write numpy's); NaN becomes null
        self.sections[-1]["rows"] = df.astype(object).where(df.notna(), None).to_dict("records")

    def note(self, text: str) -> None:
        """Print a line and keep it with the current section."""
        print(text)
        (self.sections[-1]["notes"] if self.sections else self.notes).append(text)

    def _save(self, wall_s: float) -> None:
        """Write the record (provenance, wall time, notes, sections) to ``self.path`` atomically."""
        record = {**self.provenance, "wall_s": round(wall_s, 1), "notes": self.notes, "sections": self.sections}
        with atomic_write(self.path, "w") as fh:
            json.dump(record, fh, indent=2)
        print(f"\nrecord written to {self.path}")
