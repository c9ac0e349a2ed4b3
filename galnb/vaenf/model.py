"""The networks of the VAE–NF model: the convolutional VAE, the conditional flow stage, their inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import zuko
from torch import Tensor, nn
from zuko.transforms import MonotonicAffineTransform

from ..properties import LINES, VAENF_CORE

__all__ = ["CFM_CORE", "VAE", "colour_features", "flow_inputs", "VAENFData", "VAENF"]

#: Branch-1 parameters of the variant scored on the CFM paper's five targets (branch 2: oh12).
CFM_CORE: tuple[str, ...] = ("log_mstar", "log_sfr", "dn4000", "av")


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
        >>> VAE.from_config(vae.config()).config() == vae.config()
        True
    """

    def __init__(self, image_size: int = 64, latent: int = 32, channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size={image_size} must be a multiple of 8")
        self.image_size, self.latent = int(image_size), int(latent)
        self.channels = tuple(int(c) for c in channels)
        c1, c2, c3 = self.channels
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

    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable; ``VAE.from_config`` rebuilds the model."""
        return {"image_size": self.image_size, "latent": self.latent, "channels": list(self.channels)}

    @classmethod
    def from_config(cls, config: dict) -> "VAE":
        """A fresh (untrained) VAE from ``config()``'s output."""
        return cls(**config)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: (B, 3, H, H)`` in [0, 1] → latent mean and log-variance, each ``(B, latent)``."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h).clamp(-12.0, 8.0)

    def decode(self, z: Tensor) -> Tensor:
        """``z: (B, latent)`` → images ``(B, 3, H, H)`` in [0, 1]."""
        return self.decoder(self.fc_dec(z))

    def loss(self, x: Tensor, beta: float = 1.0, reconstruction: str = "sum") -> tuple[Tensor, Tensor, Tensor]:
        """Squared reconstruction error + β·KL to N(0, I), per image.

        Arguments:
            x: ``(B, 3, H, H)`` images in [0, 1].
            beta: weight of the KL term.
            reconstruction: ``"sum"``, the squared error summed over each image's pixels (with
                β = 1 the negative ELBO of a Gaussian decoder of fixed variance), or ``"mean"``,
                averaged over them, which weighs the KL term 3·H² times more.
        Returns:
            (total, reconstruction, KL), each a scalar averaged over the batch.
        """
        if reconstruction not in ("sum", "mean"):
            raise ValueError(f"reconstruction={reconstruction!r} is not valid; choose 'sum' or 'mean'")
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        error = (self.decode(z) - x).square().flatten(1)
        recon = (error.sum(1) if reconstruction == "sum" else error.mean(1)).mean()
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()
        return recon + beta * kl, recon, kl


# ------------------------------------------------------------------ inputs


def colour_features(catalog: pd.DataFrame) -> np.ndarray:
    """The paper's photometric inputs: u−g, g−r, r−i, i−z and r, ``(N, 5)`` float32."""
    m = catalog[["mag_u", "mag_g", "mag_r", "mag_i", "mag_z"]].to_numpy(dtype=np.float32)
    return np.column_stack([m[:, 0] - m[:, 1], m[:, 1] - m[:, 2], m[:, 2] - m[:, 3], m[:, 3] - m[:, 4], m[:, 2]])


def flow_inputs(catalog: pd.DataFrame, latents: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Inputs of the flow stage.

    Arguments:
        catalog: N rows with the five magnitudes.
        latents: the VAE's ``(mu (N, L), sigma (N, L))``, or None for the photometry-only variant.
    Returns:
        ``(N, 2L + 5)`` float32 ``[mu, sigma, colours (4), r]``, or ``(N, 5)`` without latents.
    """
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
        cls, catalog: pd.DataFrame, x: np.ndarray, core: Sequence[str] = VAENF_CORE, b2: str = "oh12",
        lines: Sequence[str] | None = LINES,
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
    """Linear layers of widths ``hidden`` with ReLUs between them, then a linear output layer."""
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
        log_scale_bound: bound b on each coupling's log-scale, |log s| < b, soft-clipped as zuko
            does. zuko's default, log 1000 ≈ 6.9, lets a coupling divide by up to 1000 in the
            sampling direction, and twelve of them let a rare draw run away by orders of
            magnitude though the validation loss (the density direction) never shows it; 2 is
            the soft clamp of Ardizzone et al. (2019) and FrEIA's coupling blocks.

    Every public method takes and returns physical units; line fluxes are in
    log1p space (``log(1 + F)``), as in the paper. :meth:`sample` and :meth:`log_prob`
    make a member a :class:`galnb.evaluation.PosteriorEstimator` over :attr:`params`
    (the ensemble's is :class:`galnb.vaenf.EnsembleMixture`).

    Example:
        >>> m = VAENF(5, lines=())
        >>> m.sample(torch.randn(3, 5), 7).shape
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
        log_scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        core, lines = tuple(core), tuple(lines or ())
        if len(core) < 2:
            raise ValueError("branch 1 needs at least two core parameters (RealNVP couples halves)")
        self.n_inputs, self.core, self.b2, self.lines = int(n_inputs), core, str(b2), lines
        self.hidden, self.transforms = int(hidden), int(transforms)
        self.flow_hidden = tuple(int(h) for h in flow_hidden)
        self.log_scale_bound = float(log_scale_bound)
        coupling = {"transforms": transforms, "hidden_features": flow_hidden,
                    "univariate": partial(MonotonicAffineTransform, slope=math.exp(-self.log_scale_bound))}
        nc, nl = len(core), len(lines)
        for name, width in (("x", n_inputs), ("core", nc), ("b2", 1), ("line", max(nl, 1))):
            self.register_buffer(f"{name}_mean", torch.zeros(width))
            self.register_buffer(f"{name}_std", torch.ones(width))
        self.encoder = nn.Sequential(_mlp(n_inputs, hidden, (hidden,)), nn.ReLU())
        self.mean_head = _mlp(hidden, nc + 1, (128,))  # means of the core parameters and of O/H
        self.detect_head = _mlp(hidden, 1, (64,))  # logit of "O/H measured"
        self.core_flow = zuko.flows.RealNVP(nc, hidden, **coupling)
        # features=1 makes zuko build one conditional element-wise affine map: a 1-D affine flow.
        self.b2_flow = zuko.flows.RealNVP(1, hidden + nc, **{**coupling, "transforms": 1})
        if nl:
            self.line_mean_head = _mlp(hidden, nl, (128,))
            self.line_flow = zuko.flows.RealNVP(nl, hidden, **coupling)

    # -- construction -------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable; ``VAENF.from_config`` rebuilds the model."""
        return {
            "n_inputs": self.n_inputs, "core": list(self.core), "b2": self.b2, "lines": list(self.lines),
            "hidden": self.hidden, "transforms": self.transforms, "flow_hidden": list(self.flow_hidden),
            "log_scale_bound": self.log_scale_bound,
        }

    @classmethod
    def from_config(cls, config: dict) -> "VAENF":
        """A fresh (untrained) model from ``config()``'s output.

        A config without ``log_scale_bound`` comes from a checkpoint trained with zuko's bound."""
        return cls(**{"log_scale_bound": math.log(1e3), **config})

    # -- standardisation -------------------------------------------------------
    @property
    def params(self) -> tuple[str, ...]:
        """Names of the joint posterior's dimensions: core parameters, then branch 2."""
        return (*self.core, self.b2)

    def set_standardisation(self, data: VAENFData) -> None:
        """Store mean/std of the training inputs and targets as buffers."""
        def put(name: str, a: np.ndarray) -> None:
            a = torch.as_tensor(np.asarray(a, np.float64).reshape(len(a), -1))
            getattr(self, f"{name}_mean").copy_(a.mean(0))
            getattr(self, f"{name}_std").copy_(a.std(0, unbiased=False).clamp_min(1e-6))

        put("x", data.x)
        put("core", data.core)
        put("b2", data.b2[data.detectable] if data.detectable.any() else data.b2)
        if self.lines:
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
        """Every training term on a batch of standardised tensors (see :func:`galnb.vaenf.fit_vaenf`).

        Branch 1's mean MLP is trained by MSE and the flow on residuals about the
        (detached) means; branch 2 conditions on the *true* core parameters and
        trains only on galaxies with ``detectable``.

        Arguments:
            batch: ``x (B, n_inputs)``, ``core (B, n_core)``, ``b2 (B, 1)``, ``det (B,)`` bool
                and, with a line branch, ``lines (B, 4)``, all standardised.
        Returns:
            scalar terms by name (``mse``, ``nll_core``, ``bce``, and ``mse_b2``, ``nll_b2``,
            ``mse_lines``, ``nll_lines`` where they apply).
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
        if self.lines:
            mu_l = self.line_mean_head(h)
            out["mse_lines"] = (mu_l - batch["lines"]).square().mean()
            out["nll_lines"] = -self.line_flow(h).log_prob(batch["lines"] - mu_l.detach()).mean()
        return out

    # -- inference (physical units) ----------------------------------------------
    @torch.no_grad()
    def detect_prob(self, x: Tensor) -> Tensor:
        """``x: (B, n_inputs)`` → ``(B,)`` probability that the galaxy's metallicity is measurable."""
        return torch.sigmoid(self.detect_head(self.encode(x))[:, 0])

    @torch.no_grad()
    def predict_mean(self, cond: Tensor) -> Tensor:
        """The mean head alone, a deterministic regression: ``(B, n_inputs)`` → ``(B, n_core + 1)``
        in the order of :attr:`params`, physical units."""
        means = self.mean_head(self.encode(cond))
        return torch.cat([self._phys("core", means[:, :-1]), self._phys("b2", means[:, -1:])], dim=-1)

    @torch.no_grad()
    def sample(self, cond: Tensor, n: int) -> Tensor:
        """Joint draws of (core, O/H) by the chain rule.

        Core parameters are drawn first; O/H is then drawn conditioned on those
        *sampled* core values, so its posterior carries their correlations.

        Arguments:
            cond: ``(B, n_inputs)`` inputs.
            n: draws per galaxy.
        Returns:
            ``(B, n, n_core + 1)`` in the order of :attr:`params`.
        """
        h = self.encode(cond)
        means = self.mean_head(h)
        core_s = self.core_flow(h).sample((n,)) + means[:, :-1]  # (n, B, nc)
        ctx = self._b2_context(h.expand(n, *h.shape), core_s)
        b_s = self.b2_flow(ctx).sample() + means[:, -1:]  # (n, B, 1)
        theta = torch.cat([self._phys("core", core_s), self._phys("b2", b_s)], dim=-1)
        return theta.transpose(0, 1)

    @torch.no_grad()
    def sample_lines(self, cond: Tensor, n: int) -> Tensor:
        """Draws of the line fluxes in log1p space.

        Arguments:
            cond: ``(B, n_inputs)`` inputs.
            n: draws per galaxy.
        Returns:
            ``(B, n, 4)`` in the order of :attr:`lines`.
        """
        h = self.encode(cond)
        draws = self.line_flow(h).sample((n,)) + self.line_mean_head(h)
        return self._phys("line", draws).transpose(0, 1)

    @torch.no_grad()
    def log_prob(self, theta: Tensor, cond: Tensor) -> Tensor:
        """Exact ``log p(core, O/H | x) = log p(core | x) + log p(O/H | core, x)``.

        Includes the Jacobian of the standardisation, so the density is per unit of
        each physical parameter.

        Arguments:
            theta: ``(B, D)`` or ``(B, n, D)`` in the order of :attr:`params`.
            cond: ``(B, n_inputs)`` inputs.
        Returns:
            ``(B,)`` or ``(B, n)``.
        """
        single = theta.ndim == 2
        th = theta[:, None] if single else theta  # (B, n, D)
        h = self.encode(cond)
        means = self.mean_head(h)
        B, n, _ = th.shape
        core_s = self._std("core", th[..., :-1]).transpose(0, 1)  # (n, B, nc)
        b_s = self._std("b2", th[..., -1:]).transpose(0, 1)
        hh = h.expand(n, *h.shape)
        lp = (self.core_flow(h).log_prob(core_s - means[:, :-1])
              + self.b2_flow(self._b2_context(hh, core_s)).log_prob(b_s - means[:, -1:]))
        lp = lp - self.core_std.log().sum() - self.b2_std.log().sum()
        lp = lp.transpose(0, 1)
        return lp[:, 0] if single else lp
