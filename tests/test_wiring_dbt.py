"""Wiring of Diffusion Boosted Trees: the rows each timestep's tree is fitted on (CARD's forward
process around f(x), the label y_0, the tree's settings), the out-of-fold f(x), and the reverse
sampler step by step (which tree at which timestep, its inputs, the posterior coefficients and
noise) against CARD's equations computed here from the betas."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("lightgbm")

from gaml_cli.methods.dbt import model as dbt_model  # noqa: E402
from gaml_cli.methods.dbt.model import DBTClassifier, DBTRegressor  # noqa: E402


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return X, 3.0 + 2 * X[:, 0] + 0.5 * rng.standard_normal(n)


def _abar(T):
    """CARD's linear betas 1e-4 .. 0.02 at T = 1000, both ends scaled by 1000 / T."""
    betas = np.linspace(1e-4 * 1000 / T, min(0.02 * 1000 / T, 0.999), T)
    return betas, np.cumprod(1 - betas)


def _spy_train(monkeypatch):
    calls = []
    real = dbt_model._train

    def spy(params, X, label, rounds, cat_idx):
        rec = dict(params=dict(params), X=np.array(X, copy=True), label=np.array(label, copy=True), rounds=rounds)
        rec["text"] = real(params, X, label, rounds, cat_idx)
        calls.append(rec)
        return rec["text"]

    monkeypatch.setattr(dbt_model, "_train", spy)
    return calls


def test_each_timesteps_tree_learns_y0_from_x_the_noisy_y_t_and_f(monkeypatch):
    T, m, seed = 4, 3, 7
    X, y = _data()
    n = len(y)
    calls = _spy_train(monkeypatch)
    model = DBTRegressor(n_timesteps=T, noise_samples=m, mean_estimators=10, cross_fit=0, seed=seed,
                         num_leaves=5, min_child_samples=4, learning_rate=0.7, trees_per_step=2).fit(X, y)
    assert len(calls) == 1 + T
    mean_call, trees = calls[0], calls[1:]
    ys = (y - y.mean()) / y.std()
    assert np.allclose(mean_call["label"], ys) and mean_call["rounds"] == 10
    f = model.mean_model.predict(X)                  # in-sample f(x) without cross-fitting
    betas, abar = _abar(T)
    for t, c in enumerate(trees, 1):
        eps = np.random.default_rng([seed, t]).standard_normal((n * m, 1))[:, 0]
        y0, fr = np.repeat(ys, m), np.repeat(f, m)
        y_t = math.sqrt(abar[t - 1]) * y0 + (1 - math.sqrt(abar[t - 1])) * fr + math.sqrt(1 - abar[t - 1]) * eps
        assert np.array_equal(c["X"][:, :2], np.repeat(X, m, axis=0))
        assert np.allclose(c["X"][:, 2], y_t, rtol=1e-12, atol=1e-12), t
        assert np.allclose(c["X"][:, 3], fr)
        assert np.allclose(c["label"], y0)
        p = c["params"]
        assert (p["learning_rate"], p["num_leaves"], p["min_child_samples"], c["rounds"]) == (0.7, 5, 4, 2)
        assert p["seed"] == seed * 100003 + t
    # the trees are kept in timestep order
    assert [b.model_to_string() for b in (ts[0] for ts in model.trees)] == [model.texts[f"trees/t{t:05d}_k0.txt"]
                                                                            for t in range(1, T + 1)]


def test_the_trees_are_trained_around_out_of_fold_f(monkeypatch):
    import lightgbm as lgb

    X, y = _data(n=40)
    calls = _spy_train(monkeypatch)
    DBTRegressor(n_timesteps=2, noise_samples=1, mean_estimators=10, cross_fit=2).fit(X, y)
    fold_models = calls[1:3]
    f_col = calls[3]["X"][:, 3]
    covered = np.zeros(len(y), dtype=bool)
    for c in fold_models:
        seen = np.array([any(np.array_equal(row, r) for r in c["X"]) for row in X])
        held = ~seen                                    # the rows this fold's model did not see
        assert 0 < held.sum() < len(y)
        assert np.allclose(f_col[held], lgb.Booster(model_str=c["text"]).predict(X[held]), atol=1e-12)
        covered |= held
    assert covered.all()


class FakeTree:
    """y0_hat = a y_t[k] + b x_0 + c f[k] for coordinate k, recording its inputs."""

    def __init__(self, log, t, k, d, K):
        self.log, self.t, self.k, self.d, self.K = log, t, k, d, K
        self.a, self.b, self.c = 0.5 + 0.05 * t, 0.1 * (k + 1), -0.2 + 0.01 * t

    def fn(self, x0, y, f):
        return self.a * y + self.b * x0 + self.c * f

    def predict(self, feats, num_threads=1):
        self.log.append((self.t, self.k, feats.copy()))
        d, K, k = self.d, self.K, self.k
        return self.fn(feats[:, 0], feats[:, d + k], feats[:, d + K + k])


class FakeMean:
    def __init__(self, fn):
        self.fn = fn

    def predict(self, X, num_threads=1):
        return self.fn(X)


def _sample_by_hand(X, f, trees, T, S, seed, row_ids):
    """CARD's ancestral sampler: y_T ~ N(f, 1); y_{t-1} = g0 y0_hat + g1 y_t + g2 f + sqrt(var) z; y0_hat at t = 1."""
    betas, abar = _abar(T)
    n, K = f.shape
    out = np.empty((n, S, K))
    for i in range(n):
        g = np.random.default_rng([seed, int(row_ids[i])])
        y = f[i] + g.standard_normal((S, K))
        for t in range(T, 0, -1):
            y0h = np.column_stack([trees[t - 1][k].fn(X[i, 0], y[:, k], f[i, k]) for k in range(K)])
            if t == 1:
                y = y0h
                break
            ab, ab_prev, b = abar[t - 1], (abar[t - 2] if t > 1 else 1.0), betas[t - 1]
            g0 = b * math.sqrt(ab_prev) / (1 - ab)
            g1 = (1 - ab_prev) * math.sqrt(1 - b) / (1 - ab)
            g2 = 1 + (math.sqrt(ab) - 1) * (math.sqrt(1 - b) + math.sqrt(ab_prev)) / (1 - ab)
            var = (1 - ab_prev) / (1 - ab) * b
            y = g0 * y0h + g1 * y + g2 * f[i] + math.sqrt(var) * g.standard_normal((S, K))
        out[i] = y
    return out


def _with_fakes(m, X, T, K, fmean):
    log = []
    m.trees = [[FakeTree(log, t, k, X.shape[1], K) for k in range(K)] for t in range(1, T + 1)]
    m.mean_model = FakeMean(fmean)
    m.config.n_timesteps = T
    return log


def test_the_regression_sampler_follows_cards_posterior_step_by_step():
    X, y = _data(n=30)
    m = DBTRegressor(n_timesteps=3, noise_samples=1, mean_estimators=5, cross_fit=0).fit(X, y)
    T, S, seed = 6, 5, 11
    log = _with_fakes(m, X, T, 1, lambda A: 0.3 * A[:, 0] - 0.1)
    Xs = X[:4]
    rows = np.array([7, 2, 9, 4])
    got = m.sample(Xs, S, seed=seed, row_ids=rows)
    f = (0.3 * Xs[:, 0] - 0.1)[:, None]
    want = _sample_by_hand(Xs, f, m.trees, T, S, seed, rows)[..., 0] * m.y_std + m.y_mean
    assert np.allclose(got, want, rtol=1e-10, atol=1e-10)
    # tree t at timestep t, from T down to 1, once each, fed [x, y_t, f(x)] per draw
    assert [(t, k) for t, k, _ in log] == [(t, 0) for t in range(T, 0, -1)]
    for _, _, feats in log:
        assert np.array_equal(feats[:, :2], np.repeat(Xs, S, axis=0))
        assert np.allclose(feats[:, 3], np.repeat(f[:, 0], S))


def test_the_classification_sampler_gives_each_coordinate_its_tree_and_its_f():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2))
    m = DBTClassifier(n_timesteps=2, noise_samples=1, mean_estimators=5, cross_fit=0).fit(X, np.where(X[:, 0] > 0, "b", "a"))
    T, S, seed = 4, 3, 2
    _with_fakes(m, X, T, 2, lambda A: 1 / (1 + np.exp(-A[:, 1])))     # binary: P(class 1)
    Xs = X[:3]
    got = m.sample(Xs, S, seed=seed)
    p1 = 1 / (1 + np.exp(-Xs[:, 1]))
    f = np.column_stack([1 - p1, p1])
    assert np.allclose(m._f(Xs), f)
    want = _sample_by_hand(Xs, f, m.trees, T, S, seed, np.arange(3))
    assert np.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_classification_trees_learn_each_one_hot_coordinate_around_out_of_fold_probabilities(monkeypatch):
    import lightgbm as lgb

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2))
    labels = np.where(X[:, 0] > 0.2, "yes", "no")
    T, m, seed = 2, 2, 5
    calls = _spy_train(monkeypatch)
    DBTClassifier(n_timesteps=T, noise_samples=m, mean_estimators=8, cross_fit=2, seed=seed).fit(X, labels)
    assert calls[0]["params"]["objective"] == "binary"
    assert np.array_equal(calls[0]["label"], (labels == "yes").astype(float))   # classes sorted: no, yes
    onehot = np.column_stack([labels == "no", labels == "yes"]).astype(float)
    # out-of-fold f(x) = (1 - p, p) from the fold model that did not see the row
    f = np.full((40, 2), np.nan)
    for c in calls[1:3]:
        held = np.array([not any(np.array_equal(row, r) for r in c["X"]) for row in X])
        p = lgb.Booster(model_str=c["text"]).predict(X[held])
        f[held] = np.column_stack([1 - p, p])
    assert not np.isnan(f).any()
    trees = calls[3:]
    assert len(trees) == 2 * T
    _, abar = _abar(T)
    for j, c in enumerate(trees):
        t, k = j // 2 + 1, j % 2
        eps = np.random.default_rng([seed, t]).standard_normal((40 * m, 2))
        y0, fr = np.repeat(onehot, m, axis=0), np.repeat(f, m, axis=0)
        y_t = math.sqrt(abar[t - 1]) * y0 + (1 - math.sqrt(abar[t - 1])) * fr + math.sqrt(1 - abar[t - 1]) * eps
        assert np.allclose(c["X"][:, 2:4], y_t, atol=1e-12) and np.allclose(c["X"][:, 4:6], fr, atol=1e-12)
        assert np.array_equal(c["label"], y0[:, k]) and c["params"]["seed"] == seed * 100003 + t


def test_boost_fit_options_reach_the_model(tmp_path, gaml):
    import pandas as pd

    X, y = _data(n=50)
    data = tmp_path / "t.csv"
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": y}).to_csv(data, index=False)
    out = tmp_path / "m.dbt"
    res = gaml("boost", "fit", "--data", data, "--target", "y", "--out", out, "-T", "3", "--noise-samples", "2",
               "--num-leaves", "4", "--min-child-samples", "3", "--trees-per-step", "2", "--learning-rate", "0.5",
               "--mean-estimators", "7", "--cross-fit", "2", "--temperature", "0.3", "--seed", "9", "-q")
    assert res.code == 0, res.err
    c = DBTRegressor.load(str(out)).config
    assert (c.n_timesteps, c.noise_samples, c.num_leaves, c.min_child_samples, c.trees_per_step, c.learning_rate,
            c.mean_estimators, c.cross_fit, c.temperature, c.seed) == (3, 2, 4, 3, 2, 0.5, 7, 2, 0.3, 9)
    m = DBTRegressor.load(str(out))
    assert len(m.trees) == 3 and m.trees[0][0].num_trees() == 2 and m.mean_model.num_trees() == 7
