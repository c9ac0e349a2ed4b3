# %% [markdown]
# # The dust–age degeneracy
#
# Reddening by dust and an older stellar population both make a galaxy's optical colours
# redder, so photometry alone constrains $A_V$ and $D_n(4000)$ only in combination. The CFM
# paper {cite}`yunus2025cfm` shows ({term}`A_V`, {term}`Dn4000`), for two galaxies, that adding the image moves the
# posterior toward the spectroscopic values (its Figure 3). This chapter redraws that figure
# by a stated selection rule, then measures the degeneracy across the whole test set and
# asks for which galaxies the image helps. It needs the checkpoints of {doc}`03_train`
# and uses the test posteriors that {doc}`05_evaluation` cached (it computes them if absent).

# %% tags=["parameters"]
scale = None  # None: $GALNB_SCALE, else "auto" (paper where torch sees a CUDA GPU, else ci)
data = "mock"
seed = 0
device = "auto"
run_dir = None  # None: $GALNB_RUN_DIR, else "runs" (from the repository root)
galaxy = -1  # a test-set position to show on its own; -1 shows only the rule-based pair

# %%
from galnb.runs import start_chapter

run = start_chapter("06_degeneracy", scale=scale, data=data, seed=seed, device=device, run_dir=run_dir, galaxy=galaxy)

# %%
from galnb.evaluation import evaluation_rows, posterior_on_test_set

store = run.store()
n_test = len(evaluation_rows(run, store))
if not -1 <= galaxy < n_test:
    raise ValueError(f"parameter galaxy={galaxy} is not valid; choose -1 (the rule-based pair only) "
                     f"or a test-set position from 0 to {n_test - 1}")
posteriors = {kind: posterior_on_test_set(run, store, kind) for kind in ("phot", "image")}
truth, rows = posteriors["image"].theta_true, posteriors["image"].test_index

# %% [markdown]
# ## Two galaxies (Figure 3 of the CFM paper)
#
# The rule: among the test galaxies, the *old, dust-poor* one is the galaxy nearest the
# 90th percentile of $D_n(4000)$ and the 10th percentile of $A_V$; the *young, dust-rich* one
# is nearest the 10th percentile of $D_n(4000)$ and the 90th of $A_V$.

# %%
import numpy as np
from IPython.display import Markdown

from galnb import metrics, plots, report
from galnb.runs import glue_all

picks = report.dust_age_examples(truth)
fig3 = plots.dust_age_posteriors({k: [p.samples[i] for i in picks.values()] for k, p in posteriors.items()},
                                 [truth[i] for i in picks.values()], [store.images[rows[i]] for i in picks.values()],
                                 list(picks))
glue_all("degeneracy", fig3=fig3)

# %% [markdown]
# ```{glue:figure} degeneracy_fig3
# :name: fig-degeneracy-fig3
#
# $A_V$ against $D_n(4000)$: 39 % and 86 % posterior contours of the photometry (green) and
# image (blue) CFM models, the true values as a red cross, and each galaxy's cutout.
# ```

# %% [markdown]
# ## Across the population
#
# For every test galaxy and model: the correlation of $A_V$ and $D_n(4000)$ in the
# posterior (at fixed colour more dust means a younger population, so a degenerate
# posterior is strongly anti-correlated), the area of its 68 % region, and the distance of the
# posterior mean from the truth (in units of each property's spread).

# %%
morph = store.catalog.iloc[rows][["inclination", "axis_ratio", "bulge_fraction"]]
table = metrics.degeneracy_table(posteriors, morph)
summary = table.groupby("model")[["corr", "area68", "distance"]].median()
per_model = {kind: table.query(f"model == '{kind}'") for kind in ("image", "phot")}
closer = metrics.win_rate(-per_model["image"]["distance"].to_numpy(), -per_model["phot"]["distance"].to_numpy())
comparison = metrics.compare_scores(
    {f"median {label}": (per_model["image"][col].to_numpy(), per_model["phot"][col].to_numpy(), "smaller")
     for col, label in (("area68", "68 % area"), ("distance", "distance from the truth"))},
    statistic=np.median, seed=seed)
verdict = report.verdict(comparison, n_objects=len(per_model["image"]))
glue_all("degeneracy", summary=summary.style.format(precision=3), closer_pct=100 * closer, verdict=Markdown(verdict),
         **{f"area_{kind}": float(summary.loc[kind, "area68"]) for kind in ("phot", "image")},
         **{f"corr_{kind}": float(summary.loc[kind, "corr"]) for kind in ("phot", "image")})

# %% [markdown]
# ```{glue:figure} degeneracy_summary
# :name: tab-degeneracy-summary
#
# Median over test galaxies of the posterior $A_V$–$D_n(4000)$ correlation, the area of the
# 68 % region and the standardised distance of the posterior mean from the truth.
# ```
#
# The median area of the 68 % region is {glue:text}`degeneracy_area_image:.3f` for the image
# model and {glue:text}`degeneracy_area_phot:.3f` for the photometry model (median correlation
# {glue:text}`degeneracy_corr_image:.2f` vs {glue:text}`degeneracy_corr_phot:.2f`); the image
# model's posterior mean is closer to the truth for {glue:text}`degeneracy_closer_pct:.1f` %
# of galaxies. {glue:md}`degeneracy_verdict`

# %% [markdown]
# ## Where the image helps
#
# In the simulated survey, the disk's continuum attenuation rises with inclination (a longer
# path through the dusty disk), and bulge and disk have different stellar populations. Both
# leave marks in the image — the axis ratio, the colour gradient — that integrated
# photometry averages away.

# %%
glue_all("degeneracy", vs_inclination=plots.degeneracy_vs_morphology(table, "inclination", ("area68", "distance")),
         vs_bulge=plots.degeneracy_vs_morphology(table, "bulge_fraction", ("area68", "distance")))

# %% [markdown]
# ```{glue:figure} degeneracy_vs_inclination
# :name: fig-degeneracy-incl
#
# Median area of the 68 % region and distance from the truth in bins of inclination.
# ```
#
# ```{glue:figure} degeneracy_vs_bulge
# :name: fig-degeneracy-bulge
#
# The same in bins of bulge fraction.
# ```
#
# :::{admonition} What this does and does not say about real SDSS
# :class: warning
# On the simulated survey, a disk seen edge-on has a redder continuum by construction of the
# physics (a dusty slab), while $A_V$, measured from the Balmer decrement as in MPA–JHU, depends
# on inclination only weakly, as in real disks {cite}`yip2010`. How strongly the simulated
# continuum reddens with inclination is compared with real galaxies in chapter 01; real
# galaxies have more scatter and geometries the simulation does not have, so the size of the
# gain here is not a prediction for real data.
# :::

# %% [markdown]
# ## Any galaxy
#
# Set the `galaxy` parameter to a position in the test set (0 to {glue:text}`degeneracy_last_position`)
# to draw this figure for that galaxy:
# `papermill notebooks/06_degeneracy.ipynb out.ipynb -p galaxy 17`.

# %%
from IPython.display import display

glue_all("degeneracy", last_position=n_test - 1)
if galaxy >= 0:
    one = plots.dust_age_posteriors({k: [p.samples[galaxy]] for k, p in posteriors.items()}, [truth[galaxy]],
                                    [store.images[rows[galaxy]]], [f"test galaxy {galaxy}"])
    display(one)

# %% [markdown]
# ## Summary and exercises
#
# Each solution is a collapsed cell that ran when this page was built.
#
# 1. Split the table by inclination above and below 60°: how do the medians of the 68 %
#    area compare between the two models in each half?
# 2. Find the galaxy where the image model helps most (the largest drop in distance from the
#    truth) and show its figure with the `galaxy` parameter.

# %% tags=["hide-cell", "solution"]
# Solution 1
table.assign(edge_on=table.inclination > 60).groupby(["model", "edge_on"]).area68.median().unstack()

# %% tags=["hide-cell", "solution"]
# Solution 2
d = table.pivot(index="object", columns="model", values="distance")
best = int((d["phot"] - d["image"]).idxmax())
print(f"rerun with: papermill notebooks/06_degeneracy.ipynb out.ipynb -p galaxy {best}")
plots.dust_age_posteriors({k: [p.samples[best]] for k, p in posteriors.items()}, [truth[best]],
                          [store.images[rows[best]]], [f"test galaxy {best}"])

# %%
run.finish(artifacts=[run.save_table("degeneracy_summary", summary)]);
