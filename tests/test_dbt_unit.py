"""DBT's equations and metrics against hand computations and Monte Carlo; the model's
persistence, per-row seeding and resumable fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from gaml_cli.methods.dbt import forward, metrics  # noqa: E402
from gaml_cli.methods.dbt.model import DBTClassifier, DBTRegressor  # noqa: E402


# --------------------------------------------------------------------------- forward process


def test_schedule_is_cards_at_T_1000():
    s = forward.linear_schedule(1000)
    assert s.T == 1000 and s.betas[0] == 0.0
    assert s.betas[1] == pytest.approx(1e-4) and s.betas[1000] == pytest.approx(0.02)
    assert s.abar[1000] < 1e-4  # y_T is (almost) the prior N(f, 1)
    assert forward.linear_schedule(50).abar[50] < 1e-4  # scaled ends keep that at small T


def test_closed_form_matches_iterated_steps_exactly_and_by_monte_carlo():
    s = forward.linear_schedule(40)
    y0, f = 1.7, -0.6
    # exact: push mean and variance through Eq. 1 step by step
    mean, var = y0, 0.0
    for t in range(1, s.T + 1):
        a = s.alphas[t]
        mean = math.sqrt(a) * mean + (1 - math.sqrt(a)) * f
        var = a * var + s.betas[t]
        m_t, sd_t = forward.marginal_mean_std(y0, f, t, s)
        assert mean == pytest.approx(m_t, abs=1e-12) and math.sqrt(var) == pytest.approx(sd_t, abs=1e-12)
    # Monte Carlo: iterate forward_step on 200k chains, compare with q_sample at t = 10, 40
    rng = np.random.default_rng(0)
    n = 200_000
    y = np.full(n, y0)
    for t in range(1, s.T + 1):
        y = forward.forward_step(y, f, t, s, rng.standard_normal(n))
        if t in (10, 40):
            direct = forward.q_sample(np.full(n, y0), f, t, s, rng.standard_normal(n))
            m_t, sd_t = forward.marginal_mean_std(y0, f, t, s)
            for arr in (y, direct):
                assert arr.mean() == pytest.approx(m_t, abs=4 * sd_t / math.sqrt(n))
                assert arr.std() == pytest.approx(sd_t, rel=0.01)


def test_posterior_coefficients_by_hand():
    # betas 0.1, 0.2: alpha_2 = 0.8, abar_1 = 0.9, abar_2 = 0.72
    s = forward.Schedule(np.array([0.0, 0.1, 0.2]))
    g0, g1, g2, var = forward.posterior_coefficients(2, s)
    assert g0 == pytest.approx(0.2 * math.sqrt(0.9) / 0.28)
    assert g1 == pytest.approx(0.1 * math.sqrt(0.8) / 0.28)
    assert g2 == pytest.approx(1 + (math.sqrt(0.72) - 1) * (math.sqrt(0.8) + math.sqrt(0.9)) / 0.28)
    assert var == pytest.approx(0.1 / 0.28 * 0.2)
    # t = 1: the posterior is y_0 itself (abar_0 = 1)
    g0, g1, g2, var = forward.posterior_coefficients(1, s)
    assert (g0, g1, g2, var) == pytest.approx((1.0, 0.0, 0.0, 0.0))


def test_posterior_is_the_gaussian_product():
    """q(y_{t-1} | y_t, y_0) from Bayes: N(y_t; sqrt(a) y + (1 - sqrt(a)) f, beta) x q(y | y_0)."""
    s = forward.linear_schedule(30)
    y0, f, yt = 0.4, 1.3, -0.2
    for t in (2, 7, 30):
        a, b = s.alphas[t], s.betas[t]
        m_prev, sd_prev = forward.marginal_mean_std(y0, f, t - 1, s)
        prec = a / b + 1 / sd_prev**2
        mean = (math.sqrt(a) / b * (yt - (1 - math.sqrt(a)) * f) + m_prev / sd_prev**2) / prec
        g0, g1, g2, var = forward.posterior_coefficients(t, s)
        assert g0 * y0 + g1 * yt + g2 * f == pytest.approx(mean, abs=1e-10)
        assert var == pytest.approx(1 / prec, rel=1e-10)


def test_y0_from_eps_inverts_q_sample():
    s = forward.linear_schedule(20)
    y0, f, eps = np.array([0.3, -2.0]), np.array([1.0, 0.5]), np.array([0.7, -1.1])
    yt = forward.q_sample(y0, f, 9, s, eps)
    assert forward.y0_from_eps(yt, eps, f, 9, s) == pytest.approx(y0)


# --------------------------------------------------------------------------- metrics


def test_qice_picp_nll_crps_of_a_perfect_sampler():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=4000)
    y = mu + rng.standard_normal(4000)
    good = mu[:, None] + rng.standard_normal((4000, 500))
    narrow = mu[:, None] + 0.5 * rng.standard_normal((4000, 500))
    assert metrics.qice(good, y) < 0.01
    assert metrics.qice(narrow, y) > 0.05
    assert metrics.picp(good, y) == pytest.approx(0.95, abs=0.015)
    assert metrics.picp(narrow, y) < 0.75
    assert metrics.nll_gaussian(good, y) == pytest.approx(0.5 * math.log(2 * math.pi) + 0.5, abs=0.03)
    # CARD's mixture NLL of a N(mu, 1) sampler is the NLL of N(mu, 2) (each draw's kernel has
    # the draws' variance 1): 1/2 ln(4 pi) + 1/4
    assert metrics.nll_card(good, y) == pytest.approx(0.5 * math.log(4 * math.pi) + 0.25, abs=0.03)
    # CRPS of N(mu, 1) has a closed form: z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)
    from scipy.stats import norm

    z = y - mu
    exact = np.mean(z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert metrics.crps(good, y) == pytest.approx(exact, abs=0.01)
    assert metrics.rmse(good, y) == pytest.approx(1.0, abs=0.04)


def test_qice_by_hand():
    # 3 points, 4 samples each, n_bins = 2: quantiles (0, 0.5, 1) = (min, median, max)
    samples = np.array([[0.0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]])
    y = np.array([0.5, 2.8, 9.0])  # bins: first, second, above max -> last
    # shares (1/3, 2/3) -> mean |share - 1/2| = 1/6
    assert metrics.qice(samples, y, n_bins=2) == pytest.approx(1 / 6)


def test_defer_rule():
    rng = np.random.default_rng(0)
    sure = np.stack([np.full((1, 50), 0.9), np.full((1, 50), 0.1)], -1) + 0.01 * rng.standard_normal((1, 50, 2))
    coin = 0.5 + 0.2 * rng.standard_normal((1, 50, 1))
    coin = np.concatenate([coin, 1 - coin], -1)
    top, _, p = metrics.defer_test(np.concatenate([sure, coin]))
    assert top[0] == 0 and p[0] < 1e-10 and p[1] > 0.05
    rep = metrics.defer_report(np.array([True, False]), p, 0.05)
    assert rep["defer_rate"] == 0.5 and rep["accuracy_kept"] == 1.0 and rep["accuracy"] == 0.5


# --------------------------------------------------------------------------- the model


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = 2 * X[:, 0] + (0.3 + 0.5 * np.abs(X[:, 1])) * rng.standard_normal(n)
    return X, y


TINY = dict(n_timesteps=8, noise_samples=3, mean_estimators=20)


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    X, y = _data()
    m = DBTRegressor(**TINY).fit(X, y)
    path = tmp_path / "m.dbt"
    m.save(str(path))
    m2 = DBTRegressor.load(str(path))
    a, b = m.sample(X[:20], 30, seed=5), m2.sample(X[:20], 30, seed=5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, m2.sample(X[:20], 30, seed=6))


def test_per_row_seeding_does_not_depend_on_batching():
    X, y = _data()
    m = DBTRegressor(**TINY).fit(X, y)
    whole = m.sample(X[:12], 16, seed=3)
    chunked = m.sample(X[:12], 16, seed=3, chunk_rows=5)
    part = m.sample(X[4:9], 16, seed=3, row_ids=np.arange(4, 9))
    assert np.array_equal(whole, chunked) and np.array_equal(whole[4:9], part)


class _Store(dict):
    def __init__(self, stop_after=None):
        super().__init__()
        self.stop_after = stop_after

    def put(self, name, text):
        self[name] = text


def test_interrupted_fit_resumes_to_the_same_model():
    X, y = _data()
    full = DBTRegressor(**TINY).fit(X, y)
    store = _Store()

    def stop(t):
        if t == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        DBTRegressor(**TINY).fit(X, y, store=store, progress=stop)
    assert sum(k.startswith("trees/") for k in store) == 3
    resumed = DBTRegressor(**TINY).fit(X, y, store=store)
    assert resumed.texts == full.texts


def test_learns_a_bimodal_heteroscedastic_distribution():
    """A Gaussian centred on the mean would put mass near 0; DBT's draws avoid it."""
    from gaml_cli.methods.dbt.data import bimodal

    df = bimodal(600, seed=1)
    m = DBTRegressor(n_timesteps=30, noise_samples=4, mean_estimators=30).fit(df[["x", "region"]], df["y"].to_numpy())
    test = bimodal(60, seed=2)
    test = test[test.x > 2].reset_index(drop=True)
    s = m.sample(test[["x", "region"]], 200, seed=0)
    assert np.mean(np.abs(s) < 1.0) < 0.15            # the gap between the modes stays empty
    assert 0.3 < np.mean(s > 0) < 0.7                 # both modes are sampled
    assert abs(s.mean()) < 1.0


def test_classifier_probabilities_and_deferral():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = np.where(X[:, 0] > 0, "yes", "no")
    m = DBTClassifier(**TINY).fit(X, y)
    assert m.classes_ == ["no", "yes"]
    Xt = np.array([[3.0, 0.0], [-3.0, 0.0]])
    p = m.predict_proba(Xt, 50)
    assert p[0, 1] > 0.9 and p[1, 0] > 0.9
    assert m.predict(Xt, 50) == ["yes", "no"]
    assert not m.defer(Xt, n_samples=50).any()
