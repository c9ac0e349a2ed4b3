"""galnb.metrics on posteriors whose answers are known in closed form."""

import numpy as np
import pytest
from scipy import stats

from galnb import metrics
from galnb.metrics import Posterior

D = 5


def gaussian_posterior(mean, std, truth, n=4000, seed=0):
    """Draws and exact log-densities of independent Gaussians N(mean, std²) per object."""
    rng = np.random.default_rng(seed)
    samples = mean[:, None, :] + std * rng.normal(size=(len(mean), n, D))

    def logpdf(x):
        return stats.norm.logpdf(x, mean[:, None, :] if x.ndim == 3 else mean, std).sum(-1)

    return Posterior(np.arange(len(mean)), truth, samples, logpdf(truth), logpdf(samples))


@pytest.fixture(scope="module")
def prior():
    rng = np.random.default_rng(1)
    return metrics.fit_empirical_prior(rng.normal(size=(3000, D)), rng.normal(size=(1000, D)))


class StandardNormalPrior:
    """The exact density of N(0, I), to test the estimators apart from the KDE."""

    def log_prob(self, theta):
        return stats.norm.logpdf(theta).sum(-1)


def test_kde_prior_beats_nothing_and_approaches_the_true_density(prior):
    x = np.random.default_rng(2).normal(size=(500, D))
    true = stats.norm.logpdf(x).sum(-1)
    assert abs(prior.log_prob(x).mean() - true.mean()) < 0.15
    assert {"single Gaussian", "Gaussian KDE"} == set(prior.validation["model"])


def test_posterior_equal_to_prior_has_zero_gain_and_zero_kl():
    truth = np.random.default_rng(3).normal(size=(40, D))
    post = gaussian_posterior(np.zeros((40, D)), 1.0, truth, n=1000)
    assert metrics.delta_log_p(post, StandardNormalPrior()) == pytest.approx(np.zeros(40), abs=1e-9)
    assert abs(metrics.kl_to_prior(post, StandardNormalPrior()).mean()) < 0.02


def test_kl_matches_the_gaussian_closed_form():
    s = 0.3
    post = gaussian_posterior(np.zeros((20, D)), s, np.zeros((20, D)), n=1000)
    exact = D * (np.log(1 / s) + s**2 / 2 - 0.5)  # KL(N(0,s²) || N(0,1)), summed over dimensions
    assert metrics.kl_to_prior(post, StandardNormalPrior()).mean() == pytest.approx(exact, abs=0.05)


def test_kl_from_a_subset_of_draws_with_densities_matches_the_closed_form():
    s = 0.3
    post = gaussian_posterior(np.zeros((20, D)), s, np.zeros((20, D)), n=1000)
    post.log_prob_samples = post.log_prob_samples[:, :200]  # only the first 200 draws carry a density
    exact = D * (np.log(1 / s) + s**2 / 2 - 0.5)
    assert metrics.kl_to_prior(post, StandardNormalPrior()).mean() == pytest.approx(exact, abs=0.1)


def test_kl_with_the_kde_prior_is_biased_by_less_than_half_a_nat(prior):
    # Kernel smoothing lowers the prior's peak, so KL to the KDE runs high; this bounds it.
    s = 0.3
    post = gaussian_posterior(np.zeros((20, D)), s, np.zeros((20, D)), n=500)
    exact = D * (np.log(1 / s) + s**2 / 2 - 0.5)
    assert 0 < metrics.kl_to_prior(post, prior).mean() - exact < 0.5


def test_wasserstein_is_zero_when_means_equal_truth_and_r2_is_one():
    truth = np.random.default_rng(4).normal(size=(300, D))
    post = gaussian_posterior(truth, 1e-6, truth, n=8)
    wd = metrics.wasserstein_table({"m": post})
    r2 = metrics.r2_table({"m": post})
    assert np.allclose(wd["m"], 0, atol=1e-5) and np.allclose(r2["m"], 1, atol=1e-6)


def test_calibrated_posterior_has_uniform_ranks_and_diagonal_tarp():
    rng = np.random.default_rng(5)
    mean = rng.normal(size=(400, D))
    truth = mean + 0.5 * rng.normal(size=(400, D))  # truth ~ posterior: calibrated
    post = gaussian_posterior(mean, 0.5, truth, n=300)
    ranks = metrics.sbc_ranks(post)
    for k in range(D):
        assert stats.kstest(ranks[:, k] / 300, "uniform").pvalue > 0.001
    alpha, ecp, atc = metrics.tarp_coverage(post)
    assert abs(atc) < 0.03 and np.max(np.abs(ecp - alpha)) < 0.08


def test_overconfident_posterior_is_flagged_by_tarp():
    rng = np.random.default_rng(6)
    mean = rng.normal(size=(400, D))
    truth = mean + 0.5 * rng.normal(size=(400, D))
    good = metrics.tarp_coverage(gaussian_posterior(mean, 0.5, truth, n=300))[2]
    alpha, ecp, narrow = metrics.tarp_coverage(gaussian_posterior(mean, 0.1, truth, n=300))
    assert narrow < good - 0.08 and np.max(np.abs(ecp - alpha)) > 0.3


def test_posterior_file_round_trip(tmp_path):
    truth = np.zeros((3, D))
    post = gaussian_posterior(np.zeros((3, D)), 1.0, truth, n=10)
    post.meta = {"model": "phot", "steps": 20}
    post.save(tmp_path / "p.npz")
    back = Posterior.load(tmp_path / "p.npz")
    assert back.meta == post.meta and np.allclose(back.samples, post.samples, atol=1e-6)


def test_degeneracy_table_recovers_a_known_correlation():
    rng = np.random.default_rng(9)
    cov = np.eye(D)
    cov[3, 4] = cov[4, 3] = -0.8
    samples = rng.multivariate_normal(np.zeros(D), cov, size=(10, 2000))
    post = Posterior(np.arange(10), rng.normal(size=(10, D)), samples, np.zeros(10), np.zeros((10, 2000)))
    table = metrics.degeneracy_table({"m": post})
    assert table["corr"].mean() == pytest.approx(-0.8, abs=0.05)
    expected_area = np.pi * stats.chi2.ppf(0.68, 2) * np.sqrt(1 - 0.8**2)
    assert table["area68"].mean() == pytest.approx(expected_area, rel=0.05)


def test_bootstrap_interval_of_a_mean_covers_the_truth_at_its_level():
    # 200 samples of 100 standard normals: a 90 % interval of the mean should miss 0 about 20 times
    rng = np.random.default_rng(11)
    misses = 0
    for trial in range(200):
        x = rng.normal(size=100)
        misses += metrics.bootstrap_interval(lambda i: x[i].mean(), len(x), n_boot=300, level=0.9, seed=trial).sign != 0
    assert 8 <= misses <= 34  # binomial(200, 0.1): mean 20, sd 4.2


def test_paired_difference_sees_a_small_gain_that_unpaired_noise_would_hide():
    rng = np.random.default_rng(12)
    b = rng.normal(0.0, 3.0, size=400)  # large spread between objects ...
    a = b + 0.1 + rng.normal(0.0, 0.05, size=400)  # ... but a beats b by 0.1 on every one
    iv = metrics.paired_difference(a, b)
    assert iv.sign == 1 and iv.low < 0.1 < iv.high
    assert metrics.paired_difference(b, a, np.median).sign == -1
    with pytest.raises(ValueError, match="same objects"):
        metrics.paired_difference(a, b[:-1])


def test_paired_comparison_tells_a_better_model_from_an_equal_one():
    rng = np.random.default_rng(13)
    truth = rng.normal(size=(600, D))
    noise = rng.normal(size=(600, D))
    sharp = gaussian_posterior(truth + 0.3 * noise, 0.3, truth, n=64, seed=1)
    blurred = gaussian_posterior(truth + 0.9 * noise, 0.9, truth, n=64, seed=2)
    twin = gaussian_posterior(truth + 0.3 * noise, 0.3, truth, n=64, seed=3)
    posts = {"sharp": sharp, "blurred": blurred, "twin": twin}
    score = {k: p.log_prob_true for k, p in posts.items()}
    better = metrics.paired_comparison(posts, score, score, "sharp", "blurred")
    assert len(better) == 2 + 2 * D
    assert (better.low > 0)[better.better == "higher"].all()  # Δlog p, D_KL and R² all favour the sharp one
    same = metrics.paired_comparison(posts, score, score, "sharp", "twin")
    assert (same.low <= 0).all() and (same.high >= 0).all()  # no measure calls one of two equal models better
    twin_elsewhere = gaussian_posterior(truth[1:], 0.3, truth[1:], n=4)
    with pytest.raises(ValueError, match="same test galaxies"):
        metrics.paired_comparison({"sharp": sharp, "other": twin_elsewhere}, score, score, "sharp", "other")


def test_head_to_head_gives_every_model_intervals_that_separate_a_calibrated_from_an_overconfident_one():
    # Both models have the same means; one reports the right width, the other a fifth of it. The
    # TARP ATC interval of the calibrated one covers zero, the overconfident one's lies below it;
    # the shared means give nearly the same WD; Posterior.take resamples every per-object array.
    rng = np.random.default_rng(21)
    mean = rng.normal(size=(300, D))
    truth = mean + 0.5 * rng.normal(size=(300, D))
    posts = {"calibrated": gaussian_posterior(mean, 0.5, truth, n=200, seed=1),
             "narrow": gaussian_posterior(mean, 0.1, truth, n=200, seed=1)}
    part = posts["narrow"].take(np.array([3, 3, 7]))
    assert part.samples.shape == (3, 200, D) and part.test_index.tolist() == [3, 3, 7]
    score = {k: p.log_prob_true for k, p in posts.items()}
    long = metrics.head_to_head(posts, score, score, {"calibrated": 0.5}, n_boot=200)
    table = long.set_index(["model", "measure"])
    assert len(long) == 2 * 6
    bounded = long.dropna(subset=["low"])
    assert len(bounded) == 2 * 5 and (bounded.low <= bounded.value).all() and (bounded.value <= bounded.high).all()
    atc = table.loc[("calibrated", "TARP ATC")], table.loc[("narrow", "TARP ATC")]
    assert atc[0].low < 0 < atc[0].high and atc[1].high < -0.1
    wd = table.xs("mean WD (5 properties)", level="measure").value
    assert abs(wd["calibrated"] - wd["narrow"]) < 0.01  # the same means, up to the draws' own noise
    assert np.isnan(table.loc[("narrow", "s per 1,000 draws"), "value"])


def test_r2_difference_resamples_jointly_and_leaves_out_unmeasured_truths():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(300, 2))
    noise = rng.normal(size=(300, 2))
    sharp, blurred = truth + 0.3 * noise, truth + 0.6 * noise
    truth_with_gaps = truth.copy()
    truth_with_gaps[:50, 1] = np.nan  # not measured: must not enter the second column's R²
    table = metrics.r2_difference(truth_with_gaps, sharp, blurred, ("log_mstar", "oh12"), names=("sharp", "blurred"))
    assert list(table.measure) == ["R² of log M*", "R² of 12+log(O/H)"]
    assert (table.low > 0).all()  # same noise, scaled: the pairing makes the gain certain
    assert table.sharp.iloc[1] == pytest.approx(metrics.r2_score(truth[50:, 1], sharp[50:, 1])[0])
    long = metrics.r2_intervals(truth_with_gaps, {"sharp": sharp}, ("log_mstar", "oh12"))
    assert np.allclose(long.value, table.sharp) and (long.low < long.value).all() and (long.value < long.high).all()
