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

References:
    | From Images to Physics: Probabilistic Inference of Galaxy Parameters and Emission
    | Lines via VAE-Normalizing Flows (Siddiqa et al., 2025), arXiv:2511.12737
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2014), arXiv:1312.6114
    | Density estimation using Real NVP (Dinh et al., 2017), arXiv:1605.08803
"""

from __future__ import annotations

import contextlib
import copy
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import zuko
from torch import Tensor, nn

from .properties import LINES, TARGETS, VAENF_CORE
from .runs import atomic_write

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CFM_CORE",
    "VAE",
    "train_vae",
    "encode_images",
    "colour_features",
    "flow_inputs",
    "VAENFData",
    "VAENF",
    "fit_vaenf",
    "fit_ensemble",
    "save_ensemble",
    "load_ensemble",
    "EnsemblePosterior",
    "predict",
    "r2_score",
    "posterior_npz",
    "confusion_matrix",
    "latent_directions",
    "perturbational_decoding",
    "umap_embedding",
    "PAPER_R2",
    "PAPER_LINE_R2",
    "PAPER_SIGMA",
    "fit_split",
    "r2_table",
    "uncertainty_table",
    "representative_galaxy",
    "perturbation_grid",
    "decode_means",
]

#: Bumped whenever a checkpoint's layout changes; older files are refused on load.
CHECKPOINT_VERSION = 1
#: Branch-1 parameters of the variant scored on the CFM paper's five targets (branch 2: oh12).
CFM_CORE: tuple[str, ...] = ("log_mstar", "log_sfr", "dn4000", "av")


class CheckpointError(ValueError):
    """A checkpoint file is missing, of another version, or of another architecture."""


@contextlib.contextmanager
def _threads(n: int | None, device: str = "cpu") -> Iterator[None]:
    """Temporarily use ``n`` intra-op CPU threads (None: leave torch's setting).

    The flow-stage networks are small (a training step is mostly per-operation overhead), so
    they use one thread and leave the other cores to parallel ensemble members. The VAE's
    convolutions are large enough to use every core (1.9x faster on 2 than on 1).
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


class VAE(nn.Module):
    """A convolutional VAE for square gri cutouts.

    Encoder: three conv layers (kernel 4, stride 2, padding 1), then fully connected
    heads for the latent mean and log-variance. Decoder: a fully connected layer and
    three transposed convolutions mirroring the encoder, sigmoid output.

    Arguments:
        image_size: side of the cutouts in pixels (a multiple of 8: 32, 64, 128).
        latent: latent dimension (32 in the paper).
        channels: channels of the three conv layers.

    Example:
        >>> vae = VAE(32)
        >>> mu, logvar = vae.encode(torch.rand(2, 3, 32, 32))
        >>> tuple(mu.shape), tuple(vae.decode(mu).shape)
        ((2, 32), (2, 3, 32, 32))
    """

    def __init__(self, image_size: int = 64, latent: int = 32, channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size={image_size} must be a multiple of 8")
        self.config = {"image_size": int(image_size), "latent": int(latent), "channels": tuple(int(c) for c in channels)}
        c1, c2, c3 = channels
        self.side = image_size // 8
        flat = c3 * self.side**2
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(c2, c3, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.Flatten(),
        )
        self.fc_mu = nn.Linear(flat, latent)
        self.fc_logvar = nn.Linear(flat, latent)
        self.fc_dec = nn.Linear(latent, flat)
        self.decoder = nn.Sequential(
            nn.LeakyReLU(0.1),
            nn.Unflatten(1, (c3, self.side, self.side)),
            nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(c1, 3, 4, 2, 1), nn.Sigmoid(),
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (B, 3, H, H)`` in [0, 1] → latent mean and log-variance, each ``(B, latent)``."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h).clamp(-12.0, 8.0)

    def decode(self, z: Tensor) -> Tensor:
        """``z: (B, latent)`` → images ``(B, 3, H, H)`` in [0, 1]."""
        return self.decoder(self.fc_dec(z))

    def loss(self, x: Tensor, beta: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """Negative ELBO per image: summed squared error + β·KL to N(0, I).

        Returns:
            (total, reconstruction, KL), each a scalar averaged over the batch.
        """
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        recon = (self.decode(z) - x).square().flatten(1).sum(1).mean()
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()
        return recon + beta * kl, recon, kl


def _to_tensor(images: np.ndarray, size: int | None = None) -> Tensor:
    """uint8 ``(B, H, W, 3)`` → float ``(B, 3, size, size)`` in [0, 1] (area-resampled)."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and x.shape[-1] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
    return x


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
    threads: int | None = None,
) -> tuple[VAE, pd.DataFrame]:
    """Train a VAE with Adam and return it frozen (eval mode, no gradients).

    Arguments:
        images: uint8 ``(N, H, H, 3)`` training cutouts (a memmap is fine).
        epochs: passes over ``images``.
        batch_size: images per step.
        lr: Adam learning rate (1e-4 in the paper).
        image_size: resample cutouts to this side first (default: as stored).
        val_images: uint8 cutouts for the validation loss of the learning curve.
        seed: seed of initialisation and shuffling.
        device: ``"cpu"`` or ``"cuda"``.
        latent: latent dimension.
        beta: weight of the KL term against the summed squared error.
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
        rows = _vae_epochs(vae, opt, images, val, size, epochs, batch_size, rng, device, beta)
    vae.eval().requires_grad_(False)
    return vae, pd.DataFrame(rows)


def _vae_epochs(
    vae: VAE, opt, data: np.ndarray, val: np.ndarray | None, size: int, epochs: int, batch_size: int, rng, device: str, beta: float
) -> list[dict]:
    """Epochs over uint8 cutouts, converted to float one batch at a time (memory stays O(batch))."""
    rows = []
    for epoch in range(1, epochs + 1):
        vae.train()
        totals = np.zeros(3)
        order = rng.permutation(len(data))
        for start in range(0, len(order), batch_size):
            x = _to_tensor(data[np.sort(order[start : start + batch_size])], size).to(device)
            loss, recon, kl = vae.loss(x, beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            totals += np.array([loss.item(), recon.item(), kl.item()]) * len(x)
        totals /= len(data)
        row = {"epoch": epoch, "train_loss": totals[0], "recon": totals[1], "kl": totals[2], "val_loss": np.nan}
        if val is not None:
            vae.eval()
            with torch.no_grad():
                losses = [vae.loss(_to_tensor(val[i : i + 256], size).to(device), beta)[0].item() * len(val[i : i + 256])
                          for i in range(0, len(val), 256)]
                row["val_loss"] = float(np.sum(losses) / len(val))
        rows.append(row)
    return rows


@torch.no_grad()
def encode_images(vae: VAE, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Latent means and standard deviations of cutouts through a frozen VAE.

    Arguments:
        images: uint8 ``(N, H, W, 3)``; resampled to the VAE's size if needed.
    Returns:
        ``mu: (N, latent)`` and ``sigma: (N, latent)`` float32 arrays.
    """
    device = next(vae.parameters()).device
    mus, sigmas = [], []
    for start in range(0, len(images), batch_size):
        mu, logvar = vae.encode(_to_tensor(np.asarray(images[start : start + batch_size]), vae.config["image_size"]).to(device))
        mus.append(mu.cpu())
        sigmas.append((0.5 * logvar).exp().cpu())
    return torch.cat(mus).numpy(), torch.cat(sigmas).numpy()


def colour_features(catalog: pd.DataFrame) -> np.ndarray:
    """The paper's photometric inputs: u−g, g−r, r−i, i−z and r, ``(N, 5)`` float32."""
    m = catalog[["mag_u", "mag_g", "mag_r", "mag_i", "mag_z"]].to_numpy(dtype=np.float32)
    return np.column_stack([m[:, 0] - m[:, 1], m[:, 1] - m[:, 2], m[:, 2] - m[:, 3], m[:, 3] - m[:, 4], m[:, 2]])


def flow_inputs(catalog: pd.DataFrame, latents: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Inputs of the flow stage: ``[mu (32), sigma (32), colours (4), r]`` or, without latents,
    the five photometric features alone (the photometry-only variant)."""
    phot = colour_features(catalog)
    if latents is None:
        return phot
    return np.concatenate([latents[0], latents[1], phot], axis=1).astype(np.float32)


# ------------------------------------------------------------------ flow stage


@dataclass
class VAENFData:
    """Arrays for the flow stage, in physical units.

    Arguments:
        x: ``(N, n_inputs)`` inputs (see :func:`flow_inputs`).
        core: ``(N, n_core)`` branch-1 targets.
        b2: ``(N,)`` branch-2 target (metallicity).
        detectable: ``(N,)`` bool, whether ``b2`` was measured.
        lines: ``(N, 4)`` emission-line fluxes (linear), or None.
    """

    x: np.ndarray
    core: np.ndarray
    b2: np.ndarray
    detectable: np.ndarray
    lines: np.ndarray | None = None

    @classmethod
    def from_catalog(
        cls, catalog: pd.DataFrame, x: np.ndarray, core: Sequence[str] = VAENF_CORE, b2: str = "oh12", lines: Sequence[str] | None = LINES
    ) -> "VAENFData":
        """Pick the target columns of ``catalog`` (rows aligned with ``x``).

        ``oh_detectable`` defaults to all True when absent; lines to None when absent.
        """
        missing = [c for c in (*core, b2) if c not in catalog.columns]
        if missing:
            raise KeyError(f"catalog has no column(s) {missing} needed by the VAE-NF targets")
        det = catalog["oh_detectable"].to_numpy(bool) if "oh_detectable" in catalog else np.ones(len(catalog), bool)
        have_lines = lines is not None and all(c in catalog.columns for c in lines)
        return cls(
            np.asarray(x, np.float32),
            catalog[list(core)].to_numpy(np.float32),
            catalog[b2].to_numpy(np.float32),
            det,
            catalog[list(lines)].to_numpy(np.float32) if have_lines else None,
        )

    def __len__(self) -> int:
        return len(self.x)


def _mlp(n_in: int, n_out: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


class VAENF(nn.Module):
    """The conditional flow stage: encoder, two branches, classifier and line branch.

    Arguments:
        n_inputs: input width (69 with image latents, 5 for photometry only).
        core: branch-1 parameters (default the paper's ``VAENF_CORE``).
        b2: branch-2 parameter (metallicity).
        lines: emission lines, or ``()`` for no line branch.
        hidden: width of the encoder output (256 in the paper).
        transforms: affine couplings in each RealNVP (12 in the paper).
        flow_hidden: hidden widths of the coupling networks.

    Every public method takes and returns physical units; line fluxes are in
    log1p space (``log(1 + F)``), as in the paper.

    Example:
        >>> m = VAENF(5, lines=())
        >>> m.sample_params(torch.randn(3, 5), 7).shape
        torch.Size([3, 7, 5])
    """

    def __init__(
        self,
        n_inputs: int,
        core: Sequence[str] = VAENF_CORE,
        b2: str = "oh12",
        lines: Sequence[str] = LINES,
        hidden: int = 256,
        transforms: int = 12,
        flow_hidden: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        core, lines = tuple(core), tuple(lines or ())
        if len(core) < 2:
            raise ValueError("branch 1 needs at least two core parameters (RealNVP couples halves)")
        self.config = {
            "n_inputs": int(n_inputs), "core": core, "b2": b2, "lines": lines,
            "hidden": int(hidden), "transforms": int(transforms), "flow_hidden": tuple(int(h) for h in flow_hidden),
        }
        nc, nl = len(core), len(lines)
        for name, width in (("x", n_inputs), ("core", nc), ("b2", 1), ("line", max(nl, 1))):
            self.register_buffer(f"{name}_mean", torch.zeros(width))
            self.register_buffer(f"{name}_std", torch.ones(width))
        self.encoder = nn.Sequential(_mlp(n_inputs, hidden, (hidden,)), nn.ReLU())
        self.mean_head = _mlp(hidden, nc + 1, (128,))  # means of the core parameters and of O/H
        self.detect_head = _mlp(hidden, 1, (64,))  # logit of "O/H measured"
        self.core_flow = zuko.flows.RealNVP(nc, hidden, transforms=transforms, hidden_features=flow_hidden)
        # features=1 makes zuko build one conditional element-wise affine map: a 1-D affine flow.
        self.b2_flow = zuko.flows.RealNVP(1, hidden + nc, transforms=1, hidden_features=flow_hidden)
        if nl:
            self.line_mean_head = _mlp(hidden, nl, (128,))
            self.line_flow = zuko.flows.RealNVP(nl, hidden, transforms=transforms, hidden_features=flow_hidden)

    # -- standardisation -------------------------------------------------------
    @property
    def params(self) -> tuple[str, ...]:
        """Names of the joint posterior's dimensions: core parameters, then branch 2."""
        return (*self.config["core"], self.config["b2"])

    def set_standardisation(self, data: VAENFData) -> None:
        """Store mean/std of the training inputs and targets as buffers."""
        def put(name: str, a: np.ndarray) -> None:
            a = torch.as_tensor(np.asarray(a, np.float64).reshape(len(a), -1))
            getattr(self, f"{name}_mean").copy_(a.mean(0))
            getattr(self, f"{name}_std").copy_(a.std(0, unbiased=False).clamp_min(1e-6))

        put("x", data.x)
        put("core", data.core)
        put("b2", data.b2[data.detectable] if data.detectable.any() else data.b2)
        if self.config["lines"]:
            put("line", np.log1p(np.clip(data.lines, 0, None)))

    def _std(self, name: str, v: Tensor) -> Tensor:
        return (v - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")

    def _phys(self, name: str, v: Tensor) -> Tensor:
        return v * getattr(self, f"{name}_std") + getattr(self, f"{name}_mean")

    # -- pieces ----------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """``x: (B, n_inputs)`` physical → encoding ``(B, hidden)``."""
        return self.encoder(self._std("x", x))

    def _b2_context(self, h: Tensor, core_s: Tensor) -> Tensor:
        return torch.cat([h, core_s], dim=-1)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every training term on a batch of standardised tensors (see :func:`fit_vaenf`).

        Branch 1's mean MLP is trained by MSE and the flow on residuals about the
        (detached) means; branch 2 conditions on the *true* core parameters and
        trains only on galaxies with ``detectable``.
        """
        h = self.encoder(batch["x"])
        means = self.mean_head(h)
        mu_c, mu_b = means[:, :-1], means[:, -1:]
        det = batch["det"]
        out = {
            "mse": (mu_c - batch["core"]).square().mean(),
            "nll_core": -self.core_flow(h).log_prob(batch["core"] - mu_c.detach()).mean(),
            "bce": nn.functional.binary_cross_entropy_with_logits(self.detect_head(h)[:, 0], det.float()),
        }
        if det.any():
            b, ctx = batch["b2"][det], self._b2_context(h[det], batch["core"][det])
            out["mse_b2"] = (mu_b[det] - b).square().mean()
            out["nll_b2"] = -self.b2_flow(ctx).log_prob(b - mu_b[det].detach()).mean()
        if self.config["lines"]:
            mu_l = self.line_mean_head(h)
            out["mse_lines"] = (mu_l - batch["lines"]).square().mean()
            out["nll_lines"] = -self.line_flow(h).log_prob(batch["lines"] - mu_l.detach()).mean()
        return out

    # -- inference (physical units) ----------------------------------------------
    @torch.no_grad()
    def point_estimates(self, x: Tensor) -> dict[str, Tensor]:
        """The mean MLPs' outputs: ``core (B, n_core)``, ``b2 (B,)``, ``lines (B, 4)`` (log1p)."""
        h = self.encode(x)
        means = self.mean_head(h)
        out = {"core": self._phys("core", means[:, :-1]), "b2": self._phys("b2", means[:, -1:])[:, 0]}
        if self.config["lines"]:
            out["lines"] = self._phys("line", self.line_mean_head(h))
        return out

    @torch.no_grad()
    def detect_prob(self, x: Tensor) -> Tensor:
        """``(B,)`` probability that the galaxy's metallicity is measurable."""
        return torch.sigmoid(self.detect_head(self.encode(x))[:, 0])

    @torch.no_grad()
    def sample_params(self, x: Tensor, n: int) -> Tensor:
        """Joint draws of (core, O/H) by the chain rule.

        Core parameters are drawn first; O/H is then drawn conditioned on those
        *sampled* core values, so its posterior carries their correlations.

        Arguments:
            x: ``(B, n_inputs)`` inputs.
            n: draws per galaxy.
        Returns:
            ``(B, n, n_core + 1)`` in the order of :attr:`params`.
        """
        h = self.encode(x)
        means = self.mean_head(h)
        core_s = self.core_flow(h).sample((n,)) + means[:, :-1]  # (n, B, nc)
        ctx = self._b2_context(h.expand(n, *h.shape), core_s)
        b_s = self.b2_flow(ctx).sample() + means[:, -1:]  # (n, B, 1)
        theta = torch.cat([self._phys("core", core_s), self._phys("b2", b_s)], dim=-1)
        return theta.transpose(0, 1)

    @torch.no_grad()
    def sample_lines(self, x: Tensor, n: int) -> Tensor:
        """``(B, n, 4)`` draws of the line fluxes in log1p space."""
        h = self.encode(x)
        draws = self.line_flow(h).sample((n,)) + self.line_mean_head(h)
        return self._phys("line", draws).transpose(0, 1)

    @torch.no_grad()
    def log_prob_params(self, x: Tensor, theta: Tensor) -> Tensor:
        """Exact ``log p(core, O/H | x) = log p(core | x) + log p(O/H | core, x)``.

        Includes the Jacobian of the standardisation, so the density is per unit of
        each physical parameter.

        Arguments:
            x: ``(B, n_inputs)``.
            theta: ``(B, D)`` or ``(B, n, D)`` in the order of :attr:`params`.
        Returns:
            ``(B,)`` or ``(B, n)``.
        """
        single = theta.ndim == 2
        th = theta[:, None] if single else theta  # (B, n, D)
        h = self.encode(x)
        means = self.mean_head(h)
        B, n, _ = th.shape
        core_s = self._std("core", th[..., :-1]).transpose(0, 1)  # (n, B, nc)
        b_s = self._std("b2", th[..., -1:]).transpose(0, 1)
        hh = h.expand(n, *h.shape)
        lp = self.core_flow(h).log_prob(core_s - means[:, :-1]) + self.b2_flow(self._b2_context(hh, core_s)).log_prob(b_s - means[:, -1:])
        lp = lp - self.core_std.log().sum() - self.b2_std.log().sum()
        lp = lp.transpose(0, 1)
        return lp[:, 0] if single else lp

    @torch.no_grad()
    def log_prob_lines(self, x: Tensor, lines_log1p: Tensor) -> Tensor:
        """``(B,)`` log-density of line fluxes per unit of log1p flux; ``lines_log1p: (B, 4)``."""
        h = self.encode(x)
        r = self._std("line", lines_log1p) - self.line_mean_head(h)
        return self.line_flow(h).log_prob(r) - self.line_std.log().sum()

    def _target_order(self) -> list[int]:
        if sorted(self.params) != sorted(TARGETS):
            raise ValueError(f"this model infers {self.params}, not the five TARGETS {TARGETS}; build it with core=CFM_CORE")
        return [self.params.index(t) for t in TARGETS]

    def sample_targets(self, x: Tensor, n: int) -> Tensor:
        """``(B, n, 5)`` posterior draws in ``TARGETS`` order (five-target variant only)."""
        return self.sample_params(x, n)[..., self._target_order()]

    def log_prob_targets(self, x: Tensor, theta: Tensor) -> Tensor:
        """``log p(θ | x)`` for ``theta: (B, 5)`` or ``(B, n, 5)`` in ``TARGETS`` order."""
        inverse = np.argsort(self._target_order())
        return self.log_prob_params(x, theta[..., inverse])

    # -- checkpoints ---------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {"config": dict(self.config), "state": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: str = "checkpoint") -> "VAENF":
        try:
            model = cls(**ckpt["config"])
            model.load_state_dict(ckpt["state"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{source}: does not hold a VAENF of the expected architecture ({err})") from err
        return model.eval()


def _tensors(data: VAENFData, model: VAENF, device: str) -> dict[str, Tensor]:
    def f(a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.array(a, np.float32), device=device)

    with torch.no_grad():
        out = {
            "x": model._std("x", f(data.x)),
            "core": model._std("core", f(data.core)),
            "b2": model._std("b2", f(data.b2)[:, None]),
            "det": torch.as_tensor(np.array(data.detectable, bool), device=device),
        }
        if model.config["lines"]:
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


def _fit(model: VAENF, train: VAENFData, val: VAENFData, epochs: int, batch_size: int, lr: float, seed: int, device: str) -> pd.DataFrame:
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
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
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
    if workers is None:
        workers = min(len(jobs), os.cpu_count() or 1)
    if device != "cpu" or workers <= 1 or len(jobs) <= 1:
        done = [_fit_member(*job) for job in jobs]
    else:
        # A step of the flow stage is hundreds of small operations, so members gain little
        # from more threads and much from running side by side: at `small` on 2 cores, 1.6 s
        # per member-epoch against 3.2 s in turn. "spawn": a forked child would inherit
        # torch's thread pools.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            done = list(pool.map(_fit_member, *zip(*jobs)))
    models = [VAENF.from_checkpoint(ckpt) for ckpt, _ in done]
    return models, pd.concat([curve for _, curve in done], ignore_index=True)


def _fit_member(train: VAENFData, val: VAENFData, k: int, epochs: int, seed: int, batch_size: int, device: str,
                model_kwargs: dict) -> tuple[dict, pd.DataFrame]:
    """Train ensemble member ``k``; returns its checkpoint and learning curve."""
    torch.manual_seed(seed * 1000 + k)
    model = VAENF(train.x.shape[1], **model_kwargs)
    curve = fit_vaenf(model, train, val, epochs=epochs, batch_size=batch_size, seed=seed * 1000 + k, device=device)
    return model.checkpoint(), curve.assign(member=k)


def save_ensemble(models: Sequence[VAENF], path: str | Path, **extra) -> Path:
    """Write trained models (and e.g. ``vae=vae`` or metadata) to one file atomically."""
    blob = {"format": "galnb-vaenf", "version": CHECKPOINT_VERSION, "members": [m.checkpoint() for m in models]}
    for key, value in extra.items():
        if isinstance(value, VAE):
            value = {"config": dict(value.config), "state": {k: v.detach().cpu() for k, v in value.state_dict().items()}}
        blob[key] = value
    with atomic_write(path) as fh:
        torch.save(blob, fh)
    return Path(path)


def load_ensemble(path: str | Path, **expect) -> tuple[list[VAENF], dict]:
    """Read a file written by :func:`save_ensemble`.

    Arguments:
        path: the checkpoint file.
        expect: config entries the models must have, e.g. ``core=CFM_CORE``.
    Returns:
        the models (eval mode, CPU) and the file's other entries (a saved VAE is rebuilt).
    Raises:
        CheckpointError naming the file if it is missing, of another version or
        architecture.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({err})") from err
    if not isinstance(blob, dict) or blob.get("format") != "galnb-vaenf":
        raise CheckpointError(f"{path}: not a galnb VAE-NF checkpoint")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {blob.get('version')!r}, this galnb reads {CHECKPOINT_VERSION}; retrain (chapter 04)")
    models = [VAENF.from_checkpoint(m, str(path)) for m in blob["members"]]
    for key, want in expect.items():
        got = models[0].config.get(key)
        if (tuple(got) if isinstance(got, (list, tuple)) else got) != (tuple(want) if isinstance(want, (list, tuple)) else want):
            raise CheckpointError(f"{path}: model has {key}={got!r}, expected {want!r}")
    extra = {k: v for k, v in blob.items() if k not in ("format", "version", "members")}
    if isinstance(extra.get("vae"), dict):
        try:
            vae = VAE(**extra["vae"]["config"])
            vae.load_state_dict(extra["vae"]["state"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise CheckpointError(f"{path}: its VAE does not match the expected architecture ({err})") from err
        extra["vae"] = vae.eval().requires_grad_(False)
    return models, extra


# ------------------------------------------------------------------ ensembles


@dataclass
class EnsemblePosterior:
    """Posterior draws of every ensemble member on the same galaxies.

    Attributes:
        params: names of the last axis of ``draws``.
        draws: ``(K, B, n, D)`` joint (core, O/H) draws per member.
        lines: ``(K, B, n, 4)`` line draws in log1p space, or None.
        detect: ``(K, B)`` detectability probabilities.
    """

    params: tuple[str, ...]
    draws: np.ndarray
    lines: np.ndarray | None
    detect: np.ndarray
    line_names: tuple[str, ...] = field(default=())

    def mean(self, lines: bool = False) -> np.ndarray:
        """``(B, D)`` posterior means of the ensemble (mixture)."""
        return (self.lines if lines else self.draws).mean(axis=(0, 2))

    def aleatoric(self, lines: bool = False) -> np.ndarray:
        """``(D,)`` the flow's spread: posterior std per galaxy and member, averaged."""
        return (self.lines if lines else self.draws).std(axis=2).mean(axis=(0, 1))

    def epistemic(self, lines: bool = False) -> np.ndarray:
        """``(D,)`` spread across seeds: std over members of the posterior means, averaged."""
        d = self.lines if lines else self.draws
        return d.mean(axis=2).std(axis=0, ddof=1 if len(d) > 1 else 0).mean(axis=0)


def _chunks(n: int, per: int) -> list[slice]:
    return [slice(i, min(i + per, n)) for i in range(0, n, per)]


def predict(
    models: Sequence[VAENF],
    x: np.ndarray,
    n_draws: int,
    *,
    seed: int = 0,
    chunk: int = 100_000,
    device: str = "cpu",
    threads: int | None = 1,
) -> EnsemblePosterior:
    """Draw ``n_draws`` joint posterior samples per galaxy from each member.

    Arguments:
        models: the ensemble.
        x: ``(B, n_inputs)`` inputs.
        n_draws: draws per galaxy per member.
        seed: sampling seed.
        chunk: at most this many draws held at once (galaxies × n_draws).
        device: where to sample (the models are moved there and back to the CPU).
        threads: CPU threads while sampling (None: torch's default).
    """
    with _threads(threads, device):
        return _predict(models, x, n_draws, seed, chunk, device)


def _predict(models: Sequence[VAENF], x: np.ndarray, n_draws: int, seed: int, chunk: int, device: str) -> EnsemblePosterior:
    torch.manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x, np.float32), device=device)
    per = max(1, chunk // n_draws)
    draws, lines, detect = [], [], []
    for m in models:
        m.to(device).eval()
        parts = _chunks(len(xt), per)
        draws.append(torch.cat([m.sample_params(xt[s], n_draws).cpu() for s in parts]).numpy())
        detect.append(torch.cat([m.detect_prob(xt[s]).cpu() for s in parts]).numpy())
        if m.config["lines"]:
            lines.append(torch.cat([m.sample_lines(xt[s], n_draws).cpu() for s in parts]).numpy())
        m.cpu()
    return EnsemblePosterior(
        models[0].params, np.stack(draws), np.stack(lines) if lines else None, np.stack(detect), models[0].config["lines"]
    )


def r2_score(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: ``1 − SS_res / SS_tot``; ``(N, D)`` → ``(D,)``."""
    true, pred = np.atleast_2d(np.asarray(true, float).T).T, np.atleast_2d(np.asarray(pred, float).T).T
    ss_res = ((true - pred) ** 2).sum(0)
    ss_tot = ((true - true.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / ss_tot


def posterior_npz(
    models: Sequence[VAENF],
    x: np.ndarray,
    theta_true: np.ndarray,
    test_index: np.ndarray,
    n_draws: int,
    path: str | Path,
    *,
    seed: int = 0,
    meta: dict | None = None,
    device: str = "cpu",
    threads: int | None = 1,
) -> dict[str, np.ndarray]:
    """Write the five-target posterior of the ensemble (a uniform mixture of its members).

    Draws: ``n_draws // K`` (rounded up, then cut) from each member. Log-density:
    ``log p(θ|x) = logsumexp_k log p_k(θ|x) − log K``, exact for the mixture.

    Arguments:
        models: five-target VAENF models (``core=CFM_CORE``).
        x: ``(M, n_inputs)``; theta_true: ``(M, 5)`` in TARGETS order; test_index: ``(M,)``.
        n_draws: draws per galaxy; path: the ``.npz`` to write (atomically).
        meta: provenance stored as the ``meta`` entry (``seconds_per_1000_draws`` is added).
        device: where to compute (the models are moved there and back to the CPU).
        threads: CPU threads while sampling (None: torch's default).
    Returns:
        the arrays written: test_index, theta_true, samples (M, n, 5),
        log_prob_true (M,), log_prob_samples (M, n), plus ``columns`` (TARGETS) and ``meta``.
    """
    with _threads(threads, device):
        arrays = _mixture_posterior(models, x, theta_true, n_draws, seed, device)
    arrays = {"test_index": np.asarray(test_index), **arrays, "columns": np.array(TARGETS)}
    arrays["meta"] = np.array(repr({**(meta or {}), "n_ensemble": len(models), "seconds_per_1000_draws": arrays.pop("seconds_per_1000_draws")}))
    with atomic_write(path) as fh:
        np.savez(fh, **arrays)
    return arrays


def _mixture_posterior(models: Sequence[VAENF], x: np.ndarray, theta_true: np.ndarray, n_draws: int, seed: int, device: str) -> dict:
    torch.manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x, np.float32), device=device)
    th = torch.as_tensor(np.asarray(theta_true, np.float32), device=device)
    K, per_member, per = len(models), -(-n_draws // len(models)), max(1, 50_000 // n_draws)

    def mix(theta: Tensor) -> np.ndarray:
        out = []
        for s in _chunks(len(xt), per):
            lp = torch.stack([m.log_prob_targets(xt[s], theta[s]) for m in models])
            out.append(torch.logsumexp(lp, 0) - math.log(K))
        return torch.cat(out).cpu().numpy().astype(np.float64)

    try:
        for m in models:
            m.to(device).eval()
        t0 = time.perf_counter()
        samples = torch.cat([torch.cat([m.sample_targets(xt[s], per_member) for m in models], dim=1)[:, :n_draws]
                             for s in _chunks(len(xt), per)])
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return {
            "theta_true": th.cpu().numpy().astype(np.float64),
            "samples": samples.cpu().numpy().astype(np.float64),
            "log_prob_true": mix(th),
            "log_prob_samples": mix(samples),
            "seconds_per_1000_draws": 1000 * seconds / samples[..., 0].numel(),
        }
    finally:
        for m in models:
            m.cpu()


def confusion_matrix(truth: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """2×2 counts of measured/not measured (rows: true; columns: predicted)."""
    truth, pred = np.asarray(truth, bool), np.asarray(prob) >= threshold
    names = ["not measurable", "measurable"]
    counts = [[int(((truth == t) & (pred == p)).sum()) for p in (False, True)] for t in (False, True)]
    return pd.DataFrame(counts, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))


# ------------------------------------------------------------- interpretability


def latent_directions(latents: np.ndarray, y: np.ndarray, top: int = 3) -> tuple[np.ndarray, np.ndarray, float]:
    """The latent direction most tied to a property, by linear regression.

    Each standardised latent mean is regressed on its own against the standardised
    property (the slope is then the correlation); the ``top`` dimensions with the
    largest absolute slopes form the direction, weighted by their slopes. Ranking the
    joint multiple-regression coefficients instead would favour nearly collapsed,
    collinear dimensions whose large coefficients cancel.

    Arguments:
        latents: ``(N, L)`` latent means; y: ``(N,)`` the property.
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
        latent: ``(L,)`` the galaxy's latent mean; direction: ``(L,)``.
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


# ----------------------------------------------------------- chapter helpers

#: Table 1 of the paper (R², real SDSS): image+photometry+NF and photometry+NF.
PAPER_R2: dict[str, dict[str, float]] = {
    "image+phot+NF": {"z": 0.80, "log_mstar": 0.85, "log_sfr": 0.76, "log_mbh": 0.67, "oh12": 0.76},
    "phot+NF": {"z": 0.72, "log_mstar": 0.80, "log_sfr": 0.75, "log_mbh": 0.62, "oh12": 0.65},
}
#: Emission-line R² of the paper's image model (Balmer lines quoted as 0.79-0.80 together).
PAPER_LINE_R2: dict[str, str] = {"flux_ha": "0.79–0.80", "flux_hb": "0.79–0.80", "flux_nii6584": "0.70", "flux_oiii5007": "0.50"}
#: Table 2 of the paper (validation set; lines in log1p space).
PAPER_SIGMA: dict[str, dict[str, float]] = {
    "aleatoric": {"log_mbh": 0.589, "log_mstar": 0.191, "oh12": 0.134, "log_sfr": 0.327, "z": 0.018,
                  "flux_ha": 0.427, "flux_hb": 0.381, "flux_nii6584": 0.427, "flux_oiii5007": 0.611},
    "epistemic": {"log_mbh": 0.034, "log_mstar": 0.012, "oh12": 0.010, "log_sfr": 0.019, "z": 0.001,
                  "flux_ha": 0.027, "flux_hb": 0.026, "flux_nii6584": 0.027, "flux_oiii5007": 0.045},
}


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
) -> tuple[list[VAENF], pd.DataFrame]:
    """Train an ensemble on the train split (best epoch chosen on the validation split).

    Arguments:
        catalog: the store's catalog; x: ``(N, n_inputs)`` inputs for every row.
        splits: "train"/"val" row indices.
        core, lines: branch-1 parameters and emission lines (``()`` for none).
        b2_all: train metallicity on every galaxy rather than the measurable ones only.
        n_ensemble, epochs, batch_size, seed, device, first_member: as in :func:`fit_ensemble`.
    """
    def part(name: str) -> VAENFData:
        rows = splits[name]
        d = VAENFData.from_catalog(catalog.iloc[rows], x[rows], core=core, lines=lines or None)
        if b2_all:
            d.detectable = np.ones(len(rows), bool)
        return d

    return fit_ensemble(part("train"), part("val"), n_ensemble=n_ensemble, epochs=epochs, seed=seed,
                        batch_size=batch_size, device=device, first_member=first_member, core=tuple(core),
                        lines=tuple(lines or ()))


def r2_table(post: EnsemblePosterior, catalog: pd.DataFrame) -> pd.Series:
    """R² of the ensemble's posterior means against the catalog rows of ``post``.

    Metallicity is scored on the galaxies whose O/H is measurable (``oh_detectable``),
    as it would be on real data; line fluxes in log1p space.
    """
    means = post.mean()
    out = {}
    for j, name in enumerate(post.params):
        keep = catalog["oh_detectable"].to_numpy(bool) if name == "oh12" and "oh_detectable" in catalog else slice(None)
        out[name] = float(r2_score(catalog[name].to_numpy()[keep], means[keep, j])[0])
    if post.lines is not None:
        truth = np.log1p(np.clip(catalog[list(post.line_names)].to_numpy(float), 0, None))
        out.update(zip(post.line_names, r2_score(truth, post.mean(lines=True)).tolist()))
    return pd.Series(out, name="R²")


def uncertainty_table(post: EnsemblePosterior) -> pd.DataFrame:
    """Aleatoric and epistemic σ per quantity (rows), in physical units; lines in log1p."""
    cols = {"aleatoric": post.aleatoric(), "epistemic": post.epistemic()}
    table = pd.DataFrame(cols, index=list(post.params))
    if post.lines is not None:
        table = pd.concat([table, pd.DataFrame({"aleatoric": post.aleatoric(True), "epistemic": post.epistemic(True)},
                                               index=list(post.line_names))])
    return table


def representative_galaxy(catalog: pd.DataFrame, index: np.ndarray, columns: Sequence[str] = ("log_mstar", "log_sfr", "z")) -> int:
    """The row (from ``index``) nearest the sample median in standardised ``columns``."""
    v = catalog[list(columns)].to_numpy(float)
    z = (v - np.median(v, 0)) / v.std(0)
    return int(index[np.argmin((z[index] ** 2).sum(1))])


def perturbation_grid(
    vae: VAE, latents: np.ndarray, catalog: pd.DataFrame, names: Sequence[str], start: np.ndarray, steps: Sequence[float], top: int = 3
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Figure 3 of the paper: decode one galaxy's latent moved along each property's direction.

    Arguments:
        vae: the frozen VAE; latents: ``(N, L)`` latent means of ``catalog``'s rows
        (the regression sample); names: properties; start: ``(L,)`` the latent mean of
        the galaxy to perturb; steps: multiples of the (standardised, unit) direction.
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
    """Reconstructions of cutouts from their latent means, uint8 ``(K, H, H, 3)``."""
    mu, _ = encode_images(vae, images)
    out = vae.decode(torch.as_tensor(mu).to(next(vae.parameters()).device)).cpu().permute(0, 2, 3, 1).numpy()
    return (out * 255).round().clip(0, 255).astype(np.uint8)
