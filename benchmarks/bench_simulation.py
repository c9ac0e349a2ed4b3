"""Benchmark of galnb.simulation: galaxies/s at ci and paper settings, colours vs real SDSS.

Run from the repository root (a minute or two on 2 CPU cores):

    python benchmarks/bench_simulation.py
    python benchmarks/bench_simulation.py --json benchmarks/results/simulation.json   # the run the book shows
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from galnb import simulation as sim
from galnb import validation
from galnb.runs import SCALES, Scale

from record import Record, add_json_option  # benchmarks/record.py: a script's own folder is on sys.path


def timed_survey(n: int, size: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Simulate ``n`` galaxies at ``size`` px: the catalog, the selection funnel, the wall time (s)."""
    start = time.perf_counter()
    catalog, _, funnel = sim.simulate_survey(n, size, seed=seed, progress=False)
    return catalog, funnel, time.perf_counter() - start


def speed_row(name: str, n: int, scale: Scale, seconds: float) -> dict[str, object]:
    return {"set": name, "galaxies": n, "image [px]": scale.image_size, "wall time [s]": seconds,
            "rate [galaxies/s]": n / seconds, "full set [galaxies]": scale.n_galaxies,
            "full set, extrapolated [min]": scale.n_galaxies * seconds / n / 60}


def main() -> None:
    """Time the ci set and a 500-galaxy 128 px slice, and compare colours with real SDSS."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_json_option(parser)
    args = parser.parse_args()
    sim.spectral_library()  # build or load the cache outside the timings
    ci, paper = SCALES["ci"], SCALES["paper"]
    with Record("simulation", args.json) as rec:
        rec.section("Simulation speed")
        catalog, funnel, t_ci = timed_survey(ci.n_galaxies, ci.image_size, seed=0)
        _, _, t_paper = timed_survey(500, paper.image_size, seed=1)  # a slice: the whole paper set takes hours
        rows = [speed_row("ci", ci.n_galaxies, ci, t_ci), speed_row("paper (500-galaxy slice)", 500, paper, t_paper)]
        rec.table(pd.DataFrame(rows), float_format=lambda v: f"{v:.1f}")
        rec.section("Selection funnel of the ci set")
        rec.table(funnel)
        rec.section("Blue-cloud colour distances vs the kcorrect SDSS sample")
        wd = validation.compare_photometry(catalog, validation.real_sdss_photometry()).rename(columns={
            "wasserstein": "Wasserstein", "wasserstein_matched": "Wasserstein, matched in (z, r)",
            "median_sim": "median simulated", "median_real": "median real", "n_sim": "n simulated", "n_real": "n real"})
        rec.table(wd, float_format=lambda v: f"{v:.3f}")
        rec.note("distances and medians in mag (in redshift for z); the ci set's blue cloud against the real one")


if __name__ == "__main__":
    main()
