"""The VAE–normalizing-flow model of Siddiqa, Mahmud & Martinez-Galarza (2025).

Two stages. A convolutional VAE compresses each gri cutout into a 32-D latent
(mean and standard deviation), then is frozen. A conditional model reads the
latents, four colours and the r magnitude through an MLP encoder (256-D) and has

* branch 1: an MLP for the means of the core parameters and a conditional RealNVP
  (12 affine couplings) for their residuals, plus a detectability classifier;
* branch 2: a 1-D conditional affine flow for the metallicity residual given the
  encoding *and* the core parameters, so that
  ``p(core, O/H | x) = p(core | x) p(O/H | core, x)``;
* an emission-line branch: means of Hα, Hβ, [N II] 6584, [O III] 5007 in log1p
  space and a 4-D conditional RealNVP (12 couplings) on their residuals.

The flows are :mod:`zuko`'s; what is written here is the wiring. Inputs and
targets are standardised inside the model (statistics are buffers, so a
checkpoint is self-contained) and every density returned is in physical units.

Modules (every public name is re-exported here, e.g. ``vaenf.train_vae``):

* :mod:`~galnb.vaenf.model`: the networks, ``VAE`` and ``VAENF``, and their inputs
  (``flow_inputs``, ``VAENFData``);
* :mod:`~galnb.vaenf.train`: training the VAE, encoding cutouts, training the flow stage
  and its seed ensemble (``fit_ensemble``, ``fit_split``);
* :mod:`~galnb.vaenf.ensemble`: ensemble checkpoints, every member's draws (``predict``),
  the mixture posterior as one estimator (``EnsembleMixture``) and the chapter's tables;
* :mod:`~galnb.vaenf.interpret`: what the latents hold (latent directions, perturbed
  decoding, UMAP, how many dimensions are active);
* :mod:`~galnb.vaenf.baselines`: deterministic regressions on the same inputs (the mean
  head alone, kNN) that the paper's Table 1 claim is tested against.

References:
    | From Images to Physics: Probabilistic Inference of Galaxy Parameters and Emission
    | Lines via VAE-Normalizing Flows (Siddiqa et al., 2025), arXiv:2511.12737
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2014), arXiv:1312.6114
    | Density estimation using Real NVP (Dinh et al., 2017), arXiv:1605.08803
"""

from __future__ import annotations

from .baselines import knn_baseline, knn_predictions, mean_head_predictions
from .ensemble import (
    EnsembleMixture,
    EnsemblePosterior,
    confusion_matrix,
    ensemble_r2,
    load_ensemble,
    predict,
    save_ensemble,
    uncertainty_table,
)
from .interpret import (
    decode_means,
    latent_activity,
    latent_directions,
    perturbation_grid,
    perturbational_decoding,
    representative_galaxy,
    umap_embedding,
)
from .model import CFM_CORE, VAE, VAENF, VAENFData, colour_features, flow_inputs
from .train import encode_images, fit_ensemble, fit_split, fit_vaenf, train_vae

__all__ = [
    # model
    "CFM_CORE",
    "VAE",
    "VAENF",
    "VAENFData",
    "colour_features",
    "flow_inputs",
    # train
    "train_vae",
    "encode_images",
    "fit_vaenf",
    "fit_ensemble",
    "fit_split",
    # ensemble
    "save_ensemble",
    "load_ensemble",
    "EnsemblePosterior",
    "predict",
    "EnsembleMixture",
    "ensemble_r2",
    "uncertainty_table",
    "confusion_matrix",
    # interpret
    "latent_directions",
    "perturbational_decoding",
    "umap_embedding",
    "perturbation_grid",
    "decode_means",
    "representative_galaxy",
    "latent_activity",
    # baselines
    "mean_head_predictions",
    "knn_predictions",
    "knn_baseline",
]
