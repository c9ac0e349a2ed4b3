"""Scales, notebook parameters, the run directory and its manifest."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Iterable

from .io import atomic_write, file_hash

__all__ = [
    "Scale",
    "SCALES",
    "MODELS",
    "Run",
    "start_chapter",
    "requested_scale",
    "resolve_scale",
    "resolve_device",
    "project_root",
    "MissingArtifact",
    "run_folder",
    "manifest_key",
    "git_commit",
    "package_versions",
    "glue_all",
]

SCALE_ENV = "GALNB_SCALE"
RUN_DIR_ENV = "GALNB_RUN_DIR"
#: The CFM models chapter 03 trains: the CFM paper's photometry and image models; "measured",
#: photometry plus b/a, R50 and R90/R50 measured on the same cutouts (what three hand-measured
#: numbers add: the bar an image model must clear); and "structure", photometry plus the true
#: structural parameters the simulated images were rendered from (a reference only a simulation
#: allows: what could a perfect image encoder add?).
MODELS: tuple[str, ...] = ("phot", "image", "measured", "structure")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Scale:
    """Every size knob of one scale, so that no chapter invents its own.

    ``ci`` runs every notebook in minutes on 2 CPU cores; ``small`` takes under an hour on
    2 CPU cores for the whole book; ``paper`` is the papers' setting (GPU).
    """

    name: str
    n_galaxies: int  # after the survey's selection cuts
    image_size: int  # cutout side in pixels at 0.396"/px
    max_epochs: int  # CFM training
    patience: int  # early-stopping patience in epochs
    lr: float  # AdamW learning rate of the CFM models
    batch_size: int  # CFM models and the VAE
    ode_steps: int  # RK4 steps when sampling / computing log p
    n_draws: int  # posterior draws per test object
    n_kl_draws: int  # of those, draws whose exact log-density feeds the D_KL Monte Carlo
    n_eval: int | None  # test objects scored in chapters 04-06 (the first n_eval; None: the whole test split)
    toy_train_steps: int  # optimiser steps on chapter 02's analytic problem
    toy_n_samples: int  # posterior draws shown in chapter 02
    vae_epochs: int
    vae_lr: float  # Adam learning rate of the VAE (the VAE-NF paper: 1e-4)
    flow_epochs: int
    flow_batch_size: int  # galaxies per step of the VAE-NF flow stage (the paper gives none)
    n_ensemble: int  # VAE-NF seeds for the epistemic uncertainty
    n_structure: int  # simulated star formers whose images chapter 01 measures against real galaxies
    n_sed_fits: int  # test galaxies chapter 04 fits with bagpipes to time SED fitting
    n_sed_live: int  # nautilus live points of those fits
    lr_schedule: str = "constant"  # CFM learning rate over the epochs: "constant" or "cosine"
    augment: bool = False  # the image model sees its training cutouts flipped and turned by 90 degrees
    encoder_norm: str = "none"  # normalisation in the image encoder's blocks: "none" (the paper) or "group"


SCALES: dict[str, Scale] = {
    s.name: s
    for s in (
        Scale(name="ci", n_galaxies=2_000, image_size=32, max_epochs=8, patience=3, lr=1e-3, batch_size=64,
              ode_steps=20, n_draws=200, n_kl_draws=50, n_eval=None, toy_train_steps=1_500, toy_n_samples=2_000,
              vae_epochs=4, vae_lr=1e-3, flow_epochs=10, flow_batch_size=256, n_ensemble=2, n_structure=120,
              n_sed_fits=1, n_sed_live=100, lr_schedule="cosine", augment=True, encoder_norm="group"),
        Scale(name="small", n_galaxies=12_000, image_size=48, max_epochs=40, patience=10, lr=1e-3, batch_size=64,
              ode_steps=20, n_draws=500, n_kl_draws=100, n_eval=None, toy_train_steps=8_000, toy_n_samples=5_000,
              vae_epochs=10, vae_lr=1e-3, flow_epochs=40, flow_batch_size=256, n_ensemble=2, n_structure=1_000,
              n_sed_fits=3, n_sed_live=400, lr_schedule="cosine", augment=True, encoder_norm="group"),
        Scale(name="paper", n_galaxies=106_800, image_size=128, max_epochs=300, patience=10, lr=5e-5, batch_size=64,
              ode_steps=100, n_draws=1_000, n_kl_draws=1_000, n_eval=None, toy_train_steps=30_000,
              toy_n_samples=10_000, vae_epochs=50, vae_lr=1e-4, flow_epochs=200, flow_batch_size=256, n_ensemble=5,
              n_structure=4_000, n_sed_fits=5, n_sed_live=400),
    )
}
SCALE_CHOICES: tuple[str, ...] = (*SCALES, "auto")


class MissingArtifact(FileNotFoundError):
    """An upstream chapter's output is not in the run directory."""


def _choice_error(name: str, value: object, choices: tuple[str, ...]) -> ValueError:
    return ValueError(f"parameter {name}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def requested_scale(scale: str | None, default: str = "auto") -> tuple[str, str]:
    """The scale asked for and who asked: an explicit ``scale`` wins, then ``$GALNB_SCALE``,
    then ``default`` (the notebooks' ``"auto"``; ``python -m galnb book`` takes ``"ci"``).

    Returns:
        (value, source): source names the parameter or the variable, for error messages.
    """
    if scale is not None:
        return scale, "scale"
    if os.environ.get(SCALE_ENV):
        return os.environ[SCALE_ENV], f"${SCALE_ENV}"
    return default, "scale"


def resolve_scale(scale: str | None) -> Scale:
    """The Scale for a notebook's ``scale`` parameter (see :func:`requested_scale`).

    ``"auto"`` means ``paper`` when CUDA is available and ``ci`` otherwise.
    """
    value, source = requested_scale(scale)
    if value not in SCALE_CHOICES:
        raise _choice_error(source, value, SCALE_CHOICES)
    if value == "auto":
        value = "paper" if _cuda_available() else "ci"
    return SCALES[value]


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a notebook's ``device`` parameter."""
    if device not in DEVICES:
        raise _choice_error("device", device, DEVICES)
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if device == "cuda" and not _cuda_available():
        raise ValueError("parameter device='cuda' but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return device


def project_root(start: Path | None = None) -> Path:
    """The repository root (the folder holding ``_toc.yml``), else the working directory.

    Notebooks run from ``notebooks/`` in Jupyter and from the root under papermill;
    both must find the same run directory.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() and (folder / "galnb").is_dir():
            return folder
    return here


def _validate_data(data: str) -> str:
    if data in ("mock", "sdss"):
        return data
    path = Path(data).expanduser()
    if not path.exists():
        raise ValueError(f"parameter data={data!r} is not 'mock', 'sdss' or an existing folder")
    return str(path.resolve())


def _data_key(data: str) -> str:
    if data in ("mock", "sdss"):
        return data
    return "user-" + hashlib.sha1(data.encode()).hexdigest()[:8]


def manifest_key(chapter: str, params: dict) -> str:
    """A chapter execution's entry in ``manifest.json``: the chapter, then its model if any (``03_train-image``)."""
    return chapter + (f"-{params['model']}" if "model" in params else "")


def run_folder(run_dir: str | Path | None, scale: str, data: str, seed: int) -> Path:
    """``<run_dir>/<scale>-<data>-seed<seed>``; ``run_dir`` None (the notebooks' default) takes
    ``$GALNB_RUN_DIR``, else ``runs``; a relative one is taken from the repository root."""
    root = Path(run_dir if run_dir is not None else os.environ.get(RUN_DIR_ENV) or "runs").expanduser()
    if not root.is_absolute():
        root = project_root() / root
    return root / f"{scale}-{_data_key(data)}-seed{seed}"


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"parameter run_dir={str(path)!r} is not a writable folder: {err}") from err
    return path


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_root(), capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_VERSIONED = ("galnb", "torch", "numpy", "scipy", "galsim", "bagpipes", "zuko", "matplotlib")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class Run:
    """One chapter's run: validated parameters and the run directory's layout.

    Layout of ``dir`` (one folder per scale, data and seed)::

        data/                 the survey store (chapter 01)
        models/<model>/       checkpoints of the CFM models (chapter 03)
        models/vaenf-<cond>/  VAE-NF checkpoints (chapter 04)
        posteriors/<model>.npz  posterior draws and log-densities on test objects
        metrics/              metric tables (chapter 05)
        manifest.json         per chapter: parameters, versions, commit, data and artifact
                              hashes, wall time and hardware
    """

    chapter: str
    scale: Scale
    data: str
    seed: int
    device: str
    dir: Path
    params: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    auto_scale: bool = False  # the scale was chosen by scale="auto" (the card says so)
    _card_handle: object = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def model_dir(self, model: str) -> Path:
        return self.dir / "models" / model

    def posterior_path(self, model: str) -> Path:
        return self.dir / "posteriors" / f"{model}.npz"

    @property
    def metrics_dir(self) -> Path:
        return self.dir / "metrics"

    def store(self):
        """The run's data store (chapter 01 makes it), as a :class:`galnb.data.Store`, with the structure
        measured on its cutouts (:func:`galnb.morphology.with_measured_structure`)."""
        from .data import load_store
        from .morphology import with_measured_structure

        return with_measured_structure(load_store(self.require(self.data_dir / "meta.json", "01_data").parent))

    def trained(self, kind: str, store=None):
        """The ``kind`` CFM model trained by chapter 03, as a :class:`galnb.training.TrainedCFM` on ``self.device``.

        Arguments:
            kind: one of ``MODELS``.
            store: the run's store, if already open (the checkpoint must belong to it).
        """
        from .training import load_trained

        if kind not in MODELS:
            raise _choice_error("model", kind, MODELS)
        checkpoint = self.require(self.model_dir(kind) / "best.pt", "03_train", model=kind)
        return load_trained(checkpoint.parent, store if store is not None else self.store(), self.device)

    def papermill_command(self, notebook: str, **extra: object) -> str:
        """The command that reproduces ``notebook`` with this run's parameters, its run directory and device."""
        params = {"scale": self.scale.name, "data": self.data, "seed": self.seed, "device": self.device,
                  "run_dir": self.dir.parent, **extra}
        flags = " ".join(f"-p {k} {shlex.quote(str(v))}" for k, v in params.items())
        return f"papermill notebooks/{notebook}.ipynb /tmp/{notebook}.out.ipynb {flags}"

    def require(self, path: Path, notebook: str, **extra: object) -> Path:
        """``path`` if it exists, else an error naming the chapter that writes it."""
        if not Path(path).exists():
            raise MissingArtifact(
                f"{path} is missing: chapter {notebook} writes it. Run it first with\n"
                f"  {self.papermill_command(notebook, **extra)}"
            )
        return Path(path)

    def card(self) -> dict[str, str]:
        versions = package_versions()
        return {
            "chapter": self.chapter,
            "scale": self.scale.name + (f" (chosen by scale='auto' because torch sees "
                                        f"{'a' if self.scale.name == 'paper' else 'no'} CUDA GPU: "
                                        f"{self.scale.n_galaxies:,} galaxies; pass -p scale ci, small or paper "
                                        f"to choose)" if self.auto_scale else ""),
            "data": self.data,
            "device": self.device + (f" ({_gpu_name()})" if self.device == "cuda" else ""),
            "seed": str(self.seed),
            "run directory": str(self.dir),
            "git commit": git_commit(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started)),
            "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        }

    def save_table(self, name: str, table) -> Path:
        """Write a metric table (pandas DataFrame) to ``metrics/<name>.csv`` atomically."""
        path = self.metrics_dir / f"{name}.csv"
        with atomic_write(path, "w") as fh:
            table.to_csv(fh)
        return path

    @property
    def key(self) -> str:
        """This run's entry in the manifest, e.g. ``03_train-image``."""
        return manifest_key(self.chapter, self.params)

    def finish(self, artifacts: Iterable[str | Path] = ()) -> float:
        """Record this chapter in the run directory's ``manifest.json``; return its wall time (s).

        The entry holds every parameter, the package versions, the git commit, the hash
        of the data set and of each artifact the chapter wrote, and the wall time and
        hardware (the book's execution page reads it). The run card shown at the top of
        the notebook is updated with the wall time.
        """
        wall = time.time() - self.started
        data_meta = self.data_dir / "meta.json"
        entry = {
            "parameters": {"scale": self.scale.name, "data": self.data, "seed": self.seed, "device": self.device,
                           **{k: v for k, v in self.params.items()}},
            "git_commit": git_commit(),
            "packages": package_versions(),
            "data_hashes": json.loads(data_meta.read_text())["hashes"] if data_meta.exists() else None,
            "artifacts": {str(Path(a).relative_to(self.dir)): file_hash(a) for a in artifacts},
            "wall_s": round(wall, 1),
            "hardware": _hardware(self.device),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        path = self.dir / "manifest.json"
        manifest = json.loads(path.read_text()) if path.exists() else {}
        manifest[self.key] = entry
        with atomic_write(path, "w") as fh:
            json.dump(manifest, fh, indent=2, default=str)
        if self._card_handle is not None:
            self._card_handle.update(_card_html({**self.card(), "wall time": f"{wall:.1f} s"}))
        return wall


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def _hardware(device: str) -> str:
    if device == "cuda":
        import torch

        return f"{torch.cuda.device_count()} x {_gpu_name()}"
    return f"{os.cpu_count()} CPU cores ({platform.machine()})"


def start_chapter(
    chapter: str,
    *,
    scale: str,
    data: str,
    seed: int,
    device: str,
    run_dir: str,
    show: bool = True,
    **extra: object,
) -> Run:
    """Validate a notebook's parameters, set seeds, show the run card.

    Every check here is cheap, so a bad parameter fails within seconds, before any
    heavy work. An explicit parameter wins over the environment: ``scale`` and ``run_dir``
    None (the notebooks' defaults) take ``$GALNB_SCALE`` and ``$GALNB_RUN_DIR``, else ``"auto"``
    and ``"runs"``.

    Arguments:
        chapter: the notebook's name, e.g. ``"03_train"``.
        scale: ``"ci" | "small" | "paper" | "auto"`` or None.
        data: ``"mock" | "sdss"`` or a folder in the common data format.
        seed: integer seed for data splits, initialisation and sampling.
        device: ``"auto" | "cpu" | "cuda"``.
        run_dir: root of the run directories (relative paths are taken from the
            repository root), or None.
        extra: chapter-specific parameters, recorded in the manifest.
    Returns:
        the Run, whose ``dir`` is ``run_dir/<scale>-<data>-seed<seed>``.
    """
    if "model" in extra and extra["model"] not in MODELS:
        raise _choice_error("model", extra["model"], MODELS)
    resolved_scale = resolve_scale(scale)
    data = _validate_data(data)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"parameter seed={seed!r} is not valid; use a non-negative integer")
    resolved_device = resolve_device(device)
    folder = _writable_dir(run_folder(run_dir, resolved_scale.name, data, seed))

    import numpy as np
    import torch

    np.set_printoptions(legacy="1.25")  # glued numpy scalars print as 0.18, not np.float64(0.18)
    np.random.seed(seed)
    torch.manual_seed(seed)
    run = Run(chapter, resolved_scale, data, seed, resolved_device, folder, dict(extra),
              auto_scale=requested_scale(scale)[0] == "auto")
    _figures_only_when_shown()
    if show:
        run._card_handle = _display_card(run.card())
    return run


def _figures_only_when_shown() -> None:
    """In a notebook, show a figure only where the chapter glues or displays it.

    Chapters glue figures made by ``galnb.plots``; without this, the inline backend
    would also print every figure at the end of the cell that made it.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is not None:
        import matplotlib.pyplot as plt

        plt.close(plt.figure())  # IPython's inline backend turns interactive mode on with the first figure
        plt.ioff()


def _card_html(card: dict[str, str]):
    from IPython.display import HTML

    rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                   for k, v in card.items())
    return HTML(f"<table class='galnb-run-card'>{rows}</table>")


def _display_card(card: dict[str, str]):
    """Show the run card (an updatable display in a notebook, plain text elsewhere)."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            return display(_card_html({**card, "wall time": "running…"}), display_id=True)
    except ImportError:
        pass
    width = max(map(len, card))
    print("\n".join(f"{k:<{width}}  {v}" for k, v in card.items()), file=sys.stdout)
    return None


def glue_all(prefix: str, **values: object) -> None:
    """Glue each value under ``<prefix>_<name>`` for the book's pages (not shown in the notebook).

    ``glue_all("eval", n_draws=200)`` is ``myst_nb.glue("eval_n_draws", 200, display=False)``.
    """
    from myst_nb import glue

    for name, value in values.items():
        glue(f"{prefix}_{name}", value, display=False)
