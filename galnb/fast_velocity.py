"""The CFM sampler's engine: the velocity MLP laid out for ODE solves, and how many draws go through it at once.

:mod:`galnb.cfm` holds the method as the paper writes it; this module holds what makes its
sampler and exact log-density fast on a CPU (benchmarks/bench_cfm.py measures it, and its
record is ``benchmarks/results/cfm.json``). Nothing here changes a number: the folded network
gives the same velocities as the plain one to float rounding (tests/test_cfm.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .cfm import VelocityMLP

__all__ = ["Activation", "ACTIVATIONS", "FoldedVelocity", "chunk_rows"]


def _dsilu(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


class Activation(NamedTuple):
    """A smooth activation: the function, its in-place version (for the no-grad sampler) and its derivative."""

    function: Callable[[Tensor], Tensor]
    in_place: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]


ACTIVATIONS: dict[str, Activation] = {
    "silu": Activation(F.silu, lambda z: F.silu(z, inplace=True), _dsilu),
    "tanh": Activation(torch.tanh, torch.tanh_, lambda z: 1 - torch.tanh(z) ** 2),
    "softplus": Activation(F.softplus, lambda z: z.copy_(F.softplus(z)), torch.sigmoid),
}


def chunk_rows(on_gpu: bool, tangents: int = 0) -> int:
    """How many draws (objects x draws per object) to integrate at once by default.

    On a CPU, chunks whose activations stay in cache (``benchmarks/bench_cfm.py`` chose the
    sizes); on a GPU, large ones. A log-density carries ``tangents`` (D) tangent vectors per
    draw, so it takes proportionally fewer draws.

    Example:
        >>> chunk_rows(False), chunk_rows(False, tangents=5), chunk_rows(True)
        (2048, 682, 262144)
    """
    if on_gpu:
        return (1 << 18) // (1 + tangents)
    return (1 << 12) // (1 + tangents) if tangents else 1 << 11


class FoldedVelocity:
    """A :class:`galnb.cfm.VelocityMLP` laid out for thousands of calls on chunks of at most ``rows`` draws.

    Two costs of the plain layer-by-layer evaluation are paid once here instead of at every
    solver stage (the gain is measured by ``benchmarks/bench_cfm.py``; its record is
    ``benchmarks/results/cfm.json``):

    - each layer's bias is folded into its weight as one more input row, which multiplies a
      column of ones kept in the activation buffers, so a layer is a single matmul instead of
      a broadcast copy of the bias followed by the matmul;
    - the activation buffers are allocated once and reused; a fresh megabyte-sized tensor per
      layer per stage costs page faults.

    The activation is applied in place to the buffers' first ``hidden`` columns. The buffers'
    row length is padded to a multiple of 16 elements (whole 64-byte cache lines for float32).
    The weights are copied when this is built: build a new one after the network changes.

    Arguments:
        net: the velocity network.
        rows: the most draws (objects x draws per object) of one call.
    """

    def __init__(self, net: VelocityMLP, rows: int):
        first, *hidden, last = net.layers
        h, d = first.out_features, net.theta_dim
        width = -(-(h + 1) // 16) * 16  # h activations, a column of ones, zero padding
        w = first.weight.detach()
        activation = ACTIVATIONS[net.activation]
        self.h, self.act_, self.dact = h, activation.in_place, activation.derivative
        self.w_t, self.w_theta = w[:, 0], w[:, 1 : 1 + d].T
        self.buffers = [w.new_zeros(rows, width) for _ in range(2)]
        for buf in self.buffers:
            buf[:, h] = 1.0
        self.hidden_weights = [self._fold(layer, width) for layer in hidden]
        # (D, width): the thin output layer runs as W @ x.T, measurably faster than x @ W.T
        # (benchmarks/bench_cfm.py splits one evaluation by operation)
        self.output_weight = self._fold(last, width).T.contiguous()
        self.tangents: list[Tensor] = []  # (rows, D, hidden) x 2, allocated by the first with_divergence

    @staticmethod
    def _fold(layer: nn.Linear, width: int) -> Tensor:
        w = layer.weight.detach()
        folded = w.new_zeros(width, w.shape[0])  # (in, out): rows of activations, then the bias
        folded[: w.shape[1]] = w.T
        folded[w.shape[1]] = layer.bias.detach()
        return folded

    def _first_layer(self, t: float, theta: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """The first layer's pre-activation, written into buffer 0; returns (buffer rows, pre-activation)."""
        b, n, _ = theta.shape
        if b * n > self.buffers[0].shape[0]:
            raise ValueError(
                f"{b * n} draws in one call; this FoldedVelocity was built for at most {self.buffers[0].shape[0]}"
            )
        x = self.buffers[0][: b * n]
        # [t; theta] times the first layer's weight, plus the object's precomputed context bias
        torch.baddbmm(bias.add(self.w_t, alpha=t).unsqueeze(1), theta, self.w_theta.expand(b, -1, -1),
                      out=x[:, : self.h].view(b, n, -1))
        return x, x[:, : self.h]

    def _output(self, x: Tensor, shape: torch.Size) -> Tensor:
        return torch.mm(self.output_weight, x.T).T.reshape(shape)

    @torch.no_grad()
    def __call__(self, t: float, theta: Tensor, bias: Tensor) -> Tensor:
        """The velocity of many draws of many objects at one time.

        Arguments:
            t: the time (a float shared by all rows).
            theta: (B, n, D), with B * n <= rows.
            bias: (B, hidden) from ``VelocityMLP.context_bias``.
        Returns:
            (B, n, D).
        """
        x, z = self._first_layer(t, theta, bias)
        self.act_(z)
        for i, w in enumerate(self.hidden_weights):
            out = self.buffers[1 - i % 2][: x.shape[0]]
            self.act_(torch.mm(x, w, out=out[:, : self.h]))
            x = out
        return self._output(x, theta.shape)

    @torch.no_grad()
    def with_divergence(self, t: float, theta: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        r"""Velocity and its exact divergence :math:`\nabla_\theta \cdot v` (no autograd).

        Forward-mode differentiation written out: the D tangent vectors
        :math:`\partial h / \partial \theta_j` are carried through the layers with the
        activation's derivative, and the trace of the final Jacobian is read off; about
        (1 + D) times the cost of a plain evaluation. The tangents of all rows live in two
        more reused buffers.

        Arguments: as ``__call__``.
        Returns:
            velocity (B, n, D) and divergence (B, n).
        """
        x, z = self._first_layer(t, theta, bias)
        rows, d, h = x.shape[0], theta.shape[-1], self.h
        if not self.tangents:
            self.tangents = [x.new_empty(self.buffers[0].shape[0], d, h) for _ in range(2)]
        tan, spare = (buf[:rows] for buf in self.tangents)
        torch.mul(self.dact(z).unsqueeze(1), self.w_theta.unsqueeze(0), out=tan)
        self.act_(z)
        for i, w in enumerate(self.hidden_weights):
            out = self.buffers[1 - i % 2][:rows]
            z = torch.mm(x, w, out=out[:, :h])
            torch.mm(tan.view(-1, h), w[:h], out=spare.view(-1, h))  # the bias row does not enter the tangents
            spare.mul_(self.dact(z).unsqueeze(1))
            self.act_(z)
            x, tan, spare = out, spare, tan
        div = torch.einsum("njh,jh->n", tan, self.output_weight[:, :h])
        return self._output(x, theta.shape), div.view(theta.shape[:-1])
