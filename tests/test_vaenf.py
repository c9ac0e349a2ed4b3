"""Tests of galnb/vaenf/: densities, the chain-rule sampler, the mixture posterior, checkpoints, shapes."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from galnb import evaluation
from galnb.data import images_to_tensor
from galnb.io import CheckpointError
from galnb.metrics import Posterior, r2_score
from galnb.properties import TARGETS
from galnb.vaenf import (
    CFM_CORE,
    VAE,
    VAENF,
    EnsembleMixture,
    VAENFData,
    confusion_matrix,
    encode_images,
    fit_ensemble,
    flow_inputs,
    knn_baseline,
    latent_directions,
    load_ensemble,
    mean_head_predictions,
    perturbational_decoding,
    predict,
    save_ensemble,
    train_vae,
)


def _roughen(model: torch.nn.Module, scale: float, seed: int = 0) -> None:
    """Perturb every weight so that the untrained flows are far from Gaussian."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


def _small_model(core=("a", "b"), lines=(), n_inputs=3, seed=0) -> VAENF:
    torch.manual_seed(seed)
    model = VAENF(n_inputs, core=core, b2="c", lines=lines, hidden=16, transforms=4, flow_hidden=(16,))
    _roughen(model, 0.3, seed)
    # a non-trivial standardisation, so the physical density needs its Jacobian
    model.core_mean.copy_(torch.tensor([1.0, -2.0][: len(core)]))
    model.core_std.copy_(torch.tensor([0.5, 2.0][: len(core)]))
    model.b2_mean.fill_(8.7)
    model.b2_std.fill_(0.3)
    return model.eval()


def _grid_log_prob(model: VAENF, x: torch.Tensor, n: int = 48, half_width: float = 7.0):
    """log p(θ|x) on a regular grid spanning ±half_width standardised units."""
    axes = []
    for mean, std in [*zip(model.core_mean, model.core_std), (model.b2_mean[0], model.b2_std[0])]:
        axes.append(torch.linspace(float(mean - half_width * std), float(mean + half_width * std), n))
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    logp = model.log_prob(mesh[None], x[:1])[0]
    cell = math.prod(float(a[1] - a[0]) for a in axes)
    return mesh, logp, cell


def test_joint_log_prob_integrates_to_one_in_physical_units():
    model = _small_model()
    x = torch.randn(1, 3)
    _, logp, cell = _grid_log_prob(model, x)
    assert logp.exp().sum().item() * cell == pytest.approx(1.0, abs=0.03)


def test_samples_and_log_prob_describe_the_same_distribution():
    model = _small_model()
    x = torch.randn(1, 3)
    mesh, logp, cell = _grid_log_prob(model, x)
    grid_mean = (mesh * (logp.exp() * cell)[:, None]).sum(0)
    torch.manual_seed(1)
    draws = model.sample(x, 20_000)[0]
    sd = draws.std(0)
    assert torch.all((draws.mean(0) - grid_mean).abs() < 0.05 * sd + 1e-3)


def test_metallicity_branch_conditions_on_sampled_core_parameters():
    model = _small_model(seed=3)
    with torch.no_grad():  # tie branch 2 to core parameter a: shift = 3 a
        hyper = model.b2_flow.transform.transforms[0].hyper  # Linear, ReLU, Linear
        first, last = hyper[0], hyper[2]
        for p in hyper.parameters():
            p.zero_()
        hidden = model.hidden
        first.weight[0, hidden], first.weight[1, hidden] = 1.0, -1.0  # relu(a), relu(-a)
        last.weight[0, 0], last.weight[0, 1] = 3.0, -3.0  # output 0 is the shift, 1 the log-scale
        model.mean_head[-1].weight[-1].zero_()
    seen = []
    handle = first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    torch.manual_seed(0)
    draws = model.sample(torch.randn(1, 3), 4000)[0]
    handle.remove()
    core_s = (draws[:, :2] - model.core_mean) / model.core_std
    context_core = seen[-1].reshape(-1, seen[-1].shape[-1])[:, hidden:]
    assert torch.allclose(context_core, core_s, atol=1e-5)  # the sampled values, not the means
    corr = np.corrcoef(draws[:, 0].numpy(), draws[:, 2].numpy())[0, 1]
    assert abs(corr) > 0.9  # strong dependence (zuko maps data to noise, so the sign flips)


@pytest.mark.parametrize("bound", [2.0, 0.5])
def test_every_coupling_log_scale_stays_within_its_bound(bound):
    # Exploded weights drive the coupling networks' raw log-scales far past any bound; each
    # coupling's log |det| is the sum of the log-scales of the features it transforms.
    model = VAENF(3, core=("a", "b", "c", "d"), b2="e", lines=(), hidden=16, transforms=4, flow_hidden=(16,),
                  log_scale_bound=bound)
    _roughen(model, 30.0)
    h = model.encode(torch.randn(64, 3))
    x = torch.randn(64, 4) * 5
    for coupling in model.core_flow(h).transform.transforms:
        x, ladj = coupling.call_and_ladj(x)
        assert ladj.abs().max().item() <= 2 * bound * (1 + 1e-6)  # two of the four features per coupling
    assert VAENF.from_config(model.config()).log_scale_bound == bound
    old_checkpoint = {k: v for k, v in model.config().items() if k != "log_scale_bound"}
    assert VAENF.from_config(old_checkpoint).log_scale_bound == pytest.approx(math.log(1e3))  # as it was trained


def test_one_member_mixture_is_the_member_in_targets_order():
    torch.manual_seed(0)
    model = VAENF(5, core=CFM_CORE, lines=(), hidden=16, transforms=2, flow_hidden=(16,)).eval()
    mix = EnsembleMixture([model], threads=None)
    x = torch.randn(4, 5)
    torch.manual_seed(1)
    theta = mix.sample(x, 6)
    assert theta.shape == (4, 6, 5)
    order = [TARGETS.index(p) for p in model.params]
    torch.manual_seed(1)
    assert torch.equal(theta[..., order], model.sample(x, 6))  # the same draws, reordered
    direct = model.log_prob(theta[..., order], x)
    assert torch.allclose(mix.log_prob(theta, x), direct)
    assert torch.allclose(mix.log_prob(theta[:, 0], x), direct[:, 0], atol=1e-5)


def test_mixture_refuses_a_model_without_the_five_targets():
    model = VAENF(5, lines=(), hidden=16, transforms=2)
    with pytest.raises(ValueError, match="CFM_CORE"):
        EnsembleMixture([model])


def test_images_to_tensor_resamples_like_the_vae_expects():
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    plain = images_to_tensor(images)
    assert torch.equal(images_to_tensor(images, 16), plain)
    shrunk, enlarged = images_to_tensor(images, 8), images_to_tensor(images, 32)
    assert shrunk.shape == (2, 3, 8, 8) and enlarged.shape == (2, 3, 32, 32)
    assert torch.allclose(shrunk, torch.nn.functional.avg_pool2d(plain, 2))  # area: mean of 2x2 blocks
    assert torch.allclose(enlarged, torch.nn.functional.interpolate(plain, size=(32, 32), mode="bilinear"))


@pytest.mark.parametrize("size", [32, 64])
def test_vae_and_flow_stage_shapes_for_image_sizes(size):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    vae, curve = train_vae(images, epochs=1, batch_size=3)
    assert len(curve) == 1
    mu, sigma = encode_images(vae, images)
    assert mu.shape == sigma.shape == (6, 32) and (sigma > 0).all()
    assert perturbational_decoding(vae, mu[0], np.eye(32)[0], [-1, 0, 1]).shape == (3, size, size, 3)
    catalog = pd.DataFrame(rng.normal(17, 1, (6, 5)), columns=["mag_u", "mag_g", "mag_r", "mag_i", "mag_z"])
    x = flow_inputs(catalog, (mu, sigma))
    assert x.shape == (6, 69)
    model = VAENF(69, hidden=16, transforms=2).eval()
    assert model.sample(torch.as_tensor(x), 5).shape == (6, 5, 5)
    assert model.sample_lines(torch.as_tensor(x), 5).shape == (6, 5, 4)


def _toy_data(n: int, rng: np.random.Generator) -> VAENFData:
    x = rng.normal(size=(n, 5)).astype(np.float32)
    core = np.column_stack([x[:, 0] + 0.1 * rng.normal(size=n), x[:, 1] - x[:, 0], x[:, 2] * 0.5, x[:, 3]])
    b2 = 8.7 + 0.2 * core[:, 0] + 0.05 * rng.normal(size=n)
    lines = np.exp(2 + x[:, :4] + 0.1 * rng.normal(size=(n, 4)))
    return VAENFData(x, core, b2, x[:, 4] > -0.5, lines)


def test_ensemble_learns_a_linear_relation_and_reports_uncertainties():
    rng = np.random.default_rng(0)
    train, val = _toy_data(600, rng), _toy_data(100, rng)
    models, curves = fit_ensemble(train, val, n_ensemble=2, epochs=6, batch_size=64, transforms=2, flow_hidden=(32,))
    assert set(curves["member"]) == {0, 1}
    post = predict(models, val.x, 50)
    assert post.draws.shape == (2, 100, 50, 5) and post.lines.shape == (2, 100, 50, 4)
    truth = np.column_stack([val.core, val.b2])
    r2 = r2_score(truth, post.mean())
    assert r2[0] > 0.7 and r2[4] > 0.5
    # the mean head alone is a regression in the same units; the flows add their residuals' mean to it
    head = mean_head_predictions(models, val.x)
    assert head.shape == (100, 5)
    assert np.abs(r2_score(truth, head) - r2).max() < 0.1
    assert (post.aleatoric() > post.epistemic()).all()
    cm = confusion_matrix(val.detectable, post.detect.mean(0))
    assert cm.to_numpy().sum() == 100


def test_parallel_members_equal_sequential_ones_and_an_ensemble_extends_member_by_member():
    rng = np.random.default_rng(1)
    train, val = _toy_data(200, rng), _toy_data(50, rng)
    kw = dict(epochs=2, batch_size=64, seed=3, transforms=2, flow_hidden=(16,))
    parallel, curves = fit_ensemble(train, val, n_ensemble=3, workers=2, **kw)
    in_turn, _ = fit_ensemble(train, val, n_ensemble=2, workers=1, **kw)
    extra, extra_curves = fit_ensemble(train, val, n_ensemble=1, first_member=2, workers=1, **kw)
    assert list(curves["member"].unique()) == [0, 1, 2] and list(extra_curves["member"]) == [2, 2]
    assert len({float(next(m.parameters()).detach().sum()) for m in parallel}) == 3  # the members differ
    for a, b in zip(parallel, in_turn + extra):
        for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(ta, tb), name


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    models = [_small_model(lines=("l1", "l2", "l3", "l4"), seed=s) for s in (0, 1)]
    vae = VAE(32).eval()
    path = save_ensemble(models, tmp_path / "m.pt", vae=vae, note="toy")
    loaded, extra = load_ensemble(path, core=("a", "b"))
    assert extra["note"] == "toy"
    x = torch.randn(5, 3)
    for a, b in zip(models, loaded):
        assert a.config() == b.config() == json.loads(json.dumps(b.config()))  # JSON-friendly
        torch.manual_seed(7)
        sa, la = a.sample(x, 10), a.sample_lines(x, 10)
        torch.manual_seed(7)
        sb, lb = b.sample(x, 10), b.sample_lines(x, 10)
        assert torch.equal(sa, sb) and torch.equal(la, lb)
        assert torch.equal(a.log_prob(sa, x), b.log_prob(sa, x))
    img = torch.rand(2, 3, 32, 32)
    assert extra["vae"].config() == vae.config()
    assert torch.equal(vae.encode(img)[0], extra["vae"].encode(img)[0])


def test_wrong_architecture_checkpoint_raises_error_naming_the_file(tmp_path):
    path = save_ensemble([_small_model()], tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)
    blob["members"][0]["config"]["transforms"] = 6  # state no longer fits the config
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_ensemble(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="core"):
        load_ensemble(path, core=CFM_CORE)
    blob["version"] = 0
    torch.save(blob, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="version"):
        load_ensemble(tmp_path / "old.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_ensemble(tmp_path / "junk.pt")


def test_mixture_posterior_holds_mixture_draws_and_log_densities(tmp_path):
    torch.manual_seed(0)
    models = [VAENF(5, core=CFM_CORE, lines=(), hidden=16, transforms=2, flow_hidden=(16,)).eval() for _ in range(2)]
    mix = EnsembleMixture(models, threads=None)  # torch's thread count, as the direct calls below
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32))
    theta = mix.sample(x, 1)[:, 0].double().numpy()
    post = evaluation.posterior(mix, x, theta, np.arange(7), 11, meta={"n_ensemble": 2})
    post.save(tmp_path / "p.npz")
    loaded = Posterior.load(tmp_path / "p.npz")
    assert loaded.samples.shape == (7, 11, 5) and loaded.log_prob_samples.shape == (7, 11)
    assert loaded.meta["n_ensemble"] == 2 and loaded.columns == TARGETS
    # 11 draws: 6 from each member, cut to 11 (the first 6 come from member 0)
    torch.manual_seed(0)
    first = models[0].sample(x, 6)[..., [models[0].params.index(t) for t in TARGETS]]
    assert torch.equal(torch.as_tensor(post.samples[:, :6]).float(), first)
    th = torch.as_tensor(theta).float()
    inverse = [TARGETS.index(p) for p in models[0].params]
    expected = torch.logsumexp(torch.stack([m.log_prob(th[:, inverse], x) for m in models]), 0) - math.log(2)
    assert np.allclose(post.log_prob_true, expected.numpy(), atol=1e-4)
    assert np.allclose(post.log_prob_samples, mix.log_prob(torch.as_tensor(post.samples).float(), x).numpy(), atol=1e-4)


def test_latent_direction_finds_the_informative_dimensions():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 32))
    y = 2 * z[:, 5] - z[:, 9] + 0.5 * z[:, 20] + 0.01 * rng.normal(size=500)
    direction, dims, r2 = latent_directions(z, y)
    assert set(dims) == {5, 9, 20} and r2 > 0.99
    assert direction[5] > 0 > direction[9]


def test_knn_baseline_learns_metallicity_only_where_it_was_measured():
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=(n, 3)).astype(np.float32)
    measured = rng.uniform(size=n) > 0.3
    catalog = pd.DataFrame({"a": x[:, 0] + 0.05 * rng.normal(size=n), "b": x[:, 1] - x[:, 0],
                            "oh12": np.where(measured, 8.7 + 0.1 * x[:, 2], 100.0), "oh_detectable": measured})
    splits = {"train": np.arange(400), "val": np.arange(400, 500)}
    rows = np.arange(500, 600)
    pred, chosen = knn_baseline(catalog, x, splits, ("a", "b", "oh12"), rows)
    assert pred.shape == (100, 3) and set(chosen) == {"oh12", "others"}
    assert pred[:, 2].max() < 9.5  # the unmeasured rows' 100 never enters
    keep = measured[rows]
    assert r2_score(catalog.iloc[rows][["a", "b"]].to_numpy(), pred[:, :2]).min() > 0.8
    assert r2_score(catalog.oh12.to_numpy()[rows][keep], pred[keep, 2])[0] > 0.5


def test_vae_reconstruction_term_is_summed_or_averaged_over_pixels():
    vae = VAE(16).eval()
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(0)
    _, summed, kl_sum = vae.loss(x, reconstruction="sum")
    torch.manual_seed(0)
    _, averaged, kl_mean = vae.loss(x, reconstruction="mean")
    assert averaged.item() == pytest.approx(summed.item() / (3 * 16 * 16), rel=1e-5)
    assert kl_mean.item() == pytest.approx(kl_sum.item())  # the KL term is the same: only its weight changes
    with pytest.raises(ValueError, match="reconstruction='median' is not valid"):
        vae.loss(x, reconstruction="median")
