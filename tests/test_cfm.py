"""Tests of galnb.cfm (and galnb.analytic): the flow matching model against exact answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galnb.analytic import fit, linear_gaussian
from galnb.cfm import CFM, METHODS, ImageEncoder, odeint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: the batches here are small, and the CI cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Tolerances for a model trained for TRAIN_STEPS steps (about 5 s on one CPU core),
# measured on 20 observations with 500 RK4-20 draws each. Observed values in brackets
# (dim 2 / dim 5, seed 0, torch 2.13 CPU); the limits leave 2-3x margin for other platforms.
TRAIN_STEPS = 2000
MEAN_TOL = 0.12  # mean |learned - exact| posterior mean, in posterior std units [0.050 / 0.041]
COV_TOL = 0.15  # max |learned - exact| covariance entry / largest exact variance [0.050 / 0.013]
LOGP_MAE_TOL = 0.2  # mean |log q - log p| at exact posterior draws, nats [0.107 / 0.101]
LOGP_BIAS_TOL = 0.05  # |mean(log q - log p)|, nats [0.008 / 0.007]


def _nonlinear_model(theta_dim: int = 2, cond_dim: int = 3, seed: int = 0) -> CFM:
    """An untrained model whose weights are scaled up so that its flow is visibly nonlinear."""
    torch.manual_seed(seed)
    model = CFM(theta_dim, cond_dim, hidden=32, depth=2, activation="tanh")
    with torch.no_grad():
        for layer in model.net.layers:
            layer.weight.mul_(2.0)
    return model.double()


def test_solvers_converge_at_their_order():
    def f(t, y):
        return y * math.cos(t), None  # y(t) = exp(sin t)

    exact = math.exp(math.sin(1.0))
    for method, order in [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)]:
        errs = [abs(odeint(f, torch.ones(1, dtype=torch.double), 0.0, 1.0, s, method)[0].item() - exact)
                for s in (8, 16)]
        assert math.log2(errs[0] / errs[1]) == pytest.approx(order, abs=0.3), method
    assert set(METHODS) >= {"euler", "midpoint", "rk4"}


# -- log_prob is the density of sample ------------------------------------------------------
def test_log_prob_matches_divergence_tracked_along_sampling():
    model = _nonlinear_model()
    cond = torch.randn(3, 3, dtype=torch.double)
    draws, lp_forward = model.sample_and_log_prob(cond, n=64, steps=50, generator=torch.Generator().manual_seed(0))
    plain = model.sample(cond, n=64, steps=50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws, plain)
    lp_backward = model.log_prob(draws, cond, steps=50)
    assert (lp_forward - lp_backward).abs().max() < 1e-4
    assert lp_forward.std() > 0.3  # the check is not vacuous: the flow changes densities


def test_log_prob_matches_change_of_variables_of_the_flow_map():
    """log q(theta_1) = log N(theta_0) - log|det d theta_1 / d theta_0|, Jacobian by autograd."""
    model = _nonlinear_model(seed=2)
    cond = torch.randn(1, 3, dtype=torch.double)

    def flow(x0):  # the differentiable forward (the sampler's FoldedVelocity has no autograd)
        return odeint(lambda t, y: (model.velocity(t, y, cond), None), x0.view(1, 2), 0.0, 1.0, 50, "rk4")[0].view(2)

    x0 = torch.randn(16, 2, dtype=torch.double)
    x1 = torch.stack([flow(x) for x in x0])
    logdet = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(flow, x))[1] for x in x0])
    expected = -0.5 * (x0**2).sum(-1) - math.log(2 * math.pi) - logdet
    got = model.log_prob(x1.unsqueeze(0), cond, steps=50)[0]
    assert (got - expected).abs().max() < 1e-4
    assert logdet.abs().mean() > 0.1


# -- accuracy on the linear-Gaussian problem ------------------------------------------------
@pytest.fixture(scope="module", params=[2, 5], ids=["dim2", "dim5"])
def trained(request):
    problem = linear_gaussian(request.param)
    torch.manual_seed(0)
    model = CFM(problem.dim, problem.obs_dim, hidden=128, depth=3)
    fit(model, problem, steps=TRAIN_STEPS, batch_size=256, lr=2e-3, seed=0)
    _, x = problem.simulate(20, np.random.default_rng(1))
    return problem, model, x


def test_samples_match_linear_gaussian_posterior(trained):
    problem, model, x = trained
    mean, cov = problem.posterior(x)
    draws = model.sample(torch.tensor(x, dtype=torch.float32), n=500, steps=20,
                         generator=torch.Generator().manual_seed(0)).double().numpy()
    sd = np.sqrt(np.diag(cov))
    assert np.abs((draws.mean(1) - mean) / sd).mean() < MEAN_TOL
    learned_cov = np.mean([np.cov(d.T) for d in draws], axis=0)
    assert np.abs(learned_cov - cov).max() / np.diag(cov).max() < COV_TOL


def test_log_prob_matches_linear_gaussian_posterior(trained):
    problem, model, x = trained
    mean, cov = problem.posterior(x)
    rng = np.random.default_rng(2)
    theta = np.stack([rng.multivariate_normal(m, cov, size=100) for m in mean])
    learned = model.log_prob(torch.tensor(theta, dtype=torch.float32), torch.tensor(x, dtype=torch.float32),
                             steps=20).double().numpy()
    err = learned - problem.log_posterior(theta, x)
    assert np.abs(err).mean() < LOGP_MAE_TOL
    assert abs(err.mean()) < LOGP_BIAS_TOL


def test_linear_gaussian_posterior_is_bayes_rule():
    problem = linear_gaussian(2)
    theta, x = problem.simulate(3, np.random.default_rng(0))
    # Unnormalised log prior + log likelihood on a grid, normalised numerically.
    g = np.linspace(-4, 4, 401)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    icov0, icovn = np.linalg.inv(problem.cov0), np.linalg.inv(problem.cov_noise)
    r = x[0] - grid @ problem.A.T - problem.b
    logu = -0.5 * np.einsum("ni,ij,nj->n", grid, icov0, grid) - 0.5 * np.einsum("ni,ij,nj->n", r, icovn, r)
    lognorm = np.log(np.exp(logu - logu.max()).sum() * (g[1] - g[0]) ** 2) + logu.max()
    exact = problem.log_posterior(grid[None, ::997], x[:1])[0]
    np.testing.assert_allclose(exact, logu[::997] - lognorm, atol=1e-6)


# -- shapes, encoder calls, determinism, config ---------------------------------------------
def test_phot_model_shapes():
    model = CFM(5, 5, hidden=32)
    cond = torch.randn(4, 5)
    assert model.encode(cond).shape == (4, 5)
    assert model.net.layers[0].in_features == 11
    assert model.loss(torch.randn(4, 5), cond).shape == ()
    assert model.sample(cond, n=7, steps=3).shape == (4, 7, 5)
    assert model.log_prob(torch.randn(4, 5), cond, steps=3).shape == (4,)
    assert model.log_prob(torch.randn(4, 7, 5), cond, steps=3).shape == (4, 7)
    assert model.sample_and_log_prob(cond, n=7, steps=3)[1].shape == (4, 7)


def test_image_model_shapes_at_32_px():
    model = CFM(5, 5, hidden=32, encoder=ImageEncoder())
    cond = (torch.rand(3, 3, 32, 32), torch.randn(3, 5))
    assert model.encode(cond).shape == (3, 261)
    assert model.net.layers[0].in_features == 267
    assert model.loss(torch.randn(3, 5), cond).shape == ()
    assert model.sample(cond, n=6, steps=2, method="midpoint").shape == (3, 6, 5)
    assert model.log_prob(torch.randn(3, 6, 5), cond, steps=2).shape == (3, 6)
    assert model.encoder(torch.rand(2, 3, 16, 16)).shape == (2, 256)
    with pytest.raises(ValueError):
        model.encoder(torch.rand(2, 3, 8, 8))


def test_encoder_runs_once_per_object_while_sampling():
    model = CFM(5, 5, hidden=16, encoder=ImageEncoder(channels=(4, 4, 4, 8)))
    seen: list[int] = []
    model.encoder.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    cond = (torch.rand(5, 3, 32, 32), torch.randn(5, 5))
    model.sample(cond, n=40, steps=10, max_rows=80)  # 2 objects per chunk -> 3 chunks
    assert sum(seen) == 5
    seen.clear()
    model.log_prob(torch.randn(5, 40, 5), cond, steps=10)
    assert sum(seen) == 5


def test_sampling_is_deterministic_for_a_seed():
    model = CFM(5, 5, hidden=16)
    cond = torch.randn(3, 5)
    a = model.sample(cond, 10, steps=5, generator=torch.Generator().manual_seed(3))
    b = model.sample(cond, 10, steps=5, generator=torch.Generator().manual_seed(3))
    c = model.sample(cond, 10, steps=5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    theta = torch.randn(3, 5)
    la = model.loss(theta, cond, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG does not matter when a generator is given
    lb = model.loss(theta, cond, generator=torch.Generator().manual_seed(5))
    assert torch.equal(la, lb)


def test_config_rebuilds_the_model():
    model = CFM(5, 5, hidden=24, depth=2, sigma=0.1, encoder=ImageEncoder(channels=(4, 8, 8, 16)))
    clone = CFM.from_config(model.config())
    clone.load_state_dict(model.state_dict())
    cond = (torch.rand(2, 3, 16, 16), torch.randn(2, 5))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(model.sample(cond, 4, steps=3, generator=gen()), clone.sample(cond, 4, steps=3, generator=gen()))
    assert clone.config() == model.config()
