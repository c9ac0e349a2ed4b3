"""Scoring trained models on the test set: one estimator interface, posteriors, timing, solver accuracy, probes.

Every estimator the book scores (a CFM model, a VAE-NF member, the VAE-NF ensemble) speaks
:class:`PosteriorEstimator`, and :func:`posterior` turns any of them into a
:class:`galnb.metrics.Posterior`, the one object that every metric and figure reads and
that ``Posterior.save`` alone writes to disk.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .io import file_hash
from .metrics import Posterior, r2_score
from .morphology import MEASURED_STRUCTURE_COLUMNS
from .properties import TARGETS
from .training import STRUCTURE_COLUMNS, TrainedCFM

if TYPE_CHECKING:
    from .data import Store
    from .runs import Run

__all__ = [
    "PosteriorEstimator",
    "posterior",
    "evaluation_rows",
    "rows_hash",
    "posterior_on_test_set",
    "cfm_posterior",
    "time_sampling",
    "solver_accuracy",
    "structure_probe",
]


@runtime_checkable
class PosteriorEstimator(Protocol):
    """A conditional density estimator q(θ | c) in physical units (sbi's ``ConditionalDensityEstimator`` shape).

    ``cond`` is whatever the estimator is conditioned on, B objects of it (a tensor, or a
    tuple of tensors); ``theta`` is in the catalog's units. Estimators may take extra keyword
    arguments (a CFM model takes its ODE solver's ``steps`` and ``method``).
    """

    def sample(self, cond: Any, n: int, **kwargs) -> Tensor:
        """``(B, n, D)`` posterior draws."""

    def log_prob(self, theta: Tensor, cond: Any, **kwargs) -> Tensor:
        """``(B,)`` for ``theta: (B, D)``, or ``(B, n)`` for ``theta: (B, n, D)``."""


def _finished(result: Tensor) -> float:
    """``time.perf_counter()`` once the work that produced ``result`` is done: CUDA kernels run
    asynchronously, so a GPU's clock is read only after it has caught up."""
    if result.is_cuda:
        torch.cuda.synchronize(result.device)
    return time.perf_counter()


@torch.no_grad()
def posterior(
    estimator: PosteriorEstimator,
    cond: Any,
    theta_true: np.ndarray,
    rows: np.ndarray,
    n_draws: int,
    *,
    n_log_prob: int | None = None,
    seed: int = 0,
    columns: tuple[str, ...] = TARGETS,
    meta: dict | None = None,
    **kwargs,
) -> Posterior:
    """Posterior draws and log-densities of an estimator on objects with known truths.

    Seeds torch's generators with ``seed``, then draws. An estimator with a
    ``sample_and_log_prob`` method (a CFM model: the log-density is tracked along the
    integration that makes a draw) gives its first ``n_log_prob`` draws that way and the rest
    by ``sample``; otherwise every draw comes from ``sample`` and the first ``n_log_prob`` get
    ``log_prob``. log p(θ*|c) comes from ``log_prob``.

    Arguments:
        estimator: any :class:`PosteriorEstimator`.
        cond: the M objects' conditions.
        theta_true: (M, D) the catalog's values θ*, in the order of ``columns``.
        rows: (M,) the objects' store rows.
        n_draws: draws per object.
        n_log_prob: how many of the draws get a log-density (default: all).
        seed: the sampling seed.
        columns: the D property names.
        meta: provenance to store with the posterior; ``n_draws``, ``n_log_prob`` and
            ``seconds_per_1000_draws`` (wall time of the draws) are added.
        kwargs: passed to the estimator's methods (e.g. ``steps``, ``method``).
    Returns:
        the :class:`Posterior` in physical units, float64.
    """
    n_log_prob = n_draws if n_log_prob is None else n_log_prob
    if not 1 <= n_log_prob <= n_draws:
        raise ValueError(f"n_log_prob={n_log_prob} must be between 1 and n_draws={n_draws}")
    torch.manual_seed(seed)
    start = time.perf_counter()
    if hasattr(estimator, "sample_and_log_prob"):
        draws, lp_draws = estimator.sample_and_log_prob(cond, n_log_prob, **kwargs)
        if n_log_prob < n_draws:
            draws = torch.cat([draws, estimator.sample(cond, n_draws - n_log_prob, **kwargs)], dim=1)
        seconds = _finished(draws) - start
    else:
        draws = estimator.sample(cond, n_draws, **kwargs)
        seconds = _finished(draws) - start
        lp_draws = estimator.log_prob(draws[:, :n_log_prob], cond, **kwargs)
    lp_true = estimator.log_prob(torch.tensor(np.asarray(theta_true, dtype=np.float64)), cond, **kwargs)
    provenance = {**(meta or {}), "n_draws": n_draws, "n_log_prob": n_log_prob,
                  "seconds_per_1000_draws": 1000 * seconds / (len(rows) * n_draws)}
    return Posterior(np.asarray(rows), np.asarray(theta_true, dtype=np.float64), draws.cpu().double().numpy(),
                     lp_true.cpu().double().numpy(), lp_draws.cpu().double().numpy(), tuple(columns), provenance)


def rows_hash(rows: np.ndarray) -> str:
    """SHA-256 (first 16 hex digits) of a row-index array, to key caches on the objects scored.

    Example:
        >>> rows_hash(np.arange(3)) == rows_hash([0, 1, 2]) != rows_hash(np.arange(4))
        True
    """
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def evaluation_rows(run: "Run", store: "Store") -> np.ndarray:
    """The store rows that chapters 04-06 score: the test split, or its first ``n_eval`` rows if set."""
    return store.splits["test"][: run.scale.n_eval]


def posterior_on_test_set(run: "Run", store: "Store", kind: str) -> Posterior:
    """The ``kind`` CFM model's posterior on the run's :func:`evaluation_rows`.

    Computed once and cached in ``run.posterior_path(kind)``; the cache is reused only
    if it was made from the same checkpoint (by hash), data set, rows (by hash), seed, draws
    and solver steps.
    """
    ckpt = run.require(run.model_dir(kind) / "best.pt", "03_train", model=kind)
    rows = evaluation_rows(run, store)
    expected = {"model": kind, "steps": run.scale.ode_steps, "method": "rk4", "n_draws": run.scale.n_draws,
                "n_log_prob": run.scale.n_kl_draws, "data": store.fingerprint, "checkpoint_hash": file_hash(ckpt),
                "rows_hash": rows_hash(rows), "seed": run.seed}
    path = run.posterior_path(kind)
    if path.exists():
        cached = Posterior.load(path)
        if all(cached.meta.get(k) == v for k, v in expected.items()):
            return cached
    trained = run.trained(kind, store)
    post = cfm_posterior(trained, store, rows, run.scale.n_draws, run.scale.ode_steps, seed=run.seed,
                         n_log_prob=run.scale.n_kl_draws)
    post.meta.update(expected)
    post.save(path)
    return post


def cfm_posterior(trained: TrainedCFM, store: "Store", rows: np.ndarray, n_draws: int, steps: int, *, seed: int = 0,
                  method: str = "rk4", n_log_prob: int | None = None) -> Posterior:
    """:func:`posterior` of a trained CFM model on catalog ``rows`` of ``store`` (conditions and truths read there)."""
    rows = np.asarray(rows)
    device = trained.theta_mean.device.type
    truth = store.catalog.iloc[rows][list(TARGETS)].to_numpy()
    meta = {"model": trained.kind, "steps": steps, "method": method, "data": trained.meta.get("data"),
            "checkpoint": str(trained.path)}
    return posterior(trained, trained.condition(store, rows, device), truth, rows, n_draws, n_log_prob=n_log_prob,
                     seed=seed, meta=meta, steps=steps, method=method)


def time_sampling(trained: TrainedCFM, store: "Store", rows: np.ndarray, steps: int, n_draws: int = 1000) -> float:
    """Seconds to draw ``n_draws`` samples for one object (RK4, averaged over ``rows``)."""
    cond = trained.condition(store, np.asarray(rows), trained.theta_mean.device.type)
    start = time.perf_counter()
    draws = trained.sample(cond, n_draws, steps)
    return (_finished(draws) - start) / len(rows)


def solver_accuracy(trained: TrainedCFM, store: "Store", rows: np.ndarray, prior,
                    settings=(("euler", 10), ("midpoint", 5), ("midpoint", 10), ("rk4", 2), ("rk4", 5),
                              ("rk4", 10), ("rk4", 25)), reference: tuple[str, int] = ("rk4", 100)) -> pd.DataFrame:
    """Δlog p of test objects with cheaper ODE solvers against a reference solver.

    Returns one row per setting: network evaluations per integration, and the mean and
    largest absolute difference of Δlog p from the reference (nats).
    """
    from .cfm import METHODS

    rows = np.asarray(rows)
    cond = trained.condition(store, rows, trained.theta_mean.device.type)
    truth = store.catalog.iloc[rows][list(TARGETS)].to_numpy()
    log_prior = prior.log_prob(truth)

    def dlogp(method: str, steps: int) -> np.ndarray:
        return trained.log_prob(torch.as_tensor(truth), cond, steps, method).cpu().numpy() - log_prior

    ref = dlogp(*reference)
    out = []
    for method, steps in (*settings, reference):
        diff = np.abs(dlogp(method, steps) - ref)
        out.append({"method": method, "steps": steps, "evaluations": steps * METHODS[method],
                    "mean |Δ| [nats]": float(diff.mean()), "max |Δ| [nats]": float(diff.max())})
    return pd.DataFrame(out)


def structure_probe(trained: TrainedCFM, store: "Store", fit_rows: np.ndarray, test_rows: np.ndarray) -> pd.DataFrame:
    """How much of the true structure an image model's embedding holds: a linear read-out.

    A ridge regression (regularisation chosen by cross-validation) predicts each of
    ``STRUCTURE_COLUMNS`` from the image embedding f_img, and, for comparison, from the
    photometry alone; fitted on ``fit_rows``, scored by R² on ``test_rows``.

    Returns:
        one row per structural parameter: ``parameter``, ``R² from f_img``, ``R² from photometry``,
        and where the store has them (:func:`galnb.morphology.with_measured_structure`),
        ``R² from measured`` (from the three numbers measured on the cutouts).
    """
    from sklearn.linear_model import RidgeCV

    if trained.kind != "image":
        raise ValueError(f"structure_probe needs the image model, got the {trained.kind!r} model")
    store.require_columns(STRUCTURE_COLUMNS, "the structure probe")
    device = trained.theta_mean.device.type

    def features(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            cond = trained.standardised(trained.condition(store, rows, device))
            context = trained.model.encode(cond, batch=256).cpu().double().numpy()
        f_img, phot = np.split(context, [trained.model.encoder.out_dim], axis=1)  # context is [f_img; f_phot]
        return f_img, phot

    (img_fit, phot_fit), (img_test, phot_test) = features(np.asarray(fit_rows)), features(np.asarray(test_rows))
    inputs = [("f_img", img_fit, img_test), ("photometry", phot_fit, phot_test)]
    if set(MEASURED_STRUCTURE_COLUMNS) <= set(store.catalog.columns):
        measured = store.catalog[list(MEASURED_STRUCTURE_COLUMNS)].to_numpy()
        inputs.append(("measured", measured[fit_rows], measured[test_rows]))
    out = []
    for column in STRUCTURE_COLUMNS:
        y_fit = store.catalog[column].to_numpy()[fit_rows]
        y_test = store.catalog[column].to_numpy()[test_rows]
        row = {"parameter": column}
        for label, x_fit, x_test in inputs:
            ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x_fit, y_fit)
            row[f"R² from {label}"] = float(r2_score(y_test, ridge.predict(x_test))[0])
        out.append(row)
    return pd.DataFrame(out)
