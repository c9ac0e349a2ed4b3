"""Training the CFM models: data loading, early stopping, checkpoints, resume."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from .cfm import CFM, ENCODER_NORMS, Cond, ImageEncoder
from .data import Standardizer, Store, images_to_tensor, random_orientations
from .io import CheckpointError, load_checkpoint, save_checkpoint
from .morphology import MEASURED_STRUCTURE_COLUMNS
from .properties import MAG_COLUMNS, TARGETS
from .runs import MODELS

if TYPE_CHECKING:
    from .runs import Scale

__all__ = [
    "STRUCTURE_COLUMNS",
    "condition_columns",
    "TrainConfig",
    "TrainResult",
    "TrainedCFM",
    "train_cfm",
    "evaluate_loss",
    "load_trained",
    "learning_curve",
    "optimiser_step",
]

STRUCTURE_COLUMNS: tuple[str, ...] = ("axis_ratio", "r_half", "bulge_fraction")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
_RETRAIN = "retrain with chapter 03"


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one CFM training run (the paper's values as defaults)."""

    model: str = "image"
    lr: float = 5e-5
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 10
    lr_schedule: str = "constant"  # "constant" (the paper) or "cosine": lr -> lr / 100 over max_epochs
    augment: bool = False  # each training cutout in one of its 8 orientations (flips, 90° turns), drawn per step
    encoder_norm: str = "none"  # "none" (the paper) or "group": group normalisation in the image encoder's blocks
    sigma: float = 0.05
    hidden: int = 256
    depth: int = 3
    weight_decay: float = 1e-2  # AdamW's default
    seed: int = 0

    @classmethod
    def for_scale(cls, scale: "Scale", model: str, seed: int = 0, **overrides) -> "TrainConfig":
        """The scale's hyperparameters for ``model``; an override given as None keeps the scale's value."""
        config = {"lr": scale.lr, "max_epochs": scale.max_epochs, "patience": scale.patience,
                  "lr_schedule": scale.lr_schedule}
        if model == "image":  # the image model's own levers; the other models have no images
            config.update(augment=scale.augment, encoder_norm=scale.encoder_norm)
        config.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, seed=seed, **config)

    def digest(self) -> str:
        """A short hash of every field: a folder name that no other configuration shares."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"parameter model={self.model!r} is not valid; choose one of {MODELS}")
        for name in ("lr", "batch_size", "max_epochs", "patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"parameter {name}={getattr(self, name)!r} must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"parameter lr_schedule={self.lr_schedule!r} is not valid; choose one of {LR_SCHEDULES}")
        if self.encoder_norm not in ENCODER_NORMS:
            raise ValueError(f"parameter encoder_norm={self.encoder_norm!r} is not valid; "
                             f"choose one of {ENCODER_NORMS}")


@dataclass
class TrainResult:
    history: pd.DataFrame  # epoch, train_loss, val_loss, lr, seconds
    best_epoch: int
    wall_s: float
    samples_per_s: float
    data_wait_share: float  # share of step time spent waiting on data
    resumed_from: int  # epoch the run resumed after (0 = fresh)


def condition_columns(kind: str) -> tuple[str, ...]:
    """The catalog columns a model of ``kind`` is conditioned on (besides the image)."""
    if kind not in MODELS:
        raise ValueError(f"model={kind!r} is not valid; choose one of {MODELS}")
    extra = {"structure": STRUCTURE_COLUMNS, "measured": MEASURED_STRUCTURE_COLUMNS}.get(kind, ())
    return (*MAG_COLUMNS, *extra)


class TrainedCFM(nn.Module):
    """A CFM model with the standardisation it was trained with: the book's CFM estimator.

    ``sample(cond, n)`` and ``log_prob(theta, cond)`` take the condition in the catalog's
    units (magnitudes, and images as float tensors in [0, 1]) and return properties and
    densities in physical units, like every estimator the book scores
    (:class:`galnb.evaluation.PosteriorEstimator`). The network (:class:`galnb.cfm.CFM`, the
    paper's method) works in standardised units; the means and standard deviations of the
    training split are float64 buffers, so ``state_dict()`` is the whole model.

    Arguments:
        kind: ``"phot"``, ``"image"``, ``"measured"`` or ``"structure"`` (see ``MODELS``).
        model: the network; its ``cond_dim`` is the number of condition columns of ``kind``.
    """

    def __init__(self, kind: str, model: CFM):
        super().__init__()
        self.kind, self.model = kind, model
        for name, width in (("theta", model.theta_dim), ("cond", model.cond_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(width, dtype=torch.float64))
            self.register_buffer(f"{name}_std", torch.ones(width, dtype=torch.float64))
        self.meta: dict = {}  # provenance of a loaded checkpoint (data set, config)
        self.path: Path | None = None

    @classmethod
    def build(cls, kind: str, hidden: int = 256, depth: int = 3, sigma: float = 0.05,
              encoder_norm: str = "none") -> "TrainedCFM":
        """An untrained model of ``kind``: the CFM paper's photometry or image model, or a structure reference."""
        encoder = ImageEncoder(norm=encoder_norm) if kind == "image" else None
        return cls(kind, CFM(len(TARGETS), len(condition_columns(kind)), hidden=hidden, depth=depth, sigma=sigma,
                             encoder=encoder))

    def config(self) -> dict:
        """Constructor arguments, JSON-serialisable; :meth:`from_config` rebuilds the (untrained) model."""
        return {"kind": self.kind, "model": self.model.config()}

    @classmethod
    def from_config(cls, config: dict) -> "TrainedCFM":
        return cls(config["kind"], CFM.from_config(config["model"]))

    @classmethod
    def for_store(cls, kind: str, store: Store, hidden: int = 256, depth: int = 3, sigma: float = 0.05,
                  encoder_norm: str = "none") -> "TrainedCFM":
        """An untrained model of ``kind`` that standardises with the statistics of ``store``'s training split."""
        estimator = cls.build(kind, hidden, depth, sigma, encoder_norm)
        estimator.set_standardisation(store.standardizer(TARGETS), store.standardizer(condition_columns(kind)))
        return estimator

    def set_standardisation(self, theta: Standardizer, cond: Standardizer) -> None:
        """Keep the training split's statistics of the properties and of the condition columns."""
        for name, std in (("theta", theta), ("cond", cond)):
            getattr(self, f"{name}_mean").copy_(torch.as_tensor(std.mean, dtype=torch.float64))
            getattr(self, f"{name}_std").copy_(torch.as_tensor(std.std, dtype=torch.float64))

    @property
    def log_det(self) -> float:
        """log |d standardised / d physical| of the properties: added to every log-density."""
        return float(-np.log(self.theta_std.cpu().numpy()).sum())

    def condition(self, store: Store, rows: np.ndarray, device: str = "cpu") -> Cond:
        """The condition of catalog ``rows``: magnitudes (M, C) float64, and (M, 3, H, W) images for an image model."""
        store.require_columns(condition_columns(self.kind), f"the {self.kind} model's condition")
        phot = torch.tensor(store.catalog.iloc[rows][list(condition_columns(self.kind))].to_numpy(np.float64))
        if self.kind != "image":
            return phot.to(device)
        return images_to_tensor(store.images[np.asarray(rows)]).to(device), phot.to(device)

    def standardised(self, cond: Cond) -> Cond:
        """The network's condition: the columns standardised and cast to the network's dtype."""
        if isinstance(cond, (tuple, list)):
            return cond[0], self.standardised(cond[1])
        return self._standard(cond, self.cond_mean, self.cond_std)

    def standardised_theta(self, theta: Tensor) -> Tensor:
        """Properties ``(..., D)`` in the network's standardised units and dtype."""
        return self._standard(theta, self.theta_mean, self.theta_std)

    def _standard(self, x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        return ((x.to(mean) - mean) / std).to(self.model.net.layers[0].weight.dtype)

    def _physical(self, draws: Tensor) -> Tensor:
        return draws.double() * self.theta_std + self.theta_mean

    @torch.no_grad()
    def sample(self, cond: Cond, n: int, steps: int = 100, method: str = "rk4",
               generator: torch.Generator | None = None) -> Tensor:
        """``(B, n, D)`` float64 posterior draws in physical units (see :meth:`galnb.cfm.CFM.sample`)."""
        return self._physical(self.model.sample(self.standardised(cond), n, steps, method, generator=generator))

    @torch.no_grad()
    def log_prob(self, theta: Tensor, cond: Cond, steps: int = 100, method: str = "rk4") -> Tensor:
        """``log q(theta | cond)`` per unit of each physical property; ``theta: (B, D)`` or ``(B, n, D)``."""
        standard = self.standardised_theta(theta)
        return self.model.log_prob(standard, self.standardised(cond), steps, method).double() + self.log_det

    @torch.no_grad()
    def sample_and_log_prob(self, cond: Cond, n: int, steps: int = 100, method: str = "rk4",
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draws ``(B, n, D)`` and their log-densities ``(B, n)``, physical units, in one integration."""
        draws, lp = self.model.sample_and_log_prob(self.standardised(cond), n, steps, method, generator=generator)
        return self._physical(draws), lp.double() + self.log_det


class _Batches:
    """(theta, phot[, images]) batches of one split, standardised as ``estimator`` standardises.

    Images stay in the store's memory map; each batch reads its rows in sorted order
    (one pass over the file per batch) so ``paper``-scale data never sits in memory.
    """

    def __init__(self, store: Store, split: str, estimator: TrainedCFM, batch_size: int, shuffle: bool, seed: int,
                 augment: bool = False):
        self.index = store.splits[split]
        cat = store.catalog.iloc[self.index]
        self.theta = estimator.standardised_theta(torch.tensor(cat[list(TARGETS)].to_numpy(np.float64))).cpu()
        phot = torch.tensor(cat[list(condition_columns(estimator.kind))].to_numpy(np.float64))
        self.phot = estimator.standardised(phot).cpu()
        self.images = store.images if estimator.kind == "image" else None
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.index) / self.batch_size)

    def __iter__(self):
        order = self.rng.permutation(len(self.index)) if self.shuffle else np.arange(len(self.index))
        for start in range(0, len(order), self.batch_size):
            rows = np.sort(order[start : start + self.batch_size])
            theta, phot = self.theta[rows], self.phot[rows]
            if self.images is None:
                yield theta, (phot,)
            else:
                images = images_to_tensor(self.images[self.index[rows]])
                yield theta, (random_orientations(images, self.rng) if self.augment else images, phot)


class _LossModule(nn.Module):
    """Wraps ``CFM.loss`` as a forward pass so DataParallel can split batches over GPUs."""

    def __init__(self, model: CFM):
        super().__init__()
        self.model = model

    def forward(self, theta, *cond):
        return self.model.loss(theta, cond if len(cond) > 1 else cond[0]).reshape(1)


def _cond(cond: tuple, device: str):
    moved = tuple(c.to(device, non_blocking=True) for c in cond)
    return moved if len(moved) > 1 else moved[0]


def _checkpoint_meta(config: TrainConfig, store: Store, estimator: TrainedCFM) -> dict:
    return {"config": asdict(config), "model_config": estimator.config(), "data": store.fingerprint,
            "image_size": store.image_size}


@dataclass
class _Progress:
    """Where a training run stands after an epoch: what ``last.pt`` stores besides the weights."""

    history: list[dict]
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    done: bool = False


def _resume(last: Path, meta: dict, estimator: TrainedCFM, optimiser, schedule) -> _Progress:
    """Restore the model, optimiser, schedule and RNG from ``last.pt`` if it exists (else a fresh start)."""
    if not last.exists():
        return _Progress(history=[])
    state = load_checkpoint(last, "cfm", _RETRAIN)
    trained_with = {**asdict(TrainConfig()), **state["meta"]["config"]}  # a field added since takes its default
    if trained_with != meta["config"] or state["meta"]["data"] != meta["data"]:
        raise CheckpointError(
            f"{last}: was trained with {state['meta']['config']} on data {state['meta']['data']}; this run asks for "
            f"{meta['config']} on data {meta['data']}. Use another run_dir or delete {last.parent}"
        )
    estimator.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    if schedule is not None:
        schedule.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():  # the training noise on a GPU comes from these
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return _Progress(**state["progress"])


def optimiser_step(optimiser: torch.optim.Optimizer, loss: Tensor, max_grad_norm: float | None = None) -> None:
    """One gradient step, as every training loop in galnb takes it: clear the gradients,
    backpropagate ``loss``, clip the gradients' total norm to ``max_grad_norm`` if given, step."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_([p for group in optimiser.param_groups for p in group["params"]], max_grad_norm)
    optimiser.step()


def _train_epoch(step: nn.Module, model: CFM, optimiser, train: "_Batches", device: str, epoch: int,
                 config: TrainConfig, last: Path) -> tuple[list[float], int, float]:
    """One pass over the training split: the batch losses, the samples seen, the seconds spent waiting on data."""
    model.train()
    losses, n_seen, wait = [], 0, 0.0
    t_wait = time.perf_counter()
    for theta, cond in train:
        wait += time.perf_counter() - t_wait
        loss = step(theta.to(device), *[c.to(device) for c in cond]).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} at epoch {epoch}; lower lr (now {config.lr}) or check the data "
                f"for extreme values. The last good checkpoint is {last}"
            )
        optimiser_step(optimiser, loss)
        losses.append(loss.item())
        n_seen += len(theta)
        t_wait = time.perf_counter()
    return losses, n_seen, wait


def train_cfm(store: Store, out_dir: str | Path, config: TrainConfig, device: str = "cpu",
              progress: bool = True) -> TrainResult:
    """Train (or resume training) a CFM model on a store's train split.

    Each epoch ends by writing ``last.pt`` (model, optimiser, history, RNG states);
    a better validation loss also writes ``best.pt``. Both writes are atomic, so a
    run killed at any moment resumes from the last complete epoch when called again
    with the same arguments. A finished run (early-stopped or at ``max_epochs``)
    returns at once.

    Arguments:
        store: the data set (chapter 01).
        out_dir: the model's folder in the run directory.
        config: hyperparameters; must match a checkpoint being resumed.
        device: "cpu" or "cuda"; several visible GPUs are used with DataParallel.
    Raises:
        CheckpointError: ``last.pt`` belongs to another config or data set.
        FloatingPointError: the loss became NaN/inf.
    """
    out_dir = Path(out_dir)
    store.require_columns((*TARGETS, *condition_columns(config.model)), f"training the {config.model} CFM model")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp"):  # left by a process killed mid-write
        stale.unlink()
    torch.manual_seed(config.seed)
    estimator = TrainedCFM.for_store(config.model, store, config.hidden, config.depth, config.sigma,
                                     config.encoder_norm).to(device)
    model = estimator.model
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Short runs at a high constant lr end with the weights jittering around a minimum;
    # annealing the rate settles them. Cosine, not a cut on a plateau, so that both models
    # get the same schedule whatever the noise in their validation losses.
    schedule = None
    if config.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.max_epochs,
                                                              eta_min=config.lr / 100)
    meta = _checkpoint_meta(config, store, estimator)
    last = out_dir / "last.pt"
    state = _resume(last, meta, estimator, optimiser, schedule)
    resumed_from = len(state.history)
    train = _Batches(store, "train", estimator, config.batch_size, shuffle=True, seed=config.seed + resumed_from,
                     augment=config.augment)
    val = _Batches(store, "val", estimator, 512, shuffle=False, seed=0)
    step = _LossModule(model)
    if device == "cuda" and torch.cuda.device_count() > 1:
        step = nn.DataParallel(step)
    t_start, n_seen, wait = time.perf_counter(), 0, 0.0
    epochs = range(resumed_from + 1, config.max_epochs + 1)
    bar = tqdm(epochs, desc=f"train {config.model}", disable=not progress or state.done, unit="epoch")
    for epoch in bar:
        if state.done:
            break
        t_epoch = time.perf_counter()
        losses, seen, waited = _train_epoch(step, model, optimiser, train, device, epoch, config, last)
        n_seen, wait = n_seen + seen, wait + waited
        val_loss = evaluate_loss(model, val, device, seed=config.seed)
        state.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                              "lr": optimiser.param_groups[0]["lr"], "seconds": time.perf_counter() - t_epoch})
        if schedule is not None:
            schedule.step()
        if val_loss < state.best_val:
            state.best_val, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
            save_checkpoint(out_dir / "best.pt", "cfm", {"meta": meta, "model": estimator.state_dict(), "epoch": epoch,
                                                          "val_loss": val_loss})
        else:
            state.bad_epochs += 1
        state.done = state.bad_epochs >= config.patience or epoch == config.max_epochs
        save_checkpoint(last, "cfm", {"meta": meta, "model": estimator.state_dict(),
                                      "optimiser": optimiser.state_dict(),
                                      "progress": asdict(state), "torch_rng": torch.get_rng_state(),
                                      "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                                      "scheduler": None if schedule is None else schedule.state_dict()})
        bar.set_postfix(train=f"{state.history[-1]['train_loss']:.3f}", val=f"{val_loss:.3f}", best=state.best_epoch)
    wall = time.perf_counter() - t_start
    train_time = sum(h["seconds"] for h in state.history[resumed_from:])
    return TrainResult(
        history=pd.DataFrame(state.history), best_epoch=state.best_epoch, wall_s=wall,
        samples_per_s=n_seen / train_time if train_time else float("nan"),
        data_wait_share=wait / train_time if train_time else float("nan"), resumed_from=resumed_from,
    )


@torch.no_grad()
def evaluate_loss(model: CFM, batches: _Batches, device: str, seed: int) -> float:
    """Mean CFM loss over a split with a fixed noise seed, so epochs compare fairly.

    The noise comes from a generator of its own on ``device``: reseeding torch's global
    generators here would, on a GPU, make every epoch replay the same training noise."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed + 12345)
    total, count = 0.0, 0
    for theta, cond in batches:
        total += model.loss(theta.to(device), _cond(cond, device), generator=generator).item() * len(theta)
        count += len(theta)
    return total / count


def load_trained(model_dir: str | Path, store: Store, device: str = "cpu") -> TrainedCFM:
    """Load ``best.pt`` from a model folder, refusing one trained on another data set.

    Raises:
        CheckpointError naming the file and the mismatch.
    """
    path = Path(model_dir) / "best.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: no trained model here; {_RETRAIN}")
    payload = load_checkpoint(path, "cfm", _RETRAIN)
    meta = payload["meta"]
    if meta["data"] != store.fingerprint:
        raise CheckpointError(
            f"{path}: trained on data set {meta['data']}, but this run's data set is {store.fingerprint} "
            f"({store.root}); retrain with chapter 03 for this data"
        )
    estimator = TrainedCFM.from_config(meta["model_config"])
    try:
        estimator.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the {estimator.kind} architecture ({err})") from err
    estimator.meta, estimator.path = meta, path
    return estimator.to(device).eval()


def learning_curve(model_dir: str | Path) -> pd.DataFrame:
    """The epochs trained so far in a model folder (from ``last.pt``): epoch, train_loss, val_loss, lr, seconds.

    Raises:
        CheckpointError naming the file if there is none or it cannot be read.
    """
    return pd.DataFrame(load_checkpoint(Path(model_dir) / "last.pt", "cfm", _RETRAIN)["progress"]["history"])
