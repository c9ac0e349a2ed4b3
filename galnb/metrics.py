"""The papers' metrics: Δlog p, D_KL, Wasserstein distance, R², and calibration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .properties import QUANTITIES, TARGETS
from .runs import atomic_write

__all__ = [
    "Posterior",
    "EmpiricalPrior",
    "fit_empirical_prior",
    "delta_log_p",
    "kl_to_prior",
    "log_ratio_to_prior",
    "wasserstein_table",
    "r2_table",
    "sbc_ranks",
    "tarp_coverage",
    "PAPER_CFM",
    "win_rate",
    "select_box",
    "wasserstein_with_paper",
    "head_to_head",
    "dust_age_examples",
    "degeneracy_table",
    "verdict",
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

    def save(self, path: str | Path) -> None:
        with atomic_write(path) as fh:
            np.savez(fh, test_index=self.test_index, theta_true=self.theta_true, samples=self.samples.astype(np.float32),
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
    for j, col in enumerate(columns):
        row = {"property": QUANTITIES[col].short, "unit": QUANTITIES[col].unit}
        for name, post in posteriors.items():
            k = post.columns.index(col)
            row[name] = stats.wasserstein_distance(post.theta_true[:, k], post.mean[:, k])
        rows.append(row)
    return pd.DataFrame(rows)


def r2_table(posteriors: dict[str, Posterior], columns: tuple[str, ...] = TARGETS) -> pd.DataFrame:
    """Coefficient of determination R² of the posterior means, per property and model."""
    rows = []
    for col in columns:
        row = {"property": QUANTITIES[col].short}
        for name, post in posteriors.items():
            if col in post.columns:
                k = post.columns.index(col)
                truth = post.theta_true[:, k]
                row[name] = 1.0 - ((truth - post.mean[:, k]) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
        rows.append(row)
    return pd.DataFrame(rows)


def sbc_ranks(post: Posterior) -> np.ndarray:
    """Rank of θ* among the n draws, per object and property: (M, D) in [0, n].

    A calibrated posterior gives ranks uniform on [0, n] (Talts et al. 2018).
    """
    return (post.samples < post.theta_true[:, None, :]).sum(axis=1)


def tarp_coverage(post: Posterior, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """TARP expected coverage (Lemos et al. 2023) with sbi's implementation.

    Returns:
        (alpha, ecp, atc): credibility levels, expected coverage at each, and the
        signed area between the curve and the diagonal for alpha > 0.5 (sbi's
        ``check_tarp``; > 0: too wide, < 0: too narrow or biased).
    """
    import torch
    from sbi.diagnostics.tarp import _run_tarp, check_tarp  # _run_tarp takes draws directly

    torch.manual_seed(seed)
    samples = torch.as_tensor(post.samples, dtype=torch.float32).transpose(0, 1)  # (n, M, D)
    thetas = torch.as_tensor(post.theta_true, dtype=torch.float32)
    lo, hi = thetas.min(0).values, thetas.max(0).values
    references = lo + (hi - lo) * torch.rand_like(thetas)
    ecp, alpha = _run_tarp(samples, thetas, references, z_score_theta=True)
    atc, _ = check_tarp(ecp, alpha)
    return alpha.numpy(), ecp.numpy(), float(atc)


#: The CFM paper's published values on real SDSS (its Figure 1 and Table 1), for comparison only.
PAPER_CFM = {
    "delta_log_p_mu": {"image": 2.17, "phot": 1.26},
    "kl_mu": {"image": 3.41, "phot": 2.55},
    "win_rate_delta_log_p": 0.815,
    "win_rate_kl": 0.965,
    "wd": {"log_mstar": (0.0264, 0.0547), "log_sfr": (0.0639, 0.1119), "oh12": (0.0156, 0.0302),
           "dn4000": (0.0103, 0.0131), "av": (0.1937, 0.2565)},  # (image, phot)
}


def win_rate(a: np.ndarray, b: np.ndarray) -> float:
    """Share of objects where ``a`` is higher than ``b``."""
    return float(np.mean(np.asarray(a) > np.asarray(b)))


def select_box(points: np.ndarray, quantile: tuple[float, float], half_width: float = 0.12, n: int = 3,
               seed: int = 0) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """A box around the given quantiles of 2-D points, and up to ``n`` points inside it.

    Arguments:
        points: (M, 2) e.g. the image model's posterior means in one plane.
        quantile: (qx, qy) where to centre the box.
        half_width: half the box side, as a fraction of each axis' 5–95 % range.
    Returns:
        (x0, x1, y0, y1) and the indices of the chosen members.
    """
    centre = np.array([np.quantile(points[:, 0], quantile[0]), np.quantile(points[:, 1], quantile[1])])
    span = np.quantile(points, 0.95, axis=0) - np.quantile(points, 0.05, axis=0)
    while True:  # widen the box until it holds n points (a sparse corner of the plane)
        lo, hi = centre - half_width * span, centre + half_width * span
        inside = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1))
        if len(inside) >= min(n, len(points)):
            break
        half_width *= 1.25
    chosen = np.random.default_rng(seed).permutation(inside)[:n]
    return (lo[0], hi[0], lo[1], hi[1]), chosen


def wasserstein_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our image/phot WD table with the difference column and the paper's values beside it."""
    out = table.copy()
    out["difference (phot − image)"] = out["phot"] - out["image"]
    out["paper image"] = [PAPER_CFM["wd"][c][0] for c in TARGETS]
    out["paper phot"] = [PAPER_CFM["wd"][c][1] for c in TARGETS]
    return out


def head_to_head(posteriors: dict[str, Posterior], dlogp: dict[str, np.ndarray], dkl: dict[str, np.ndarray],
                 tarp: dict[str, tuple], seconds_per_1000: dict[str, float]) -> pd.DataFrame:
    """One row per model: mean Δlog p, mean D_KL, mean WD and R² over properties, TARP ATC, speed."""
    wd, r2 = wasserstein_table(posteriors), r2_table(posteriors)
    rows = {}
    for name in posteriors:
        rows[name] = {
            "mean Δlog p [nats]": float(dlogp[name].mean()),
            "mean D_KL [nats]": float(dkl[name].mean()),
            "mean WD (5 properties)": float(wd[name].mean()),
            "mean R² (5 properties)": float(r2[name].mean()),
            "TARP ATC": tarp[name][2],
            "s per 1,000 draws": seconds_per_1000.get(name, float("nan")),
        }
    return pd.DataFrame(rows).T


def dust_age_examples(theta_true: np.ndarray, q: float = 0.2) -> dict[str, int]:
    """Indices of an old dust-poor and a young dust-rich galaxy, by a stated rule.

    Old dust-poor: Dn4000 above its (1−q) quantile and A_V below its q quantile; young
    dust-rich: Dn4000 below its q quantile and A_V above its (1−q) quantile. Within each
    corner, the galaxy closest (in units of each property's spread) to the corner's
    quantile point is chosen.
    """
    dn, av = theta_true[:, TARGETS.index("dn4000")], theta_true[:, TARGETS.index("av")]
    scale = np.array([dn.std(), av.std()])
    picks = {}
    for name, (qd, qa) in {"old, dust-poor": (1 - q / 2, q / 2), "young, dust-rich": (q / 2, 1 - q / 2)}.items():
        target = np.array([np.quantile(dn, qd), np.quantile(av, qa)])
        dist = np.hypot(*((np.stack([dn, av], 1) - target) / scale).T)
        picks[name] = int(np.argmin(dist))
    return picks


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
        frame = pd.DataFrame({"model": name, "object": np.arange(len(corr)), "corr": corr, "area68": area, "distance": dist})
        if extra is not None:
            frame = pd.concat([frame, extra.reset_index(drop=True)], axis=1)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def verdict(comparisons: dict[str, tuple[float, float]], better: str = "higher") -> str:
    """A sentence saying, per measure, whether the image model beats the photometry model.

    Arguments:
        comparisons: measure name → (image value, photometry value), oriented so that the
            larger number is the better one (pass negated values for "smaller is better";
            ``better`` only words the sentence).
    """
    parts = []
    for name, (image, phot) in comparisons.items():
        shown = (abs(image), abs(phot)) if better == "smaller" else (image, phot)
        name = name.replace("*", r"\*")  # the sentence is Markdown: "log M*" must not open emphasis
        parts.append(f"{name} {'favours' if image > phot else 'does not favour'} the image model "
                     f"({shown[0]:.3f} vs {shown[1]:.3f}, {better} is better)")
    wins = sum(image > phot for image, phot in comparisons.values())
    head = "The image model wins on every measure" if wins == len(comparisons) else (
        "The image model does not win on every measure")
    return f"{head}: " + "; ".join(parts) + "."
