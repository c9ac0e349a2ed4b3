"""Benchmark of galnb.cfm: sampler throughput, log_prob cost, solver accuracy per cost, sbi's FMPE.

Run from the repository root:

    python benchmarks/bench_cfm.py            # about 5-10 minutes on 2 CPU cores
    python benchmarks/bench_cfm.py --quick    # a couple of minutes, noisier numbers

Every ratio printed is between numbers measured in the same run. Throughputs are per
draw at RK4 with 100 steps (400 network evaluations per draw). The reference sampler is
the straightforward implementation: one object at a time, the whole network (image
encoder at batch 1, then the MLP on [t; theta; context] for the object's draws) evaluated
at every solver stage. It is timed over fewer steps and scaled to 100 (its cost per step
is constant); so is galnb's at 128 px.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from galnb.analytic import compare, fit, linear_gaussian
from galnb.cfm import CFM, METHODS, ImageEncoder, odeint


def best_time(fn, repeat: int = 3) -> float:
    """Shortest wall time of ``repeat`` calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(width: int = 256) -> float:
    """Best dense float32 matmul rate over a few shapes of the sampler's hidden layers."""
    best = 0.0
    for rows in (1024, 4096, 16384):
        a, w, out = torch.randn(rows, width), torch.randn(width, width), torch.empty(rows, width)
        reps = max(5, 40960 // rows)
        t = best_time(lambda: [torch.mm(a, w, out=out) for _ in range(reps)], repeat=5)
        best = max(best, reps * 2 * rows * width * width / t / 1e9)
    return best


def mlp_flops_per_eval(model: CFM, first_layer_context: bool) -> float:
    """Multiply-add FLOPs of one velocity evaluation for one draw."""
    d, h = model.theta_dim, model.hidden
    first_in = 1 + d + (model.context_dim if first_layer_context else 0)
    return 2 * (first_in * h + (model.depth - 1) * h * h + h * d)


def encoder_flops(encoder: ImageEncoder, size: int) -> float:
    flops, c_in, side = 0.0, encoder.in_channels, size
    for c_out in encoder.channels:
        flops += 2 * side * side * c_in * c_out * 9
        c_in, side = c_out, side // 2
    return flops


@torch.no_grad()
def reference_sample(model: CFM, cond, n: int, steps: int) -> torch.Tensor:
    """One object at a time; the whole network (encoder included) at every RK4 stage."""
    b = model._cond_len(cond)
    out = []
    for i in range(b):
        ci = model._cond_slice(cond, slice(i, i + 1))

        def f(t, y):
            ctx = model.encode(ci).expand(n, -1)  # encoder re-run at every stage
            return model.net(torch.full((n,), t), y, ctx), None

        out.append(odeint(f, torch.randn(n, model.theta_dim), 0.0, 1.0, steps, "rk4")[0])
    return torch.stack(out)


def bench_sampling(args, peak: float) -> None:
    print("\n== Posterior sampling throughput, RK4-100, draws/s ==")
    n = args.draws
    rows = []
    for name, size in [("phot", None), ("image 32 px", 32), ("image 128 px", 128)]:
        torch.manual_seed(0)
        enc = ImageEncoder() if size else None
        model = CFM(5, 5, encoder=enc).eval()
        b = args.objects
        cond = torch.randn(b, 5) if size is None else (torch.rand(b, 3, size, size), torch.randn(b, 5))
        steps_fast = 100 if size != 128 or not args.quick else 25
        t_fast = best_time(lambda: model.sample(cond, n, steps=steps_fast), repeat=2) * 100 / steps_fast
        ref_steps = 10 if size == 128 else 25
        cond1 = model._cond_slice(cond, slice(0, 1))
        t_ref = best_time(lambda: reference_sample(model, cond1, n, ref_steps), repeat=2) * 100 / ref_steps * b
        draws = b * n
        flops = draws * 400 * mlp_flops_per_eval(model, False) + (b * encoder_flops(enc, size) if size else 0)
        rows.append((name, draws / t_fast, draws / t_ref, t_ref / t_fast, flops / t_fast / 1e9))
    print(f"{'model':<14}{'galnb':>12}{'reference':>12}{'speed-up':>10}{'GFLOP/s':>10}{'of peak':>9}")
    for name, fast, ref, ratio, gf in rows:
        print(f"{name:<14}{fast:>12.0f}{ref:>12.0f}{ratio:>9.1f}x{gf:>10.1f}{gf / peak:>9.0%}")
    print(f"({args.objects} objects x {n} draws; GFLOP/s counts the multiply-adds galnb's sampler does)")


def bench_log_prob(args) -> None:
    print("\n== log_prob cost per object vs sampling 1,000 draws (RK4-100, photometry model) ==")
    torch.manual_seed(0)
    model = CFM(5, 5).eval()
    b = max(args.objects, 32)
    cond = torch.randn(b, 5)
    t_lp = best_time(lambda: model.log_prob(torch.randn(b, 5), cond), repeat=2) / b
    t_s = best_time(lambda: model.sample(cond[:2], 1000), repeat=1) / 2
    t_slp = best_time(lambda: model.sample_and_log_prob(cond[:2], 1000), repeat=1) / 2
    print(f"log_prob of one theta per object: {t_lp * 1e3:.2f} ms/object ({b} objects batched)")
    print(f"sample 1,000 draws:                {t_s * 1e3:.0f} ms/object -> log_prob is {t_s / t_lp:.0f}x cheaper")
    print(f"sample_and_log_prob 1,000 draws:   {t_slp * 1e3:.0f} ms/object ({t_slp / t_s:.1f}x plain sampling)")


def trained_toy(args) -> tuple:
    problem = linear_gaussian(5)
    torch.manual_seed(0)
    model = CFM(5, 5, hidden=args.toy_hidden)
    start = time.perf_counter()
    fit(model, problem, steps=args.toy_steps, seed=0)
    print(f"(toy model: hidden {args.toy_hidden}, {args.toy_steps} steps, trained in {time.perf_counter() - start:.0f} s)")
    _, x = problem.simulate(args.toy_objects, np.random.default_rng(1))
    return problem, model, x


def bench_solvers(problem, model, x) -> None:
    print("\n== Fewer steps: log_prob error vs RK4-100, 5-D linear-Gaussian problem ==")
    mean, cov = problem.posterior(x)
    rng = np.random.default_rng(2)
    theta = torch.tensor(mean[:, None] + rng.multivariate_normal(np.zeros(5), cov, size=(len(x), 50)), dtype=torch.float32)
    xt = torch.tensor(x, dtype=torch.float32)
    ref = model.log_prob(theta, xt, steps=100)
    exact = problem.log_posterior(theta.double().numpy(), x)
    print(f"network error floor: mean |RK4-100 - exact| = {np.abs(ref.double().numpy() - exact).mean():.3f} nats")
    print(f"{'method':<10}{'steps':>6}{'NFE':>6}{'|err| vs RK4-100':>18}{'|err| vs exact':>16}")
    for method in ("euler", "midpoint", "rk4"):
        for steps in (2, 5, 10, 20, 50):
            lp = model.log_prob(theta, xt, steps=steps, method=method)
            e_ref = (lp - ref).abs().mean().item()
            e_ex = np.abs(lp.double().numpy() - exact).mean()
            print(f"{method:<10}{steps:>6}{steps * METHODS[method]:>6}{e_ref:>18.2e}{e_ex:>16.3f}")


def bench_sbi(args, problem, model, x) -> None:
    print("\n== sbi FMPE at its defaults vs galnb CFM, 5-D linear-Gaussian problem ==")
    from sbi.inference import FMPE
    from torch.distributions import MultivariateNormal

    prior = MultivariateNormal(torch.tensor(problem.mu0, dtype=torch.float32), torch.tensor(problem.cov0, dtype=torch.float32))
    theta, xs = problem.simulate(args.sbi_sims, np.random.default_rng(5))
    inference = FMPE(prior=prior, show_progress_bars=False)
    inference.append_simulations(torch.tensor(theta, dtype=torch.float32), torch.tensor(xs, dtype=torch.float32))
    start = time.perf_counter()
    train_kw = {} if args.sbi_max_epochs is None else {"max_num_epochs": args.sbi_max_epochs}
    estimator = inference.train(**train_kw)
    t_train = time.perf_counter() - start
    posterior = inference.build_posterior(estimator)
    mean, cov = problem.posterior(x)
    sd = np.sqrt(np.diag(cov))
    n = 1000
    rng = np.random.default_rng(2)
    m_err, s_err, lp_err, t_sample, t_lp = [], [], [], 0.0, 0.0
    for i in range(len(x)):
        xo = torch.tensor(x[i : i + 1], dtype=torch.float32)
        start = time.perf_counter()
        draws = posterior.sample((n,), x=xo, show_progress_bars=False).double().numpy()
        t_sample += time.perf_counter() - start
        m_err.append(np.abs((draws.mean(0) - mean[i]) / sd).mean())
        s_err.append(np.abs(draws.std(0, ddof=1) / sd - 1).mean())
        th = mean[i] + rng.multivariate_normal(np.zeros(5), cov, size=50)
        start = time.perf_counter()
        lp = posterior.log_prob(torch.tensor(th, dtype=torch.float32), x=xo).double().numpy()
        t_lp += time.perf_counter() - start
        lp_err.append(np.abs(lp - problem.log_posterior(th[None], x[i : i + 1])[0]).mean())
    start = time.perf_counter()
    ours = compare(model, problem, x, n_draws=n, n_eval=50, steps=100, seed=0)
    t_ours = time.perf_counter() - start
    t_ours_sample = best_time(lambda: model.sample(torch.tensor(x, dtype=torch.float32), n), repeat=1)
    print(f"sbi FMPE: {args.sbi_sims} simulations, trained {t_train:.0f} s"
          + ("" if args.sbi_max_epochs is None else f" (max_num_epochs={args.sbi_max_epochs})"))
    print(f"{'':<22}{'draws/s':>10}{'mean err/sd':>13}{'sd rel err':>12}{'log p MAE':>11}")
    print(f"{'sbi FMPE (defaults)':<22}{len(x) * n / t_sample:>10.0f}{np.mean(m_err):>13.3f}{np.mean(s_err):>12.3f}"
          f"{np.mean(lp_err):>11.3f}")
    print(f"{'galnb CFM RK4-100':<22}{len(x) * n / t_ours_sample:>10.0f}{ours['mean_err']:>13.3f}{ours['sd_err']:>12.3f}"
          f"{ours['logp_mae']:>11.3f}")
    ours10 = compare(model, problem, x, n_draws=n, n_eval=50, steps=10, seed=0)
    t_ours10 = best_time(lambda: model.sample(torch.tensor(x, dtype=torch.float32), n, steps=10), repeat=1)
    print(f"{'galnb CFM RK4-10':<22}{len(x) * n / t_ours10:>10.0f}{ours10['mean_err']:>13.3f}{ours10['sd_err']:>12.3f}"
          f"{ours10['logp_mae']:>11.3f}")
    print(f"sampling speed galnb/sbi: RK4-100 {t_sample / t_ours_sample:.2f}x, RK4-10 {t_sample / t_ours10:.2f}x; sbi log_prob took {t_lp:.1f} s "
          f"for {len(x) * 50} points, galnb's whole comparison {t_ours:.1f} s")
    print(f"(galnb trained on fresh simulations each step, {args.toy_steps} steps x 256 = "
          f"{args.toy_steps * 256} simulations; the two differ in budget, so compare accuracy loosely)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer objects and steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip-sbi", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.objects = 2 if args.quick else 4
    args.draws = 1000
    args.toy_steps = 1500 if args.quick else 3000
    args.toy_hidden = 256
    args.toy_objects = 5 if args.quick else 10
    args.sbi_sims = 5000 if args.quick else 10000
    args.sbi_max_epochs = 50 if args.quick else None
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = matmul_gflops()
    print(f"dense matmul (best of (1024|4096|16384)x256 @ 256x256, float32): {peak:.1f} GFLOP/s")
    bench_sampling(args, peak)
    bench_log_prob(args)
    problem, model, x = trained_toy(args)
    bench_solvers(problem, model, x)
    if not args.skip_sbi:
        bench_sbi(args, problem, model, x)


if __name__ == "__main__":
    main()
