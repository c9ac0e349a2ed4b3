"""Conditional flow matching: probability path, loss, ODE sampler and exact log-density."""

from __future__ import annotations

import math
from typing import Callable, Iterator, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fast_velocity import ACTIVATIONS, FoldedVelocity, chunk_rows

__all__ = ["CFM", "VelocityMLP", "ImageEncoder", "ENCODER_NORMS", "Cond", "METHODS", "odeint"]

#: A condition: photometry ``(B, cond_dim)``, or ``(images (B, 3, H, W), phot (B, cond_dim))``
#: for a model with an image encoder.
Cond = Union[Tensor, tuple[Tensor, Tensor]]
#: Normalisation inside the image encoder's blocks: none (the paper) or group normalisation.
ENCODER_NORMS: tuple[str, ...] = ("none", "group")

_REFS = "Yunus, Wu & Holwerda (2025), arXiv:2512.05078; Lipman et al. (2023), arXiv:2210.02747"

# Explicit fixed-step Runge-Kutta tableaus: (a (stage coefficients), b (weights), c (stage times)).
_TABLEAUS: dict[str, tuple[tuple[tuple[float, ...], ...], tuple[float, ...], tuple[float, ...]]] = {
    "euler": ((), (1.0,), (0.0,)),
    "midpoint": (((0.5,),), (0.0, 1.0), (0.0, 0.5)),
    "heun": (((1.0,),), (0.5, 0.5), (0.0, 1.0)),
    "rk4": (((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6), (0.0, 0.5, 0.5, 1.0)),
}
#: Fixed-step ODE solvers and their network evaluations per step.
METHODS: dict[str, int] = {name: len(tab[1]) for name, tab in _TABLEAUS.items()}


def odeint(
    f: Callable[[float, Tensor], tuple[Tensor, Tensor | None]],
    y: Tensor,
    t0: float,
    t1: float,
    steps: int,
    method: str = "rk4",
) -> tuple[Tensor, Tensor | None]:
    """Integrate ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` with a fixed-step Runge-Kutta method.

    ``f`` returns ``(dy/dt, g)`` where ``g`` (or None) is a quantity whose time integral is
    accumulated alongside with the same quadrature weights (the divergence, for log-densities).

    Arguments:
        f: ``f(t, y) -> (dy (*, D), g (*,) or None)``.
        y: initial state ``(*, D)``.
        t0, t1: start and end times (``t1 < t0`` integrates backwards).
        steps: number of steps.
        method: one of ``METHODS`` ("euler", "midpoint", "heun", "rk4").
    Returns:
        ``(y(t1) (*, D), integral of g from t0 to t1 (*,) or None)``.
    """
    if method not in _TABLEAUS:
        raise ValueError(f"method={method!r}; choose one of {', '.join(_TABLEAUS)}")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    a, b, c = _TABLEAUS[method]
    h = (t1 - t0) / steps
    acc: Tensor | None = None
    for i in range(steps):
        t = t0 + i * h
        ks: list[Tensor] = []
        gs: list[Tensor | None] = []
        for s in range(len(b)):
            ys = y
            if s > 0:
                ys = y.clone()
                for coef, k in zip(a[s - 1], ks):
                    if coef:
                        ys.add_(k, alpha=coef * h)
            k, g = f(t + c[s] * h, ys)
            ks.append(k)
            gs.append(g)
        y = y.clone()
        for w, k, g in zip(b, ks, gs):
            if w:
                y.add_(k, alpha=w * h)
                if g is not None:
                    acc = g * (w * h) if acc is None else acc.add_(g, alpha=w * h)
    return y, acc


class VelocityMLP(nn.Module):
    r"""The velocity network :math:`v_\phi(t, \theta, c)`: an MLP on ``[t; theta; c]``.

    ``depth`` hidden layers of width ``hidden`` with a smooth activation, then a linear
    output of size ``theta_dim``. ``forward`` is the plain network (used for training).
    For ODE integration the context's contribution to the first layer, ``W_c c + b``, is
    constant over time steps, so it is computed once per object (``context_bias``), and
    ``folded(rows)`` gives the same network laid out for thousands of calls
    (:mod:`galnb.fast_velocity`).

    Arguments:
        theta_dim: D, the dimension of theta.
        context_dim: E, the dimension of the context c.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        activation: "silu" (default), "tanh" or "softplus" (smooth, so the ODE is well posed).
    """

    def __init__(self, theta_dim: int, context_dim: int, hidden: int = 256, depth: int = 3, activation: str = "silu"):
        super().__init__()
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.theta_dim, self.context_dim = theta_dim, context_dim
        self.activation = activation
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self._act = ACTIVATIONS[activation].function
        dims = [1 + theta_dim + context_dim] + [hidden] * depth + [theta_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, t: Tensor, theta: Tensor, context: Tensor) -> Tensor:
        """Velocity at ``(t, theta)`` given the context.

        Arguments:
            t: (N,) or (N, 1) times in [0, 1].
            theta: (N, D).
            context: (N, E).
        Returns:
            (N, D) velocities.
        """
        x = torch.cat([t.reshape(-1, 1).to(theta), theta, context], dim=-1)
        for layer in self.layers[:-1]:
            x = self._act(layer(x))
        return self.layers[-1](x)

    def context_bias(self, context: Tensor) -> Tensor:
        """``W_c c + b`` of the first layer, computed once per object.

        Arguments:
            context: (B, E).
        Returns:
            (B, hidden).
        """
        first = self.layers[0]
        return F.linear(context, first.weight[:, 1 + self.theta_dim :], first.bias)

    def folded(self, rows: int) -> "FoldedVelocity":
        """This network laid out for an ODE solve over at most ``rows`` draws at a time
        (:class:`galnb.fast_velocity.FoldedVelocity`; its weights are a copy)."""
        return FoldedVelocity(self, rows)


class ImageEncoder(nn.Module):
    """CNN image encoder: four stride-1 conv blocks (3x3 conv, activation, 2x2 average
    pooling), then global average pooling to a ``channels[-1]``-D vector f_img.

    Works for any image side >= 16 px (each block halves it).

    Arguments:
        in_channels: image channels (3 for gri).
        channels: output channels of the four blocks; the last is the size of f_img.
        norm: ``"none"`` (the paper's blocks) or ``"group"``: group normalisation (8 groups, or
            fewer where a block's channels do not divide by 8) after each convolution.
    References:
        Yunus, Wu & Holwerda (2025), arXiv:2512.05078, Sec. 2 (Architectures).
        Wu & He (2018), arXiv:1803.08494 (group normalisation).
    Example:
        >>> enc = ImageEncoder()
        >>> enc(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 256])
    """

    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (32, 64, 128, 256), norm: str = "none"):
        super().__init__()
        if norm not in ENCODER_NORMS:
            raise ValueError(f"norm={norm!r} is not valid; choose one of {ENCODER_NORMS}")
        self.in_channels, self.channels, self.norm = in_channels, tuple(channels), norm
        blocks: list[nn.Module] = []
        c_in = in_channels
        for c_out in self.channels:
            normalise = [nn.GroupNorm(math.gcd(8, c_out), c_out)] if norm == "group" else []
            blocks += [nn.Conv2d(c_in, c_out, 3, stride=1, padding=1), *normalise, nn.SiLU(), nn.AvgPool2d(2)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = c_in

    def forward(self, images: Tensor) -> Tensor:
        """Arguments: images (B, C, H, W) float. Returns: f_img (B, out_dim)."""
        if min(images.shape[-2:]) < 2 ** len(self.channels):
            raise ValueError(
                f"images of {tuple(images.shape[-2:])} px are too small; need >= {2 ** len(self.channels)} px"
            )
        return self.blocks(images).mean(dim=(-2, -1))

    def config(self) -> dict:
        """Constructor arguments (for checkpoints)."""
        return {"in_channels": self.in_channels, "channels": list(self.channels), "norm": self.norm}


class CFM(nn.Module):
    r"""Conditional flow matching posterior estimator :math:`q_\phi(\theta \mid c)`.

    Training path :math:`\theta_t = (1-t)\theta_0 + t\theta_1 + \sigma\epsilon` with
    :math:`\theta_0, \epsilon \sim \mathcal N(0, I)`, :math:`t \sim \mathcal U(0, 1)`; MSE to
    the target velocity :math:`\theta_1 - \theta_0`. Samples by integrating
    :math:`\dot\theta = v_\phi(t, \theta, c)` from t = 0 to 1; exact log-density by the
    instantaneous change of variables. Unit-agnostic: the caller standardises theta and
    the conditions.

    Arguments:
        theta_dim: D, the number of inferred properties.
        cond_dim: the photometry dimension (5 for ugriz).
        hidden: width of the velocity MLP.
        depth: number of hidden layers of the velocity MLP.
        sigma: width of the probability path.
        encoder: optional image encoder (e.g. ``ImageEncoder()``) with an ``out_dim``
            attribute; then cond is ``(images (B, 3, H, W), phot (B, cond_dim))`` and the
            MLP sees ``[t; theta; f_img; f_phot]``.
        activation: activation of the velocity MLP.
    References:
        Yunus, Wu & Holwerda (2025), arXiv:2512.05078; Lipman et al. (2023), arXiv:2210.02747;
        Tong et al. (2024), arXiv:2302.00482; Chen et al. (2018), arXiv:1806.07366.
    Example:
        >>> model = CFM(theta_dim=5, cond_dim=5)
        >>> c = torch.zeros(3, 5)
        >>> model.loss(torch.zeros(3, 5), c).shape
        torch.Size([])
        >>> model.sample(c, n=10, steps=4).shape
        torch.Size([3, 10, 5])
        >>> model.log_prob(torch.zeros(3, 5), c, steps=4).shape
        torch.Size([3])
    """

    def __init__(
        self,
        theta_dim: int,
        cond_dim: int,
        hidden: int = 256,
        depth: int = 3,
        sigma: float = 0.05,
        encoder: nn.Module | None = None,
        activation: str = "silu",
    ):
        super().__init__()
        self.theta_dim, self.cond_dim = theta_dim, cond_dim
        self.hidden, self.depth, self.sigma, self.activation = hidden, depth, float(sigma), activation
        self.encoder = encoder
        enc_dim = 0 if encoder is None else int(encoder.out_dim)
        self.context_dim = enc_dim + cond_dim
        self.net = VelocityMLP(theta_dim, self.context_dim, hidden, depth, activation)

    # -- construction -------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable; ``CFM.from_config`` rebuilds the model."""
        enc = None
        if self.encoder is not None:
            enc = {"type": type(self.encoder).__name__, **self.encoder.config()}
        return {
            "theta_dim": self.theta_dim, "cond_dim": self.cond_dim, "hidden": self.hidden, "depth": self.depth,
            "sigma": self.sigma, "encoder": enc, "activation": self.activation,
        }

    @classmethod
    def from_config(cls, config: dict) -> "CFM":
        """A fresh (untrained) model from ``config()``'s output."""
        config = dict(config)
        enc = config.pop("encoder", None)
        if enc is not None:
            enc = dict(enc)
            kind = enc.pop("type", "ImageEncoder")
            if kind != "ImageEncoder":
                raise ValueError(f"unknown encoder type {kind!r}")
            enc = ImageEncoder(**enc)
        return cls(**config, encoder=enc)

    # -- conditions -----------------------------------------------------------------------
    @property
    def _param(self) -> Tensor:
        return self.net.layers[0].weight

    def _cond_len(self, cond: Cond) -> int:
        return (cond[1] if isinstance(cond, (tuple, list)) else cond).shape[0]

    @staticmethod
    def _cond_slice(cond: Cond, sl: slice) -> Cond:
        return tuple(c[sl] for c in cond) if isinstance(cond, (tuple, list)) else cond[sl]

    def encode(self, cond: Cond, batch: int | None = None) -> Tensor:
        """The context c, computed once per object.

        Arguments:
            cond: phot (B, cond_dim), or (images (B, 3, H, W), phot (B, cond_dim)) with an encoder.
            batch: at most this many objects through the encoder at once (default: all).
        Returns:
            (B, E): phot itself, or ``[f_img; f_phot]`` (E = 256 + cond_dim by default).
        """
        n = self._cond_len(cond)
        if batch is not None and n > batch:
            return torch.cat([self.encode(self._cond_slice(cond, slice(i, i + batch))) for i in range(0, n, batch)])
        p = self._param
        if self.encoder is None:
            if isinstance(cond, (tuple, list)):
                raise TypeError("this model has no image encoder: pass cond as a (B, cond_dim) tensor")
            return cond.to(p)
        if not isinstance(cond, (tuple, list)) or len(cond) != 2:
            raise TypeError("this model has an image encoder: pass cond as (images, phot)")
        images, phot = cond
        return torch.cat([self.encoder(images.to(p)), phot.to(p)], dim=-1)

    # -- training -------------------------------------------------------------------------
    def loss(self, theta: Tensor, cond: Cond, generator: torch.Generator | None = None) -> Tensor:
        """Conditional flow matching loss on a batch.

        Arguments:
            theta: (B, D) targets theta_1 (standardised).
            cond: the batch's conditions (see ``encode``).
            generator: optional RNG for t, theta_0 and epsilon.
        Returns:
            scalar: mean squared error between v(t, theta_t, c) and theta_1 - theta_0.
        """
        theta1 = theta.to(self._param)
        context = self.encode(cond)
        kw = {"device": theta1.device, "dtype": theta1.dtype, "generator": generator}
        theta0 = torch.randn(theta1.shape, **kw)
        eps = torch.randn(theta1.shape, **kw)
        t = torch.rand(theta1.shape[0], 1, **kw)
        theta_t = (1 - t) * theta0 + t * theta1 + self.sigma * eps
        return F.mse_loss(self.net(t, theta_t, context), theta1 - theta0)

    def velocity(self, t: float | Tensor, theta: Tensor, cond: Cond) -> Tensor:
        """The whole network at one time: ``v(t, theta, encode(cond))`` (no caching).

        Arguments:
            t: scalar or (B,).
            theta: (B, D).
            cond: conditions of the B rows.
        Returns:
            (B, D).
        """
        t = torch.as_tensor(t, dtype=theta.dtype, device=theta.device).expand(theta.shape[0])
        return self.net(t, theta, self.encode(cond))

    # -- inference ------------------------------------------------------------------------
    def _biases(self, cond: Cond, encode_batch: int) -> Tensor:
        return self.net.context_bias(self.encode(cond, encode_batch))

    def _chunks(self, cond: Cond, rows_per_object: int, max_rows: int | None, encode_batch: int, tangents: int = 0
                ) -> Iterator[tuple[slice, Tensor, FoldedVelocity]]:
        """Chunks of whole objects: (slice, their first-layer context biases, the velocity).

        The velocity (``FoldedVelocity``) is built once, for the first chunk, which is the largest.
        """
        if max_rows is None:
            max_rows = chunk_rows(self._param.is_cuda, tangents)
        b = self._cond_len(cond)
        step = max(1, max_rows // max(1, rows_per_object))
        velocity = None
        for i in range(0, b, step):
            sl = slice(i, min(b, i + step))
            bias = self._biases(self._cond_slice(cond, sl), encode_batch)
            if velocity is None:
                velocity = self.net.folded(bias.shape[0] * rows_per_object)
            yield sl, bias, velocity

    @torch.no_grad()
    def sample(
        self,
        cond: Cond,
        n: int,
        steps: int = 100,
        method: str = "rk4",
        generator: torch.Generator | None = None,
        max_rows: int | None = None,
        encode_batch: int = 256,
    ) -> Tensor:
        """Posterior draws for many objects by integrating the ODE from t = 0 to 1.

        All draws of a chunk of objects go through the MLP together, one call per solver
        stage; the context is encoded once per object and its first-layer contribution
        precomputed; the MLP runs as a ``FoldedVelocity``.

        Arguments:
            cond: B objects' conditions (see ``encode``).
            n: draws per object.
            steps: solver steps.
            method: "euler", "midpoint", "heun" or "rk4".
            generator: optional RNG for the base draws (same seed, same draws).
            max_rows: about this many draws (objects x n) integrated at once (whole objects,
                at least one); default 2048 on CPU (cache-sized), 262144 on a GPU.
            encode_batch: at most this many images through the encoder at once.
        Returns:
            (B, n, D) draws, in the units the model was trained in.
        """
        out = []
        p = self._param
        for _, bias, velocity in self._chunks(cond, n, max_rows, encode_batch):
            theta0 = torch.randn(bias.shape[0], n, self.theta_dim, device=p.device, dtype=p.dtype, generator=generator)
            y, _ = odeint(lambda t, y: (velocity(t, y, bias), None), theta0, 0.0, 1.0, steps, method)
            out.append(y)
        return torch.cat(out)

    @torch.no_grad()
    def trajectory(
        self,
        cond: Cond,
        n: int,
        steps: int = 100,
        method: str = "rk4",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Whole ODE paths of n draws for each object (for pictures; keep B * n small).

        Arguments: as ``sample``.
        Returns:
            (steps + 1, B, n, D): the state at t = 0, 1/steps, ..., 1.
        """
        p = self._param
        bias = self._biases(cond, 256)
        y = torch.randn(bias.shape[0], n, self.theta_dim, device=p.device, dtype=p.dtype, generator=generator)
        path, velocity = [y], self.net.folded(y.shape[0] * n)
        for i in range(steps):
            y, _ = odeint(lambda t, z: (velocity(t, z, bias), None), y, i / steps, (i + 1) / steps, 1, method)
            path.append(y)
        return torch.stack(path)

    def _base_log_prob(self, theta0: Tensor) -> Tensor:
        return -0.5 * theta0.pow(2).sum(-1) - 0.5 * self.theta_dim * math.log(2 * math.pi)

    @torch.no_grad()
    def log_prob(
        self,
        theta: Tensor,
        cond: Cond,
        steps: int = 100,
        method: str = "rk4",
        max_rows: int | None = None,
        encode_batch: int = 256,
    ) -> Tensor:
        r"""Exact log-density :math:`\log q(\theta \mid c)` by the instantaneous change of variables.

        Integrates :math:`\dot\theta = v` backwards from t = 1 (theta) to t = 0 while
        accumulating the exact divergence: :math:`\log q_1(\theta_1) = \log \mathcal N(\theta_0; 0, I)
        - \int_0^1 \nabla\cdot v\, dt`.

        Arguments:
            theta: (B, D) one point per object, or (B, n, D) n points per object.
            cond: B objects' conditions.
            steps, method: the solver (as in ``sample``).
            max_rows: about this many points integrated at once; default 4096 / (1 + D) on
                CPU, 262144 / (1 + D) on a GPU.
            encode_batch: at most this many images through the encoder at once.
        Returns:
            (B,) or (B, n) log-densities (in the model's standardised units).
        References:
            Chen et al. (2018), arXiv:1806.07366; Grathwohl et al. (2019), arXiv:1810.01367.
        """
        single = theta.dim() == 2
        theta = (theta.unsqueeze(1) if single else theta).to(self._param)
        out = []
        for sl, bias, velocity in self._chunks(cond, theta.shape[1], max_rows, encode_batch, tangents=self.theta_dim):
            y0, delta = odeint(lambda t, y: velocity.with_divergence(t, y, bias), theta[sl], 1.0, 0.0, steps, method)
            out.append(self._base_log_prob(y0) + delta)
        lp = torch.cat(out)
        return lp.squeeze(1) if single else lp

    @torch.no_grad()
    def sample_and_log_prob(
        self,
        cond: Cond,
        n: int,
        steps: int = 100,
        method: str = "rk4",
        generator: torch.Generator | None = None,
        max_rows: int | None = None,
        encode_batch: int = 256,
    ) -> tuple[Tensor, Tensor]:
        """Draws and their log-densities in one forward pass (divergence tracked from t = 0 to 1).

        About the cost of ``sample`` followed by ``log_prob`` (each step carries D tangent
        vectors), in one call; useful for entropies and KL divergences estimated from the
        model's own draws.

        Arguments: as ``sample``.
        Returns:
            draws (B, n, D) and log-densities (B, n).
        """
        draws, lps = [], []
        p = self._param
        for _, bias, velocity in self._chunks(cond, n, max_rows, encode_batch, tangents=self.theta_dim):
            theta0 = torch.randn(bias.shape[0], n, self.theta_dim, device=p.device, dtype=p.dtype, generator=generator)
            y1, delta = odeint(lambda t, y: velocity.with_divergence(t, y, bias), theta0, 0.0, 1.0, steps, method)
            draws.append(y1)
            lps.append(self._base_log_prob(theta0) - delta)
        return torch.cat(draws), torch.cat(lps)
