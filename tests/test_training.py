"""galnb.training: the loop, checkpoints, resume, and refusals."""

import numpy as np
import pytest
import torch

from galnb import training
from galnb.data import StoreError, write_store
from galnb.evaluation import cfm_posterior
from galnb.io import CheckpointError
from galnb.morphology import MEASURED_STRUCTURE_COLUMNS, with_measured_structure
from galnb.properties import TARGETS
from galnb.training import STRUCTURE_COLUMNS, TrainConfig, learning_curve, load_trained, train_cfm

from conftest import synthetic_catalog

FAST = dict(lr=2e-3, batch_size=32, max_epochs=3, patience=5, hidden=32, depth=2)


@pytest.mark.parametrize("kind", ["phot", "image"])
def test_training_writes_a_checkpoint_that_loads_and_samples(tiny_store, tmp_path, kind):
    result = train_cfm(tiny_store, tmp_path / kind, TrainConfig(model=kind, **FAST), progress=False)
    assert list(result.history["epoch"]) == [1, 2, 3]
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    trained = load_trained(tmp_path / kind, tiny_store)
    post = cfm_posterior(trained, tiny_store, tiny_store.splits["test"][:4], n_draws=16, steps=4)
    assert post.samples.shape == (4, 16, 5) and np.isfinite(post.log_prob_samples).all()
    assert learning_curve(tmp_path / kind)["val_loss"].min() == pytest.approx(result.history["val_loss"].min())


def test_posterior_log_density_is_in_physical_units(tiny_store, tmp_path):
    train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **FAST), progress=False)
    trained = load_trained(tmp_path / "m", tiny_store)
    rows = tiny_store.splits["test"][:3]
    post = cfm_posterior(trained, tiny_store, rows, n_draws=8, steps=4)
    theta_std = tiny_store.standardizer(TARGETS)
    cond_std = tiny_store.standardizer(training.condition_columns("phot"))
    theta = torch.as_tensor(theta_std.forward(post.theta_true), dtype=torch.float32)
    columns = list(training.condition_columns("phot"))
    cond = torch.as_tensor(cond_std.forward(tiny_store.catalog.iloc[rows][columns].to_numpy()), dtype=torch.float32)
    standard = trained.model.log_prob(theta, cond, steps=4).double().numpy()
    assert post.log_prob_true == pytest.approx(standard - np.log(theta_std.std).sum(), abs=1e-4)


def test_posterior_with_densities_for_some_draws_matches_backward_log_prob(tiny_store, tmp_path):
    train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **FAST), progress=False)
    trained = load_trained(tmp_path / "m", tiny_store)
    rows = tiny_store.splits["test"][:3]
    post = cfm_posterior(trained, tiny_store, rows, n_draws=12, steps=8, n_log_prob=5)
    assert post.samples.shape == (3, 12, 5) and post.log_prob_samples.shape == (3, 5)
    assert post.meta["n_log_prob"] == 5 and np.isfinite(post.samples).all()
    # the forward-tracked densities belong to the first five draws: a backward pass from them agrees
    backward = trained.log_prob(torch.as_tensor(post.samples[:, :5]), trained.condition(tiny_store, rows), steps=8)
    assert post.log_prob_samples == pytest.approx(backward.numpy(), abs=2e-3)
    with pytest.raises(ValueError, match="n_log_prob=13"):
        cfm_posterior(trained, tiny_store, rows, n_draws=12, steps=8, n_log_prob=13)


def test_validation_loss_draws_its_noise_without_reseeding_the_global_generators(tiny_store, tmp_path, monkeypatch):
    # Reseeding torch's global generators (which torch.manual_seed does for every GPU too) would,
    # on a GPU, make every epoch after the first replay the same training noise.
    train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **{**FAST, "max_epochs": 1}), progress=False)
    trained = load_trained(tmp_path / "m", tiny_store)
    val = training._Batches(tiny_store, "val", trained, 64, shuffle=False, seed=0)

    def reseeded(*args):
        raise AssertionError("evaluate_loss reseeded torch's global generators")

    monkeypatch.setattr(torch, "manual_seed", reseeded)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded)
    before = torch.get_rng_state()
    first = training.evaluate_loss(trained.model, val, "cpu", seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert training.evaluate_loss(trained.model, val, "cpu", seed=3) == first  # a fixed noise, epoch after epoch
    assert training.evaluate_loss(trained.model, val, "cpu", seed=4) != first
    assert "cuda_rng" in torch.load(tmp_path / "m" / "last.pt", weights_only=False)  # resumed on a GPU too


def train_killed_in_third_epoch_then_resumed(store, folder, config, monkeypatch):
    """Train until the third epoch's validation, interrupt there, then call train_cfm again."""
    calls = {"n": 0}
    real = training.evaluate_loss

    def dies_in_third_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate_loss", dies_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_cfm(store, folder, config, progress=False)
    monkeypatch.setattr(training, "evaluate_loss", real)
    return train_cfm(store, folder, config, progress=False)


def test_interrupted_training_resumes_from_the_last_epoch(tiny_store, tmp_path, monkeypatch):
    config = TrainConfig(model="phot", **{**FAST, "max_epochs": 4})
    result = train_killed_in_third_epoch_then_resumed(tiny_store, tmp_path / "m", config, monkeypatch)
    assert result.resumed_from == 2 and list(result.history["epoch"]) == [1, 2, 3, 4]
    again = train_cfm(tiny_store, tmp_path / "m", config, progress=False)  # finished: returns at once
    assert again.resumed_from == 4 and len(again.history) == 4


def test_cosine_schedule_anneals_the_rate_and_survives_a_resume(tiny_store, tmp_path, monkeypatch):
    config = TrainConfig(model="phot", **{**FAST, "max_epochs": 5, "lr_schedule": "cosine"})
    result = train_killed_in_third_epoch_then_resumed(tiny_store, tmp_path / "m", config, monkeypatch)
    assert result.resumed_from == 2
    # epoch e trains at eta_min + (lr - eta_min)(1 + cos(pi (e - 1) / max_epochs)) / 2, eta_min = lr / 100
    lr, lo = config.lr, config.lr / 100
    expected = [lo + (lr - lo) * (1 + np.cos(np.pi * e / 5)) / 2 for e in range(5)]
    assert list(result.history["lr"]) == pytest.approx(expected, rel=1e-9)
    constant = train_cfm(tiny_store, tmp_path / "c", TrainConfig(model="phot", **FAST), progress=False)
    assert list(constant.history["lr"]) == [config.lr] * 3
    with pytest.raises(ValueError, match=r"lr_schedule='step'.*\('constant', 'cosine'\)"):
        TrainConfig(lr_schedule="step")


def test_resuming_with_another_config_is_refused(tiny_store, tmp_path):
    train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **FAST), progress=False)
    with pytest.raises(CheckpointError, match=r"last\.pt.*another run_dir"):
        train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **{**FAST, "lr": 1e-4}), progress=False)


def test_checkpoint_from_another_data_set_is_refused(tiny_store, tmp_path):
    train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **FAST), progress=False)
    other = write_store(tmp_path / "other", synthetic_catalog(240, seed=9), np.zeros((240, 16, 16, 3), np.uint8),
                        seed=0, source="mock", params={})
    with pytest.raises(CheckpointError, match=r"best\.pt: trained on data set"):
        load_trained(tmp_path / "m", other)


def test_truncated_checkpoint_names_the_file(tiny_store, tmp_path):
    train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **FAST), progress=False)
    best = tmp_path / "m" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"best\.pt: cannot be read"):
        load_trained(tmp_path / "m", tiny_store)


def test_nan_loss_stops_training_with_a_clear_message(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setattr(training.CFM, "loss", lambda self, theta, cond: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1; lower lr"):
        train_cfm(tiny_store, tmp_path / "m", TrainConfig(model="phot", **FAST), progress=False)


def test_unknown_model_kind_is_refused():
    with pytest.raises(ValueError, match=r"model='foo'.*\('phot', 'image', 'measured', 'structure'\)"):
        TrainConfig(model="foo")


def test_structure_reference_model_is_conditioned_on_photometry_and_true_structure(tiny_store, tmp_path):
    needs = r"catalog\.parquet: training the structure CFM model needs column\(s\) \['axis_ratio'"
    with pytest.raises(StoreError, match=needs):
        train_cfm(tiny_store, tmp_path / "refused", TrainConfig(model="structure", **FAST), progress=False)
    cat = synthetic_catalog(240).assign(axis_ratio=0.5, bulge_fraction=0.2)
    cat["r_half"] = np.random.default_rng(3).lognormal(0.5, 0.3, len(cat))
    cat["axis_ratio"] += 0.4 * np.random.default_rng(4).random(len(cat))
    store = write_store(tmp_path / "s", cat, np.zeros((240, 16, 16, 3), np.uint8), seed=0, source="mock", params={})
    train_cfm(store, tmp_path / "m", TrainConfig(model="structure", **FAST), progress=False)
    trained = load_trained(tmp_path / "m", store)
    assert trained.model.cond_dim == 8 and trained.model.encoder is None
    rows = store.splits["test"][:3]
    cond = trained.standardised(trained.condition(store, rows))
    assert cond.shape == (3, 8)
    # the last three condition columns are the standardised structural parameters of those rows
    truth = store.catalog.iloc[rows][list(STRUCTURE_COLUMNS)].to_numpy()
    expected = store.standardizer(STRUCTURE_COLUMNS).forward(truth)
    assert cond[:, 5:].numpy() == pytest.approx(expected, abs=1e-5)


def test_measured_structure_reference_is_conditioned_on_photometry_and_the_measured_numbers(tiny_store, tmp_path):
    needs = r"measured CFM model needs column\(s\) \['axis_ratio_measured'"
    with pytest.raises(StoreError, match=needs):
        train_cfm(tiny_store, tmp_path / "refused", TrainConfig(model="measured", **FAST), progress=False)
    store = with_measured_structure(tiny_store)
    train_cfm(store, tmp_path / "m", TrainConfig(model="measured", **FAST), progress=False)
    trained = load_trained(tmp_path / "m", store)
    assert trained.model.cond_dim == 8 and trained.model.encoder is None
    rows = store.splits["test"][:3]
    measured = store.catalog.iloc[rows][list(MEASURED_STRUCTURE_COLUMNS)].to_numpy()
    expected = store.standardizer(MEASURED_STRUCTURE_COLUMNS).forward(measured)
    assert trained.standardised(trained.condition(store, rows))[:, 5:].numpy() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("kind", ["phot", "image"])
def test_same_seed_gives_identical_weights_and_posteriors_on_cpu(tiny_store, tmp_path, kind):
    config = TrainConfig(model=kind, **{**FAST, "max_epochs": 2})
    posts = []
    for name in ("a", "b"):
        train_cfm(tiny_store, tmp_path / name, config, progress=False)
        trained = load_trained(tmp_path / name, tiny_store)
        posts.append(cfm_posterior(trained, tiny_store, tiny_store.splits["test"][:3], n_draws=8, steps=4, seed=1))
    a, b = (torch.load(tmp_path / n / "best.pt", weights_only=True)["model"] for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(posts[0].samples, posts[1].samples)
    assert np.array_equal(posts[0].log_prob_true, posts[1].log_prob_true)


def test_optimiser_step_clips_the_total_gradient_norm_when_asked():
    weight = torch.nn.Parameter(torch.zeros(3))
    sgd = torch.optim.SGD([weight], lr=1.0)
    training.optimiser_step(sgd, (weight * torch.tensor([30.0, 40.0, 0.0])).sum(), max_grad_norm=10.0)
    assert weight.detach().tolist() == pytest.approx([-6.0, -8.0, 0.0])  # gradient (30, 40, 0) scaled to norm 10
    training.optimiser_step(sgd, (weight * torch.tensor([1.0, 0.0, 0.0])).sum())
    assert weight.detach().tolist() == pytest.approx([-7.0, -8.0, 0.0])  # unclipped, and the old gradient cleared


def test_augmented_training_differs_and_a_checkpoint_from_before_the_option_resumes(tiny_store, tmp_path):
    # augment=True trains on turned and mirrored cutouts, so its weights differ from the plain run's
    plain, turned = (TrainConfig(model="image", augment=a, **{**FAST, "max_epochs": 1}) for a in (False, True))
    for name, config in (("plain", plain), ("turned", turned)):
        train_cfm(tiny_store, tmp_path / name, config, progress=False)
    a, b = (torch.load(tmp_path / n / "best.pt", weights_only=True)["model"] for n in ("plain", "turned"))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    # a finished run whose checkpoint predates the option (no "augment" key) is taken as augment=False
    last = tmp_path / "plain" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["meta"]["config"]["augment"]
    torch.save(state, last)
    again = train_cfm(tiny_store, tmp_path / "plain", plain, progress=False)
    assert again.resumed_from == 1
    with pytest.raises(CheckpointError, match="was trained with"):
        train_cfm(tiny_store, tmp_path / "plain", turned, progress=False)


def test_group_normalised_encoder_trains_saves_and_loads_back(tiny_store, tmp_path):
    with pytest.raises(ValueError, match=r"encoder_norm='batch' is not valid; choose one of \('none', 'group'\)"):
        TrainConfig(model="image", encoder_norm="batch")
    config = TrainConfig(model="image", encoder_norm="group", **{**FAST, "max_epochs": 1})
    train_cfm(tiny_store, tmp_path / "m", config, progress=False)
    trained = load_trained(tmp_path / "m", tiny_store)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in trained.modules()) == 4
    rows = tiny_store.splits["test"][:2]
    theta = torch.tensor(tiny_store.catalog.iloc[rows][list(TARGETS)].to_numpy())
    again = load_trained(tmp_path / "m", tiny_store)
    assert torch.equal(trained.log_prob(theta, trained.condition(tiny_store, rows), steps=2),
                       again.log_prob(theta, again.condition(tiny_store, rows), steps=2))
    # a checkpoint written before the option (encoder config without "norm") has the paper's blocks
    old = {k: v for k, v in trained.model.encoder.config().items() if k != "norm"}
    assert training.ImageEncoder(**old).norm == "none"
