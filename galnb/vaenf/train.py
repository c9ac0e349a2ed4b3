"""Training the VAE–NF model: the VAE, the latents, the flow stage and its seed ensemble."""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..data import images_to_tensor
from ..parallel import map_processes
from ..properties import LINES, VAENF_CORE
from ..training import optimiser_step
from .model import VAE, VAENF, VAENFData

__all__ = ["train_vae", "encode_images", "fit_vaenf", "fit_ensemble", "fit_split"]


@contextlib.contextmanager
def _threads(n: int | None, device: str = "cpu") -> Iterator[None]:
    """Temporarily use ``n`` intra-op CPU threads (None: leave torch's setting).

    The flow-stage networks are small (a training step is mostly per-operation overhead), so
    they use one thread and leave the other cores to parallel ensemble members. The VAE's
    convolutions are large enough to gain from every core (timings: ``benchmarks/results/``).
    """
    if n is None or device != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- VAE


def train_vae(
    images: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-4,
    image_size: int | None = None,
    val_images: np.ndarray | None = None,
    seed: int = 0,
    device: str = "cpu",
    latent: int = 32,
    beta: float = 1.0,
    reconstruction: str = "sum",
    threads: int | None = None,
) -> tuple[VAE, pd.DataFrame]:
    """Train a VAE with Adam and return it frozen (eval mode, no gradients).

    Arguments:
        images: uint8 ``(N, H, H, 3)`` training cutouts (a memmap is fine).
        epochs: passes over ``images``.
        batch_size: images per step.
        lr: Adam learning rate (1e-4 in the paper).
        image_size: resample cutouts to this side first (default: as stored).
        val_images: uint8 ``(M, H, H, 3)`` cutouts for the validation loss of the learning curve.
        seed: seed of initialisation and shuffling.
        device: ``"cpu"`` or ``"cuda"``.
        latent: latent dimension.
        beta: weight of the KL term.
        reconstruction: ``"sum"`` or ``"mean"`` squared error over each image's pixels
            (see :meth:`VAE.loss`).
        threads: CPU threads while training (None: torch's default).
    Returns:
        the frozen VAE and a DataFrame (epoch, train_loss, val_loss, recon, kl) per epoch.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = int(image_size or images.shape[1])
    vae = VAE(size, latent).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    val = val_images if val_images is not None and len(val_images) else None
    with _threads(threads, device):
        rows = _vae_epochs(vae, opt, images, val, size, epochs, batch_size, rng, device, beta, reconstruction)
    vae.eval().requires_grad_(False)
    return vae, pd.DataFrame(rows)


def _vae_epochs(
    vae: VAE, opt, data: np.ndarray, val: np.ndarray | None, size: int, epochs: int, batch_size: int, rng, device: str,
    beta: float, reconstruction: str,
) -> list[dict]:
    """Epochs over uint8 cutouts, converted to float one batch at a time (memory stays O(batch))."""
    rows = []
    for epoch in range(1, epochs + 1):
        vae.train()
        totals = np.zeros(3)
        order = rng.permutation(len(data))
        for start in range(0, len(order), batch_size):
            x = images_to_tensor(data[np.sort(order[start : start + batch_size])], size).to(device)
            loss, recon, kl = vae.loss(x, beta, reconstruction)
            optimiser_step(opt, loss)
            totals += np.array([loss.item(), recon.item(), kl.item()]) * len(x)
        totals /= len(data)
        row = {"epoch": epoch, "train_loss": totals[0], "recon": totals[1], "kl": totals[2], "val_loss": np.nan}
        if val is not None:
            vae.eval()
            with torch.no_grad():
                losses = [vae.loss(images_to_tensor(val[i : i + 256], size).to(device), beta, reconstruction)[0].item()
                          * len(val[i : i + 256]) for i in range(0, len(val), 256)]
                row["val_loss"] = float(np.sum(losses) / len(val))
        rows.append(row)
    return rows


@torch.no_grad()
def encode_images(vae: VAE, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Latent means and standard deviations of cutouts through a frozen VAE.

    Arguments:
        vae: the frozen VAE.
        images: uint8 ``(N, H, W, 3)``; resampled to the VAE's size if needed.
        batch_size: cutouts through the encoder at once.
    Returns:
        ``mu: (N, latent)`` and ``sigma: (N, latent)`` float32 arrays.
    """
    device = next(vae.parameters()).device
    mus, sigmas = [], []
    for start in range(0, len(images), batch_size):
        batch = images_to_tensor(np.asarray(images[start : start + batch_size]), vae.image_size)
        mu, logvar = vae.encode(batch.to(device))
        mus.append(mu.cpu())
        sigmas.append((0.5 * logvar).exp().cpu())
    return torch.cat(mus).numpy(), torch.cat(sigmas).numpy()


# ------------------------------------------------------------------ flow stage


def _tensors(data: VAENFData, model: VAENF, device: str) -> dict[str, Tensor]:
    """``data`` as the standardised tensors :meth:`VAENF.losses` reads."""
    def f(a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.array(a, np.float32), device=device)

    with torch.no_grad():
        out = {
            "x": model._std("x", f(data.x)),
            "core": model._std("core", f(data.core)),
            "b2": model._std("b2", f(data.b2)[:, None]),
            "det": torch.as_tensor(np.array(data.detectable, bool), device=device),
        }
        if model.lines:
            out["lines"] = model._std("line", f(np.log1p(np.clip(data.lines, 0, None))))
    return out


def fit_vaenf(
    model: VAENF,
    train: VAENFData,
    val: VAENFData,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = 1,
) -> pd.DataFrame:
    """Train every branch jointly (sum of MSE, NLL and BCE terms) with Adam.

    The state with the lowest validation loss is kept (early-stopping style).

    Arguments:
        model: a fresh :class:`VAENF` (its standardisation is set from ``train`` here).
        train, val: the training and validation arrays.
        epochs: passes over ``train``.
        batch_size: galaxies per step.
        lr: Adam learning rate.
        seed: seed of shuffling.
        device: ``"cpu"`` or ``"cuda"``.
        threads: CPU threads while training (None: torch's default).
    Returns:
        a DataFrame with epoch, train_loss, val_loss.
    """
    with _threads(threads, device):
        return _fit(model, train, val, epochs, batch_size, lr, seed, device)


def _fit(model: VAENF, train: VAENFData, val: VAENFData, epochs: int, batch_size: int, lr: float, seed: int,
         device: str) -> pd.DataFrame:
    model.set_standardisation(train)
    model.to(device)
    tr, va = _tensors(train, model, device), _tensors(val, model, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, rows = math.inf, None, []
    n = len(train)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = sum(model.losses({k: v[idx] for k, v in tr.items()}).values())
            optimiser_step(opt, loss, max_grad_norm=10.0)
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            val_loss = float(sum(model.losses(va).values()))
        rows.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss})
        if val_loss < best:
            best, best_state = val_loss, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return pd.DataFrame(rows)


def fit_ensemble(
    train: VAENFData,
    val: VAENFData,
    *,
    n_ensemble: int,
    epochs: int,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    first_member: int = 0,
    workers: int | None = None,
    **model_kwargs,
) -> tuple[list[VAENF], pd.DataFrame]:
    """Train ``n_ensemble`` VAENF models that differ only in their seed.

    Member ``k`` is seeded from ``(seed, k)`` alone, so the members are the same whether
    they are trained one after another or side by side, and a larger ensemble is a smaller
    one plus members ``first_member, first_member + 1, ...``.

    Arguments:
        train, val: the training and validation arrays.
        n_ensemble: members to train.
        epochs, batch_size, device: as in :func:`fit_vaenf`.
        seed: seed of the ensemble.
        first_member: index of the first member trained here (to extend an ensemble).
        workers: processes training members side by side on the CPU, one thread each
            (default: one per member, at most one per CPU core; 1 trains in this process).
        model_kwargs: :class:`VAENF` arguments.
    Returns:
        the models (eval mode, on CPU) and their learning curves (column ``member``).
    """
    members = range(first_member, first_member + n_ensemble)
    jobs = [(train, val, k, epochs, seed, batch_size, device, model_kwargs) for k in members]
    # A step of the flow stage is hundreds of small operations, so members gain little from
    # more threads and much from running side by side (timings: benchmarks/results/).
    done = map_processes(_fit_member, *zip(*jobs), workers=workers if device == "cpu" else 1)
    models = []
    for entry, _ in done:
        model = VAENF.from_config(entry["config"])
        model.load_state_dict(entry["state"])
        models.append(model.eval())
    return models, pd.concat([curve for _, curve in done], ignore_index=True)


def _fit_member(train: VAENFData, val: VAENFData, k: int, epochs: int, seed: int, batch_size: int, device: str,
                model_kwargs: dict) -> tuple[dict, pd.DataFrame]:
    """Train ensemble member ``k``; returns ``{"config", "state"}`` (CPU tensors) and its learning curve."""
    torch.manual_seed(seed * 1000 + k)
    model = VAENF(train.x.shape[1], **model_kwargs)
    curve = fit_vaenf(model, train, val, epochs=epochs, batch_size=batch_size, seed=seed * 1000 + k, device=device)
    state = {name: v.detach().cpu() for name, v in model.state_dict().items()}
    return {"config": model.config(), "state": state}, curve.assign(member=k)


def fit_split(
    catalog: pd.DataFrame,
    x: np.ndarray,
    splits: dict[str, np.ndarray],
    *,
    core: Sequence[str] = VAENF_CORE,
    lines: Sequence[str] = LINES,
    b2_all: bool = False,
    n_ensemble: int,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
    first_member: int = 0,
    **model_kwargs,
) -> tuple[list[VAENF], pd.DataFrame]:
    """Train an ensemble on the train split (best epoch chosen on the validation split).

    Arguments:
        catalog: the store's catalog.
        x: ``(N, n_inputs)`` inputs for every catalog row.
        splits: "train"/"val" row indices.
        core, lines: branch-1 parameters and emission lines (``()`` for none).
        b2_all: train metallicity on every galaxy rather than the measurable ones only.
        n_ensemble, epochs, batch_size, seed, device, first_member: as in :func:`fit_ensemble`.
        model_kwargs: further :class:`VAENF` arguments (e.g. ``log_scale_bound``).
    Returns:
        as :func:`fit_ensemble`.
    """
    def part(name: str) -> VAENFData:
        rows = splits[name]
        d = VAENFData.from_catalog(catalog.iloc[rows], x[rows], core=core, lines=lines or None)
        if b2_all:
            d.detectable = np.ones(len(rows), bool)
        return d

    return fit_ensemble(part("train"), part("val"), n_ensemble=n_ensemble, epochs=epochs, seed=seed,
                        batch_size=batch_size, device=device, first_member=first_member, core=tuple(core),
                        lines=tuple(lines or ()), **model_kwargs)
