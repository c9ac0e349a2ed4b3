"""How much of the image model's gain over photometry survives when the images stop showing the
inclination that set each galaxy's dust? An ablation on the simulated survey (issue 19, item 3).

In the simulation a disk seen edge-on is both flatter in its image and more attenuated (its
colours, magnitudes, A_V and Balmer decrement follow the slab's inclination). An image model can
therefore read dust, and through dust the other properties, from the axis ratio. This script
rebuilds a run's store with ``simulate_survey(..., decouple_inclination=True)``: the same
galaxies, catalog, photometry and split, but each disk drawn at another galaxy's inclination. It
trains the image model on it with the configuration of the run's image model and compares, on the
same test galaxies, the gain in log q(theta*) over the run's photometry model:

* the run's image model (images that show the dust's inclination);
* the image model trained and scored on the decoupled images.

The share of the gain that survives decoupling is the part the images carry beyond the
inclination–dust coupling. Each gain is a paired mean over test galaxies with a 95 % bootstrap
interval; the share's interval comes from the same resamples.

Usage (from the repository root, after the book's ``small`` run has trained both models):

    python benchmarks/bench_ablation.py --run runs/small-mock-seed0 --json benchmarks/results/ablation.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from galnb.data import load_store, write_store  # noqa: E402
from galnb.metrics import bootstrap_interval, paired_difference  # noqa: E402
from galnb.morphology import with_measured_structure  # noqa: E402
from galnb.properties import TARGETS  # noqa: E402
from galnb.simulation import simulate_survey  # noqa: E402
from galnb.training import TrainConfig, load_trained, train_cfm  # noqa: E402

from record import Record, add_json_option  # noqa: E402


def log_q_truth(model_dir: Path, store, rows: np.ndarray, steps: int) -> np.ndarray:
    """log q(theta* | data) [nats, physical units] of a trained CFM model on catalog ``rows``."""
    trained = load_trained(model_dir, store)
    theta = torch.tensor(store.catalog.iloc[rows][list(TARGETS)].to_numpy())
    return np.concatenate([trained.log_prob(theta[a:a + 256], trained.condition(store, rows[a:a + 256]), steps=steps)
                           .numpy() for a in range(0, len(rows), 256)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/small-mock-seed0"),
                        help="a run folder whose data/ and models/phot, models/image chapters 01 and 03 made")
    parser.add_argument("--steps", type=int, default=20, help="RK4 steps of the log-density (the small scale's)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the decoupled store and model "
                        "(default: a temporary one, removed at the end)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    store = with_measured_structure(load_store(args.run / "data"))
    if store.meta.get("source") != "mock":
        parser.error(f"{args.run / 'data'} is not a simulated store: the ablation re-renders its galaxies")
    params = store.meta["params"]
    image_meta = torch.load(args.run / "models" / "image" / "best.pt", weights_only=True)["meta"]
    config = TrainConfig(**image_meta["config"])
    with Record("ablation", args.json) as rec, tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        catalog, images, _ = simulate_survey(params["n"], params["image_size"], params["seed"], progress=False,
                                             work_dir=work / "render", decouple_inclination=True)
        pd.testing.assert_frame_equal(catalog, store.catalog[list(catalog.columns)])  # same galaxies and labels
        decoupled = with_measured_structure(write_store(work / "decoupled", catalog, images, seed=store.meta["seed"],
                                                        source="mock", params={**params, "decouple_inclination": True}))
        del images
        train_cfm(decoupled, work / "image", config, progress=False)
        rows = store.splits["test"]
        log_q = {"phot": log_q_truth(args.run / "models" / "phot", store, rows, args.steps),
                 "image": log_q_truth(args.run / "models" / "image", store, rows, args.steps),
                 "image, inclination decoupled": log_q_truth(work / "image", decoupled, rows, args.steps)}

        rec.section("The image model's gain over photometry, with and without the inclination–dust coupling")
        gains = {name: paired_difference(log_q[name], log_q["phot"]) for name in log_q if name != "phot"}
        rec.table(pd.DataFrame([{"images": name, "test galaxies": len(rows), "mean gain [nats]": iv.estimate,
                                 "low (95 %)": iv.low, "high (95 %)": iv.high} for name, iv in gains.items()]))
        image_gain, kept_gain = (log_q[n] - log_q["phot"] for n in ("image", "image, inclination decoupled"))
        share = bootstrap_interval(lambda i: float(kept_gain[i].mean() / image_gain[i].mean()), len(rows))
        rec.note(f"share of the image gain that survives decoupling: {share.format('.2f')} (95 % bootstrap interval)")
        rec.note(f"image model configuration (the run's): {image_meta['config']}; {args.steps} RK4 steps")

        rec.section("Check: the decoupled images no longer show the catalog's axis ratio")
        rows_check = rows[:1000]
        rho = {name: spearmanr(s.catalog.axis_ratio_measured.to_numpy()[rows_check],
                               store.catalog.axis_ratio.to_numpy()[rows_check]).statistic
               for name, s in (("images of the run", store), ("decoupled images", decoupled))}
        rec.table(pd.DataFrame([{"images": name, "Spearman(measured b/a, catalog b/a)": r} for name, r in rho.items()]))
        rec.note("b/a measured on the cutouts by galnb.morphology; the catalog's b/a is the one that set the dust")
    return 0


if __name__ == "__main__":
    sys.exit(main())
