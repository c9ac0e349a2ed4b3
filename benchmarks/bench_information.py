"""How much do three measured structure numbers add to five magnitudes? The same test on real
and on simulated galaxies (issue 18, item 4).

For each sample, CFM posteriors of (log M*, log SFR) are trained from the ugriz magnitudes
alone, and from the magnitudes plus b/a, the Petrosian R50 [arcsec] and R90/R50, on the
same galaxies, split and seed. The gain is log p(theta*) with structure minus without, per
test galaxy; its median, 10 %-trimmed mean and the fraction of galaxies it helps are
averaged over seeds (each seed: its own split and initialisation), with the standard error
over seeds. The gain of each number alone is reported too: two samples can agree on the total
for different reasons (one from b/a, the other from the radii).

* Real: the Nair & Abraham (2010) catalog, star formers (log sSFR > -10.8); magnitudes from
  its r magnitude and colours; b/a and radii measured by SDSS. Its two SFR columns disagree
  (``SFRT`` hardly changes with morphology, ``SFRM`` falls from irregulars to ellipticals as
  MPA-JHU sSFRs do; ``galnb.validation.ssfr_by_morphology``), so log SFR is taken both as
  ``SFRT`` and as ``SFRM`` + log M*.
* Simulated: galaxies selected like it (``galnb.simulation.NAIR_ABRAHAM``), star formers,
  with b/a and radii measured on their r-band images (``galnb.validation.measure_structure``).

Usage (from the repository root, the real folder given by $GALNB_REAL_SDSS or --real):

    python benchmarks/bench_information.py --json benchmarks/results/information.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import trim_mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from galnb import validation  # noqa: E402
from galnb.cfm import CFM  # noqa: E402

from record import Record, add_json_option  # noqa: E402

TARGETS = ("log_mstar", "log_sfr")
PHOTOMETRY = ("mag_u", "mag_g", "mag_r", "mag_i", "mag_z")
STRUCTURE = ("axis_ratio", "r50_arcsec", "concentration")
#: The three together (the test of issue 18), and each alone: which number carries the gain.
SUBSETS = {"all three": STRUCTURE, **{name: (name,) for name in STRUCTURE}}


def log_p_truth(train: pd.DataFrame, test: pd.DataFrame, inputs: tuple[str, ...], steps: int, seed: int) -> np.ndarray:
    """Train a CFM on ``inputs`` -> TARGETS and return log p(theta*) [nats, physical units] on ``test``."""
    torch.manual_seed(seed)
    x_mean, x_std = train[list(inputs)].mean(), train[list(inputs)].std()
    t_mean, t_std = train[list(TARGETS)].mean(), train[list(TARGETS)].std()

    def tensors(d: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(((d[list(TARGETS)] - t_mean) / t_std).to_numpy(), dtype=torch.float32),
                torch.tensor(((d[list(inputs)] - x_mean) / x_std).to_numpy(), dtype=torch.float32))

    theta, cond = tensors(train)
    model = CFM(theta_dim=len(TARGETS), cond_dim=len(inputs), hidden=128)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, len(theta), (256,), generator=generator)
        loss = model.loss(theta[rows], cond[rows], generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    theta_test, cond_test = tensors(test)
    with torch.no_grad():
        log_p = model.log_prob(theta_test, cond_test, steps=20).numpy()
    return log_p - float(np.log(t_std.to_numpy()).sum())  # per physical unit


def information_gain(sample: pd.DataFrame, n_seeds: int, steps: int) -> dict[str, dict]:
    """Gain in log p(theta*) from each of SUBSETS of the structure numbers, per seed and averaged over seeds."""
    per_seed = {name: [] for name in SUBSETS}
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(sample))
        n_test = len(sample) // 5
        test, train = sample.iloc[order[:n_test]], sample.iloc[order[n_test:]]
        without = log_p_truth(train, test, PHOTOMETRY, steps, seed)
        for name, extra in SUBSETS.items():
            gain = log_p_truth(train, test, PHOTOMETRY + extra, steps, seed) - without
            per_seed[name].append({"median": float(np.median(gain)), "trimmed_mean": float(trim_mean(gain, 0.1)),
                                   "fraction_helped": float(np.mean(gain > 0)), "n_test": int(n_test)})
    results = {}
    for name, rows in per_seed.items():
        table = pd.DataFrame(rows)
        results[name] = {"n_galaxies": len(sample), "per_seed": rows,
                         **{k: {"mean": float(table[k].mean()), "se": float(table[k].std(ddof=1) / np.sqrt(len(table)))}
                            for k in ("median", "trimmed_mean", "fraction_helped")}}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default=None, help="folder of the real SDSS pieces (default $GALNB_REAL_SDSS)")
    parser.add_argument("--n-sim", type=int, default=2000, help="simulated star formers to render and measure")
    parser.add_argument("--n-real", type=int, default=0, help="real star formers to use (0: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000, help="AdamW steps (batch 256) per model")
    add_json_option(parser)
    args = parser.parse_args(argv)
    folder = validation.real_sdss_dir(args.real)
    if folder is None:
        parser.error(f"give the real folder with --real or ${validation.REAL_SDSS_ENV}")
    with Record("information", args.json) as rec:
        real = validation.nair_abraham(folder)
        real = real[validation.star_forming(real)]
        if args.n_real:
            real = real.sample(n=min(args.n_real, len(real)), random_state=0).reset_index(drop=True)
        # The catalog's two SFR columns disagree (validation.ssfr_by_morphology): both are tested.
        reals = {"real, SFRT": real, "real, SFRM + LGM": validation.with_sfrm_sfr(real)}
        results = {name: information_gain(sample, args.seeds, args.steps) for name, sample in reals.items()}
        results["simulated"] = information_gain(validation.simulated_structure(args.n_sim, seed=0), args.seeds,
                                                args.steps)
        rec.section("Gain in log p(theta*) of (log M*, log SFR) from b/a, R50 and R90/R50 beside ugriz [nats]")
        rec.table(pd.DataFrame([{
            "sample": sample, "structure": subset, "galaxies": r["n_galaxies"], "median gain": r["median"]["mean"],
            "se": r["median"]["se"], "trimmed mean": r["trimmed_mean"]["mean"], "se ": r["trimmed_mean"]["se"],
            "helped %": 100 * r["fraction_helped"]["mean"]}
            for sample, by_subset in results.items() for subset, r in by_subset.items()]),
            float_format=lambda v: f"{v:.3f}")
        for name in reals:
            for subset in SUBSETS:
                sim, obs = results["simulated"][subset]["median"], results[name][subset]["median"]
                rec.note(f"{subset}: simulated minus {name} median gain {sim['mean'] - obs['mean']:+.3f} "
                         f"+/- {float(np.hypot(sim['se'], obs['se'])):.3f} nats")
        rec.note(f"{args.seeds} seeds, each its own 80/20 split; {args.steps} AdamW steps of 256 per model; "
                 "standard errors over seeds (they do not include the draw of the galaxies)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
