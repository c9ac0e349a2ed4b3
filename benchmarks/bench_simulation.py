"""Benchmark of galnb.simulation: galaxies/s at ci and paper settings, colours vs real SDSS."""

from __future__ import annotations

import time

from galnb import simulation as sim
from galnb.runs import SCALES


def main() -> None:
    """Print galaxies/s for the ci set and a 500-galaxy 128 px slice, and colour Wasserstein distances."""
    sim.spectral_library()  # build or load the cache outside the timings
    ci = SCALES["ci"]
    t = time.perf_counter()
    cat, _, funnel = sim.simulate_survey(ci.n_galaxies, ci.image_size, seed=0, progress=False)
    dt = time.perf_counter() - t
    print(f"ci: {ci.n_galaxies} galaxies at {ci.image_size} px in {dt:.1f} s ({ci.n_galaxies / dt:.0f} galaxies/s)")
    print(funnel.to_string(index=False))
    paper = SCALES["paper"]
    t = time.perf_counter()
    sim.simulate_survey(500, paper.image_size, seed=1, progress=False)
    dt = time.perf_counter() - t
    rate = 500 / dt
    print(f"paper slice: 500 galaxies at {paper.image_size} px in {dt:.1f} s ({rate:.0f} galaxies/s); "
          f"{paper.n_galaxies} galaxies -> about {paper.n_galaxies / rate / 60:.0f} min")
    wd = sim.compare_photometry(cat, sim.real_sdss_photometry())
    print("blue-cloud Wasserstein distances vs the kcorrect SDSS sample (mag):")
    print(wd.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
