"""What the book says about its numbers: the papers' published values and sentence-writing verdicts.

Published numbers are for comparison only (they are measured on real SDSS; the book's are on
the simulated survey unless the run's data is ``sdss``). The verdict functions turn measured
numbers into the sentences the chapters glue, so a sentence can never disagree with its table.
Choosing which galaxies to show (``select_box``, ``dust_age_examples``) is here too: a rule
stated in words, applied to measured numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import Interval
from .properties import QUANTITIES, TARGETS

__all__ = [
    "PAPER_CFM",
    "PAPER_R2",
    "PAPER_BASELINE_R2",
    "PAPER_LINE_R2",
    "PAPER_SIGMA",
    "wasserstein_with_paper",
    "r2_with_paper",
    "interval_table",
    "verdict",
    "structure_gain",
    "select_box",
    "dust_age_examples",
]

# ----------------------------------------------------------------------------- the CFM paper
#: The CFM paper's published values on real SDSS (its Figure 1 and Table 1), for comparison only.
PAPER_CFM = {
    "delta_log_p_mu": {"image": 2.17, "phot": 1.26},
    "kl_mu": {"image": 3.41, "phot": 2.55},
    "win_rate_delta_log_p": 0.815,
    "win_rate_kl": 0.965,
    "wd": {"log_mstar": (0.0264, 0.0547), "log_sfr": (0.0639, 0.1119), "oh12": (0.0156, 0.0302),
           "dn4000": (0.0103, 0.0131), "av": (0.1937, 0.2565)},  # (image, phot)
}


def wasserstein_with_paper(long: pd.DataFrame, difference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our Wasserstein distances with their intervals, one row per property, the paper's beside them.

    Arguments:
        long: ``metrics.wasserstein_intervals``'s table (every model, the five targets).
        difference: optional rows of ``metrics.paired_comparison`` for the measures "WD of <property>",
            whose image-minus-photometry difference and interval become a column.
    """
    table = interval_table(long, precision=4).T
    if difference is not None:
        table["image − phot"] = [Interval(*row).format("+.4f")
                                 for row in difference[["difference", "low", "high"]].itertuples(index=False)]
    table["paper image"] = [PAPER_CFM["wd"][c][0] for c in TARGETS]
    table["paper phot"] = [PAPER_CFM["wd"][c][1] for c in TARGETS]
    return table


# ------------------------------------------------------------------------- the VAE-NF paper
#: Table 1 of the paper (R², real SDSS): image+photometry+NF and photometry+NF.
PAPER_R2: dict[str, dict[str, float]] = {
    "image+phot+NF": {"z": 0.80, "log_mstar": 0.85, "log_sfr": 0.76, "log_mbh": 0.67, "oh12": 0.76},
    "phot+NF": {"z": 0.72, "log_mstar": 0.80, "log_sfr": 0.75, "log_mbh": 0.62, "oh12": 0.65},
}
#: The baseline rows of the paper's Table 1, which it quotes from AstroCLIP (Parker et al. 2024):
#: other galaxies (DESI Legacy Survey images, PROVABGS properties), other inputs; no M_BH.
PAPER_BASELINE_R2: dict[str, dict[str, float]] = {
    "(r,g,z) photometry + MLP": {"z": 0.68, "log_mstar": 0.67, "log_sfr": 0.34, "oh12": 0.41},
    "image embedding + MLP": {"z": 0.78, "log_mstar": 0.73, "log_sfr": 0.42, "oh12": 0.43},
    "image embedding + kNN": {"z": 0.79, "log_mstar": 0.74, "log_sfr": 0.44, "oh12": 0.44},
}
#: Emission-line R² of the paper's image model (Balmer lines quoted as 0.79-0.80 together).
PAPER_LINE_R2: dict[str, str] = {"flux_ha": "0.79–0.80", "flux_hb": "0.79–0.80", "flux_nii6584": "0.70",
                                 "flux_oiii5007": "0.50"}
#: Table 2 of the paper (validation set; lines in log1p space).
PAPER_SIGMA: dict[str, dict[str, float]] = {
    "aleatoric": {"log_mbh": 0.589, "log_mstar": 0.191, "oh12": 0.134, "log_sfr": 0.327, "z": 0.018,
                  "flux_ha": 0.427, "flux_hb": 0.381, "flux_nii6584": 0.427, "flux_oiii5007": 0.611},
    "epistemic": {"log_mbh": 0.034, "log_mstar": 0.012, "oh12": 0.010, "log_sfr": 0.019, "z": 0.001,
                  "flux_ha": 0.027, "flux_hb": 0.026, "flux_nii6584": 0.027, "flux_oiii5007": 0.045},
}


def r2_with_paper(long: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The VAE–NF paper's Table 1 (its own rows and the AstroCLIP baselines it quotes) above our R²
    with their intervals, one column per property in the order of ``columns``.

    Arguments:
        long: ``metrics.r2_intervals``'s table.
        columns: the properties shown; the paper's missing values read "—".

    Example:
        >>> long = pd.DataFrame({"model": ["ours"], "measure": ["z"], "value": [0.7], "low": [0.6], "high": [0.8]})
        >>> r2_with_paper(long, ("z",)).loc[["paper (SDSS): phot + NF", "ours"], "z"].tolist()
        ['0.72', '0.70 [0.60, 0.80]']
    """
    published = {"paper (SDSS): image + phot + NF": PAPER_R2["image+phot+NF"],
                 "paper (SDSS): phot + NF": PAPER_R2["phot+NF"],
                 **{f"AstroCLIP (DESI): {name}": row for name, row in PAPER_BASELINE_R2.items()}}
    short = [QUANTITIES[c].short for c in columns]
    paper = pd.DataFrame(published).T.reindex(columns=list(columns)).set_axis(short, axis=1)
    return pd.concat([paper.map(lambda v: "—" if pd.isna(v) else f"{v:.2f}"), interval_table(long, precision=2)[short]])


# ------------------------------------------------------------------------------- sentences
def interval_table(long: pd.DataFrame, precision: int = 3) -> pd.DataFrame:
    """A ``metrics.head_to_head`` table for reading: one row per model, one column per measure.

    Each cell is the value with its 95 % interval, ``"3.149 [3.080, 3.220]"``, or the value
    alone where the measure has no interval (the sampling time).

    Example:
        >>> long = pd.DataFrame({"model": ["a", "a"], "measure": ["mean Δlog p [nats]", "s per 1,000 draws"],
        ...                      "value": [3.1494, 0.52], "low": [3.08, np.nan], "high": [3.22, np.nan]})
        >>> interval_table(long).loc["a"].tolist()
        ['3.149 [3.080, 3.220]', '0.520']
    """
    def cell(row: pd.Series) -> str:
        value = f"{row.value:.{precision}f}"
        return value if np.isnan(row.low) else f"{value} [{row.low:.{precision}f}, {row.high:.{precision}f}]"

    cells = long.assign(cell=long.apply(cell, axis=1))
    table = cells.pivot(index="model", columns="measure", values="cell")
    return table.loc[long.model.unique(), long.measure.unique()].rename_axis(index=None, columns=None)


def verdict(comparison: pd.DataFrame, a: str = "image", b: str = "phot", n_objects: int | None = None) -> str:
    """Sentences saying, per measure, whether model ``a`` beats model ``b``, with the interval behind each word.

    "Beats" or "loses to" is said only where the interval of the difference excludes zero; where it
    contains zero the two "cannot be told apart" on that measure.

    Arguments:
        comparison: one row per measure with columns ``measure``, ``better`` ("higher" or
            "smaller"), ``a``, ``b``, ``difference`` (a minus b) and its interval ``low``/``high``
            (``galnb.metrics.paired_comparison`` makes it).
        a, b: the two models' column names; the sentences call "image", "phot" and "measured" the
            image model, the photometry model and the measured-structure reference.
        n_objects: number of test galaxies the intervals resample, named in the sentence if given.
    """
    names = {"image": "image model", "phot": "photometry model", "measured": "measured-structure reference"}
    name_a, name_b = names.get(a, a), names.get(b, b)
    parts, wins, losses = [], 0, 0
    for _, row in comparison.iterrows():
        favours_a = Interval(row.difference, row.low, row.high).sign * (1 if row.better == "higher" else -1)
        wins, losses = wins + (favours_a > 0), losses + (favours_a < 0)
        word = {1: f"the {name_a} wins", -1: f"the {name_a} loses", 0: "they cannot be told apart"}[favours_a]
        measure = row.measure.replace("*", r"\*")  # the sentence is Markdown: "log M*" must not open emphasis
        parts.append(f"{measure}: {row[a]:.3f} vs {row[b]:.3f}, {row.better} is better, "
                     f"difference {row.difference:+.3f} [{row.low:+.3f}, {row.high:+.3f}]: {word}")
    ties = len(comparison) - wins - losses
    over = f" over {n_objects:,} test galaxies" if n_objects else ""
    head = (f"The {name_a} beats the {name_b} on {wins} of {len(comparison)} measures, loses on {losses}, "
            f"and cannot be told apart on {ties} (95 % bootstrap intervals{over} of {a} minus {b}; "
            "a win or loss needs an interval that excludes zero)")
    return head + ". " + "; ".join(parts) + "."


def structure_gain(dlogp: dict[str, np.ndarray], probe: pd.DataFrame | None = None) -> str:
    """Sentences on how much of the reference model's Δlog p gain over photometry the image model
    realises and, given the :func:`structure_probe` table, which explanation the numbers support.

    Arguments:
        dlogp: per-galaxy Δlog p of the ``"phot"``, ``"image"`` and ``"structure"`` models, and
            optionally of the measured-structure reference ``"measured"``.
        probe: the probe's table (columns ``R² from f_img`` and ``R² from photometry``).
    """
    phot, image, ref = (float(np.mean(dlogp[k])) for k in ("phot", "image", "structure"))
    head = (f"Given the true axis ratio, half-light radius and bulge fraction, the photometry network reaches a "
            f"mean Δlog p of {ref:.2f} nats against {phot:.2f} from photometry alone")
    if ref <= phot:
        return head + ": the structure adds nothing measurable here, so the images cannot be expected to help."
    share = (image - phot) / (ref - phot)
    text = (head + f", a gain of {ref - phot:.2f} nats that the images could in principle provide; the image model's "
            f"gain is {image - phot:+.2f} nats, {100 * share:.0f} % of it.")
    if "measured" in dlogp:
        measured = float(np.mean(dlogp["measured"]))
        text += (f" The three numbers measured on the cutouts (b/a, R50, R90/R50) gain {measured - phot:+.2f} nats, "
                 f"{100 * (measured - phot) / (ref - phot):.0f} % of it.")
    if probe is None or share >= 0.5:
        return text
    seen, base = (float(probe[c].mean()) for c in ("R² from f_img", "R² from photometry"))
    if seen - base < 0.1:
        return text + (f" The embedding predicts the structure hardly better than the magnitudes do "
                       f"(mean R² {seen:.2f} "
                       f"against {base:.2f}): the CNN has not learned to see it.")
    return text + (f" Yet the embedding holds the structure (mean R² {seen:.2f} against {base:.2f} from the "
                   f"magnitudes): "
                   f"the information reaches the velocity network, which has not learned to use it to put more "
                   f"posterior density on the true values.")


# ---------------------------------------------------------------------- which galaxies to show
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
