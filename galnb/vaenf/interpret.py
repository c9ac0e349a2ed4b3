"""What the VAE's latents hold: property directions, perturbed decoding, UMAP (the paper's Figures 3 and 4)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..metrics import r2_score
from .model import VAE
from .train import encode_images

__all__ = [
    "latent_directions",
    "perturbational_decoding",
    "umap_embedding",
    "perturbation_grid",
    "decode_means",
    "representative_galaxy",
    "latent_activity",
]


def latent_directions(latents: np.ndarray, y: np.ndarray, top: int = 3) -> tuple[np.ndarray, np.ndarray, float]:
    """The latent direction most tied to a property, by linear regression.

    Each standardised latent mean is regressed on its own against the standardised
    property (the slope is then the correlation); the ``top`` dimensions with the
    largest absolute slopes form the direction, weighted by their slopes. Ranking the
    joint multiple-regression coefficients instead would favour nearly collapsed,
    collinear dimensions whose large coefficients cancel.

    Arguments:
        latents: ``(N, L)`` latent means.
        y: ``(N,)`` the property.
        top: dimensions in the direction.
    Returns:
        direction ``(L,)`` in latent units (unit length in standardised latents),
        the chosen dimensions ``(top,)``, and the R² of the multiple linear regression
        of ``y`` on all latents.
    """
    mu, sd = latents.mean(0), latents.std(0) + 1e-8
    z = (latents - mu) / sd
    ys = (y - y.mean()) / y.std()
    slope = z.T @ ys / len(ys)
    dims = np.argsort(-np.abs(slope))[:top]
    d = np.zeros_like(slope)
    d[dims] = slope[dims]
    d /= np.linalg.norm(d)
    A = np.column_stack([z, np.ones(len(z))])
    r2 = float(r2_score(ys, A @ np.linalg.lstsq(A, ys, rcond=None)[0])[0])
    return d * sd, dims, r2


@torch.no_grad()
def perturbational_decoding(vae: VAE, latent: np.ndarray, direction: np.ndarray, steps: Sequence[float]) -> np.ndarray:
    """Decode one galaxy's latent moved along ``direction``.

    Arguments:
        vae: the frozen VAE.
        latent: ``(L,)`` the galaxy's latent mean.
        direction: ``(L,)``.
        steps: multiples of ``direction`` to add, e.g. ``np.linspace(-3, 3, 7)``.
    Returns:
        uint8 images ``(len(steps), H, H, 3)``.
    """
    z = torch.as_tensor(latent[None] + np.asarray(steps)[:, None] * direction[None], dtype=torch.float32)
    img = vae.decode(z.to(next(vae.parameters()).device)).cpu().permute(0, 2, 3, 1).numpy()
    return (img * 255).round().clip(0, 255).astype(np.uint8)


def umap_embedding(features: np.ndarray, seed: int = 0, n_neighbors: int = 15, n_epochs: int = 200) -> np.ndarray:
    """2-D UMAP of standardised ``features: (N, F)`` → ``(N, 2)`` (McInnes et al. 2018, arXiv:1802.03426)."""
    import warnings

    with warnings.catch_warnings():  # umap imports tqdm.auto, which warns outside Jupyter widgets
        warnings.simplefilter("ignore")
        import umap

    z = (features - features.mean(0)) / (features.std(0) + 1e-8)
    return umap.UMAP(n_neighbors=n_neighbors, n_epochs=n_epochs, random_state=seed, n_jobs=1).fit_transform(z)


def representative_galaxy(catalog: pd.DataFrame, index: np.ndarray,
                          columns: Sequence[str] = ("log_mstar", "log_sfr", "z")) -> int:
    """The row (from ``index``) nearest the sample median in standardised ``columns``."""
    v = catalog[list(columns)].to_numpy(float)
    z = (v - np.median(v, 0)) / v.std(0)
    return int(index[np.argmin((z[index] ** 2).sum(1))])


def perturbation_grid(
    vae: VAE, latents: np.ndarray, catalog: pd.DataFrame, names: Sequence[str], start: np.ndarray,
    steps: Sequence[float], top: int = 3,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Figure 3 of the paper: decode one galaxy's latent moved along each property's direction.

    Arguments:
        vae: the frozen VAE.
        latents: ``(N, L)`` latent means of ``catalog``'s rows (the regression sample).
        catalog: the N rows, with a column per property.
        names: properties.
        start: ``(L,)`` the latent mean of the galaxy to perturb.
        steps: ``(S,)`` multiples of the (standardised, unit) direction.
        top: dimensions in each direction.
    Returns:
        images (name → uint8 ``(S, H, H, 3)``), the value a linear regression on the
        chosen dimensions predicts at each step (name → ``(S,)``), and the R² of the
        regression on all latents (name → float).
    """
    images, values, r2 = {}, {}, {}
    for n in names:
        y = catalog[n].to_numpy(float)
        direction, dims, r2[n] = latent_directions(latents, y, top)
        coef = np.linalg.lstsq(np.column_stack([latents[:, dims], np.ones(len(latents))]), y, rcond=None)[0]
        moved = start[None] + np.asarray(steps)[:, None] * direction[None]
        values[n] = np.column_stack([moved[:, dims], np.ones(len(moved))]) @ coef
        images[n] = perturbational_decoding(vae, start, direction, steps)
    return images, values, r2


@torch.no_grad()
def decode_means(vae: VAE, images: np.ndarray) -> np.ndarray:
    """Reconstructions of cutouts from their latent means.

    Arguments:
        vae: the frozen VAE.
        images: uint8 ``(K, H, W, 3)`` cutouts.
    Returns:
        uint8 ``(K, H, H, 3)`` at the VAE's size.
    """
    mu, _ = encode_images(vae, images)
    out = vae.decode(torch.as_tensor(mu).to(next(vae.parameters()).device)).cpu().permute(0, 2, 3, 1).numpy()
    return (out * 255).round().clip(0, 255).astype(np.uint8)


def latent_activity(mu: np.ndarray, sigma: np.ndarray, threshold: float = 0.01) -> dict[str, float]:
    """How much of the latent space the encoder uses (Burda, Grosse & Salakhutdinov 2016).

    A latent dimension is *active* when its posterior mean varies across galaxies,
    Var_x(μ_u) > ``threshold``; an inactive one has collapsed onto the prior N(0, 1), its σ near 1.

    Arguments:
        mu, sigma: ``(N, L)`` latent means and standard deviations (:func:`encode_images`).
    Returns:
        ``active`` (count of active dimensions) and ``median_sigma`` (over galaxies and dimensions).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> mu = np.c_[rng.normal(size=(500, 3)), 0.01 * rng.normal(size=(500, 2))]
        >>> latent_activity(mu, np.ones((500, 5)))
        {'active': 3, 'median_sigma': 1.0}
    """
    return {"active": int((np.var(mu, axis=0) > threshold).sum()), "median_sigma": float(np.median(sigma))}
