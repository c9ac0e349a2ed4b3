# %% [markdown]
# # The data: a simulated SDSS-like survey
#
# The two papers draw on the SDSS Main Galaxy Sample with spectroscopic properties from the
# MPA–JHU catalogues and $gri$ cutouts, but select differently. The CFM paper
# {cite}`yunus2025cfm` keeps 106,800 star-forming galaxies (BPT) with $16 < r < 17.78$. The
# VAE–NF paper {cite}`siddiqa2025vaenf` takes about 250,000 galaxies with spectroscopic
# $z \le 0.3$ and $ugriz$ photometry, with no cut on star formation and none at the bright
# end: about 100,000 train its VAE and about 125,000 others its flows. This chapter builds
# the book's stand-in for the CFM paper's sample, which chapter 04 reuses (so the VAE–NF
# model meets only star-forming galaxies here), shows its selection, splits and
# distributions (the CFM paper's Figure A.1), and checks its photometry against real SDSS
# galaxies. Every later chapter reads the data set
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
scale = None  # None: $GALNB_SCALE, else "auto" (paper where torch sees a CUDA GPU, else ci)
data = "mock"
seed = 0
device = "auto"
run_dir = None  # None: $GALNB_RUN_DIR, else "runs" (from the repository root)
real_sdss = ""  # folder of the real SDSS pieces; empty: $GALNB_REAL_SDSS, else skip that section

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
# {cite}`calzetti2000`. The labels are measured as the catalogs measure them: {term}`A_V` from
# the Balmer decrement of the fibre lines, the {term}`Dn4000` break on the fibre spectrum in the
# narrow bands of {cite:t}`balogh1999`, both with SDSS-like errors, and the black-hole mass from
# the measured velocity dispersion with the $M$–$\sigma$ relation {cite}`mcconnell2013`.
# Magnitudes are integrated through the real SDSS $ugriz$ curves.
# Images are rendered with GalSim {cite}`rowe2015galsim`: a bulge and an inclined, dusty disk,
# each with its own stellar population, convolved with an SDSS-like PSF, with sky noise at
# 0.396″/px, and combined into RGB with the asinh stretch of SkyServer {cite}`lupton2004`.
# Finally the {term}`Main Galaxy Sample <MGS>` cut $16 < r < 17.78$ {cite}`strauss2002mgs` and a {term}`BPT`
# star-forming cut {cite}`kauffmann2003bpt` are applied, as in the CFM paper. See
# the module `galnb.simulation` for every choice and its reference.

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
# ## Emission lines on the real star-forming locus
#
# The BPT diagram of the simulated galaxies with all four lines detected. Hα and Hβ come from
# the nebular grids that `bagpipes` ships; [N II] and [O III] follow the strong-line
# calibrations that real SDSS galaxies obey, N2 and O3N2 of {cite:t}`pettini2004`, put on the
# {cite:t}`tremonti2004` scale of the catalog's O/H with the conversions of
# {cite:t}`kewley2008`, each read at the galaxy's O/H with 0.05 dex of scatter. Dust, noise,
# the diffuse gas of old stars and the selection then act on them as on real spectra.

# %%
import numpy as np

from galnb.survey import n2_from_oh, o3hb_from_oh

detected = catalog[catalog.oh_detectable]
log_n2 = np.log10(detected.flux_nii6584 / detected.flux_ha)
log_o3 = np.log10(detected.flux_oiii5007 / detected.flux_hb)
calibrated_n2 = n2_from_oh(detected.oh12)
lines = pd.DataFrame({
    "quantity": ["log [N II]/Hα", "log [O III]/Hβ"],
    "median": [log_n2.median(), log_o3.median()],
    "16 %": [log_n2.quantile(0.16), log_o3.quantile(0.16)],
    "84 %": [log_n2.quantile(0.84), log_o3.quantile(0.84)],
    "median minus calibration": [(log_n2 - calibrated_n2).median(),
                                 (log_o3 - o3hb_from_oh(detected.oh12, calibrated_n2)).median()],
})
glue_all("data", bpt=plots.bpt_diagram(catalog), lines=lines.style.format(precision=2).hide(axis="index"))
lines

# %% [markdown]
# ```{glue:figure} data_bpt
# :name: fig-data-bpt
#
# BPT diagram of the simulated galaxies with all four lines at S/N > 3 (grey, log density),
# the star-forming limit of {cite:t}`kauffmann2003bpt` (dashed), the maximum-starburst line of
# {cite:t}`kewley2001` (dotted), and, in red, the locus the calibrations give the sample's O/H.
# ```
#
# ```{glue:figure} data_lines
# :name: tab-data-lines
#
# Line ratios of the simulated sample, and their median offset from the calibrations at each
# galaxy's O/H.
# ```

# %% [markdown]
# ## Checked against real galaxies
#
# How an image relates to a galaxy's properties is the part of the simulation the book's
# central question depends on, so it is compared here with real galaxies: the catalog of
# {cite:t}`nair2010`, bright SDSS galaxies ($g<16$, $0.01<z<0.1$) with SDSS axis ratios
# and Petrosian radii, MPA–JHU masses and SFRs, and colours. It is not part of this project:
# give its folder with the `real_sdss` parameter or the `GALNB_REAL_SDSS` environment variable
# (CI points it at `../shared/data/real-sdss/`); without one, the chapter fetches the catalog
# from VizieR (J/ApJS/186/427, with `astroquery`) and keeps it under `run_dir`, and with neither
# this section says how to get it and the chapter runs on. The simulated galaxies are drawn with the
# same selection (`galnb.simulation.NAIR_ABRAHAM`), and both samples keep star formers,
# $\log\,\mathrm{sSFR} > -10.8$.
#
# Structure is measured on the simulated images the way SDSS measures it on real ones
# (`galnb.validation.measure_structure`, with `statmorph` {cite}`rodriguezgomez2019`): b/a from
# the image moments of the r-band light, and circular Petrosian $R_{50}$ and $R_{90}$, the radii
# holding half and 90 % of the flux within twice the Petrosian radius. Inclination reddening is
# the colour difference between $b/a = 0.3$ and $b/a = 0.9$ of a straight-line fit of colour
# against $\log b/a$ in each mass bin, with a bootstrap standard error.

# %%
from IPython.display import Markdown

real_folder = validation.real_sdss_dir(real_sdss)
nair_abraham = validation.load_nair_abraham(real_sdss, cache_dir=run.dir.parent / "real-sdss", timeout=30)
if nair_abraham.data is None:
    structure = validation.StructureComparison(pd.DataFrame(), {}, {}, {}, nair_abraham.note)
else:
    simulated_structure = validation.simulated_structure(run.scale.n_structure, seed)
    structure = validation.compare_structure(nair_abraham.data, simulated_structure)
    structure = structure._replace(note=f"{nair_abraham.note} {structure.note}")
glue_all("data", structure_note=Markdown(structure.note),
         structure_vs_real=plots.structure_vs_real(
             {k: v for k, v in structure.reddening.items() if "g-r" in k}, structure.sizes, structure.concentration),
         structure_table=structure.table.style.format(precision=3) if len(structure.table) else "(skipped)")

# %% [markdown]
# {glue:md}`data_structure_note`
#
# ```{glue:figure} data_structure_table
# :name: tab-data-structure
#
# Colour at $b/a=0.3$ minus colour at $b/a=0.9$ (fitted), and the median and scatter of
# $\log R_{50}$, in bins of $\log M_\star$, for real and simulated star-forming galaxies.
# ```
#
# ```{glue:figure} data_structure_vs_real
# :name: fig-data-structure
#
# Left: how much redder in $g-r$ edge-on star-forming disks are than face-on ones, real
# (black) and simulated (blue), with bootstrap standard errors. Middle: median $\log R_{50}$ and
# its 16–84 % half-range. Right: median concentration $R_{90}/R_{50}$ against sSFR.
# ```
#
# Whether these measured numbers say as much about a galaxy's mass and star formation in the
# simulation as in real galaxies is tested with the same flow-matching procedure on both
# (`benchmarks/bench_information.py`); its recorded result is on the
# {doc}`Benchmarks page <../book/benchmarks>`.
#
# The simulated galaxies' half-light radii follow the late-type size–mass relation
# {cite}`shen2003`, its normalisation raised to match the real medians of the middle panel, so
# those medians are not an independent check; the slope and the scatter are.
#
# The disk's dust depth, its thickness and the birth clouds are set in `galnb.simulation`
# with their references; the birth-cloud screen does not depend on viewing angle, so the
# Balmer decrement barely changes with inclination, as in real disks {cite}`yip2010`, while
# the continuum reddens. Two checks against real galaxies follow: the Balmer decrements by mass
# against the relation {cite:t}`garnbest2010` measured on SDSS star-forming galaxies, and the
# inclination reddening of the left panel, bin by bin. How much the continuum reddens is a
# known limit of the simulation: real disks redden more with inclination the more massive
# they are, while a dust slab mixed with the stars, as simulated here, reddens most at a
# moderate optical depth and turns grey when thick.

# %%
balmer = validation.balmer_decrement_by_mass(catalog)
balmer_offset = np.log10(balmer["median"] / balmer.garn_best)
glue_all("data", balmer=balmer.style.format(precision=2).hide(axis="index"),
         balmer_max_offset=float(balmer_offset.abs().max()),
         reddening_verdict=Markdown(validation.describe_reddening(structure.reddening)))

# %% [markdown]
# ```{glue:figure} data_balmer
# :name: tab-data-balmer
#
# Median Hα/Hβ of the simulated galaxies with all four lines detected, with its standard error,
# against the relation of {cite:t}`garnbest2010` at the bin's median mass. The largest offset is
# {glue:text}`data_balmer_max_offset:.3f` dex.
# ```
#
# {glue:md}`data_reddening_verdict`
#
# ### Which real SFR, and how tightly photometry pins the labels
#
# The real catalog carries two star-formation columns, `SFRT` (read here as log SFR) and `SFRM`
# (read as log sSFR), which should agree once the mass is taken out. They do not. MPA–JHU specific
# SFRs fall by about two dex from late-type disks to ellipticals {cite}`brinchmann2004`; in the
# table below `SFRM` does so, while `SFRT` − log M★ barely changes with type. Which column holds
# the MPA–JHU median total SFR, the papers' label, cannot be settled from the file alone, so the
# information test on the {doc}`Benchmarks page <../book/benchmarks>` is run with both.
#
# How much the labels are tied to the photometry is then compared directly: each label is
# regressed on the five magnitudes, alone and with the redshift, in the real and the simulated
# star formers above, and the scatter left over is compared. Without the redshift most of it is
# the unknown distance. With the redshift it is what the colours cannot tell (the mass-to-light
# ratio, the sSFR) plus the label's own measurement error. The simulated catalog gives its mass and
# SFR a catalog's error of {glue:text}`data_label_error_mstar:.2f` and
# {glue:text}`data_label_error_sfr:.2f` dex about their true values (`simulation.LABEL_ERRORS`):
# for the mass, between the ±40 % 95 % range of the MPA–JHU masses {cite}`kauffmann2003masses` and
# the ~0.15 dex of SED-fitted SDSS masses {cite}`mendel2014`. The table scores the simulated
# galaxies against both their catalog labels and the true values: against the true values,
# photometry pins them far more tightly than it pins real galaxies' catalog labels, which is how
# much easier a simulation without label errors is than the sky.

# %%
from galnb.simulation import LABEL_ERRORS

if nair_abraham.data is None:
    sfr_columns, label_scatter = pd.DataFrame(), pd.DataFrame()
else:
    sfr_columns = validation.ssfr_by_morphology(nair_abraham.data)
    label_scatter = validation.compare_label_scatter(nair_abraham.data, simulated_structure)
glue_all("data",
         sfr_columns=sfr_columns.style.format(precision=2).hide(axis="index") if len(sfr_columns) else "(skipped)",
         label_scatter=label_scatter.style.format(precision=3).hide(axis="index").set_properties(padding="0 0.8em")
         if len(label_scatter) else "(skipped)",
         label_scatter_verdict=Markdown(validation.describe_label_scatter(label_scatter, "real")),
         label_error_mstar=LABEL_ERRORS["log_mstar"], label_error_sfr=LABEL_ERRORS["log_sfr"])

# %% [markdown]
# ```{glue:figure} data_sfr_columns
# :name: tab-data-sfr-columns
#
# Median specific SFR [log yr⁻¹] of the real Nair & Abraham galaxies by morphological type, from
# the catalog's two columns, with standard errors of the medians.
# ```
#
# ```{glue:figure} data_label_scatter
# :name: tab-data-label-scatter
#
# Scatter [dex] of each label about a quadratic in the inputs, cross-fitted (robust: 1.4826 × the
# median absolute deviation), with bootstrap standard errors, for real and simulated star formers
# selected alike. The real log SFR is `SFRT`, or `SFRM` + log M★ where named.
# ```
#
# {glue:md}`data_label_scatter_verdict`

# %% [markdown]
# ## The images beside real ones
#
# Real SDSS cutouts of star-forming Main Galaxy Sample galaxies (the Wu & Boada sample,
# SkyServer JPEGs) beside simulated ones framed alike, and scale-free statistics of both:
# inner-minus-outer colour, concentration, asymmetry and clumpiness
# (`galnb.validation.cutout_statistics`, statmorph {cite}`rodriguezgomez2019` on the displayed
# light). The real cutouts come from the same folder as the catalog above.

# %%
if real_folder is None:
    images_note = Markdown("The real cutouts were not given, so this comparison was skipped (see above).")
    real_images = simulated_images = np.zeros((16, 8, 8, 3), np.uint8)
    image_stats = pd.DataFrame()
else:
    real_images = validation.real_cutouts(real_folder, run.scale.n_structure // 4, seed)
    simulated_images = validation.framed_like_skyserver(run.scale.n_structure // 4, seed)
    image_stats = validation.compare_statistics(validation.cutout_statistics(real_images),
                                                validation.cutout_statistics(simulated_images))
    images_note = Markdown(f"{len(real_images)} real and {len(simulated_images)} simulated cutouts; "
                           "medians, and the simulated-minus-real difference with its bootstrap standard error.")
glue_all("data", images_note=images_note, images_vs_real=plots.cutouts_real_vs_simulated(real_images, simulated_images),
         image_stats=image_stats.style.format(precision=3).hide(axis="index") if len(image_stats) else "(skipped)")

# %% [markdown]
# ```{glue:figure} data_images_vs_real
# :name: fig-data-images-vs-real
#
# Top two rows: real SDSS $gri$ cutouts. Bottom two rows: simulated galaxies of the same
# selection, each framed so that the field spans five times its measured Petrosian $R_{90}$
# (the framing at which their displayed half-light radius matches the real cutouts').
# ```
#
# {glue:md}`data_images_note`
#
# ```{glue:figure} data_image_stats
# :name: tab-data-image-stats
#
# Statistics of the displayed cutouts, real and simulated.
# ```
#
# The simulated disks now carry knots of young stars and share the field with unrelated
# stars and galaxies; what they still lack — spiral arms, bars, dust lanes, the real
# galaxies' asymmetry — is in the table's asymmetry row.

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
# Edge-on disks (high inclination) look thinner and redder: the starlight of an inclined disk
# crosses more of its own dust. Their $A_V$, measured from the Balmer decrement of the
# H II regions' lines, changes much less with inclination, as in real disks.
# :::

# %%
run.finish(artifacts=[run.data_dir / "meta.json"]);
