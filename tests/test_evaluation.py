"""galnb.evaluation: one estimator interface, one posterior builder, and the probes of chapter 05."""

import math

import numpy as np
import pytest
import torch

from galnb.data import write_store
from galnb.evaluation import PosteriorEstimator, cfm_posterior, posterior, structure_probe
from galnb.report import structure_gain
from galnb.training import TrainConfig, load_trained, train_cfm

from conftest import synthetic_catalog

FAST = dict(lr=2e-3, batch_size=32, max_epochs=3, patience=5, hidden=32, depth=2)


class ShiftedGaussian:
    """q(θ | c) = N(θ; c, I): a closed-form estimator with no sample_and_log_prob."""

    def sample(self, cond: torch.Tensor, n: int) -> torch.Tensor:
        return cond[:, None, :] + torch.randn(cond.shape[0], n, cond.shape[1], dtype=cond.dtype)

    def log_prob(self, theta: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        centred = theta - (cond if theta.ndim == 2 else cond[:, None, :])
        return -0.5 * centred.square().sum(-1) - 0.5 * cond.shape[1] * math.log(2 * math.pi)


def test_posterior_of_any_estimator_gives_draws_and_exact_densities():
    cond = torch.zeros(4, 2, dtype=torch.float64)
    truth = np.ones((4, 2))
    estimator = ShiftedGaussian()
    assert isinstance(estimator, PosteriorEstimator)
    post = posterior(estimator, cond, truth, np.arange(10, 14), 50, n_log_prob=7, seed=3, columns=("a", "b"),
                     meta={"model": "toy"})
    assert post.samples.shape == (4, 50, 2) and post.log_prob_samples.shape == (4, 7)
    assert post.log_prob_true == pytest.approx(np.full(4, -1.0 - math.log(2 * math.pi)))
    expected = -0.5 * (post.samples[:, :7] ** 2).sum(-1) - math.log(2 * math.pi)
    assert post.log_prob_samples == pytest.approx(expected)
    assert post.meta["model"] == "toy" and post.meta["n_log_prob"] == 7 and post.columns == ("a", "b")
    again = posterior(estimator, cond, truth, np.arange(4), 50, n_log_prob=7, seed=3)
    assert np.array_equal(again.samples, post.samples), "the seed fixes the draws"
    with pytest.raises(ValueError, match="n_log_prob=51 must be between 1 and n_draws=50"):
        posterior(estimator, cond, truth, np.arange(4), 50, n_log_prob=51)


def test_trained_cfm_is_a_posterior_estimator_in_physical_units(tiny_store, tmp_path):
    train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **FAST), progress=False)
    trained = load_trained(tmp_path / "m", tiny_store)
    assert isinstance(trained, PosteriorEstimator)
    rows = tiny_store.splits["test"][:3]
    post = cfm_posterior(trained, tiny_store, rows, n_draws=6, steps=4, seed=2)
    assert post.samples.dtype == np.float64 and post.meta["model"] == "phot"
    # the draws are in the catalog's units: their spread is the properties' spread, not one
    spread = tiny_store.catalog[list(post.columns)].std().to_numpy()
    assert trained.theta_std.numpy() == pytest.approx(spread, rel=0.2)


def test_structure_probe_reads_structure_that_only_the_images_hold(tmp_path):
    rng = np.random.default_rng(5)
    cat = synthetic_catalog(400).assign(axis_ratio=rng.uniform(0.2, 1.0, 400), r_half=rng.lognormal(0.5, 0.3, 400),
                                        bulge_fraction=rng.uniform(0, 1, 400))
    images = np.repeat((cat["axis_ratio"].to_numpy() * 250).astype(np.uint8), 16 * 16 * 3).reshape(400, 16, 16, 3)
    store = write_store(tmp_path / "s", cat, images, seed=0, source="mock", params={})
    train_cfm(store, tmp_path / "image", TrainConfig(model="image", **FAST), progress=False)
    probe = structure_probe(load_trained(tmp_path / "image", store), store, store.splits["train"], store.splits["test"])
    by_name = probe.set_index("parameter")
    # the axis ratio is written into the pixels and nowhere else; the other two are in neither
    assert by_name.loc["axis_ratio", "R² from f_img"] > 0.9
    assert by_name.loc["axis_ratio", "R² from photometry"] < 0.2
    assert by_name.loc["bulge_fraction"].max() < 0.2
    train_cfm(store, tmp_path / "phot", TrainConfig(model="phot", **FAST), progress=False)
    with pytest.raises(ValueError, match="needs the image model"):
        structure_probe(load_trained(tmp_path / "phot", store), store, store.splits["train"], store.splits["test"])
    gain = structure_gain({"phot": np.array([1.0, 1.2]), "image": np.array([1.2, 1.4]),
                           "structure": np.array([1.9, 2.1])})
    assert "a gain of 0.90 nats" in gain and "+0.20 nats, 22 % of it" in gain
    assert "adds nothing" in structure_gain({"phot": np.ones(2), "image": np.ones(2), "structure": np.zeros(2)})
    unused = {"phot": np.ones(2), "image": np.ones(2), "structure": np.full(2, 2.0)}
    assert "has not learned to use it" in structure_gain(unused, probe)  # f_img reads the axis ratio: R² 0.9+ vs < 0.2
    blind = probe.assign(**{"R² from f_img": probe["R² from photometry"]})
    assert "has not learned to see it" in structure_gain(unused, blind)
    assert structure_gain(unused | {"image": np.full(2, 1.8)}, probe).endswith("80 % of it.")


def test_cached_posteriors_are_reused_only_for_the_same_test_rows(tiny_store, tmp_path):
    from dataclasses import replace

    from galnb.evaluation import posterior_on_test_set
    from galnb.runs import SCALES, Run

    scale = replace(SCALES["ci"], n_eval=3, n_draws=4, n_kl_draws=2, ode_steps=2)
    run = Run(chapter="05_evaluation", scale=scale, data="mock", seed=0, device="cpu", dir=tmp_path / "run")
    train_cfm(tiny_store, run.model_dir("phot"), TrainConfig(model="phot", **FAST), progress=False)
    first = posterior_on_test_set(run, tiny_store, "phot")
    assert len(first.test_index) == 3
    written = run.posterior_path("phot").stat().st_mtime_ns
    again = posterior_on_test_set(run, tiny_store, "phot")
    assert run.posterior_path("phot").stat().st_mtime_ns == written  # same rows, same settings: the cache
    assert again.meta["seconds_per_1000_draws"] == first.meta["seconds_per_1000_draws"]
    wider = posterior_on_test_set(replace(run, scale=replace(scale, n_eval=None)), tiny_store, "phot")
    assert np.array_equal(wider.test_index, tiny_store.splits["test"])  # not the three cached rows
