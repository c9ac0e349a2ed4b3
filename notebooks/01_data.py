# %% [markdown]
# # The data: a simulated SDSS-like survey
#
# Both papers train on about $10^5$ star-forming SDSS Main Galaxy Sample galaxies with
# spectroscopic properties from the MPA–JHU catalogues and $gri$ cutouts
# {cite}`yunus2025cfm,siddiqa2025vaenf`. This chapter builds the book's stand-in for that
# sample, shows its selection, splits and distributions (the CFM paper's Figure A.1), and
# checks its photometry against real SDSS galaxies. Every later chapter reads the data set
# written here. It needs nothing from earlier chapters.
#
# :::{admonition} What is simulated and what is real
# :class: warning
# **Simulated:** every galaxy in the training, validation and test sets — its properties,
# spectrum, photometry and image — is drawn from the physical model described below.
# **Real:** the SDSS filter curves, and the 10,000 SDSS galaxies shipped with `kcorrect`
# {cite}`blanton2007kcorrect` against which the simulated photometry is compared at the end of
# this chapter. Readers with network access can build the same data set from real SDSS with
# `galnb.sdss` and run every chapter with `-p data sdss`.
# :::

# %% tags=["parameters"]
scale = "auto"
data = "mock"
seed = 0
device = "auto"
run_dir = "runs"

# %%
from galnb.runs import start_chapter

run = start_chapter("01_data", scale=scale, data=data, seed=seed, device=device, run_dir=run_dir)

# %% [markdown]
# ## How the galaxies are made
#
# For each galaxy the simulation draws a redshift and a star-formation history, and follows
# the known scaling relations with their published scatter: the star-forming main sequence
# {cite}`speagle2014`, the mass–metallicity relation {cite}`tremonti2004`, and dust that grows
# with mass and star formation. Spectra come from stellar-population synthesis with nebular
# emission (`bagpipes` {cite}`carnall2018bagpipes`) with Calzetti attenuation
# {cite}`calzetti2000` (which sets {term}`A_V`); the {term}`Dn4000` break is measured on the spectrum in the
# narrow bands of
# {cite:t}`balogh1999`; the black-hole mass follows the $M$–$\sigma$ relation
# {cite}`mcconnell2013`. Magnitudes are integrated through the real SDSS $ugriz$ curves.
# Images are rendered with GalSim {cite}`rowe2015galsim`: a bulge and an inclined, dusty disk,
# each with its own stellar population, convolved with an SDSS-like PSF, with sky noise at
# 0.396″/px, and combined into RGB with the asinh stretch of SkyServer {cite}`lupton2004`.
# Finally the {term}`Main Galaxy Sample <MGS>` cut $16 < r < 17.78$ {cite}`strauss2002mgs` and a {term}`BPT`
# star-forming cut {cite}`kauffmann2003bpt` are applied, as in the paper. See
# `galnb/simulation.py` for every choice and its reference.

# %%
from galnb.data import ensure_store

store = ensure_store(run)
catalog = store.catalog
store.meta["params"]

# %% [markdown]
# ## Selection funnel and splits

# %%
import pandas as pd

from galnb.runs import glue_all

funnel = pd.read_csv(run.data_dir / "funnel.csv") if (run.data_dir / "funnel.csv").exists() else pd.DataFrame()
splits = pd.DataFrame({"split": list(store.splits), "galaxies": [len(v) for v in store.splits.values()]})
glue_all("data", funnel=funnel.style.format(escape="html").hide(axis="index"), splits=splits.style.hide(axis="index"),
         n=len(catalog), image_size=store.image_size)

# %% [markdown]
# ```{glue:figure} data_funnel
# :name: tab-data-funnel
#
# How many simulated galaxies survive each cut.
# ```
#
# ```{glue:figure} data_splits
# :name: tab-data-splits
#
# The deterministic 80/10/10 split (by `seed`) of the {glue:text}`data_n` galaxies.
# ```
#
# Properties and photometry are standardised with the mean and standard deviation of the
# training split, saved with the data set so that every chapter uses the same numbers:

# %%
from galnb.properties import MAG_COLUMNS, TARGETS

stats = pd.DataFrame(store.meta["stats"]).T.loc[[*TARGETS, *MAG_COLUMNS]]
stats

# %% [markdown]
# ## The five properties (Figure A.1 of the CFM paper)

# %%
from galnb import plots

glue_all("data", corner=plots.property_corner(catalog))

# %% [markdown]
# ```{glue:figure} data_corner
# :name: fig-data-corner
#
# Distributions of the five target properties and the $r$ magnitude of the simulated sample;
# dashed lines mark the 16th, 50th and 84th percentiles.
# ```

# %% [markdown]
# ## What the images look like
#
# One galaxy per cell of a grid across the mass–SFR plane (the numbers are its
# $\log M_\star$ and $\log\mathrm{SFR}$); cutouts are {glue:text}`data_image_size` px at 0.396″/px.

# %%
glue_all("data", cutouts=plots.cutout_grid(catalog, store.images, seed=seed))

# %% [markdown]
# ```{glue:figure} data_cutouts
# :name: fig-data-cutouts
#
# Simulated $gri$ cutouts across the $\log M_\star$–$\log\mathrm{SFR}$ plane (axes: bin centres).
# ```

# %% [markdown]
# ## Checked against real SDSS photometry
#
# The simulated survey holds star-forming galaxies only, so it is compared with the blue
# cloud of the real sample ($u-r<2.22$, {cite:t}`strateva2001`), applying the same colour cut,
# magnitude range ($16<r<17.78$) and redshift range ($z<0.3$) to both. The real galaxies are
# the 10,000 SDSS galaxies that ship with `kcorrect` {cite:p}`blanton2007kcorrect`; they are not a
# complete flux-limited sample (their counts fall beyond $r\approx17.2$, where a flux-limited
# survey's keep rising; see the $r$ panel below), so their redshifts run higher than the
# simulation's. Colours depend on redshift through the K-correction, so besides the distances
# as drawn we give them at matched redshift and magnitude: each simulated galaxy is weighted
# to the real joint $(z, r)$ distribution (`galnb.validation.matched_weights`).

# %%
from galnb import validation

real = validation.real_sdss_photometry()
sim_blue, real_blue = catalog[validation.blue_cloud(catalog)], real[validation.blue_cloud(real)]
wd = validation.compare_photometry(sim_blue, real_blue)
colours = wd["quantity"].str.contains("-")
glue_all("data", wd_table=wd.style.format(precision=3).hide(axis="index"), real_n=len(real_blue),
         wd_max_colour=float(wd.loc[colours, "wasserstein"].max()),
         wd_max_colour_matched=float(wd.loc[colours, "wasserstein_matched"].max()))
wd

# %%
glue_all("data", vs_real=plots.photometry_vs_real(sim_blue, real_blue, wd))

# %% [markdown]
# ```{glue:figure} data_vs_real
# :name: fig-data-vs-real
#
# $r$, redshift and colours of the simulated survey against {glue:text}`data_real_n` real
# blue-cloud SDSS galaxies from `kcorrect`: simulated as drawn (solid) and weighted to the real
# $(z, r)$ distribution (dashed), with the 1-D Wasserstein distance of each.
# ```
#
# The largest colour difference, as a Wasserstein distance, is
# {glue:text}`data_wd_max_colour:.3f` mag as drawn and {glue:text}`data_wd_max_colour_matched:.3f`
# mag at matched redshift and magnitude (the target was 0.1 mag). What remains is physics the
# simulation simplifies (one metallicity per component, smooth dust, no AGN) and the real
# blue cloud's own mix, which includes some galaxies that are not BPT star-forming.

# %% [markdown]
# ## Summary and exercises
#
# The data set (catalog, memory-mapped image cube, splits, standardisation) now sits in the
# run directory. Later chapters load it with `galnb.data.load_store`.
#
# Each solution is a collapsed cell that ran when this page was built.
#
# 1. Plot $D_n(4000)$ against specific SFR ($\log\mathrm{SFR}-\log M_\star$) for the catalog.
#    Which way does it go, and why?

# %% tags=["hide-cell", "solution"]
# Solution 1
from scipy.stats import spearmanr

ssfr = catalog.log_sfr - catalog.log_mstar
print(f"Spearman correlation of Dn4000 with sSFR: {spearmanr(ssfr, catalog.dn4000).statistic:.2f}")
catalog.assign(ssfr=ssfr).plot.scatter("ssfr", "dn4000", s=2).figure

# %% [markdown]
# :::{admonition} What solution 1 shows
# :class: dropdown
# $D_n(4000)$ falls as sSFR rises, because young, hot stars fill in the 4000 Å break.
# :::
#
# 2. Show cutouts across the inclination–$A_V$ plane with `galnb.plots.cutout_grid`.

# %% tags=["hide-cell", "solution"]
# Solution 2
plots.cutout_grid(catalog, store.images, x="inclination", y="av", seed=seed)

# %% [markdown]
# :::{admonition} What solution 2 shows
# :class: dropdown
# Edge-on disks (high inclination) look redder and thinner and carry more $A_V$: the light
# of an inclined disk crosses more of its own dust.
# :::

# %%
run.finish(artifacts=[run.data_dir / "meta.json"]);
