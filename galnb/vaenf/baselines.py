"""Deterministic baselines on the flow stage's inputs: the paper's Table 1 claim, tested like for like.

The paper credits its flows for beating MLP and kNN regressors, whose R² it quotes from another
study on other data (AstroCLIP; Parker et al. 2024). Here the baselines see the same galaxies and
inputs as the flows: the flow model's own mean head (an MLP trained jointly with it by squared
error, so the flow's posterior mean differs from it only by the mean of the residual draws) and a
k-nearest-neighbour regression on the standardised inputs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..metrics import r2_score
from .model import VAENF

__all__ = ["mean_head_predictions", "knn_predictions", "knn_baseline"]


def mean_head_predictions(models: Sequence[VAENF], x: np.ndarray) -> np.ndarray:
    """The ensemble's average of its members' mean heads.

    Arguments:
        models: the ensemble.
        x: ``(B, n_inputs)`` inputs.
    Returns:
        ``(B, n_core + 1)`` predictions in the order of the members' ``params``, physical units.
    """
    cond = torch.as_tensor(np.asarray(x, np.float32))
    return np.mean([m.eval().predict_mean(cond).double().numpy() for m in models], axis=0)


def knn_predictions(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    x_test: np.ndarray, neighbours: Sequence[int] = (5, 10, 20, 40, 80)) -> tuple[np.ndarray, int]:
    """k-nearest-neighbour regression on standardised inputs, k chosen on the validation split.

    Arguments:
        x_train, y_train: ``(N, F)`` inputs and ``(N, D)`` targets it averages.
        x_val, y_val: the validation split, which picks k by the mean R² over the D targets.
        x_test: ``(M, F)`` inputs to predict.
        neighbours: the values of k tried.
    Returns:
        ``(M, D)`` predictions and the k chosen.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.uniform(size=(600, 2)); y = np.c_[x.sum(1), x[:, 0]]
        >>> pred, k = knn_predictions(x[:400], y[:400], x[400:500], y[400:500], x[500:])
        >>> bool(r2_score(y[500:], pred).min() > 0.9)
        True
    """
    def fit(k: int):
        return make_pipeline(StandardScaler(), KNeighborsRegressor(k)).fit(x_train, y_train)

    scores = {k: float(np.mean(r2_score(y_val, fit(k).predict(x_val)))) for k in neighbours if k <= len(x_train)}
    if not scores:
        raise ValueError(f"knn_predictions: every k in {tuple(neighbours)} exceeds the {len(x_train)} training rows")
    best = max(scores, key=scores.get)
    return fit(best).predict(x_test), best


def knn_baseline(catalog: pd.DataFrame, x: np.ndarray, splits: dict[str, np.ndarray], params: Sequence[str],
                 rows: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """:func:`knn_predictions` of the flow model's parameters on the same inputs and splits.

    Metallicity is learned, as branch 2 is, from the galaxies whose O/H is measurable
    (``oh_detectable``); the other parameters from every training galaxy.

    Arguments:
        catalog: the store's catalog. x: ``(N, F)`` inputs for every catalog row.
        splits: "train" and "val" row indices. params: the parameters, e.g. a model's ``params``.
        rows: the catalog rows to predict.
    Returns:
        ``(len(rows), len(params))`` predictions and the k chosen for each group of parameters.
    """
    measured = catalog["oh_detectable"].to_numpy(bool) if "oh_detectable" in catalog else np.ones(len(catalog), bool)
    groups = {"oh12": [p for p in params if p == "oh12"], "others": [p for p in params if p != "oh12"]}
    out, chosen = np.full((len(rows), len(params)), np.nan), {}
    for group, names in groups.items():
        if not names:
            continue
        train, val = (splits[s][measured[splits[s]]] if group == "oh12" else splits[s] for s in ("train", "val"))
        y = catalog[names].to_numpy(float)
        pred, chosen[group] = knn_predictions(x[train], y[train], x[val], y[val], x[rows])
        out[:, [list(params).index(p) for p in names]] = pred
    return out, chosen
