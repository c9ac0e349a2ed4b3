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
from torch import nn
from tqdm import tqdm

from .cfm import CFM, ImageEncoder
from .data import Standardizer, Store, images_to_tensor
from .properties import MAG_COLUMNS, TARGETS
from .runs import atomic_write

if TYPE_CHECKING:
    from .metrics import Posterior
    from .runs import Run, Scale

__all__ = [
    "MODEL_KINDS",
    "STRUCTURE_COLUMNS",
    "condition_columns",
    "TrainConfig",
    "TrainResult",
    "CheckpointError",
    "build_model",
    "train_cfm",
    "load_trained",
    "evaluation_rows",
    "TrainedModel",
    "posterior_on_test_set",
    "time_sampling",
    "solver_accuracy",
    "structure_probe",
    "structure_gain",
]

#: The CFM paper's two models, and "structure": photometry plus the true structural
#: parameters the simulated images were rendered from, a reference that only a
#: simulation allows (how much could a perfect image encoder add to photometry?).
MODEL_KINDS: tuple[str, ...] = ("phot", "image", "structure")
STRUCTURE_COLUMNS: tuple[str, ...] = ("axis_ratio", "r_half", "bulge_fraction")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
#: Bumped when the checkpoint layout changes; older checkpoints are refused.
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, from another version or another data set."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one CFM training run (the paper's values as defaults)."""

    model: str = "image"
    lr: float = 5e-5
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 10
    lr_schedule: str = "constant"  # "constant" (the paper) or "cosine": lr -> lr / 100 over max_epochs
    sigma: float = 0.05
    hidden: int = 256
    depth: int = 3
    weight_decay: float = 1e-2  # AdamW's default
    seed: int = 0

    @classmethod
    def for_scale(cls, scale: "Scale", model: str, seed: int = 0, **overrides) -> "TrainConfig":
        """The scale's hyperparameters for ``model``; an override given as None keeps the scale's value."""
        config = {"lr": scale.lr, "max_epochs": scale.max_epochs, "patience": scale.patience, "lr_schedule": scale.lr_schedule}
        config.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, seed=seed, **config)

    def digest(self) -> str:
        """A short hash of every field: a folder name that no other configuration shares."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"parameter model={self.model!r} is not valid; choose one of {MODEL_KINDS}")
        for name in ("lr", "batch_size", "max_epochs", "patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"parameter {name}={getattr(self, name)!r} must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"parameter lr_schedule={self.lr_schedule!r} is not valid; choose one of {LR_SCHEDULES}")


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
    if kind not in MODEL_KINDS:
        raise ValueError(f"model={kind!r} is not valid; choose one of {MODEL_KINDS}")
    return (*MAG_COLUMNS, *STRUCTURE_COLUMNS) if kind == "structure" else MAG_COLUMNS


def build_model(kind: str, hidden: int = 256, depth: int = 3, sigma: float = 0.05) -> CFM:
    """The CFM paper's photometry (``"phot"``) or image (``"image"``) model, or the ``"structure"`` reference."""
    encoder = ImageEncoder() if kind == "image" else None
    return CFM(len(TARGETS), len(condition_columns(kind)), hidden=hidden, depth=depth, sigma=sigma, encoder=encoder)


def _features(cat: pd.DataFrame, kind: str, std: Standardizer) -> torch.Tensor:
    """The standardised condition columns of ``cat`` for a model of ``kind``, (N, C) float32."""
    return torch.from_numpy(std.forward(cat[list(condition_columns(kind))].to_numpy(np.float64)).astype(np.float32))


class _Batches:
    """Standardised (theta, phot[, images]) batches of one split.

    Images stay in the store's memory map; each batch reads its rows in sorted order
    (one pass over the file per batch) so ``paper``-scale data never sits in memory.
    """

    def __init__(self, store: Store, split: str, kind: str, batch_size: int, shuffle: bool, seed: int):
        self.index = store.splits[split]
        cat = store.catalog.iloc[self.index]
        self.theta = torch.from_numpy(store.standardizer(TARGETS).forward(cat[list(TARGETS)].to_numpy()).astype(np.float32))
        self.phot = _features(cat, kind, store.standardizer(condition_columns(kind)))
        self.images = store.images if kind == "image" else None
        self.batch_size, self.shuffle = batch_size, shuffle
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
                yield theta, (images_to_tensor(self.images[self.index[rows]]), phot)


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


def _checkpoint_meta(config: TrainConfig, store: Store) -> dict:
    return {
        "version": CHECKPOINT_VERSION,
        "config": asdict(config),
        "data": store.fingerprint,
        "image_size": store.image_size,
        "theta_std": store.standardizer(TARGETS).to_dict(),
        "phot_std": store.standardizer(condition_columns(config.model)).to_dict(),
    }


def _save(path: Path, payload: dict) -> None:
    with atomic_write(path) as fh:
        torch.save(payload, fh)


def _load_checkpoint(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated files
        raise CheckpointError(f"{path}: cannot be read, truncated or corrupt ({err})") from err
    if not isinstance(payload, dict) or payload.get("meta", {}).get("version") != CHECKPOINT_VERSION:
        found = payload.get("meta", {}).get("version") if isinstance(payload, dict) else None
        raise CheckpointError(
            f"{path}: checkpoint version {found!r}, this galnb reads version {CHECKPOINT_VERSION}; retrain with chapter 03"
        )
    return payload


def train_cfm(store: Store, out_dir: str | Path, config: TrainConfig, device: str = "cpu", progress: bool = True) -> TrainResult:
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
    model = build_model(config.model, config.hidden, config.depth, config.sigma).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Short runs at a high constant lr end with the weights jittering around a minimum;
    # annealing the rate settles them. Cosine, not a cut on a plateau, so that both models
    # get the same schedule whatever the noise in their validation losses.
    schedule = None
    if config.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.max_epochs, eta_min=config.lr / 100)
    meta = _checkpoint_meta(config, store)
    history: list[dict] = []
    best_val, best_epoch, bad_epochs, done = math.inf, 0, 0, False
    last = out_dir / "last.pt"
    if last.exists():
        state = _load_checkpoint(last)
        if state["meta"]["config"] != meta["config"] or state["meta"]["data"] != meta["data"]:
            raise CheckpointError(
                f"{last}: was trained with {state['meta']['config']} on data {state['meta']['data']}; this run asks for "
                f"{meta['config']} on data {meta['data']}. Use another run_dir or delete {out_dir}"
            )
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if schedule is not None:
            schedule.load_state_dict(state["scheduler"])
        history, best_val, best_epoch, bad_epochs, done = (
            state["history"], state["best_val"], state["best_epoch"], state["bad_epochs"], state["done"],
        )
        torch.set_rng_state(state["torch_rng"])
    resumed_from = len(history)
    train = _Batches(store, "train", config.model, config.batch_size, shuffle=True, seed=config.seed + resumed_from)
    val = _Batches(store, "val", config.model, 512, shuffle=False, seed=0)
    step = _LossModule(model)
    if device == "cuda" and torch.cuda.device_count() > 1:
        step = nn.DataParallel(step)
    t_start, n_seen, wait = time.perf_counter(), 0, 0.0
    epochs = range(len(history) + 1, config.max_epochs + 1)
    bar = tqdm(epochs, desc=f"train {config.model}", disable=not progress or done, unit="epoch")
    for epoch in bar:
        if done:
            break
        model.train()
        t_epoch, losses = time.perf_counter(), []
        t_wait = time.perf_counter()
        for theta, cond in train:
            wait += time.perf_counter() - t_wait
            loss = step(theta.to(device), *[c.to(device) for c in cond]).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}; lower lr (now {config.lr}) or check the data "
                    f"for extreme values. The last good checkpoint is {last}"
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            n_seen += len(theta)
            t_wait = time.perf_counter()
        val_loss = evaluate_loss(model, val, device, seed=config.seed)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                        "lr": optimiser.param_groups[0]["lr"], "seconds": time.perf_counter() - t_epoch})
        if schedule is not None:
            schedule.step()
        if val_loss < best_val:
            best_val, best_epoch, bad_epochs = val_loss, epoch, 0
            _save(out_dir / "best.pt", {"meta": meta, "model": model.state_dict(), "epoch": epoch, "val_loss": val_loss})
        else:
            bad_epochs += 1
        done = bad_epochs >= config.patience or epoch == config.max_epochs
        _save(last, {"meta": meta, "model": model.state_dict(), "optimiser": optimiser.state_dict(), "history": history,
                     "best_val": best_val, "best_epoch": best_epoch, "bad_epochs": bad_epochs, "done": done,
                     "scheduler": None if schedule is None else schedule.state_dict(), "torch_rng": torch.get_rng_state()})
        bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val_loss:.3f}", best=best_epoch)
    wall = time.perf_counter() - t_start
    train_time = sum(h["seconds"] for h in history[resumed_from:])
    return TrainResult(
        history=pd.DataFrame(history), best_epoch=best_epoch, wall_s=wall,
        samples_per_s=n_seen / train_time if train_time else float("nan"),
        data_wait_share=wait / train_time if train_time else float("nan"), resumed_from=resumed_from,
    )


@torch.no_grad()
def evaluate_loss(model: CFM, batches: _Batches, device: str, seed: int) -> float:
    """Mean CFM loss over a split with a fixed noise seed, so epochs compare fairly."""
    model.eval()
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed + 12345)
    total, count = 0.0, 0
    for theta, cond in batches:
        total += model.loss(theta.to(device), _cond(cond, device)).item() * len(theta)
        count += len(theta)
    torch.set_rng_state(generator_state)
    return total / count


@dataclass
class TrainedModel:
    """A trained CFM model with the standardisations it was trained with."""

    kind: str
    model: CFM
    theta_std: Standardizer
    phot_std: Standardizer
    meta: dict
    path: Path

    def condition(self, store: Store, rows: np.ndarray, device: str = "cpu"):
        """The model's standardised condition for catalog ``rows`` of ``store``."""
        store.require_columns(condition_columns(self.kind), f"the {self.kind} model's condition")
        phot = _features(store.catalog.iloc[rows], self.kind, self.phot_std)
        if self.kind != "image":
            return phot.to(device)
        return images_to_tensor(store.images[np.asarray(rows)]).to(device), phot.to(device)

    @torch.no_grad()
    def posterior(self, store: Store, rows: np.ndarray, n_draws: int, steps: int, device: str = "cpu", seed: int = 0,
                  method: str = "rk4", n_log_prob: int | None = None) -> "Posterior":
        """Posterior draws and exact log-densities for catalog ``rows``, in physical units.

        The first ``n_log_prob`` draws get their log-densities from the same integration that
        makes them (it carries D tangent vectors, about 1 + D times the cost of a plain draw);
        the rest are plain draws. log p(θ*|D) comes from a backward integration. Log-densities
        get the standardisation Jacobian, so they are densities in the catalog's units,
        comparable with any other model's.

        Arguments:
            rows: (M,) store rows.
            n_draws: draws per object.
            steps, method: the ODE solver.
            n_log_prob: how many of the draws get a log-density (default: all of them).
        """
        from .metrics import Posterior

        rows = np.asarray(rows)
        n_log_prob = n_draws if n_log_prob is None else n_log_prob
        if not 1 <= n_log_prob <= n_draws:
            raise ValueError(f"n_log_prob={n_log_prob} must be between 1 and n_draws={n_draws}")
        cond = self.condition(store, rows, device)
        generator = torch.Generator(device).manual_seed(seed)
        draws, lp_draws = self.model.sample_and_log_prob(cond, n_log_prob, steps, method, generator=generator)
        if n_log_prob < n_draws:
            rest = self.model.sample(cond, n_draws - n_log_prob, steps, method, generator=generator)
            draws = torch.cat([draws, rest], dim=1)
        truth = store.catalog.iloc[rows][list(TARGETS)].to_numpy()
        true_std = torch.as_tensor(self.theta_std.forward(truth), dtype=torch.float32, device=device)
        lp_true = self.model.log_prob(true_std, cond, steps, method)
        jac = self.theta_std.log_det
        return Posterior(rows, truth, self.theta_std.inverse(draws.cpu().double().numpy()),
                         lp_true.cpu().double().numpy() + jac, lp_draws.cpu().double().numpy() + jac, TARGETS,
                         {"model": self.kind, "steps": steps, "method": method, "n_draws": n_draws, "n_log_prob": n_log_prob,
                          "data": self.meta["data"], "checkpoint": str(self.path)})



def load_trained(model_dir: str | Path, store: Store, device: str = "cpu") -> TrainedModel:
    """Load ``best.pt`` from a model folder, refusing one trained on another data set.

    Raises:
        CheckpointError naming the file and the mismatch.
    """
    path = Path(model_dir) / "best.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: no trained model here")
    payload = _load_checkpoint(path)
    meta = payload["meta"]
    if meta["data"] != store.fingerprint:
        raise CheckpointError(
            f"{path}: trained on data set {meta['data']}, but this run's data set is {store.fingerprint} "
            f"({store.root}); retrain with chapter 03 for this data"
        )
    cfg = meta["config"]
    model = build_model(cfg["model"], cfg["hidden"], cfg["depth"], cfg["sigma"])
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the {cfg['model']} architecture ({err})") from err
    model.to(device).eval()
    return TrainedModel(cfg["model"], model, Standardizer.from_dict(meta["theta_std"]),
                        Standardizer.from_dict(meta["phot_std"]), meta, path)


def evaluation_rows(run: "Run", store: Store) -> np.ndarray:
    """The store rows that chapters 05 and 06 score: the first ``n_eval`` of the test split."""
    return store.splits["test"][: run.scale.n_eval]


def posterior_on_test_set(run: "Run", store: Store, kind: str) -> "Posterior":
    """The ``kind`` model's posterior on the run's first ``n_eval`` test objects.

    Computed once and cached in ``run.posterior_path(kind)``; the cache is reused only
    if it was made from the same checkpoint (by hash), data set, draws and solver steps.
    """
    from .metrics import Posterior
    from .runs import file_hash

    ckpt = run.require(run.model_dir(kind) / "best.pt", "03_train", model=kind)
    expected = {"model": kind, "steps": run.scale.ode_steps, "method": "rk4", "n_draws": run.scale.n_draws,
                "n_log_prob": run.scale.n_kl_draws, "data": store.fingerprint, "checkpoint_hash": file_hash(ckpt)}
    path = run.posterior_path(kind)
    if path.exists():
        cached = Posterior.load(path)
        if all(cached.meta.get(k) == v for k, v in expected.items()):
            return cached
    trained = load_trained(ckpt.parent, store, run.device)
    rows = evaluation_rows(run, store)
    post = trained.posterior(store, rows, run.scale.n_draws, run.scale.ode_steps, run.device, seed=run.seed,
                             n_log_prob=run.scale.n_kl_draws)
    post.meta.update(expected)
    post.save(path)
    return post


def time_sampling(trained: TrainedModel, store: Store, rows: np.ndarray, steps: int, n_draws: int = 1000) -> float:
    """Seconds to draw ``n_draws`` samples for one object (RK4, averaged over ``rows``)."""
    cond = trained.condition(store, np.asarray(rows), next(trained.model.parameters()).device.type)
    start = time.perf_counter()
    with torch.no_grad():
        trained.model.sample(cond, n_draws, steps)
    return (time.perf_counter() - start) / len(rows)


def solver_accuracy(trained: TrainedModel, store: Store, rows: np.ndarray, prior,
                    settings=(("euler", 10), ("midpoint", 5), ("midpoint", 10), ("rk4", 2), ("rk4", 5),
                              ("rk4", 10), ("rk4", 25)), reference: tuple[str, int] = ("rk4", 100)) -> pd.DataFrame:
    """Δlog p of test objects with cheaper ODE solvers against a reference solver.

    Returns one row per setting: network evaluations per integration, and the mean and
    largest absolute difference of Δlog p from the reference (nats).
    """
    from .cfm import METHODS

    rows = np.asarray(rows)
    device = next(trained.model.parameters()).device.type
    cond = trained.condition(store, rows, device)
    truth = store.catalog.iloc[rows][list(TARGETS)].to_numpy()
    theta = torch.as_tensor(trained.theta_std.forward(truth), dtype=torch.float32, device=device)
    log_prior = prior.log_prob(truth)

    def dlogp(method: str, steps: int) -> np.ndarray:
        lp = trained.model.log_prob(theta, cond, steps, method).cpu().double().numpy() + trained.theta_std.log_det
        return lp - log_prior

    ref = dlogp(*reference)
    out = []
    for method, steps in (*settings, reference):
        diff = np.abs(dlogp(method, steps) - ref)
        out.append({"method": method, "steps": steps, "evaluations": steps * METHODS[method],
                    "mean |Δ| [nats]": float(diff.mean()), "max |Δ| [nats]": float(diff.max())})
    return pd.DataFrame(out)


def structure_probe(trained: TrainedModel, store: Store, fit_rows: np.ndarray, test_rows: np.ndarray) -> pd.DataFrame:
    """How much of the true structure an image model's embedding holds: a linear read-out.

    A ridge regression (regularisation chosen by cross-validation) predicts each of
    ``STRUCTURE_COLUMNS`` from the image embedding f_img, and, for comparison, from the
    photometry alone; fitted on ``fit_rows``, scored by R² on ``test_rows``.

    Returns:
        one row per structural parameter: ``parameter``, ``R² from f_img``, ``R² from photometry``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    if trained.kind != "image":
        raise ValueError(f"structure_probe needs the image model, got the {trained.kind!r} model")
    store.require_columns(STRUCTURE_COLUMNS, "the structure probe")
    device = next(trained.model.parameters()).device.type

    def features(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            context = trained.model.encode(trained.condition(store, rows, device), batch=256).cpu().double().numpy()
        f_img, phot = np.split(context, [trained.model.encoder.out_dim], axis=1)  # context is [f_img; f_phot]
        return f_img, phot

    (img_fit, phot_fit), (img_test, phot_test) = features(np.asarray(fit_rows)), features(np.asarray(test_rows))
    out = []
    for column in STRUCTURE_COLUMNS:
        y_fit = store.catalog[column].to_numpy()[fit_rows]
        y_test = store.catalog[column].to_numpy()[test_rows]
        row = {"parameter": column}
        for label, x_fit, x_test in (("f_img", img_fit, img_test), ("photometry", phot_fit, phot_test)):
            ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x_fit, y_fit)
            row[f"R² from {label}"] = r2_score(y_test, ridge.predict(x_test))
        out.append(row)
    return pd.DataFrame(out)


def structure_gain(dlogp: dict[str, np.ndarray], probe: pd.DataFrame | None = None) -> str:
    """Sentences on how much of the reference model's Δlog p gain over photometry the image model
    realises and, given the :func:`structure_probe` table, which explanation the numbers support.

    Arguments:
        dlogp: per-galaxy Δlog p of the ``"phot"``, ``"image"`` and ``"structure"`` models.
        probe: the probe's table (columns ``R² from f_img`` and ``R² from photometry``).
    """
    phot, image, ref = (float(np.mean(dlogp[k])) for k in ("phot", "image", "structure"))
    head = (f"Given the true axis ratio, half-light radius and bulge fraction, the photometry network reaches a "
            f"mean Δlog p of {ref:.2f} nats against {phot:.2f} from photometry alone")
    if ref <= phot:
        return head + ": the structure adds nothing measurable here, so the images cannot be expected to help."
    share = (image - phot) / (ref - phot)
    text = (head + f", a gain of {ref - phot:.2f} nats that the images could in principle provide; the image model's "
            f"gain is {image - phot:+.2f} nats, {100 * share:.0f} % of it.")
    if probe is None or share >= 0.5:
        return text
    seen, base = (float(probe[c].mean()) for c in ("R² from f_img", "R² from photometry"))
    if seen - base < 0.1:
        return text + (f" The embedding predicts the structure hardly better than the magnitudes do (mean R² {seen:.2f} "
                       f"against {base:.2f}): the CNN has not learned to see it.")
    return text + (f" Yet the embedding holds the structure (mean R² {seen:.2f} against {base:.2f} from the magnitudes): "
                   f"the information reaches the velocity network, which has not learned to use it to put more "
                   f"posterior density on the true values.")
