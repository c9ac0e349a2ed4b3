# %% [markdown]
# # Training the CFM models
#
# This chapter trains the CFM paper's two posterior estimators {cite}`yunus2025cfm` on the
# data set of {doc}`01_data`: the **photometry model**, whose velocity network sees
# $[t;\theta;f_\mathrm{phot}]$ (input 11), and the **image model**, which adds a 256-D image
# embedding $f_\mathrm{img}$ from a CNN of four stride-1 convolution blocks with average
# pooling and global average pooling (input 267). The method itself is derived in
# {doc}`02_cfm_theory`. The `model` parameter picks one; the book runs this notebook once
# for each. The checkpoint goes into the run directory, where {doc}`05_evaluation` and
# {doc}`06_degeneracy` find it.

# %% tags=["parameters"]
scale = "auto"
data = "mock"
seed = 0
device = "auto"
run_dir = "runs"
model = "image"
lr = None  # None: the scale's default (the paper's 5e-5 at paper scale)
batch_size = 64
max_epochs = None  # None: the scale's default
patience = None  # None: the scale's default
sigma = 0.05

# %%
from galnb.runs import start_chapter
from galnb.training import TrainConfig

run = start_chapter("03_train", scale=scale, data=data, seed=seed, device=device, run_dir=run_dir, model=model)
config = TrainConfig(
    model=model, lr=lr or run.scale.lr, batch_size=batch_size, max_epochs=max_epochs or run.scale.max_epochs,
    patience=patience or run.scale.patience, sigma=sigma, seed=seed,
)
config

# %% [markdown]
# ## The data
#
# Training reads the data set of {doc}`01_data` (images memory-mapped), standardised with
# the statistics of the training split saved with it. If this notebook runs first, the
# same deterministic data set is generated here and reused by chapter 1.

# %%
from galnb.data import ensure_store

store = ensure_store(run)
{split: len(rows) for split, rows in store.splits.items()}

# %% [markdown]
# ## Training
#
# AdamW with early stopping on the validation loss. Every epoch ends with an atomic
# checkpoint, so an interrupted run picks up where it stopped when this cell is run again;
# a finished run returns at once.

# %%
from galnb.training import train_cfm

result = train_cfm(store, run.model_dir(model), config, device=run.device)
result.history.tail()

# %% [markdown]
# ## Learning curves
#
# The validation loss is computed with fixed noise draws, so epochs compare fairly; the
# model kept is the one at the best validation epoch.

# %%
from myst_nb import glue

from galnb import plots

glue("train_curves", plots.learning_curves(result.history, result.best_epoch, f"{model} model, {run.scale.name} scale"), display=False)
glue("train_best_epoch", result.best_epoch, display=False)
glue("train_epochs", len(result.history), display=False)
glue("train_best_val", float(result.history["val_loss"].min()), display=False)
glue("train_samples_per_s", result.samples_per_s, display=False)
glue("train_wait_pct", 100 * result.data_wait_share, display=False)
glue("train_wall_min", result.history["seconds"].sum() / 60, display=False)

# %% [markdown]
# ```{glue:figure} train_curves
#
# Training and validation loss of the {glue:text}`train_epochs` epochs run; the dashed line
# marks epoch {glue:text}`train_best_epoch`, whose weights are kept.
# ```
#
# The model trained for {glue:text}`train_epochs` epochs ({glue:text}`train_wall_min:.1f`
# minutes of training) at {glue:text}`train_samples_per_s:.0f` galaxies per second, of which
# {glue:text}`train_wait_pct:.1f` % of the step time was spent waiting for data. The best
# validation loss was {glue:text}`train_best_val:.3f`. At `ci` scale these are smoke-test
# numbers: a few epochs on a few thousand galaxies, with a larger learning rate than the
# paper's so that the short run learns something (see {doc}`../book/execution`).

# %% [markdown]
# ## Summary and exercises
#
# The checkpoint `best.pt` in the run directory holds the weights, the configuration and
# the standardisation statistics; {doc}`05_evaluation` loads it with
# `galnb.training.load_trained`.
#
# 1. Train the photometry model (`-p model phot`) and compare its best validation loss
#    with the image model's. Which is lower, and why does that not by itself say which
#    posterior is better?
# 2. Halve `sigma` and retrain. How does the loss floor change?
#
# :::{admonition} Solution
# :class: dropdown
# 1. `papermill notebooks/03_train.ipynb out.ipynb -p model phot -p scale ci`. The loss is
#    an MSE to a random velocity $\theta_1-\theta_0$ and never reaches zero; its floor
#    depends on how wide the true posterior is. Comparing posteriors needs the metrics
#    of chapter 5 (Δlog p, D_KL), not the training loss.
# 2. The irreducible part of the loss shrinks with $\sigma^2$ only slightly: most of it
#    comes from the spread of $\theta_0$ and of the posterior, not from the path width.
# :::

# %%
run.finish(artifacts=[run.model_dir(model) / "best.pt"]);
