# %% [markdown]
# # Conditional flow matching: the theory on a problem with a known answer
# The CFM paper infers galaxy properties $\theta$ from photometry and images with conditional
# flow matching {cite}`yunus2025cfm`. This chapter explains how that method works — the
# probability path, the regression loss, sampling by integrating an ODE and the exact
# log-density — and then checks our implementation (`galnb.cfm`) on a linear-Gaussian
# problem whose posterior is known in closed form, so that every learned posterior can be
# compared with the right answer. It needs nothing from earlier chapters; the training and
# evaluation chapters build on the model defined here.

# %% tags=["parameters"]
scale = None  # None: $GALNB_SCALE, else "auto" (paper where torch sees a CUDA GPU, else ci)
data = "mock"
seed = 0
device = "auto"
run_dir = None  # None: $GALNB_RUN_DIR, else "runs" (from the repository root)

# %%
from galnb.runs import start_chapter

run = start_chapter("02_cfm_theory", scale=scale, data=data, seed=seed, device=device, run_dir=run_dir)

# %%
import time

import numpy as np
import torch

from galnb import plots
from galnb.analytic import GaussianMixture1D, compare, fit, linear_gaussian
from galnb.cfm import CFM
from galnb.runs import glue_all

SIGMA = 0.05  # the paper's path width
STEPS = run.scale.ode_steps  # RK4 steps (100 in the paper, fewer at ci scale)
glue_all("cfm_theory", sigma=SIGMA, steps=STEPS)

# %% [markdown]
# ## From noise to posterior along a straight line
#
# We want a sampler for the posterior $p(\theta \mid x)$ of properties $\theta \in \mathbb{R}^D$
# given data $x$. Flow matching {cite}`lipman2023flow,tong2024cfm` builds one from a simple
# base distribution, $\theta_0 \sim \mathcal{N}(0, I)$, and a time-dependent velocity field
# $v_\phi(t, \theta, x)$: a draw $\theta_0$ is carried along the ordinary differential equation
#
# $$
# \frac{d\theta_t}{dt} = v_\phi(t, \theta_t, x), \qquad t: 0 \to 1,
# $$
#
# and $\theta_1$ is a posterior draw. The question is which field to learn. Take one training
# pair $(\theta_1, x)$ from the simulator (or the catalogue), one base draw $\theta_0$ and join
# them by a straight line blurred by a small width $\sigma$:
#
# $$
# \theta_t = (1 - t)\,\theta_0 + t\,\theta_1 + \sigma \epsilon, \qquad
# \epsilon \sim \mathcal{N}(0, I), \quad t \sim \mathcal{U}(0, 1).
# $$
#
# Along this *conditional* path the velocity is constant, $\theta_1 - \theta_0$. The paper uses
# $\sigma =$ {glue:text}`cfm_theory_sigma`.

# %% [markdown]
# Averaging over all pairs gives the *marginal* path $p_t(\theta \mid x)$, which starts at
# (almost) the base and ends at (almost) the posterior. The field that moves this whole
# distribution is the average of the conditional velocities of the lines that pass through
# $\theta$ at time $t$:
#
# $$
# u_t(\theta \mid x) = \mathbb{E}\left[\theta_1 - \theta_0 \,\middle|\, \theta_t = \theta, x\right].
# $$
#
# {numref}`fig-cfm-path` shows both for a one-dimensional target with two modes: the lines
# cross, but the marginal flow they define does not, since an ODE's solutions never meet.

# %%
mixture = GaussianMixture1D()
fig = plots.cfm_probability_path(mixture, sigma=SIGMA, seed=run.seed)
glue_all("cfm_theory", path=fig)

# %% [markdown]
# ```{glue:figure} cfm_theory_path
# :name: fig-cfm-path
#
# Left: conditional paths from base draws (black) to target draws (red), each a straight line
# of width $\sigma$. Right: the exact marginal density $p_t(\theta)$ of the same construction
# (grey) and trajectories of the exact marginal ODE $\dot\theta = u_t(\theta)$ (orange): they
# curve, never cross, and end in the two modes in proportion to their weights.
# ```

# %% [markdown]
# ## The loss: regression onto the line's velocity
#
# $u_t$ is an expectation we cannot compute for real data, but a conditional expectation is
# the minimiser of a squared error. So we regress a network on the conditional velocities:
#
# $$
# \mathcal{L}(\phi) = \mathbb{E}_{t,\, (\theta_1, x),\, \theta_0,\, \epsilon}
# \left\| v_\phi(t, \theta_t, x) - (\theta_1 - \theta_0) \right\|^2 .
# $$
#
# Its minimiser over all functions is $u_t(\theta \mid x)$ for every $x$ at once: one network,
# *amortised* over the data. The loss never needs the density of the posterior, only pairs
# $(\theta_1, x)$. That is `CFM.loss` in `galnb/cfm.py`, the code this book trains with:
# three random numbers per pair, one network call, a mean squared error.
#
# ```{literalinclude} ../galnb/cfm.py
# :pyobject: CFM.loss
# :dedent: 4
# :caption: galnb/cfm.py
# ```

# %% [markdown]
# ## Sampling and the exact log-density
#
# To sample, we integrate the ODE from $t = 0$ to $1$ with the classical fourth-order
# Runge–Kutta method (RK4; the paper takes 100 steps, this run {glue:text}`cfm_theory_steps`).
# The ODE also gives the density of its draws: along a trajectory the log-density changes by
# minus the divergence of the field {cite}`chen2018neuralode`,
#
# $$
# \frac{d}{dt}\log q_t(\theta_t) = -\nabla_\theta \cdot v_\phi(t, \theta_t, x)
# \quad\Longrightarrow\quad
# \log q(\theta \mid x) = \log \mathcal{N}(\theta_0; 0, I) - \int_0^1 \nabla_\theta \cdot v_\phi \, dt ,
# $$
#
# where $\theta_0$ is found by integrating backwards from $\theta_1 = \theta$. With $D \le 5$
# the divergence is computed exactly (the trace of the $D \times D$ Jacobian, by carrying $D$
# tangent vectors through the network) instead of estimated. The evaluation chapter needs these
# log-densities for its metrics.
#
# Both integrations use one fixed-step Runge–Kutta solver; the `g` it accumulates alongside
# the state is the divergence when a log-density is wanted:
#
# ```{literalinclude} ../galnb/cfm.py
# :pyobject: odeint
# :caption: galnb/cfm.py
# ```

# %% [markdown]
# ## A problem with a known posterior
#
# Let $\theta \sim \mathcal{N}(\mu_0, \Sigma_0)$ and $x = A\theta + b + n$ with
# $n \sim \mathcal{N}(0, \Sigma_n)$. The posterior is Gaussian,
#
# $$
# p(\theta \mid x) = \mathcal{N}\!\left(\theta;\
#   \Sigma\left(\Sigma_0^{-1}\mu_0 + A^\top\Sigma_n^{-1}(x - b)\right),\ \Sigma\right),
# \qquad \Sigma = \left(\Sigma_0^{-1} + A^\top \Sigma_n^{-1} A\right)^{-1}.
# $$
#
# In two dimensions we choose $A$ so that $x$ measures $\theta_1 + \theta_2$ well and
# $\theta_1 - \theta_2$ poorly: the posterior is a tilted ellipse, a degeneracy in miniature.
# The model is the paper's photometry network (an MLP of three layers of width 256 on
# $[t; \theta; x]$), trained on fresh simulations at every step.

# %%
problem2 = linear_gaussian(2)
model2 = CFM(problem2.dim, problem2.obs_dim, sigma=SIGMA).to(run.device)
start = time.time()
losses2 = fit(model2, problem2, steps=run.scale.toy_train_steps, seed=run.seed)
glue_all("cfm_theory", train_steps=run.scale.toy_train_steps, train_s=time.time() - start)

# %% [markdown]
# Training took {glue:text}`cfm_theory_train_s:.0f` s for {glue:text}`cfm_theory_train_steps`
# steps. {numref}`fig-cfm-trajectories` follows the learned ODE for one observation: the
# base cloud is bent into the posterior ellipse along nearly straight, non-crossing paths.

# %%
truth2, x2 = problem2.simulate(3, np.random.default_rng(run.seed + 1))
gen = torch.Generator(device=run.device).manual_seed(run.seed)
x2_t = torch.tensor(x2, dtype=torch.float32, device=run.device)
path = model2.trajectory(x2_t[:1], n=400, steps=STEPS, generator=gen)[:, 0].cpu().numpy()
mean2, cov2 = problem2.posterior(x2)
fig = plots.cfm_trajectories(path, mean2[0], cov2, truth=truth2[0])
glue_all("cfm_theory", trajectories=fig)

# %% [markdown]
# ```{glue:figure} cfm_theory_trajectories
# :name: fig-cfm-trajectories
#
# Learned RK4 trajectories from the base (grey) to the learned posterior (yellow) for one
# observation of the two-dimensional linear-Gaussian problem, coloured by time; black: exact
# posterior 1σ (solid) and 2σ (dashed) contours; red cross: the true $\theta$.
# ```

# %%
res2 = compare(model2, problem2, x2, n_draws=run.scale.toy_n_samples, steps=STEPS, seed=run.seed)
fig = plots.cfm_posterior_vs_exact(res2["draws"], res2["exact_mean"], res2["exact_cov"], truths=truth2)
glue_all("cfm_theory", posterior2d=fig, draws=run.scale.toy_n_samples,
         **{f"2d_{key}": res2[key] for key in ("mean_err", "sd_err", "logp_mae")})

# %% [markdown]
# ```{glue:figure} cfm_theory_posterior2d
# :name: fig-cfm-posterior2d
#
# {glue:text}`cfm_theory_draws` CFM draws (blue) for three observations against the exact
# posterior's 1σ and 2σ contours (black); red crosses: the true $\theta$.
# ```
#
# Over these three observations the learned posterior means are off by
# {glue:text}`cfm_theory_2d_mean_err:.3f` posterior standard deviations on average, and the
# standard deviations by a fraction {glue:text}`cfm_theory_2d_sd_err:.3f`.

# %% [markdown]
# ## Five dimensions, many observations
#
# The paper infers five properties from five magnitudes. The five-dimensional problem has the
# same shape: $x \in \mathbb{R}^5$ from a fixed random $A$ with one nearly unconstrained
# direction. We train the same architecture and compare posterior moments over 16 observations
# ({numref}`fig-cfm-moments`).

# %%
problem5 = linear_gaussian(5)
model5 = CFM(problem5.dim, problem5.obs_dim, sigma=SIGMA).to(run.device)
losses5 = fit(model5, problem5, steps=run.scale.toy_train_steps, seed=run.seed)
truth5, x5 = problem5.simulate(16, np.random.default_rng(run.seed + 2))
res5 = compare(model5, problem5, x5, n_draws=run.scale.toy_n_samples // 8, n_eval=40, steps=STEPS, seed=run.seed)
fig = plots.cfm_moments_vs_exact(res5["mean"], res5["exact_mean"], res5["sd"], np.sqrt(np.diag(res5["exact_cov"])))
glue_all("cfm_theory", moments5d=fig,
         **{f"5d_{key}": res5[key] for key in ("mean_err", "sd_err", "logp_mae", "logp_bias")})

# %% [markdown]
# ```{glue:figure} cfm_theory_moments5d
# :name: fig-cfm-moments
#
# Five-dimensional problem: CFM posterior means (left) and standard deviations (right)
# against the exact ones, for 16 observations and each of the five components. The exact
# standard deviations do not depend on $x$, so each component's points sit in a column.
# ```
#
# The means are off by {glue:text}`cfm_theory_5d_mean_err:.3f` posterior standard deviations
# on average (part of which is the Monte Carlo error of the draws), the standard deviations
# by a fraction {glue:text}`cfm_theory_5d_sd_err:.3f`.

# %% [markdown]
# ## The exact log-density against the analytic one
#
# Finally the density itself. At draws from the exact posterior we compare `CFM.log_prob`
# (backward RK4 with the exact divergence) with the analytic $\log p(\theta \mid x)$
# ({numref}`fig-cfm-logprob`).

# %%
fig = plots.cfm_log_prob_vs_exact({
    "2-D problem": (res2["logp_exact"], res2["logp_cfm"]),
    "5-D problem": (res5["logp_exact"], res5["logp_cfm"]),
})
glue_all("cfm_theory", logprob=fig)

# %% [markdown]
# ```{glue:figure} cfm_theory_logprob
# :name: fig-cfm-logprob
#
# CFM log-density against the exact log-posterior at exact posterior draws, for the 2-D
# (left) and 5-D (right) problems; the line is equality.
# ```
#
# The mean absolute error is {glue:text}`cfm_theory_2d_logp_mae:.3f` nats in two dimensions
# and {glue:text}`cfm_theory_5d_logp_mae:.3f` nats in five (mean signed error
# {glue:text}`cfm_theory_5d_logp_bias:.3f` nats). Part of it is not the network: with
# $\sigma > 0$ the flow's endpoint is the posterior convolved with $\mathcal{N}(0, \sigma^2 I)$,
# slightly wider than the posterior itself.

# %% [markdown]
# ## Summary
#
# - CFM learns a velocity field by regressing onto straight-line velocities; no density is
#   needed to train it, and the ODE it defines gives both samples and exact log-densities.
# - On a linear-Gaussian problem, after {glue:text}`cfm_theory_train_steps` training steps,
#   learned posterior means are within {glue:text}`cfm_theory_2d_mean_err:.3f` (2-D) and
#   {glue:text}`cfm_theory_5d_mean_err:.3f` (5-D) posterior standard deviations of the exact
#   ones, and log-densities within {glue:text}`cfm_theory_2d_logp_mae:.3f` and
#   {glue:text}`cfm_theory_5d_logp_mae:.3f` nats.
# - The same code, with an image encoder in front, is the image model of the next chapter.
#
# ## Exercises
#
# Each solution below is a collapsed cell that ran when this page was built (click to show
# it); the numbers it printed are from that run.
#
# 1. **Path width.** Retrain the 2-D model with `sigma=0.3`. How does the learned posterior
#    covariance compare with the exact $\Sigma$, and with $\Sigma + \sigma^2 I$?

# %% tags=["hide-cell", "solution"]
# Solution 1: a wider probability path
wide = CFM(problem2.dim, problem2.obs_dim, sigma=0.3).to(run.device)
fit(wide, problem2, steps=run.scale.toy_train_steps, seed=run.seed)
r = compare(wide, problem2, x2, n_draws=run.scale.toy_n_samples, steps=STEPS, seed=run.seed)
print("learned variances:       ", np.diag(r["cov"][0]).round(3))
print("exact variances:         ", np.diag(r["exact_cov"]).round(3))
print("exact + sigma^2 variances:", (np.diag(r["exact_cov"]) + 0.3**2).round(3))

# %% [markdown]
# :::{admonition} What solution 1 shows
# :class: dropdown
# The learned variances grow towards, but not all the way to, those of $\Sigma + \sigma^2 I$:
# the path ends in the posterior blurred by $\mathcal{N}(0, \sigma^2 I)$, but it starts from
# $\mathcal{N}(0, (1 + \sigma^2) I)$ while the sampler starts from the narrower
# $\mathcal{N}(0, I)$, which takes back part of the blur. So $\sigma$ trades a smoother
# regression target for a biased posterior; with the paper's $\sigma = 0.05$ on standardised
# properties the blur is $0.0025$ in variance, small next to the posterior variances.
# :::
#
# 2. **Solver steps.** Recompute the log-densities of `res2["theta_eval"]` with
#    `model2.log_prob(..., steps=s, method=m)` for several `s` and `m` in `"euler"`,
#    `"midpoint"`, `"rk4"`, and compare with RK4 at 100 steps per network evaluation.

# %% tags=["hide-cell", "solution"]
# Solution 2: error against the number of network evaluations
from galnb.cfm import METHODS

th = torch.tensor(res2["theta_eval"], dtype=torch.float32, device=run.device)
ref = model2.log_prob(th, x2_t, steps=100)
for m in ("euler", "midpoint", "rk4"):
    for s in (2, 5, 10, 20):
        err = (model2.log_prob(th, x2_t, steps=s, method=m) - ref).abs().mean().item()
        print(f"{m:8s} {s:3d} steps {s * METHODS[m]:3d} evaluations  error {err:.1e} nats")

# %% [markdown]
# :::{admonition} What solution 2 shows
# :class: dropdown
# The error falls as (evaluations)$^{-p}$ with $p$ = 1, 2 and 4. Because the learned paths are
# nearly straight, RK4 with 5–10 steps is already far below the network's own error of
# {glue:text}`cfm_theory_2d_logp_mae:.2f` nats (`benchmarks/bench_cfm.py` prints this table
# for the 5-D problem).
# :::
#
# 3. **Training length.** Halve and double the training steps. Which of the summary numbers
#    improves most with training?

# %% tags=["hide-cell", "solution"]
# Solution 3: the summary numbers against training length
for factor in (0.5, 2):
    m = CFM(problem2.dim, problem2.obs_dim, sigma=SIGMA).to(run.device)
    fit(m, problem2, steps=int(run.scale.toy_train_steps * factor), seed=run.seed)
    r = compare(m, problem2, x2, n_draws=run.scale.toy_n_samples, steps=STEPS, seed=run.seed)
    print(f"x{factor}: " + ", ".join(f"{k} {r[k]:.3f}" for k in ("mean_err", "sd_err", "logp_mae")))

# %% [markdown]
# :::{admonition} What solution 3 shows
# :class: dropdown
# The posterior-mean error soon reaches the Monte Carlo error of the draws (about
# $1/\sqrt{n}$ posterior standard deviations) and stops improving; the log-density error,
# which depends on the divergence of the field (a derivative of what the network learns),
# keeps falling with training.
# :::

# %%
run.finish()
