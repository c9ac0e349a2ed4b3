"""Seed ensembles of the flow stage: their checkpoint file, their draws, their mixture posterior, their tables."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..io import CheckpointError, load_checkpoint, save_checkpoint
from ..metrics import r2_score
from ..properties import TARGETS
from .model import VAE, VAENF
from .train import _threads

__all__ = [
    "save_ensemble",
    "load_ensemble",
    "EnsemblePosterior",
    "predict",
    "EnsembleMixture",
    "ensemble_r2",
    "uncertainty_table",
    "confusion_matrix",
]

_REMEDY = "retrain with chapter 04"


# ------------------------------------------------------------------ checkpoints


def _entry(module: VAE | VAENF) -> dict:
    """How a file stores one network: its ``config()`` and its state (CPU tensors)."""
    return {"config": module.config(), "state": {k: v.detach().cpu() for k, v in module.state_dict().items()}}


def _rebuild(cls: type, entry: dict, path: Path) -> nn.Module:
    """The network of :func:`_entry`'s output, in eval mode; CheckpointError naming ``path`` if it does not fit."""
    try:
        module = cls.from_config(entry["config"])
        module.load_state_dict(entry["state"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: does not hold a {cls.__name__} of the expected architecture ({err}); {_REMEDY}"
        ) from err
    return module.eval()


def save_ensemble(models: Sequence[VAENF], path: str | Path, **extra) -> Path:
    """Write trained models (and e.g. ``vae=vae`` or metadata) to one checkpoint file atomically.

    Arguments:
        models: the ensemble.
        path: the file (a ``galnb-vaenf`` checkpoint of :mod:`galnb.io`).
        extra: other entries: a :class:`VAE` is stored as its config and state, like each
            member; anything else (strings, numbers, None) as it is.
    Returns:
        ``path``.
    """
    payload = {"members": [_entry(m) for m in models]}
    payload.update({key: _entry(value) if isinstance(value, VAE) else value for key, value in extra.items()})
    return save_checkpoint(path, "vaenf", payload)


def load_ensemble(path: str | Path, **expect) -> tuple[list[VAENF], dict]:
    """Read a file written by :func:`save_ensemble`.

    Arguments:
        path: the checkpoint file.
        expect: config entries the models must have, e.g. ``core=CFM_CORE``.
    Returns:
        the models (eval mode, CPU) and the file's other entries (a saved VAE is rebuilt,
        frozen).
    Raises:
        CheckpointError naming the file if it is missing, unreadable, of another version,
        of another architecture or without the expected config entries.
    """
    path = Path(path)
    blob = load_checkpoint(path, "vaenf", _REMEDY)
    if not isinstance(blob.get("members"), list):
        raise CheckpointError(f"{path}: holds no ensemble members; {_REMEDY}")
    models = [_rebuild(VAENF, m, path) for m in blob["members"]]
    for key, want in expect.items():
        got = models[0].config().get(key) if models else None
        got, want = (tuple(v) if isinstance(v, (list, tuple)) else v for v in (got, want))
        if got != want:
            raise CheckpointError(f"{path}: model has {key}={got!r}, expected {want!r}")
    extra = {k: v for k, v in blob.items() if k not in ("format", "version", "members")}
    if isinstance(extra.get("vae"), dict):
        extra["vae"] = _rebuild(VAE, extra["vae"], path).requires_grad_(False)
    return models, extra


# ------------------------------------------------------------------ draws of every member


@dataclass
class EnsemblePosterior:
    """Posterior draws of every ensemble member on the same galaxies.

    Attributes:
        params: names of the last axis of ``draws``.
        draws: ``(K, B, n, D)`` joint (core, O/H) draws per member.
        lines: ``(K, B, n, 4)`` line draws in log1p space, or None.
        detect: ``(K, B)`` detectability probabilities.
        line_names: names of the last axis of ``lines``.
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
    Returns:
        every member's draws, line draws (models with a line branch) and detectability.
    """
    with _threads(threads, device):
        return _predict(models, x, n_draws, seed, chunk, device)


def _predict(models: Sequence[VAENF], x: np.ndarray, n_draws: int, seed: int, chunk: int, device: str
             ) -> EnsemblePosterior:
    torch.manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x, np.float32), device=device)
    per = max(1, chunk // n_draws)
    draws, lines, detect = [], [], []
    for m in models:
        m.to(device).eval()
        parts = _chunks(len(xt), per)
        draws.append(torch.cat([m.sample(xt[s], n_draws).cpu() for s in parts]).numpy())
        detect.append(torch.cat([m.detect_prob(xt[s]).cpu() for s in parts]).numpy())
        if m.lines:
            lines.append(torch.cat([m.sample_lines(xt[s], n_draws).cpu() for s in parts]).numpy())
        m.cpu()
    return EnsemblePosterior(
        models[0].params, np.stack(draws), np.stack(lines) if lines else None, np.stack(detect), models[0].lines
    )


# ------------------------------------------------------------------ the mixture posterior


class EnsembleMixture:
    """The ensemble's posterior, the uniform mixture of its K members, as one
    :class:`galnb.evaluation.PosteriorEstimator`.

    Draws: ``ceil(n / K)`` from each member, concatenated in member order and cut to ``n``.
    Log-density: ``log p(θ|x) = logsumexp_k log p_k(θ|x) − log K``, exact for the mixture.

    Galaxies go through in chunks of at most ``chunk`` draws or points (whole galaxies, at least
    one). A network's output for a row can change in the last bit with the batch it is in, so
    log p of one point per galaxy (up to ``chunk`` galaxies at once) may differ by float
    rounding from the same point evaluated among a galaxy's draws.

    Arguments:
        models: VAENF members that all infer ``columns`` (for ``TARGETS``: built with
            ``core=CFM_CORE``), in any order of their :attr:`VAENF.params`.
        columns: the order of θ's last axis, in and out.
        device: where to compute (the models are moved there for each call and back to the CPU).
        threads: CPU threads while computing (None: torch's default).
        chunk: draws (galaxies × draws per galaxy) computed at once.

    Example:
        >>> from galnb.vaenf import CFM_CORE
        >>> mix = EnsembleMixture([VAENF(5, core=CFM_CORE, lines=()) for _ in range(2)])
        >>> x = torch.randn(3, 5)
        >>> draws = mix.sample(x, 7)
        >>> tuple(draws.shape), tuple(mix.log_prob(draws, x).shape), tuple(mix.log_prob(draws[:, 0], x).shape)
        ((3, 7, 5), (3, 7), (3,))
    """

    def __init__(self, models: Sequence[VAENF], columns: Sequence[str] = TARGETS, device: str = "cpu",
                 threads: int | None = 1, chunk: int = 50_000) -> None:
        self.models, self.columns = list(models), tuple(columns)
        if not self.models:
            raise ValueError("an ensemble needs at least one model")
        for m in self.models:
            if sorted(m.params) != sorted(self.columns):
                raise ValueError(f"a member infers {m.params}, not {self.columns}; build it with core=CFM_CORE")
        self.device, self.threads, self.chunk = device, threads, int(chunk)
        # member order → columns order, and back
        self._order = [[m.params.index(c) for c in self.columns] for m in self.models]
        self._inverse = [[self.columns.index(p) for p in m.params] for m in self.models]

    @contextlib.contextmanager
    def _on_device(self) -> Iterator[None]:
        with _threads(self.threads, self.device):
            try:
                for m in self.models:
                    m.to(self.device).eval()
                yield
            finally:
                for m in self.models:
                    m.cpu()

    def _tensor(self, a) -> Tensor:
        return torch.as_tensor(a).to(device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def sample(self, cond: Tensor, n: int) -> Tensor:
        """Draws from the mixture.

        Arguments:
            cond: ``(B, n_inputs)`` inputs.
            n: draws per galaxy.
        Returns:
            ``(B, n, D)`` on the CPU, in the order of ``columns``.
        """
        per_member, per = -(-n // len(self.models)), max(1, self.chunk // n)
        with self._on_device():
            x = self._tensor(cond)
            out = [torch.cat([m.sample(x[s], per_member)[..., order] for m, order in zip(self.models, self._order)],
                             dim=1)[:, :n]
                   for s in _chunks(len(x), per)]
            return torch.cat(out).cpu()

    @torch.no_grad()
    def log_prob(self, theta: Tensor, cond: Tensor) -> Tensor:
        """Exact log-density of the mixture, per unit of each physical parameter.

        Arguments:
            theta: ``(B, D)`` or ``(B, n, D)`` in the order of ``columns``.
            cond: ``(B, n_inputs)`` inputs.
        Returns:
            ``(B,)`` or ``(B, n)`` on the CPU.
        """
        per = max(1, self.chunk // (theta.shape[1] if theta.ndim == 3 else 1))
        with self._on_device():
            x, th = self._tensor(cond), self._tensor(theta)
            out = []
            for s in _chunks(len(x), per):
                lp = torch.stack([m.log_prob(th[s][..., inv], x[s]) for m, inv in zip(self.models, self._inverse)])
                out.append(torch.logsumexp(lp, 0) - math.log(len(self.models)))
            return torch.cat(out).cpu()


# ------------------------------------------------------------------ tables


def ensemble_r2(post: EnsemblePosterior, catalog: pd.DataFrame) -> pd.Series:
    """R² of the ensemble's posterior means against the catalog rows of ``post``.

    Metallicity is scored on the galaxies whose O/H is measurable (``oh_detectable``),
    as it would be on real data; line fluxes in log1p space.

    Arguments:
        post: the ensemble's draws on B galaxies.
        catalog: those B galaxies' catalog rows.
    Returns:
        R² by quantity name.
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


def confusion_matrix(truth: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """2×2 counts of measured/not measured (rows: true; columns: predicted).

    Arguments:
        truth: ``(B,)`` bool, whether O/H is measurable.
        prob: ``(B,)`` predicted probabilities.
        threshold: probability from which "measurable" is predicted.
    """
    truth, pred = np.asarray(truth, bool), np.asarray(prob) >= threshold
    names = ["not measurable", "measurable"]
    counts = [[int(((truth == t) & (pred == p)).sum()) for p in (False, True)] for t in (False, True)]
    return pd.DataFrame(counts, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))
