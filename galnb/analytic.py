"""A linear-Gaussian inference problem with a closed-form posterior, to check CFM against."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LinearGaussian", "linear_gaussian", "fit", "compare", "GaussianMixture1D"]


@dataclass(frozen=True)
class LinearGaussian:
    r"""theta ~ N(mu0, cov0); x = A theta + b + n with n ~ N(0, cov_noise).

    The posterior is Gaussian with a covariance that does not depend on x:
    :math:`\Sigma = (\Sigma_0^{-1} + A^\top \Sigma_n^{-1} A)^{-1}`,
    :math:`\mu(x) = \Sigma\,(\Sigma_0^{-1}\mu_0 + A^\top \Sigma_n^{-1}(x - b))`.

    Arguments:
        mu0: (D,) prior mean.
        cov0: (D, D) prior covariance.
        A: (K, D) forward matrix.
        b: (K,) offset.
        cov_noise: (K, K) noise covariance.
    Example:
        >>> p = linear_gaussian(2)
        >>> theta, x = p.simulate(4, np.random.default_rng(0))
        >>> p.posterior(x)[0].shape, p.posterior(x)[1].shape
        ((4, 2), (2, 2))
    """

    mu0: np.ndarray
    cov0: np.ndarray
    A: np.ndarray
    b: np.ndarray
    cov_noise: np.ndarray

    @property
    def dim(self) -> int:
        """D, the dimension of theta."""
        return self.mu0.shape[0]

    @property
    def obs_dim(self) -> int:
        """K, the dimension of x."""
        return self.b.shape[0]

    def simulate(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw n pairs from the joint p(theta, x).

        Arguments:
            n: number of pairs.
            rng: numpy random generator.
        Returns:
            theta (n, D) and x (n, K), float64.
        """
        theta = rng.multivariate_normal(self.mu0, self.cov0, size=n)
        noise = rng.multivariate_normal(np.zeros(self.obs_dim), self.cov_noise, size=n)
        return theta, theta @ self.A.T + self.b + noise

    @property
    def posterior_cov(self) -> np.ndarray:
        """(D, D) posterior covariance (the same for every x)."""
        prec = np.linalg.inv(self.cov0) + self.A.T @ np.linalg.solve(self.cov_noise, self.A)
        return np.linalg.inv(prec)

    def posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact posterior p(theta | x).

        Arguments:
            x: (B, K) observations.
        Returns:
            mean (B, D) and covariance (D, D).
        """
        cov = self.posterior_cov
        rhs = np.linalg.solve(self.cov0, self.mu0) + (np.asarray(x) - self.b) @ np.linalg.solve(self.cov_noise, self.A)
        return rhs @ cov.T, cov

    def log_posterior(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Exact log p(theta | x).

        Arguments:
            theta: (B, D) or (B, n, D).
            x: (B, K).
        Returns:
            (B,) or (B, n).
        """
        mean, cov = self.posterior(x)
        theta = np.asarray(theta, dtype=float)
        r = theta - (mean if theta.ndim == 2 else mean[:, None, :])
        chol = np.linalg.cholesky(cov)
        z = r @ np.linalg.inv(chol).T  # whitened residuals
        logdet = 2 * np.log(np.diag(chol)).sum()
        return -0.5 * (z**2).sum(-1) - 0.5 * logdet - 0.5 * self.dim * math.log(2 * math.pi)


def linear_gaussian(dim: int = 2) -> LinearGaussian:
    """The book's two problems, on the standardised scale (prior variances 1).

    ``dim=2``: x in R^2 measures theta_1 + theta_2 well and theta_1 - theta_2 poorly, so the
    posterior is a tilted, elongated ellipse (a degeneracy). ``dim=5``: x in R^5 (five
    "bands") from a fixed random forward matrix with one nearly unconstrained direction.

    Arguments:
        dim: 2 or 5.
    Returns:
        the LinearGaussian problem.
    """
    if dim == 2:
        cov0 = np.array([[1.0, 0.3], [0.3, 1.0]])
        A = np.array([[1.0, 1.0], [0.5, -0.5]])
        return LinearGaussian(np.zeros(2), cov0, A, np.zeros(2), np.diag([0.3, 0.3]) ** 2)
    if dim == 5:
        rng = np.random.default_rng(3)
        L = 0.3 * rng.normal(size=(5, 5))
        cov0 = 0.6 * np.eye(5) + L @ L.T
        cov0 = cov0 / np.sqrt(np.outer(np.diag(cov0), np.diag(cov0)))
        A = rng.normal(size=(5, 5)) / math.sqrt(5)
        return LinearGaussian(np.zeros(5), cov0, A, np.zeros(5), np.diag(np.full(5, 0.3)) ** 2)
    raise ValueError(f"dim={dim}; the book's problems have dim 2 or 5")


@dataclass(frozen=True)
class GaussianMixture1D:
    r"""A 1-D Gaussian-mixture target whose CFM probability path is known exactly.

    With theta_0 ~ N(0, 1) and theta_1 from the mixture, the path
    :math:`\theta_t = (1-t)\theta_0 + t\theta_1 + \sigma\epsilon` has, given component k,
    mean :math:`t m_k` and variance :math:`V_k(t) = (1-t)^2 + t^2 s_k^2 + \sigma^2`; the
    marginal velocity is the posterior mean of :math:`\theta_1 - \theta_0` given
    :math:`\theta_t`, the quantity CFM's regression learns.

    Arguments:
        weights, means, sds: (K,) mixture weights, means and standard deviations.
    """

    weights: tuple[float, ...] = (0.4, 0.6)
    means: tuple[float, ...] = (-1.6, 1.3)
    sds: tuple[float, ...] = (0.3, 0.45)

    def _parts(self, t: float, theta: np.ndarray, sigma: float):
        w, m, s = (np.asarray(a, dtype=float) for a in (self.weights, self.means, self.sds))
        var = (1 - t) ** 2 + t**2 * s**2 + sigma**2
        theta = np.asarray(theta, dtype=float)[..., None]
        logc = np.log(w) - 0.5 * (theta - t * m) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
        return logc, theta, m, s, var

    def path_density(self, t: float, theta: np.ndarray, sigma: float = 0.05) -> np.ndarray:
        """p_t(theta), any shape of theta."""
        logc = self._parts(t, theta, sigma)[0]
        return np.exp(logc).sum(-1)

    def velocity(self, t: float, theta: np.ndarray, sigma: float = 0.05) -> np.ndarray:
        """The exact marginal velocity u_t(theta) = E[theta_1 - theta_0 | theta_t = theta]."""
        logc, th, m, s, var = self._parts(t, theta, sigma)
        resp = np.exp(logc - logc.max(-1, keepdims=True))
        resp /= resp.sum(-1, keepdims=True)
        cond_mean = m + (t * s**2 - (1 - t)) / var * (th - t * m)
        return (resp * cond_mean).sum(-1)

    def flow(self, theta0: np.ndarray, steps: int = 200, sigma: float = 0.05) -> np.ndarray:
        """Paths of the exact marginal ODE from theta0 (n,), RK4; returns (steps + 1, n)."""
        h, y, out = 1.0 / steps, np.asarray(theta0, dtype=float), [np.asarray(theta0, dtype=float)]
        for i in range(steps):
            t = i * h
            k1 = self.velocity(t, y, sigma)
            k2 = self.velocity(t + h / 2, y + h / 2 * k1, sigma)
            k3 = self.velocity(t + h / 2, y + h / 2 * k2, sigma)
            k4 = self.velocity(t + h, y + h * k3, sigma)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            out.append(y)
        return np.stack(out)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) draws from the mixture."""
        k = rng.choice(len(self.weights), size=n, p=np.asarray(self.weights) / np.sum(self.weights))
        return np.asarray(self.means)[k] + np.asarray(self.sds)[k] * rng.normal(size=n)


def fit(
    model,
    problem: LinearGaussian,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Train a CFM model on fresh simulations from ``problem`` (AdamW, cosine-decayed lr).

    Every step draws a new batch, so there is no overfitting and no validation set: the
    simplest possible training loop, for the analytic chapter only (the survey models are
    trained by ``galnb.training``).

    Arguments:
        model: a ``galnb.cfm.CFM`` with ``theta_dim == problem.dim`` and ``cond_dim == problem.obs_dim``.
        problem: the simulator.
        steps: optimiser steps.
        batch_size: pairs per step.
        lr: peak learning rate.
        seed: seeds the simulations and the CFM noise.
    Returns:
        the loss at every step.
    """
    import torch

    from .training import optimiser_step

    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.02)
    dev = next(model.parameters()).device
    losses = []
    model.train()
    for _ in range(steps):
        theta, x = problem.simulate(batch_size, rng)
        loss = model.loss(torch.as_tensor(theta, dtype=torch.float32, device=dev),
                          torch.as_tensor(x, dtype=torch.float32, device=dev), generator=gen)
        optimiser_step(opt, loss)
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def compare(
    model,
    problem: LinearGaussian,
    x: np.ndarray,
    n_draws: int = 1000,
    n_eval: int = 200,
    steps: int = 100,
    method: str = "rk4",
    seed: int = 0,
) -> dict:
    """A trained CFM model's posteriors against the exact ones, for observations x.

    Arguments:
        model: a trained ``galnb.cfm.CFM``.
        problem: the LinearGaussian it was trained on.
        x: (B, K) observations.
        n_draws: CFM draws per object (for moments).
        n_eval: exact posterior draws per object at which both log-densities are evaluated.
        steps, method: the ODE solver for sampling and log-densities.
        seed: seeds the draws.
    Returns:
        dict with ``draws`` (B, n_draws, D), ``mean``/``sd`` (B, D) of the draws, ``cov`` (D, D)
        (their covariance averaged over objects), ``exact_mean`` (B, D), ``exact_cov`` (D, D),
        ``theta_eval`` (B, n_eval, D), ``logp_exact``/``logp_cfm`` (B, n_eval) and the summaries
        ``mean_err`` (mean |error of the mean| in posterior sd), ``sd_err`` (mean relative error
        of the sd), ``cov_err`` (max |covariance error| / largest exact variance), ``logp_mae``,
        ``logp_bias`` (nats).
    """
    import torch

    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32, device=dev)
    draws = model.sample(xt, n_draws, steps=steps, method=method, generator=gen).double().cpu().numpy()
    mean, cov = problem.posterior(x)
    rng = np.random.default_rng(seed)
    theta_eval = mean[:, None, :] + rng.multivariate_normal(np.zeros(problem.dim), cov, size=(len(x), n_eval))
    lp = model.log_prob(torch.as_tensor(theta_eval, dtype=torch.float32, device=dev), xt, steps=steps, method=method)
    lp = lp.double().cpu().numpy()
    exact = problem.log_posterior(theta_eval, x)
    sd = np.sqrt(np.diag(cov))
    learned_cov = np.mean([np.cov(d.T) for d in draws], axis=0)
    return {
        "draws": draws, "mean": draws.mean(1), "sd": draws.std(1, ddof=1), "cov": learned_cov,
        "exact_mean": mean, "exact_cov": cov, "theta_eval": theta_eval, "logp_exact": exact, "logp_cfm": lp,
        "mean_err": float(np.abs((draws.mean(1) - mean) / sd).mean()),
        "sd_err": float(np.abs(draws.std(1, ddof=1) / sd - 1).mean()),
        "cov_err": float(np.abs(learned_cov - cov).max() / np.diag(cov).max()),
        "logp_mae": float(np.abs(lp - exact).mean()),
        "logp_bias": float((lp - exact).mean()),
    }
