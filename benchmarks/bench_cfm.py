"""Benchmark of galnb.cfm: sampler throughput, log_prob cost, solver accuracy per cost, sbi's FMPE.

Run from the repository root:

    python benchmarks/bench_cfm.py            # about 5-10 minutes on 2 CPU cores
    python benchmarks/bench_cfm.py --quick    # a couple of minutes, noisier numbers
    python benchmarks/bench_cfm.py --json benchmarks/results/cfm.json   # the run the book shows

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
import pandas as pd
import torch

from galnb.analytic import LinearGaussian, compare, fit, linear_gaussian
from galnb.cfm import CFM, METHODS, ImageEncoder, odeint

from record import Record, add_json_option  # benchmarks/record.py: a script's own folder is on sys.path


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
def plain_batched_sample(model: CFM, cond, n: int, steps: int, max_rows: int = 4096) -> torch.Tensor:
    """Batched like galnb's sampler (context encoded once, chunks of whole objects), but the MLP
    evaluated layer by layer with fresh tensors: ``addmm`` with its bias, then the activation."""
    net, out, step = model.net, [], max(1, max_rows // n)
    for i in range(0, model._cond_len(cond), step):
        bias = model._biases(model._cond_slice(cond, slice(i, i + step)), 256)

        def f(t, theta):
            w = net.layers[0].weight
            first = torch.baddbmm(bias.add(w[:, 0], alpha=t).unsqueeze(1), theta,
                                  w[:, 1 : 1 + model.theta_dim].T.expand(theta.shape[0], -1, -1))
            h = net._act_(first.flatten(0, 1))
            for layer in net.layers[1:-1]:
                h = net._act_(torch.addmm(layer.bias, h, layer.weight.T))
            return torch.addmm(net.layers[-1].bias, h, net.layers[-1].weight.T).view_as(theta), None

        out.append(odeint(f, torch.randn(bias.shape[0], n, model.theta_dim), 0.0, 1.0, steps, "rk4")[0])
    return torch.cat(out)


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


def bench_sampling(rec: Record, args: argparse.Namespace) -> float:
    """Sampler throughput against the plain batched and one-object-at-a-time samplers; returns the matmul peak."""
    rec.section("Posterior sampling throughput, RK4-100")
    n = args.draws
    rows, peaks = [], [matmul_gflops()]
    for name, size in [("phot", None), ("image 32 px", 32), ("image 128 px", 128)]:
        torch.manual_seed(0)
        enc = ImageEncoder() if size else None
        model = CFM(5, 5, encoder=enc).eval()
        b = args.objects
        cond = torch.randn(b, 5) if size is None else (torch.rand(b, 3, size, size), torch.randn(b, 5))
        steps_fast = 100 if size != 128 or not args.quick else 25
        t_fast = best_time(lambda: model.sample(cond, n, steps=steps_fast), repeat=3) * 100 / steps_fast
        t_plain = best_time(lambda: plain_batched_sample(model, cond, n, steps=25), repeat=3) * 100 / 25
        ref_steps = 10 if size == 128 else 25
        cond1 = model._cond_slice(cond, slice(0, 1))
        t_ref = best_time(lambda: reference_sample(model, cond1, n, ref_steps), repeat=2) * 100 / ref_steps * b
        peaks.append(matmul_gflops())
        draws = b * n
        flops = draws * 400 * mlp_flops_per_eval(model, False) + (b * encoder_flops(enc, size) if size else 0)
        rows.append({"model": name, "galnb [draws/s]": draws / t_fast, "plain batched [draws/s]": draws / t_plain,
                     "reference [draws/s]": draws / t_ref, "vs reference [x]": t_ref / t_fast,
                     "GFLOP/s": flops / t_fast / 1e9, "_plain": flops / t_plain / 1e9})
    peak = max(peaks)
    df = pd.DataFrame(rows)
    df["of matmul peak [%]"] = 100 * df["GFLOP/s"] / peak
    df["plain, of peak [%]"] = 100 * df.pop("_plain") / peak
    rec.table(df, formatters={**dict.fromkeys(["galnb [draws/s]", "plain batched [draws/s]", "reference [draws/s]",
                                               "of matmul peak [%]", "plain, of peak [%]"], "{:.0f}".format),
                              "vs reference [x]": "{:.1f}".format, "GFLOP/s": "{:.1f}".format})
    rec.note(f"({args.objects} objects x {n} draws. Matmul peak: the best of {len(peaks)} measurements taken "
             f"between the timings, which ranged {min(peaks):.0f}-{peak:.0f} GFLOP/s. GFLOP/s counts the network's "
             f"multiply-adds (encoder included). Plain batched: chunks of 4,096 draws of whole objects, the MLP layer "
             f"by layer with fresh tensors.)")
    share = df.set_index("model")["of matmul peak [%]"]
    speedup = df.set_index("model")["galnb [draws/s]"] / df.set_index("model")["plain batched [draws/s]"]
    rec.note(f"target >= 75 % of the matmul peak for every model: {'met' if (share >= 75).all() else 'not met'} "
             f"({', '.join(f'{m} {v:.0f} %' for m, v in share.items())}); galnb / plain batched: "
             f"{', '.join(f'{m} {v:.2f}x' for m, v in speedup.items())}")
    return peak


def bench_eval_breakdown(rec: Record, args: argparse.Namespace, peak: float) -> None:
    """Where one velocity evaluation's time goes: the 256x256 matmuls against everything else."""
    rec.section("One velocity evaluation of the sampler, split by operation (photometry model)")
    torch.manual_seed(0)
    model = CFM(5, 5).eval()
    net, h = model.net, model.hidden
    draws = 1000  # one object's draws
    bias, theta = net.context_bias(torch.randn(1, 5)), torch.randn(1, draws, 5)
    velocity = net.folded(draws)
    x, out = velocity.buffers
    x[:, :h].normal_()
    x0 = x[:, :h].clone()

    def activations():  # on fresh copies: an activation iterated in place would drift to denormals
        for _ in range(model.depth):
            net._act_(out[:, :h].copy_(x0))

    def copies():
        for _ in range(model.depth):
            out[:, :h].copy_(x0)

    with torch.no_grad():
        parts = {
            "whole evaluation (FoldedVelocity)": best_time(lambda: velocity(0.5, theta, bias), repeat=50),
            "hidden 256x256 layers (matmul, bias folded in)": best_time(
                lambda: [torch.mm(x, w, out=out[:, :h]) for w in velocity.hidden_weights], repeat=50),
            "activations (SiLU, all layers)": best_time(activations, repeat=50) - best_time(copies, repeat=50),
            "first layer ([t; theta], K = 6)": best_time(
                lambda: torch.baddbmm(bias.unsqueeze(1), theta, velocity.w_theta.unsqueeze(0),
                                      out=x[:, :h].view(1, draws, h)), repeat=50),
            "output layer (256 -> 5)": best_time(lambda: torch.mm(velocity.output_weight, x.T), repeat=50),
        }
    whole = parts["whole evaluation (FoldedVelocity)"]
    df = pd.DataFrame([{"operation": op, "time [ms]": t * 1e3, "share of the evaluation [%]": 100 * t / whole}
                       for op, t in parts.items()])
    rec.table(df, formatters={"time [ms]": "{:.3f}".format, "share of the evaluation [%]": "{:.0f}".format})
    matmul, act = parts["hidden 256x256 layers (matmul, bias folded in)"], parts["activations (SiLU, all layers)"]
    flops = draws * mlp_flops_per_eval(model, False)
    rec.note(f"({draws} rows.) The evaluation runs at {flops / whole / 1e9:.0f} GFLOP/s, "
             f"{100 * flops / whole / 1e9 / peak:.0f} % of the matmul peak. With everything but the hidden matmuls "
             f"free it would reach {100 * flops / matmul / 1e9 / peak:.0f} %; with everything but the hidden "
             f"matmuls and their activations free, {100 * flops / (matmul + act) / 1e9 / peak:.0f} %. The "
             f"activations alone cost {100 * act / matmul:.0f} % of the matmul time.")


def bench_log_prob(rec: Record, args: argparse.Namespace) -> None:
    rec.section("log_prob cost per object vs sampling 1,000 draws (RK4-100, photometry model)")
    torch.manual_seed(0)
    model = CFM(5, 5).eval()
    b = max(args.objects, 32)
    cond = torch.randn(b, 5)
    t_lp = best_time(lambda: model.log_prob(torch.randn(b, 5), cond), repeat=2) / b
    t_s = best_time(lambda: model.sample(cond[:2], 1000), repeat=1) / 2
    t_slp = best_time(lambda: model.sample_and_log_prob(cond[:2], 1000), repeat=1) / 2
    times = {f"log_prob of one theta ({b} objects batched)": t_lp, "sample 1,000 draws": t_s,
             "sample_and_log_prob 1,000 draws": t_slp}
    df = pd.DataFrame([{"operation": op, "time [ms/object]": t * 1e3, "cost vs sampling [x]": t / t_s}
                       for op, t in times.items()])
    rec.table(df, formatters={"time [ms/object]": "{:.2f}".format, "cost vs sampling [x]": "{:.2g}".format})
    rec.note(f"log_prob is {t_s / t_lp:.0f}x cheaper than sampling; "
             f"sample_and_log_prob costs {t_slp / t_s:.1f}x plain sampling")


def trained_toy(rec: Record, args: argparse.Namespace) -> tuple[LinearGaussian, CFM, np.ndarray]:
    """The 5-D linear-Gaussian problem, a CFM trained on it, and observations of test objects."""
    problem = linear_gaussian(5)
    torch.manual_seed(0)
    model = CFM(5, 5, hidden=args.toy_hidden)
    start = time.perf_counter()
    fit(model, problem, steps=args.toy_steps, seed=0)
    seconds = time.perf_counter() - start
    rec.note(f"(toy model: hidden {args.toy_hidden}, {args.toy_steps} steps, trained in {seconds:.0f} s)")
    _, x = problem.simulate(args.toy_objects, np.random.default_rng(1))
    return problem, model, x


def bench_solvers(rec: Record, args: argparse.Namespace) -> tuple[LinearGaussian, CFM, np.ndarray]:
    """Solver accuracy per cost on a trained toy model; returns the toy (problem, model, x) for the sbi comparison."""
    rec.section("Fewer steps: log_prob error vs RK4-100, 5-D linear-Gaussian problem")
    problem, model, x = trained_toy(rec, args)
    mean, cov = problem.posterior(x)
    rng = np.random.default_rng(2)
    theta = torch.tensor(mean[:, None] + rng.multivariate_normal(np.zeros(5), cov, size=(len(x), 50)),
                         dtype=torch.float32)
    xt = torch.tensor(x, dtype=torch.float32)
    ref = model.log_prob(theta, xt, steps=100)
    exact = problem.log_posterior(theta.double().numpy(), x)
    rec.note(f"network error floor: mean |RK4-100 - exact| = {np.abs(ref.double().numpy() - exact).mean():.3f} nats")
    rows = []
    for method in ("euler", "midpoint", "rk4"):
        for steps in (2, 5, 10, 20, 50):
            lp = model.log_prob(theta, xt, steps=steps, method=method)
            rows.append({"method": method, "steps": steps, "network evaluations": steps * METHODS[method],
                         "mean error vs RK4-100 [nats]": (lp - ref).abs().mean().item(),
                         "mean error vs exact [nats]": np.abs(lp.double().numpy() - exact).mean()})
    df = pd.DataFrame(rows)
    rec.table(df, formatters={"mean error vs RK4-100 [nats]": "{:.2e}".format,
                              "mean error vs exact [nats]": "{:.3f}".format})
    close = df[df["mean error vs RK4-100 [nats]"] <= 0.01]
    if len(close):
        best = close.loc[close["network evaluations"].idxmin()]
        nfe = best["network evaluations"]
        rec.note(f"cheapest within 0.01 nats of RK4-100: {best['method']} with {best['steps']} steps, "
                 f"{nfe} network evaluations ({100 * METHODS['rk4'] / nfe:.0f}x fewer than RK4-100)")
    return problem, model, x


def bench_sbi(rec: Record, args: argparse.Namespace, problem: LinearGaussian, model: CFM, x: np.ndarray) -> None:
    rec.section("sbi FMPE at its defaults vs galnb CFM, 5-D linear-Gaussian problem")
    from sbi.inference import FMPE
    from torch.distributions import MultivariateNormal

    prior = MultivariateNormal(torch.tensor(problem.mu0, dtype=torch.float32),
                               torch.tensor(problem.cov0, dtype=torch.float32))
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
    ours10 = compare(model, problem, x, n_draws=n, n_eval=50, steps=10, seed=0)
    t_ours10 = best_time(lambda: model.sample(torch.tensor(x, dtype=torch.float32), n, steps=10), repeat=1)
    rec.note(f"sbi FMPE: {args.sbi_sims} simulations, trained {t_train:.0f} s"
             + ("" if args.sbi_max_epochs is None else f" (max_num_epochs={args.sbi_max_epochs})"))
    rows = [("sbi FMPE (defaults)", t_sample, np.mean(m_err), np.mean(s_err), np.mean(lp_err)),
            ("galnb CFM RK4-100", t_ours_sample, ours["mean_err"], ours["sd_err"], ours["logp_mae"]),
            ("galnb CFM RK4-10", t_ours10, ours10["mean_err"], ours10["sd_err"], ours10["logp_mae"])]
    df = pd.DataFrame([{"method": name, "draws/s": len(x) * n / t, "mean error [posterior sd]": m,
                        "sd relative error": sd, "log p MAE [nats]": lp} for name, t, m, sd, lp in rows])
    rec.table(df, formatters={"draws/s": "{:.0f}".format, **dict.fromkeys(df.columns[2:], "{:.3f}".format)})
    rec.note(f"sampling speed galnb/sbi: RK4-100 {t_sample / t_ours_sample:.2f}x, RK4-10 {t_sample / t_ours10:.2f}x; "
             f"sbi log_prob took {t_lp:.1f} s for {len(x) * 50} points, galnb's whole comparison {t_ours:.1f} s")
    rec.note(f"(galnb trained on fresh simulations each step, {args.toy_steps} steps x 256 = "
             f"{args.toy_steps * 256} simulations; the two differ in budget, so compare accuracy loosely)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer objects and steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip-sbi", action="store_true")
    add_json_option(parser)
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
    with Record("cfm", args.json) as rec:
        rec.note(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        peak = bench_sampling(rec, args)
        rec.note(f"dense matmul (best of (1024|4096|16384)x256 @ 256x256, float32): {peak:.1f} GFLOP/s")
        bench_eval_breakdown(rec, args, peak)
        bench_log_prob(rec, args)
        toy = bench_solvers(rec, args)
        if not args.skip_sbi:
            bench_sbi(rec, args, *toy)


if __name__ == "__main__":
    main()
