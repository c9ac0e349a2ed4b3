"""The papers' metrics: Δlog p, D_KL, Wasserstein distance, R², and calibration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .io import atomic_write
from .properties import QUANTITIES, TARGETS

__all__ = [
    "Posterior",
    "EmpiricalPrior",
    "fit_empirical_prior",
    "delta_log_p",
    "kl_to_prior",
    "log_ratio_to_prior",
    "wasserstein_table",
    "wasserstein_intervals",
    "r2_score",
    "r2_table",
    "r2_intervals",
    "r2_difference",
    "sbc_ranks",
    "tarp_coverage",
    "win_rate",
    "Interval",
    "bootstrap_interval",
    "paired_difference",
    "compare_scores",
    "paired_comparison",
    "gain_by_bin",
    "head_to_head",
    "degeneracy_table",
]


@dataclass
class Posterior:
    """Posterior draws and log-densities of one model on test objects (physical units).

    Arguments:
        test_index: (M,) store rows of the objects.
        theta_true: (M, D) the catalog's values θ*.
        samples: (M, n, D) posterior draws.
        log_prob_true: (M,) log p(θ*|D).
        log_prob_samples: (M, k) log p(θ_s|D) of the first k <= n draws (k = n when every
            draw has one; a CFM model may compute it for a subset, for the D_KL Monte Carlo).
        columns: the D property names, in order.
        meta: where the numbers come from (model, steps, data fingerprint...).
    """

    test_index: np.ndarray
    theta_true: np.ndarray
    samples: np.ndarray
    log_prob_true: np.ndarray
    log_prob_samples: np.ndarray
    columns: tuple[str, ...] = TARGETS
    meta: dict | None = None

    @property
    def mean(self) -> np.ndarray:
        """(M, D) posterior means."""
        return self.samples.mean(axis=1)

    def take(self, index: np.ndarray) -> "Posterior":
        """The posterior on the objects ``index`` (a subset, or a bootstrap resample with repeats), in that order."""
        return replace(self, test_index=self.test_index[index], theta_true=self.theta_true[index],
                       samples=self.samples[index], log_prob_true=self.log_prob_true[index],
                       log_prob_samples=self.log_prob_samples[index])

    def save(self, path: str | Path) -> None:
        with atomic_write(path) as fh:
            np.savez(fh, test_index=self.test_index, theta_true=self.theta_true,
                     samples=self.samples.astype(np.float32),
                     log_prob_true=self.log_prob_true, log_prob_samples=self.log_prob_samples,
                     columns=np.array(self.columns), meta=np.array(repr(self.meta or {})))

    @classmethod
    def load(cls, path: str | Path) -> "Posterior":
        import ast

        try:
            with np.load(path, allow_pickle=False) as z:
                cols = tuple(z["columns"]) if "columns" in z else TARGETS
                meta = ast.literal_eval(str(z["meta"])) if "meta" in z else {}
                return cls(z["test_index"], z["theta_true"], z["samples"].astype(np.float64), z["log_prob_true"],
                           z["log_prob_samples"], cols, meta)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a readable posterior file ({err})") from err


@dataclass
class EmpiricalPrior:
    """p(θ): a Gaussian KDE of the training set's properties (physical units).

    The bandwidth factor is chosen by held-out log-likelihood on the validation
    split; ``validation`` records how that compares with a single Gaussian.
    """

    kde: stats.gaussian_kde
    bandwidth: float
    validation: pd.DataFrame

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        """log p(θ) for θ of shape (..., D)."""
        flat = np.asarray(theta, dtype=np.float64).reshape(-1, theta.shape[-1])
        out = np.concatenate([self.kde.logpdf(chunk.T) for chunk in np.array_split(flat, max(1, len(flat) // 20_000))])
        return out.reshape(theta.shape[:-1])


def fit_empirical_prior(train: np.ndarray, val: np.ndarray, factors=(0.1, 0.15, 0.2, 0.3, 0.45),
                        max_points: int = 5000, seed: int = 0) -> EmpiricalPrior:
    """Fit the empirical prior p(θ) of the CFM paper's Δlog p.

    Arguments:
        train: (N, D) training-split properties; at most ``max_points`` of them (a random
            subset) carry kernels, which bounds the cost of evaluating p(θ) at 10^6 draws.
        val: (M, D) validation-split properties, used only to pick the bandwidth.
    """
    if len(train) > max_points:
        train = train[np.random.default_rng(seed).choice(len(train), max_points, replace=False)]
    rows, best = [], None
    gauss = stats.multivariate_normal(train.mean(0), np.cov(train.T))
    rows.append({"model": "single Gaussian", "bandwidth": np.nan, "val_log_lik": float(gauss.logpdf(val).mean())})
    for factor in factors:
        kde = stats.gaussian_kde(train.T, bw_method=factor)
        ll = float(kde.logpdf(val.T).mean())
        rows.append({"model": "Gaussian KDE", "bandwidth": factor, "val_log_lik": ll})
        if best is None or ll > best[1]:
            best = (kde, ll, factor)
    return EmpiricalPrior(best[0], best[2], pd.DataFrame(rows))


def delta_log_p(post: Posterior, prior: EmpiricalPrior) -> np.ndarray:
    """Δlog p(θ*; D) = log p(θ*|D) − log p(θ*) per object, (M,) in nats."""
    return post.log_prob_true - prior.log_prob(post.theta_true)


def log_ratio_to_prior(post: Posterior, prior: EmpiricalPrior) -> np.ndarray:
    """log p(θ_s|D) − log p(θ_s) at the k draws that have a log-density, (M, k) nats.

    Its mean over draws is the Monte Carlo estimate of D_KL[p(θ|D) ‖ p(θ)] and its standard
    deviation / √k that estimate's standard error.
    """
    with_density = post.samples[:, : post.log_prob_samples.shape[1]]
    return post.log_prob_samples - prior.log_prob(with_density)


def kl_to_prior(post: Posterior, prior: EmpiricalPrior) -> np.ndarray:
    """D_KL[p(θ|D) ‖ p(θ)] per object by Monte Carlo over the draws that have a log-density, (M,) nats."""
    return log_ratio_to_prior(post, prior).mean(axis=1)


def wasserstein_table(posteriors: dict[str, Posterior], columns: tuple[str, ...] = TARGETS) -> pd.DataFrame:
    """1-D Wasserstein distance between each property's test marginal and the posterior means.

    Returns a table with a row per property and a column per model, in the property's units.
    """
    rows = []
    for col in columns:
        row = {"property": QUANTITIES[col].short, "unit": QUANTITIES[col].unit}
        for name, post in posteriors.items():
            k = post.columns.index(col)
            row[name] = stats.wasserstein_distance(post.theta_true[:, k], post.mean[:, k])
        rows.append(row)
    return pd.DataFrame(rows)


def wasserstein_intervals(posteriors: dict[str, Posterior], columns: tuple[str, ...] = TARGETS, n_boot: int = 1000,
                          seed: int = 0) -> pd.DataFrame:
    """:func:`wasserstein_table`'s distances, each with a 95 % bootstrap interval over test objects.

    Both the test marginal and the posterior means are taken from each resample of the objects
    (every model on the same resamples).

    Returns:
        One row per model and property: ``model``, ``measure`` (the property's short name),
        ``value``, ``low``, ``high`` (``galnb.report.interval_table`` lays it out for reading).
    """
    rows = []
    for name, post in posteriors.items():
        means = post.mean  # averages every draw: once, not per resample
        for col in columns:
            k = post.columns.index(col)
            iv = bootstrap_interval(lambda i: stats.wasserstein_distance(post.theta_true[i, k], means[i, k]),
                                    len(post.test_index), n_boot, seed=seed)
            rows.append({"model": name, "measure": QUANTITIES[col].short, "value": iv.estimate, "low": iv.low,
                         "high": iv.high})
    return pd.DataFrame(rows)


def r2_score(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: ``1 − SS_res / SS_tot``; ``(N, D)`` → ``(D,)``."""
    true, pred = np.atleast_2d(np.asarray(true, float).T).T, np.atleast_2d(np.asarray(pred, float).T).T
    ss_res = ((true - pred) ** 2).sum(0)
    ss_tot = ((true - true.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / ss_tot


def r2_table(posteriors: dict[str, Posterior], columns: tuple[str, ...] = TARGETS) -> pd.DataFrame:
    """Coefficient of determination R² of the posterior means, per property and model."""
    rows = []
    for col in columns:
        row = {"property": QUANTITIES[col].short}
        for name, post in posteriors.items():
            if col in post.columns:
                k = post.columns.index(col)
                row[name] = float(r2_score(post.theta_true[:, k], post.mean[:, k])[0])
        rows.append(row)
    return pd.DataFrame(rows)


def _measured_r2(true: np.ndarray, pred: np.ndarray) -> float:
    """``r2_score`` of one property over the objects whose truth is finite (NaN: not measured)."""
    measured = np.isfinite(true)
    return float(r2_score(true[measured], pred[measured])[0])


def r2_intervals(true: np.ndarray, predictions: dict[str, np.ndarray], columns: tuple[str, ...],
                 n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """R² of each model's predictions per property, with 95 % bootstrap intervals over objects.

    Every model is scored on the same resamples. A NaN in ``true`` marks a property not measured
    for that object (e.g. O/H of a galaxy with weak lines); that entry is left out of its R².

    Arguments:
        true: (N, D) the catalog's values, in the order of ``columns``.
        predictions: model name -> (N, D) point predictions (posterior means, regressions).
        columns: the D property names.

    Returns:
        One row per model and property: ``model``, ``measure`` (the property's short name),
        ``value``, ``low``, ``high`` (``galnb.report.interval_table`` lays it out for reading).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.normal(size=(400, 1))
        >>> t = r2_intervals(y, {"good": y + 0.1 * rng.normal(size=y.shape), "zero": 0 * y}, ("y",), n_boot=200)
        >>> t.set_index("model").value.round(2).to_dict()
        {'good': 0.99, 'zero': -0.0}
    """
    true = np.asarray(true, float)
    rows = []
    for name, pred in predictions.items():
        pred = np.asarray(pred, float)
        boots = [bootstrap_interval(lambda i, k=k: _measured_r2(true[i, k], pred[i, k]), len(true), n_boot, seed=seed)
                 for k in range(len(columns))]
        rows += [{"model": name, "measure": QUANTITIES[col].short if col in QUANTITIES else col,
                  "value": iv.estimate, "low": iv.low, "high": iv.high}
                 for col, iv in zip(columns, boots)]
    return pd.DataFrame(rows)


def r2_difference(true: np.ndarray, a: np.ndarray, b: np.ndarray, columns: tuple[str, ...], names=("a", "b"),
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """R² of predictions ``a`` minus R² of ``b`` per property, resampling objects jointly.

    Arguments:
        true: (N, D) catalog values (NaN: not measured, left out as in :func:`r2_intervals`).
        a, b: (N, D) two models' predictions for the same objects.
        columns: the D property names. names: the two models' names, the table's columns.

    Returns:
        The table ``galnb.report.verdict`` reads: ``measure`` ("R² of <short name>"),
        ``better`` ("higher"), the two models' R², ``difference`` (a minus b), ``low``, ``high``.
    """
    true, a, b = (np.asarray(v, float) for v in (true, a, b))
    rows = []
    for k, col in enumerate(columns):
        t, p, q = true[:, k], a[:, k], b[:, k]
        iv = bootstrap_interval(lambda i: _measured_r2(t[i], p[i]) - _measured_r2(t[i], q[i]), len(true), n_boot,
                                seed=seed)
        values = {names[0]: _measured_r2(t, p), names[1]: _measured_r2(t, q)}
        rows.append(_comparison_row(f"R² of {QUANTITIES[col].short}", "higher", values, iv))
    return pd.DataFrame(rows)


def sbc_ranks(post: Posterior) -> np.ndarray:
    """Rank of θ* among the n draws, per object and property: (M, D) in [0, n].

    A calibrated posterior gives ranks uniform on [0, n] (Talts et al. 2018).
    """
    return (post.samples < post.theta_true[:, None, :]).sum(axis=1)


def tarp_coverage(post: Posterior, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """TARP expected coverage (Lemos et al. 2023, arXiv:2302.03026) of a posterior's draws.

    The coverage computation is sbi's (``sbi.diagnostics.tarp``, v0.24-0.27, Apache-2.0),
    written out here because sbi's public ``run_tarp`` wants a posterior to sample from and
    the book has the draws already: reference points uniform in the truths' bounding box,
    every quantity z-scored to that box, L2 distances, a histogram of the coverage values
    with M // 10 bins, and its cumulative sum. The area is sbi's public ``check_tarp``.

    Arguments:
        post: M objects with n draws each.
        seed: seed of the reference points.
    Returns:
        (alpha, ecp, atc): credibility levels, expected coverage at each, and the
        signed area between the curve and the diagonal for alpha > 0.5 (> 0: too wide,
        < 0: too narrow or biased).
    """
    import torch
    from sbi.diagnostics import check_tarp

    torch.manual_seed(seed)
    samples = torch.as_tensor(post.samples, dtype=torch.float32).transpose(0, 1)  # (n, M, D)
    thetas = torch.as_tensor(post.theta_true, dtype=torch.float32)
    lo, hi = thetas.min(0).values, thetas.max(0).values
    references = lo + (hi - lo) * torch.rand_like(thetas)
    lo, hi = lo[None], hi[None]
    samples, thetas, references = ((x - lo) / (hi - lo + 1e-10) for x in (samples, thetas, references))

    def l2(x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        return torch.sqrt(torch.sum((x - y) ** 2, dim=-1))

    coverage = torch.sum(l2(references, samples) < l2(references, thetas), dim=0) / samples.shape[0]
    hist, alpha = torch.histogram(coverage, density=True, bins=thetas.shape[0] // 10)
    ecp = torch.cat([torch.zeros(1), torch.cumsum(hist, dim=0) / hist.sum()])
    atc, _ = check_tarp(ecp, alpha)
    return alpha.numpy(), ecp.numpy(), float(atc)


def win_rate(a: np.ndarray, b: np.ndarray) -> float:
    """Share of objects where ``a`` is higher than ``b``."""
    return float(np.mean(np.asarray(a) > np.asarray(b)))


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap percentile interval at confidence ``level``."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    @property
    def sign(self) -> int:
        """+1 if the whole interval lies above zero, -1 if below, 0 if it contains zero."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def __str__(self) -> str:
        return self.format()

    def format(self, spec: str = "+.3f") -> str:
        """The estimate and the interval with one format spec, e.g. ``"+0.082 [+0.003, +0.157]"``."""
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 1000,
                       level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of a statistic of ``n`` objects, resampled with replacement.

    Arguments:
        statistic: maps an index array (n,) into the objects to a number; the estimate is its
            value on ``np.arange(n)``, the interval its spread over ``n_boot`` resamples.
        n: number of objects (at least 2).
        n_boot: bootstrap resamples. level: two-sided confidence level in (0, 1). seed: seeds them.

    Example:
        >>> x = np.arange(100.0)
        >>> iv = bootstrap_interval(lambda i: x[i].mean(), len(x), seed=1)
        >>> bool(iv.low < 49.5 < iv.high), iv.estimate
        (True, 49.5)
    """
    if n < 2:
        raise ValueError(f"bootstrap_interval needs at least 2 objects, got n={n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)])
    tail = 50 * (1 - level)
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(statistic(np.arange(n))), float(low), float(high), level)


def paired_difference(a: np.ndarray, b: np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
                      n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """``statistic(a) - statistic(b)`` for two models scored on the same objects, resampling objects jointly.

    Arguments:
        a, b: (N,) per-object scores of two models on the same N objects, in the same order.
        statistic: reduces (N,) scores to a number (mean, median, ...).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> b = rng.normal(size=500)
        >>> paired_difference(b + 0.5, b).sign  # a constant gain is certain however noisy b is
        1
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference needs two (N,) arrays over the same objects, got {a.shape} and {b.shape}")
    return bootstrap_interval(lambda i: float(statistic(a[i]) - statistic(b[i])), len(a), n_boot, level, seed)


def compare_scores(scores: dict[str, tuple[np.ndarray, np.ndarray, str]],
                   statistic: Callable[[np.ndarray], float] = np.mean, a: str = "image", b: str = "phot",
                   n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per-object scores of two models, reduced by ``statistic``, with the interval of their difference.

    Arguments:
        scores: measure name -> (a's scores (N,), b's scores (N,) on the same objects,
            "higher" or "smaller" for the better direction).
        statistic: reduces (N,) scores to a number (mean, median, ...).

    Returns:
        The table ``paired_comparison`` returns (and ``galnb.report.verdict`` reads): ``measure``,
        ``better``, ``a``, ``b``, ``difference`` (a minus b), ``low``, ``high``.
    """
    rows = []
    for measure, (values_a, values_b, better) in scores.items():
        iv = paired_difference(values_a, values_b, statistic, n_boot, seed=seed)
        rows.append(_comparison_row(measure, better, {a: float(statistic(np.asarray(values_a, float))),
                                                      b: float(statistic(np.asarray(values_b, float)))}, iv))
    return pd.DataFrame(rows)


def gain_by_bin(a: np.ndarray, b: np.ndarray, by: np.ndarray, bins: int = 4, n_boot: int = 1000,
                seed: int = 0) -> pd.DataFrame:
    """Mean of ``a - b`` in quantile bins of ``by``, each with its bootstrap interval over the bin's objects.

    Where a gain comes from: e.g. the image model's Δlog p minus the photometry model's, in bins
    of the true axis ratio.

    Arguments:
        a, b: (N,) per-object scores of two models on the same objects.
        by: (N,) the quantity to bin on. bins: number of bins, equally populated.

    Returns:
        One row per bin: ``low_edge``, ``high_edge``, ``centre`` (median of ``by`` in the bin),
        ``n``, ``difference`` (mean of a - b) and its 95 % interval ``low``/``high``.

    Example:
        >>> by = np.linspace(0, 1, 400)
        >>> table = gain_by_bin(by, np.zeros(400), by, bins=2)
        >>> table.difference.round(2).tolist(), table.n.tolist()
        ([0.25, 0.75], [200, 200])
    """
    a, b, by = (np.asarray(x, float) for x in (a, b, by))
    edges = np.quantile(by, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, by, side="right") - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        members = which == k
        iv = paired_difference(a[members], b[members], n_boot=n_boot, seed=seed)
        rows.append({"low_edge": edges[k], "high_edge": edges[k + 1], "centre": float(np.median(by[members])),
                     "n": int(members.sum()), "difference": iv.estimate, "low": iv.low, "high": iv.high})
    return pd.DataFrame(rows)


def _comparison_row(measure: str, better: str, values: dict[str, float], difference: Interval) -> dict:
    """One row of the table ``compare_scores`` and ``paired_comparison`` return (``report.verdict`` reads it)."""
    return {"measure": measure, "better": better, **values,
            "difference": difference.estimate, "low": difference.low, "high": difference.high}


def paired_comparison(posteriors: dict[str, Posterior], dlogp: dict[str, np.ndarray], dkl: dict[str, np.ndarray],
                      a: str = "image", b: str = "phot", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Model ``a`` against model ``b`` on the papers' measures, with bootstrap intervals over test galaxies.

    Every measure is recomputed on each resample of the shared test galaxies (both models on the
    same resample), so the interval of the difference carries the pairing: mean Δlog p and mean
    D_KL (higher is better), and per property the Wasserstein distance between the test marginal
    and the posterior means (smaller is better) and the R² of the posterior means (higher).

    Returns:
        One row per measure: ``measure``, ``better`` ("higher" or "smaller"), the two models'
        values, ``difference`` (a minus b), and ``low``/``high`` of its interval at 95 %.
    """
    post_a, post_b = posteriors[a], posteriors[b]
    if not np.array_equal(post_a.test_index, post_b.test_index):
        raise ValueError(f"models {a!r} and {b!r} were not scored on the same test galaxies")
    n = len(post_a.test_index)
    rows = []

    def add(measure: str, better: str, value: Callable[[str, np.ndarray], float]) -> None:
        iv = bootstrap_interval(lambda i: value(a, i) - value(b, i), n, n_boot, seed=seed)
        everyone = np.arange(n)
        rows.append(_comparison_row(measure, better, {a: value(a, everyone), b: value(b, everyone)}, iv))

    means = {m: posteriors[m].mean for m in (a, b)}  # a property that averages all draws: once, not per resample

    def true_and_mean(m: str, col: str, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = posteriors[m].columns.index(col)
        return posteriors[m].theta_true[i, k], means[m][i, k]

    add("mean Δlog p [nats]", "higher", lambda m, i: float(dlogp[m][i].mean()))
    add("mean D_KL [nats]", "higher", lambda m, i: float(dkl[m][i].mean()))
    for col in TARGETS:
        add(f"WD of {QUANTITIES[col].short}", "smaller",
            lambda m, i: stats.wasserstein_distance(*true_and_mean(m, col, i)))
    for col in TARGETS:
        add(f"R² of {QUANTITIES[col].short}", "higher", lambda m, i: float(r2_score(*true_and_mean(m, col, i))[0]))
    return pd.DataFrame(rows)


def head_to_head(posteriors: dict[str, Posterior], dlogp: dict[str, np.ndarray], dkl: dict[str, np.ndarray],
                 seconds_per_1000: dict[str, float], n_boot: int = 1000, seed: int = 0,
                 tarp_seed: int = 0) -> pd.DataFrame:
    """Every model on the papers' headline measures, each with a 95 % bootstrap interval over test objects.

    Mean Δlog p, mean D_KL, the Wasserstein distance and R² of the posterior means averaged over
    the properties, and the TARP coverage error (``tarp_coverage`` with ``tarp_seed``): each is
    recomputed on every resample of the model's test objects. The time to draw 1,000 samples
    is measured once and has no interval.

    Returns:
        One row per model and measure: ``model``, ``measure``, ``value``, ``low``, ``high``
        (``galnb.report.interval_table`` lays it out for reading).
    """
    rows = []
    for name, post in posteriors.items():
        columns = [post.columns.index(col) for col in TARGETS]
        means = post.mean[:, columns]  # a property that averages all draws: once, not per resample
        truth = post.theta_true[:, columns]

        def mean_wd(i: np.ndarray) -> float:
            return float(np.mean([stats.wasserstein_distance(truth[i, k], means[i, k]) for k in range(len(TARGETS))]))

        measures = {
            "mean Δlog p [nats]": lambda i: float(dlogp[name][i].mean()),
            "mean D_KL [nats]": lambda i: float(dkl[name][i].mean()),
            "mean WD (5 properties)": mean_wd,
            "mean R² (5 properties)": lambda i: float(np.mean(r2_score(truth[i], means[i]))),
            "TARP ATC": lambda i: tarp_coverage(post.take(i), seed=tarp_seed)[2],
        }
        for measure, statistic in measures.items():
            iv = bootstrap_interval(statistic, len(post.test_index), n_boot, seed=seed)
            rows.append({"model": name, "measure": measure, "value": iv.estimate, "low": iv.low, "high": iv.high})
        rows.append({"model": name, "measure": "s per 1,000 draws", "value": seconds_per_1000.get(name, np.nan),
                     "low": np.nan, "high": np.nan})
    return pd.DataFrame(rows)


def degeneracy_table(posteriors: dict[str, Posterior], extra: pd.DataFrame | None = None,
                     pair: tuple[str, str] = ("dn4000", "av")) -> pd.DataFrame:
    """Per object and model: the A_V–Dn4000 posterior correlation, the area of its 68 % region
    (Gaussian approximation: π χ²₆₈(2) √det Σ, in mag × Dn4000 units) and the standardised
    distance of the posterior mean from the truth in that plane.

    Arguments:
        posteriors: model name → Posterior on the same objects.
        extra: optional per-object columns (e.g. inclination) aligned with the objects.
    """
    chi2_68 = stats.chi2.ppf(0.68, 2)
    frames = []
    for name, post in posteriors.items():
        i, j = post.columns.index(pair[0]), post.columns.index(pair[1])
        s = post.samples[:, :, [i, j]]
        centred = s - s.mean(axis=1, keepdims=True)
        cov = np.einsum("mni,mnj->mij", centred, centred) / (s.shape[1] - 1)
        corr = cov[:, 0, 1] / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])
        area = np.pi * chi2_68 * np.sqrt(np.clip(np.linalg.det(cov), 0, None))
        spread = post.theta_true[:, [i, j]].std(axis=0)
        dist = np.hypot(*((s.mean(axis=1) - post.theta_true[:, [i, j]]) / spread).T)
        frame = pd.DataFrame({"model": name, "object": np.arange(len(corr)), "corr": corr, "area68": area,
                              "distance": dist})
        if extra is not None:
            frame = pd.concat([frame, extra.reset_index(drop=True)], axis=1)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
