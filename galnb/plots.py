"""Every figure of the book: each function returns a matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .properties import QUANTITIES, TARGETS, label

# Colours used across chapters so one model keeps one colour everywhere.
MODEL_COLORS = {"phot": "#2ca02c", "image": "#1f77b4", "vaenf-image": "#9467bd", "vaenf-phot": "#ff7f0e",
                "truth": "#d62728", "measured": "#7f7f7f", "structure": "#8c564b"}

__all__ = [
    "MODEL_COLORS",
    "property_corner",
    "cutout_grid",
    "photometry_vs_real",
    "bpt_diagram",
    "structure_vs_real",
    "cutouts_real_vs_simulated",
    "learning_curves",
    "accuracy_informativeness",
    "scaling_relations",
    "rank_histograms",
    "tarp_curves",
    "dust_age_posteriors",
    "degeneracy_vs_morphology",
    "gain_by_structure",
]


# ---------------------------------------------------------------- chapter 01: data
def property_corner(catalog, columns=(*TARGETS, "mag_r")) -> Figure:
    """Figure A.1 analogue: 1-D and 2-D distributions with 16/50/84 percentiles marked."""
    import corner

    data = catalog[list(columns)].to_numpy()
    fig = corner.corner(
        data, labels=[label(c) for c in columns], quantiles=[0.16, 0.5, 0.84], show_titles=True,
        title_fmt=".2f", range=[QUANTITIES[c].range if c in QUANTITIES else 0.999 for c in columns],
        color="#333333", plot_datapoints=False, fill_contours=True, levels=(0.39, 0.86), smooth=1.0,
        label_kwargs={"fontsize": 11}, title_kwargs={"fontsize": 9},
    )
    fig.set_size_inches(10, 10)
    return fig


def cutout_grid(catalog, images, x: str = "log_mstar", y: str = "log_sfr", nx: int = 6, ny: int = 4,
                seed: int = 0) -> Figure:
    """One cutout per cell of a grid across the x–y plane (the galaxy nearest each cell centre)."""
    rng = np.random.default_rng(seed)
    xs, ys = catalog[x].to_numpy(), catalog[y].to_numpy()
    x_edges = np.quantile(xs, np.linspace(0.02, 0.98, nx + 1))
    y_edges = np.quantile(ys, np.linspace(0.02, 0.98, ny + 1))
    fig, axes = plt.subplots(ny, nx, figsize=(1.6 * nx, 1.6 * ny), squeeze=False)
    for i in range(ny):
        for j in range(nx):
            ax = axes[ny - 1 - i, j]
            ax.set_xticks([]), ax.set_yticks([])
            inside = np.flatnonzero((xs >= x_edges[j]) & (xs < x_edges[j + 1])
                                    & (ys >= y_edges[i]) & (ys < y_edges[i + 1]))
            if len(inside):
                k = rng.choice(inside)
                ax.imshow(images[k])
                ax.text(0.03, 0.97, f"{xs[k]:.1f}, {ys[k]:.1f}", color="w", fontsize=7, va="top",
                        transform=ax.transAxes)
            else:
                ax.set_facecolor("0.9")
            if i == 0:
                ax.set_xlabel(f"{(x_edges[j] + x_edges[j + 1]) / 2:.1f}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{(y_edges[i] + y_edges[i + 1]) / 2:.1f}", fontsize=8)
    fig.supxlabel(label(x))
    fig.supylabel(label(y))
    fig.tight_layout()
    return fig


_PHOT_PANELS = (("r", label("mag_r")), ("z", label("z")), ("u-g", "$u-g$"), ("g-r", "$g-r$"), ("r-i", "$r-i$"),
                ("i-z", "$i-z$"))


def photometry_vs_real(sim, real, wd: pd.DataFrame) -> Figure:
    """Distributions of r, z and colours: simulated survey (as drawn and weighted to the real
    (z, r) distribution) against real SDSS, titled with both 1-D Wasserstein distances.

    ``sim`` and ``real`` are blue-cloud catalogs; ``wd`` is :func:`galnb.validation.compare_photometry`.
    """
    from .validation import matched_weights, photometry_value

    w = matched_weights(sim, real)
    wd = wd.set_index("quantity")
    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    for ax, (key, text) in zip(axes.flat, _PHOT_PANELS):
        a, b = photometry_value(sim, key), photometry_value(real, key)
        lo, hi = np.quantile(np.concatenate([a, b]), [0.005, 0.995])
        bins = np.linspace(lo, hi, 40)
        ax.hist(b, bins, density=True, histtype="stepfilled", alpha=0.35, color="0.4", label=f"real SDSS (N={len(b)})")
        ax.hist(a, bins, density=True, histtype="step", lw=2, color=MODEL_COLORS["image"],
                label=f"simulated (N={len(a)})")
        ax.hist(a, bins, weights=w, density=True, histtype="step", lw=1.5, ls="--", color=MODEL_COLORS["phot"],
                label="simulated, matched (z, r)")
        ax.set_xlabel(text)
        ax.set_title(f"WD = {wd.loc[key, 'wasserstein']:.3f}, matched {wd.loc[key, 'wasserstein_matched']:.3f}",
                     fontsize=9)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- chapter 03: training
def bpt_diagram(catalog) -> Figure:
    """[O III]/Hbeta against [N II]/Halpha of the galaxies with all four lines detected, with the
    Kauffmann et al. (2003) and Kewley et al. (2001) curves and the locus the PP04 calibrations
    (on the T04 scale) give the sample's O/H."""
    from .survey import kauffmann03, kewley01, n2_from_oh, o3hb_from_oh

    det = catalog[catalog.oh_detectable]
    n2 = np.log10(det.flux_nii6584 / det.flux_ha)
    o3 = np.log10(det.flux_oiii5007 / det.flux_hb)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.hexbin(n2, o3, gridsize=40, extent=(-1.6, 0.4, -1.2, 1.2), mincnt=1, cmap="Greys", bins="log")
    x = np.linspace(-1.6, 0.0, 200)
    ax.plot(x, kauffmann03(x), "k--", label="Kauffmann et al. 2003")
    x = np.linspace(-1.6, 0.4, 200)
    ax.plot(x, kewley01(x), "k:", label="Kewley et al. 2001")
    oh = np.linspace(*np.percentile(det.oh12, [2, 98]), 50)
    locus_n2 = n2_from_oh(oh)
    ax.plot(locus_n2, o3hb_from_oh(oh, locus_n2), color=MODEL_COLORS["truth"], lw=2,
            label="PP04 N2 + O3N2 at the sample's O/H (T04 scale)")
    ax.set(xlim=(-1.6, 0.4), ylim=(-1.2, 1.2), xlabel=r"log [N II]/H$\alpha$", ylabel=r"log [O III]/H$\beta$")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def structure_vs_real(reddening: dict[str, pd.DataFrame], sizes: dict[str, pd.DataFrame],
                      concentration: dict[str, pd.DataFrame]) -> Figure:
    """Real against simulated: edge-on minus face-on colour and the size-mass relation by mass bin,
    and concentration by sSFR.

    Arguments:
        reddening: ``{"real": ..., "simulated": ...}`` tables of ``validation.inclination_reddening``
            for g - r (keys may carry a colour suffix, e.g. ``"real u-g"``).
        sizes: the same two keys, tables of ``validation.size_mass``.
        concentration: the same two keys, tables of ``validation.concentration_by_ssfr``.

    With empty dictionaries (no real catalog) the figure says so.
    """
    styles = {"real": dict(color="k", marker="o"), "simulated": dict(color=MODEL_COLORS["image"], marker="s")}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    if not reddening:
        for ax in axes:
            ax.text(0.5, 0.5, "real catalog not given", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return fig
    for key, table in reddening.items():
        kind = key.split()[0]
        x = np.arange(len(table)) + (0.08 if kind == "simulated" else -0.08)
        axes[0].errorbar(x, table.reddening, yerr=table.se, ls="-" if "u-g" not in key else ":",
                         label=key, capsize=3, **styles[kind])
        axes[0].set_xticks(np.arange(len(table)), table["mass"])
    axes[0].axhline(0, color="0.7", lw=0.8)
    axes[0].set(xlabel=r"log $M_\star$ bin", ylabel="edge-on minus face-on colour [mag]",
                title="Reddening with inclination (star-forming disks)")
    axes[0].legend(fontsize=8)
    for kind, table in sizes.items():
        x = np.arange(len(table)) + (0.08 if kind == "simulated" else -0.08)
        axes[1].errorbar(x, table["median"], yerr=table["scatter"], capsize=3, label=kind, **styles[kind])
        axes[1].set_xticks(np.arange(len(table)), table["mass"])
    axes[1].set(xlabel=r"log $M_\star$ bin", ylabel=r"log $R_{50}$ [kpc] (median, 16–84 % half-range)",
                title="Size–mass relation (star-forming)")
    axes[1].legend(fontsize=8)
    for kind, table in concentration.items():
        x = np.arange(len(table)) + (0.08 if kind == "simulated" else -0.08)
        axes[2].errorbar(x, table["median"], yerr=table["se"], capsize=3, label=kind, **styles[kind])
        axes[2].set_xticks(np.arange(len(table)), table["ssfr"], fontsize=8)
    axes[2].set(xlabel="log sSFR bin [1/yr]", ylabel=r"median $R_{90}/R_{50}$ (Petrosian, r band)",
                title="Concentration (star-forming)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def cutouts_real_vs_simulated(real: np.ndarray, simulated: np.ndarray, n: int = 8) -> Figure:
    """Two rows of real SDSS cutouts over two rows of simulated ones, framed alike."""
    fig, axes = plt.subplots(4, n, figsize=(1.5 * n, 6.4))
    for row, (images, name) in enumerate(((real, "real SDSS"), (real[n:], "real SDSS"),
                                          (simulated, "simulated"), (simulated[n:], "simulated"))):
        for k, ax in enumerate(axes[row]):
            ax.imshow(images[k])
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].set_ylabel(name)
    fig.tight_layout()
    return fig


def learning_curves(history, best_epoch: int, title: str = "") -> Figure:
    """Training and validation CFM loss per epoch, the kept (best) epoch marked, the learning rate on a right axis."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(history["epoch"], history["train_loss"], "o-", ms=3, label="train")
    ax.plot(history["epoch"], history["val_loss"], "s-", ms=3, label="validation")
    ax.axvline(best_epoch, color="0.5", ls="--", label=f"best epoch ({best_epoch})")
    if "lr" in history:  # the rate each epoch trained with
        rate = ax.twinx()
        rate.plot(history["epoch"], history["lr"], ":", color="0.3")
        rate.set_yscale("log")
        rate.set_ylabel("learning rate (dotted)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("CFM loss (MSE to $\\theta_1-\\theta_0$)")
    ax.set_title(title)
    ax.legend(loc="center right")  # the curves fall away from there; the rate runs along the top
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- chapter 05: evaluation
def accuracy_informativeness(dlogp: dict[str, np.ndarray], dkl: dict[str, np.ndarray],
                             names: tuple[str, str] = ("image", "phot")) -> Figure:
    """CFM paper Figure 1 analogue: Δlog p and D_KL histograms (μ, σ in legend) and per-object scatter."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, values, xlabel in ((axes[0], dlogp, r"$\Delta\log p(\theta_*;\mathcal{D})$ [nats]"),
                               (axes[1], dkl, r"$D_\mathrm{KL}[p(\theta|\mathcal{D})\,\|\,p(\theta)]$ [nats]")):
        allv = np.concatenate([values[n] for n in names])
        bins = np.linspace(*np.quantile(allv, [0.01, 0.99]), 35)
        for n in names:
            v = values[n]
            ax.hist(v, bins, alpha=0.5, color=MODEL_COLORS[n],
                    label=f"{n}: $\\mu$={v.mean():.2f}, $\\sigma$={v.std():.2f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("galaxies")
        ax.legend(fontsize=9)
    for n in names:
        axes[2].scatter(dkl[n], dlogp[n], s=6, alpha=0.6, color=MODEL_COLORS[n], label=n)
    both = np.concatenate([dlogp[n] for n in names])
    lo, hi = np.quantile(both, [0.005, 0.995])
    axes[2].set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))  # a few outliers would flatten the rest
    axes[2].set_xlabel(axes[1].get_xlabel())
    axes[2].set_ylabel(axes[0].get_xlabel())
    axes[2].legend()
    fig.tight_layout()
    return fig


_PLANES = (("log_mstar", "oh12"), ("log_mstar", "log_sfr"), ("log_sfr", "oh12"))


def scaling_relations(truth, means: dict[str, np.ndarray], images, boxes: list[tuple[float, float, float, float]],
                      box_members: list[np.ndarray], names: tuple[str, str] = ("phot", "image")) -> Figure:
    """CFM paper Figure 2 analogue: test data (grey) and posterior means per model in three planes;
    red boxes defined on the image model's predictions, with three cutouts from each box.

    Arguments:
        truth: (M, 5) true properties (TARGETS order).
        means: model name → (M, 5) posterior means.
        images: (M, H, W, 3) cutouts of the same objects.
        boxes: per plane (x0, x1, y0, y1).
        box_members: per plane, indices (into M) of up to three galaxies in the box.
    """
    fig = plt.figure(figsize=(13, 10))
    grid = fig.add_gridspec(3, 5, width_ratios=[1, 1, 0.45, 0.45, 0.45])
    for row, (xk, yk) in enumerate(_PLANES):
        xi, yi = TARGETS.index(xk), TARGETS.index(yk)
        for col, n in enumerate(names):
            ax = fig.add_subplot(grid[row, col])
            ax.scatter(truth[:, xi], truth[:, yi], s=4, color="0.75", label="data (truth)")
            ax.scatter(means[n][:, xi], means[n][:, yi], s=4, color=MODEL_COLORS[n], label=f"{n} model")
            x0, x1, y0, y1 = boxes[row]
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=MODEL_COLORS["truth"], lw=1.5))
            ax.set_xlim(QUANTITIES[xk].range), ax.set_ylim(QUANTITIES[yk].range)
            ax.set_xlabel(label(xk)), ax.set_ylabel(label(yk))
            ax.legend(fontsize=7, loc="lower right", markerscale=3)
        for k in range(min(3, len(box_members[row]))):
            ax = fig.add_subplot(grid[row, 2 + k])
            ax.set_xticks([]), ax.set_yticks([])
            ax.imshow(images[box_members[row][k]])
            for side in ax.spines.values():
                side.set_edgecolor(MODEL_COLORS["truth"])
    fig.tight_layout()
    return fig


def rank_histograms(ranks: dict[str, np.ndarray], n_draws: int, columns=TARGETS, bins: int = 10) -> Figure:
    """SBC rank histograms per property (rows: models); the grey band is the 99 % range for uniform ranks."""
    from scipy import stats

    fig, axes = plt.subplots(len(ranks), len(columns), figsize=(2.6 * len(columns), 2.2 * len(ranks)), squeeze=False)
    for r, (name, rk) in enumerate(ranks.items()):
        m = len(rk)
        lo, hi = stats.binom.ppf([0.005, 0.995], m, 1 / bins)
        for c, col in enumerate(columns):
            ax = axes[r, c]
            ax.axhspan(lo, hi, color="0.85")
            ax.hist(rk[:, c], bins=np.linspace(0, n_draws, bins + 1), color=MODEL_COLORS.get(name, "k"), alpha=0.8)
            ax.set_yticks([])
            if r == len(ranks) - 1:
                ax.set_xlabel(f"rank of {QUANTITIES[col].short}")
            if c == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    return fig


def tarp_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> Figure:
    """TARP expected coverage against credibility level, one curve per model."""
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for name, (alpha, ecp, atc) in curves.items():
        ax.plot(alpha, ecp, color=MODEL_COLORS.get(name, None), lw=2, label=f"{name} (ATC {atc:+.2f})")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- chapter 06: degeneracy
def dust_age_posteriors(samples: dict[str, list[np.ndarray]], truths: list[np.ndarray], images: list[np.ndarray],
                        titles: list[str], names: tuple[str, str] = ("phot", "image")) -> Figure:
    """CFM paper Figure 3 analogue: A_V vs Dn(4000) posterior contours per galaxy (photometry green,
    image blue, truth as a red cross) with the galaxy's cutout beside."""
    import corner

    i_av, i_dn = TARGETS.index("av"), TARGETS.index("dn4000")
    n_gal = len(truths)
    fig = plt.figure(figsize=(5.2 * n_gal, 4.4))
    grid = fig.add_gridspec(1, 2 * n_gal, width_ratios=[1, 0.55] * n_gal)
    for g in range(n_gal):
        ax = fig.add_subplot(grid[0, 2 * g])
        for n in names:
            s = samples[n][g]
            corner.hist2d(s[:, i_dn], s[:, i_av], ax=ax, color=MODEL_COLORS[n], levels=(0.39, 0.86),
                          plot_datapoints=False, plot_density=False, fill_contours=False, smooth=1.2)
            ax.plot([], [], color=MODEL_COLORS[n], label=f"{n} model")
        ax.plot(truths[g][i_dn], truths[g][i_av], "x", color=MODEL_COLORS["truth"], ms=12, mew=3, label="truth")
        ax.set_xlabel(label("dn4000")), ax.set_ylabel(label("av"))
        ax.set_title(titles[g], fontsize=10)
        ax.legend(fontsize=8)
        im = fig.add_subplot(grid[0, 2 * g + 1])
        im.imshow(images[g]), im.set_xticks([]), im.set_yticks([])
    fig.tight_layout()
    return fig


def degeneracy_vs_morphology(table, x: str, measures: tuple[str, ...] = ("corr", "area68"), bins: int = 6,
                             names: tuple[str, str] = ("phot", "image")) -> Figure:
    """Median degeneracy measures per model in bins of a morphological quantity.

    Arguments:
        table: one row per (object, model) with columns ``model``, ``x`` and the measures.
    """
    titles = {"corr": r"posterior corr$(A_V, D_n4000)$", "area68": "area of 68 % region", "closer": "image mean closer"}
    fig, axes = plt.subplots(1, len(measures), figsize=(4.6 * len(measures), 3.6), squeeze=False)
    edges = np.quantile(table[x], np.linspace(0, 1, bins + 1))
    centres = 0.5 * (edges[1:] + edges[:-1])
    for ax, m in zip(axes[0], measures):
        for n in names:
            sub = table[table["model"] == n]
            which = np.clip(np.digitize(sub[x], edges[1:-1]), 0, bins - 1)
            med = [np.median(sub[m][which == b]) if np.any(which == b) else np.nan for b in range(bins)]
            ax.plot(centres, med, "o-", color=MODEL_COLORS[n], label=f"{n} model")
        ax.set_xlabel(label(x) if x in QUANTITIES else x)
        ax.set_ylabel(titles.get(m, m))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gain_by_structure(tables: dict[str, dict[str, pd.DataFrame]], baseline: str = "phot") -> Figure:
    """Each model's mean Δlog p minus the ``baseline`` model's, in bins of a structural parameter.

    Arguments:
        tables: parameter -> model -> the ``metrics.gain_by_bin`` table of that model against the
            baseline, binned on the parameter; one panel per parameter, one line per model.
    """
    fig, axes = plt.subplots(1, len(tables), figsize=(4.4 * len(tables), 3.5), squeeze=False, sharey=True)
    for ax, (parameter, by_model) in zip(axes[0], tables.items()):
        for k, (model, table) in enumerate(by_model.items()):
            # side by side within a bin, a few per cent of the plotted span apart, so the error bars stay apart
            shift = (k - (len(by_model) - 1) / 2) * 0.02 * (table.centre.max() - table.centre.min())
            ax.errorbar(table.centre + shift, table.difference,
                        yerr=[table.difference - table.low, table.high - table.difference],
                        fmt="o-", capsize=3, color=MODEL_COLORS.get(model), label=f"{model} − {baseline}")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xlabel(label(parameter) if parameter in QUANTITIES else parameter)
    axes[0, 0].set_ylabel(r"mean $\Delta\log p$ gain [nats]")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- chapter 04: VAE-NF
__all__ += [
    "vaenf_learning_curves",
    "vaenf_reconstructions",
    "vaenf_pred_vs_true",
    "vaenf_confusion",
    "vaenf_perturbation",
    "vaenf_umap",
    "vaenf_corner",
]


def _vaenf_label(name: str) -> str:
    """Axis label of a VAE-NF quantity; line fluxes are shown in log1p space."""
    if name.startswith("flux_"):
        return rf"$\log(1+F)$ {QUANTITIES[name].latex.replace(' flux', '')}"
    return label(name) if name in QUANTITIES else name


def vaenf_learning_curves(vae_curve, flow_curves: dict) -> Figure:
    """VAE loss per epoch (left) and the flow stage's loss per epoch for each model (right).

    Arguments:
        vae_curve: DataFrame with epoch, train_loss, val_loss (negative ELBO per image).
        flow_curves: name → DataFrame with epoch, train_loss, val_loss, member.
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(vae_curve["epoch"], vae_curve["train_loss"], "o-", ms=3, label="train")
    a.plot(vae_curve["epoch"], vae_curve["val_loss"], "s-", ms=3, label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("VAE loss (squared error + KL, per image)")
    a.legend()
    for (name, curve), color in zip(flow_curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for k, sub in curve.groupby("member"):
            b.plot(sub["epoch"], sub["val_loss"], "-", color=color, alpha=0.8, label=name if k == 0 else None)
    b.set_xlabel("epoch")
    b.set_ylabel("flow-stage validation loss (NLL + MSE + BCE)")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def vaenf_reconstructions(images: np.ndarray, recons: np.ndarray) -> Figure:
    """Cutouts (top row) and their VAE reconstructions from the latent mean (bottom row).

    Arguments:
        images, recons: uint8 ``(K, H, H, 3)``.
    """
    k = len(images)
    fig, axes = plt.subplots(2, k, figsize=(1.3 * k, 2.9), squeeze=False)
    for j in range(k):
        for i, im in enumerate((images[j], recons[j])):
            axes[i, j].imshow(im)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("decoded")
    fig.tight_layout(pad=0.3)
    return fig


def vaenf_pred_vs_true(truth: dict, pred: dict, r2: dict, ncols: int = 5, grey: dict | None = None) -> Figure:
    """Posterior mean against the catalog value for each quantity, one-to-one line dashed.

    Arguments:
        truth, pred: name → ``(N,)`` arrays (line fluxes in log1p space).
        r2: name → R² printed in the panel.
        grey: name → ``(N,)`` bool, points drawn in grey (e.g. O/H not measurable).
    """
    grey = grey or {}
    names = list(truth)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.0 * nrows), squeeze=False)
    for ax, n in zip(axes.flat, names):
        t, p = np.asarray(truth[n]), np.asarray(pred[n])
        lo, hi = np.percentile(np.concatenate([t, p]), [0.5, 99.5])
        g = np.asarray(grey.get(n, np.zeros(len(t), bool)), bool)
        ax.scatter(t[~g], p[~g], s=4, alpha=0.5, color=MODEL_COLORS["vaenf-image"], rasterized=True)
        if g.any():
            ax.scatter(t[g], p[g], s=4, alpha=0.5, color="0.6", rasterized=True, label="O/H not measurable")
            ax.legend(loc="lower right", fontsize=7, markerscale=2)
        ax.plot([lo, hi], [lo, hi], "--", color=MODEL_COLORS["truth"], lw=1)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("true " + _vaenf_label(n), fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        ax.text(0.05, 0.92, f"$R^2$ = {r2[n]:.2f}", transform=ax.transAxes, fontsize=9)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def vaenf_confusion(cm) -> Figure:
    """The detectability classifier's 2×2 confusion matrix (rows true, columns predicted)."""
    counts = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(counts, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if counts[i, j] > counts.max() / 2 else "black", fontsize=12)
    ax.set_xticks([0, 1], list(cm.columns))
    ax.set_yticks([0, 1], list(cm.index))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("O/H measurable?")
    fig.tight_layout()
    return fig


def vaenf_perturbation(images: dict, values: dict) -> Figure:
    """Perturbational decoding: one row per property, latents moved along its direction.

    Arguments:
        images: name → uint8 ``(S, H, H, 3)`` decoded images, in step order.
        values: name → ``(S,)`` the property the linear regression predicts at each step.
    """
    names = list(images)
    steps = len(next(iter(images.values())))
    fig, axes = plt.subplots(len(names), steps, figsize=(1.4 * steps, 1.75 * len(names)), squeeze=False)
    for i, n in enumerate(names):
        for j in range(steps):
            ax = axes[i, j]
            ax.imshow(images[n][j])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{values[n][j]:.2f}", fontsize=8)
        axes[i, 0].set_ylabel(_vaenf_label(n), fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def vaenf_umap(embeddings: dict, colours: dict) -> Figure:
    """UMAP embeddings (columns) coloured by properties (rows).

    Arguments:
        embeddings: title → ``(N, 2)``, e.g. image latents and latents + photometry.
        colours: name → ``(N,)`` property values.
    """
    fig, axes = plt.subplots(len(colours), len(embeddings), figsize=(4.2 * len(embeddings), 3.6 * len(colours)),
                             squeeze=False)
    for i, (n, c) in enumerate(colours.items()):
        vmin, vmax = np.percentile(c, [2, 98])
        for j, (title, e) in enumerate(embeddings.items()):
            ax = axes[i, j]
            sc = ax.scatter(e[:, 0], e[:, 1], c=c, s=3, cmap="viridis", vmin=vmin, vmax=vmax, rasterized=True)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"({'abcdefgh'[i * len(embeddings) + j]}) {title}", fontsize=9)
            fig.colorbar(sc, ax=ax, label=_vaenf_label(n))
    fig.tight_layout()
    return fig


def vaenf_corner(samples: np.ndarray, truth: np.ndarray, names, color: str = MODEL_COLORS["vaenf-image"]) -> Figure:
    """Posterior corner plot of one galaxy, 16/50/84 % quantiles and the true values (red).

    Arguments:
        samples: ``(n, D)`` posterior draws; truth: ``(D,)``; names: D quantity names.
    """
    import corner

    fig = corner.corner(
        np.asarray(samples), labels=[_vaenf_label(n) for n in names], truths=np.asarray(truth),
        truth_color=MODEL_COLORS["truth"], color=color, quantiles=[0.16, 0.5, 0.84], show_titles=True,
        title_fmt=".2f", title_kwargs={"fontsize": 8}, label_kwargs={"fontsize": 8}, smooth=1.0,
        plot_datapoints=True, data_kwargs={"alpha": 0.15},
    )
    return fig


# ---------------------------------------------------------------- chapter 02: CFM theory
def _cfm_ellipse(ax, mean, cov, nsig: float, **kw) -> None:
    """Contour of a 2-D Gaussian at Mahalanobis radius nsig."""
    vals, vecs = np.linalg.eigh(np.asarray(cov))
    phi = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(phi), np.sin(phi)])
    pts = np.asarray(mean)[:, None] + vecs @ (nsig * np.sqrt(vals)[:, None] * circle)
    ax.plot(pts[0], pts[1], **kw)


def _cfm_legend(ax, **kw) -> None:
    """A legend whose scatter markers are readable however small they are in the plot."""
    leg = ax.legend(**kw)
    for handle in leg.legend_handles:
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([25])
            handle.set_alpha(1)


def cfm_probability_path(mixture, sigma: float = 0.05, n_paths: int = 40, seed: int = 0) -> Figure:
    """Left: conditional paths (straight lines, width sigma) from N(0, 1) draws to target draws.
    Right: the marginal density p_t over (t, theta) with paths of the exact marginal ODE.

    Arguments:
        mixture: a ``galnb.analytic.GaussianMixture1D`` target.
        sigma: path width.
        n_paths: paths drawn in each panel.
        seed: seed of the draws.
    """
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 201)
    theta0, theta1 = rng.normal(size=n_paths), mixture.sample(n_paths, rng)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, constrained_layout=True)
    ax = axes[0]
    for a, b in zip(theta0, theta1):
        mid = (1 - t) * a + t * b
        ax.fill_between(t, mid - sigma, mid + sigma, color="#1f77b4", alpha=0.25, lw=0)
        ax.plot(t, mid, color="#1f77b4", lw=0.8)
    ax.scatter(np.zeros(n_paths), theta0, s=12, color="k", zorder=3, label=r"$\theta_0 \sim \mathcal{N}(0, 1)$")
    ax.scatter(np.ones(n_paths), theta1, s=12, color=MODEL_COLORS["truth"], zorder=3, label=r"$\theta_1 \sim$ target")
    ax.set(xlabel="t", ylabel=r"$\theta$", title="conditional paths: straight lines that cross")
    ax.legend(loc="upper left", fontsize=9)
    grid = np.linspace(-3.5, 3.5, 300)
    dens = np.stack([mixture.path_density(tt, grid, sigma) for tt in t], axis=1)
    axes[1].imshow(dens, origin="lower", aspect="auto", extent=(0, 1, grid[0], grid[-1]), cmap="Greys",
                   vmax=np.quantile(dens, 0.995))
    paths = mixture.flow(np.sort(rng.normal(size=n_paths // 2)), steps=200, sigma=sigma)
    axes[1].plot(np.linspace(0, 1, paths.shape[0]), paths, color="#ff7f0e", lw=1.0)
    axes[1].set(xlabel="t", title=r"marginal density $p_t(\theta)$ and the exact ODE flow")
    axes[1].set_ylim(grid[0], grid[-1])
    return fig


def cfm_trajectories(path, mean, cov, truth=None, n_show: int = 60) -> Figure:
    """Learned ODE trajectories in a 2-D theta plane, with the exact posterior's 1- and 2-sigma contours.

    Arguments:
        path: (T + 1, n, 2) states from ``CFM.trajectory`` for one object.
        mean: (2,) exact posterior mean; cov: (2, 2) exact posterior covariance.
        truth: (2,) the true theta, marked with a red cross.
        n_show: trajectories drawn as lines (all end points are drawn).
    """
    path = np.asarray(path)
    fig, ax = plt.subplots(figsize=(5.6, 5.2), constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    times = np.linspace(0, 1, path.shape[0])
    from matplotlib.collections import LineCollection

    sub = path[:, : min(n_show, path.shape[1])]  # (T + 1, m, 2)
    segments = np.stack([sub[:-1], sub[1:]], axis=2).transpose(1, 0, 2, 3).reshape(-1, 2, 2)
    colors = np.tile(cmap(times[:-1]), (sub.shape[1], 1))
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=0.7, alpha=0.8))
    ax.scatter(path[0, :, 0], path[0, :, 1], s=3, color="0.6", label="t = 0 (base)")
    ax.scatter(path[-1, :, 0], path[-1, :, 1], s=3, color=cmap(1.0), label="t = 1 (learned posterior)")
    for nsig, ls in ((1, "-"), (2, "--")):
        _cfm_ellipse(ax, mean, cov, nsig, color="k", ls=ls, lw=1.4)
    if truth is not None:
        ax.plot(*truth, "x", color=MODEL_COLORS["truth"], ms=10, mew=2.5, label=r"true $\theta$")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax, label="t", shrink=0.8)
    ax.set(xlabel=r"$\theta_1$", ylabel=r"$\theta_2$", aspect="equal")
    _cfm_legend(ax, loc="upper right", fontsize=8)
    return fig


def cfm_posterior_vs_exact(draws, means, cov, truths=None) -> Figure:
    """Learned posterior draws against the exact posterior (1- and 2-sigma ellipses), one panel per object.

    Arguments:
        draws: (B, n, 2) learned draws; means: (B, 2) exact means; cov: (2, 2) exact covariance;
        truths: (B, 2) true theta (red crosses).
    """
    draws, means = np.asarray(draws), np.asarray(means)
    b = draws.shape[0]
    fig, axes = plt.subplots(1, b, figsize=(3.8 * b, 3.9), constrained_layout=True, squeeze=False)
    sd = np.sqrt(np.diag(cov))
    for i, ax in enumerate(axes[0]):
        ax.scatter(draws[i, :, 0], draws[i, :, 1], s=2, alpha=0.35, color=MODEL_COLORS["image"], label="CFM draws")
        for nsig, ls in ((1, "-"), (2, "--")):
            _cfm_ellipse(ax, means[i], cov, nsig, color="k", ls=ls, lw=1.4, label=f"exact {nsig}$\\sigma$")
        if truths is not None:
            ax.plot(*truths[i], "x", color=MODEL_COLORS["truth"], ms=10, mew=2.5, label=r"true $\theta$")
        ax.set(xlim=means[i, 0] + 3.5 * sd[0] * np.array([-1, 1]), ylim=means[i, 1] + 3.5 * sd[1] * np.array([-1, 1]),
               xlabel=r"$\theta_1$", ylabel=r"$\theta_2$" if i == 0 else None, title=f"observation {i + 1}")
    _cfm_legend(axes[0, 0], loc="upper right", fontsize=8)
    return fig


def cfm_moments_vs_exact(learned_mean, exact_mean, learned_sd, exact_sd) -> Figure:
    """Posterior means and standard deviations, learned against exact, for every object and dimension.

    Arguments:
        learned_mean, exact_mean: (B, D); learned_sd: (B, D); exact_sd: (D,) (or (B, D)).
    """
    learned_mean, exact_mean, learned_sd = map(np.asarray, (learned_mean, exact_mean, learned_sd))
    exact_sd = np.broadcast_to(np.asarray(exact_sd), learned_sd.shape)
    d = learned_mean.shape[1]
    colors = plt.get_cmap("tab10")(np.arange(d))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    for j in range(d):
        axes[0].scatter(exact_mean[:, j], learned_mean[:, j], s=10, color=colors[j], label=f"$\\theta_{j + 1}$")
        axes[1].scatter(exact_sd[:, j], learned_sd[:, j], s=10, color=colors[j], label=f"$\\theta_{j + 1}$")
    for ax, name in zip(axes, ("posterior mean", "posterior standard deviation")):
        lo, hi = ax.get_xlim()
        lo, hi = min(lo, ax.get_ylim()[0]), max(hi, ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], color="k", lw=1)
        ax.set(xlabel=f"exact {name}", ylabel=f"CFM {name}", xlim=(lo, hi), ylim=(lo, hi))
    axes[0].legend(fontsize=8, ncol=2)
    return fig


def cfm_log_prob_vs_exact(pairs: dict) -> Figure:
    """CFM log-density against the analytic log-density, with the mean absolute error per problem.

    Arguments:
        pairs: {label: (exact (N,), learned (N,))}.
    """
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 4.4), constrained_layout=True, squeeze=False)
    for ax, (name, (exact, learned)) in zip(axes[0], pairs.items()):
        exact, learned = np.ravel(exact), np.ravel(learned)
        ax.scatter(exact, learned, s=3, alpha=0.4, color=MODEL_COLORS["image"])
        lo, hi = np.quantile(np.r_[exact, learned], [0.002, 1.0])
        lo, hi = lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo)
        ax.plot([lo, hi], [lo, hi], color="k", lw=1)
        mae = np.mean(np.abs(learned - exact))
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=r"exact $\log p(\theta \mid x)$",
               ylabel=r"CFM $\log q(\theta \mid x)$", title=f"{name}: mean |error| = {mae:.3f} nats")
    return fig


__all__ += ["cfm_probability_path", "cfm_trajectories", "cfm_posterior_vs_exact", "cfm_moments_vs_exact",
            "cfm_log_prob_vs_exact"]


def solver_cost_curve(table) -> Figure:
    """Error of Δlog p against network evaluations per integration, one line per ODE method."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ref = table.iloc[-1]
    for method, sub in table.iloc[:-1].groupby("method"):
        ax.plot(sub["evaluations"], sub["mean |Δ| [nats]"].clip(lower=1e-7), "o-", label=method)
    ax.axhline(0.01, color="0.5", ls="--", label="0.01 nats")
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("network evaluations per integration")
    ax.set_ylabel(f"mean |Δlog p − {ref['method']}-{ref['steps']}| [nats]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ += ["solver_cost_curve"]
