"""gaml eval fd's feature spaces and KID (diffusion/spaces.py): KID against a hand computation,
its unbiasedness and its standard error on samples of one distribution, and floors at the same
sample size as the comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("sklearn")

from gaml_cli.diffusion import spaces  # noqa: E402
from gaml_cli.diffusion.features import frechet_distance  # noqa: E402


def _kid_by_hand(x, y):
    """The unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit loops."""
    d = x.shape[1]

    def k(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_hand_computation():
    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    y = np.array([[2.0, 0.0], [0.0, -1.0], [0.5, 0.5]])
    value, se = spaces.kid(x, y)
    assert value == pytest.approx(_kid_by_hand(x, y), rel=1e-12)
    # the jackknife, recomputed by deleting each sample and calling kid again
    dx = np.array([_kid_by_hand(np.delete(x, i, 0), y) for i in range(len(x))])
    dy = np.array([_kid_by_hand(x, np.delete(y, j, 0)) for j in range(len(y))])
    var = (len(x) - 1) / len(x) * ((dx - dx.mean()) ** 2).sum() + (len(y) - 1) / len(y) * ((dy - dy.mean()) ** 2).sum()
    assert se == pytest.approx(np.sqrt(var), rel=1e-9)
    with pytest.raises(Exception, match="at least 3"):
        spaces.kid(x[:2], y)


def test_kid_is_unbiased_and_its_standard_error_is_right_at_small_n():
    """Two samples of one distribution, n = 12: the mean KID over 400 draws is 0 within 3 standard
    errors of that mean, while the biased (V-statistic) estimate, diagonal included, sits clearly
    above 0; the mean jackknife SE is within 35% of the spread of KID over the draws."""
    rng = np.random.default_rng(0)
    vals, ses, biased = [], [], []
    for _ in range(400):
        x, y = rng.normal(size=(12, 4)), rng.normal(size=(12, 4))
        v, s = spaces.kid(x, y)
        vals.append(v)
        ses.append(s)
        kxx, kyy, kxy = (spaces.polynomial_kernel(a, b) for a, b in ((x, x), (y, y), (x, y)))
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    vals = np.array(vals)
    sem = vals.std(ddof=1) / np.sqrt(len(vals))
    assert abs(vals.mean()) < 3 * sem
    assert np.mean(biased) > 10 * sem
    assert 0.65 < np.mean(ses) / vals.std(ddof=1) < 1.35
    # and it sees a shift: a mean shift of 1 in every coordinate is many standard errors away
    v, s = spaces.kid(rng.normal(size=(100, 4)), rng.normal(size=(100, 4)) + 1.0)
    assert v > 3 * s


def test_floors_use_the_comparison_sample_size_and_the_same_split():
    """m = min(#generated, #real // 2) in every space; fd = FD(gen[:m], B), floor = FD(A, B),
    kid likewise, with A and B the seed's disjoint halves; one split for all spaces."""
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(30, 1, 2, 2))
    fns = {"pixels": lambda x: x.reshape(len(x), -1), "squared": lambda x: x.reshape(len(x), -1) ** 2}
    for n_gen, m in ((7, 7), (50, 15)):
        gen = rng.normal(size=(n_gen, 1, 2, 2)) + 0.5
        out = spaces.score_spaces(gen, ref, fns, seed=5)
        perm = np.random.default_rng(5).permutation(30)
        a, b = ref[perm[:m]], ref[perm[m:2 * m]]
        for name, fn in fns.items():
            s = out[name]
            assert s["n"] == s["n_floor"] == m
            assert s["fd"] == pytest.approx(frechet_distance(fn(gen[:m]), fn(b)), rel=1e-9)
            assert s["fd_floor"] == pytest.approx(frechet_distance(fn(a), fn(b)), rel=1e-9)
            assert s["kid"] == pytest.approx(spaces.kid(fn(gen[:m]), fn(b))[0], rel=1e-9)
            assert s["kid_floor"] == pytest.approx(spaces.kid(fn(a), fn(b))[0], rel=1e-9)
    with pytest.raises(ValueError):
        spaces.compare(np.zeros((5, 2)), np.zeros((4, 2)), np.zeros((4, 2)))


def test_pixel_space_projects_large_images_and_keeps_small_ones():
    fn, about = spaces.pixel_space((1, 8, 8))
    x = np.random.default_rng(0).normal(size=(5, 1, 8, 8))
    assert about["dim"] == 64 and np.allclose(fn(x), x.reshape(5, -1))
    fn, about = spaces.pixel_space((3, 16, 16))
    f = fn(np.random.default_rng(0).normal(size=(5, 3, 16, 16)))
    assert f.shape == (5, 64) and about["dim"] == 64
    assert spaces.parse_spaces(None, False) == ["classifier", "pixels"]
    assert spaces.parse_spaces("mlp,pixels,mlp", True) == ["mlp", "pixels"]
    with pytest.raises(Exception, match="unknown space"):
        spaces.parse_spaces("inception", True)


def test_eval_fd_cli_reports_every_space_and_keeps_its_keys(gaml, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from gaml_cli.core.artifacts import save_artifact
    from gaml_cli.datasets import digits

    monkeypatch.setenv("GAML_CACHE", str(tmp_path / "cache"))
    spaces._trained_mlp.cache_clear()  # an earlier test in this process may hold it in memory
    d = digits.load()
    p = tmp_path / "s.safetensors"
    save_artifact(p, {"images": d["images"][:40], "labels": d["labels"][:40]}, kind="images",
                  config={"dataset": "digits", "classes": digits.CLASSES})
    res = gaml("eval", "fd", "--images", p, "--ref", "digits", "--format", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    for key in ("fd", "floor", "ratio", "n", "samples", "accuracy", "images", "ref", "classifier"):
        assert key in out
    assert set(out["spaces"]) == {"classifier", "mlp", "pixels"}
    assert out["spaces"]["classifier"]["fd"] == pytest.approx(out["fd"])
    assert out["spaces"]["classifier"]["fd_floor"] == pytest.approx(out["floor"])
    for s in out["spaces"].values():
        assert s["n"] == s["n_floor"] == out["n"] == 40 and s["kid_se"] > 0
    assert out["spaces"]["mlp"]["about"]["test_accuracy"] > 0.9
    assert any((tmp_path / "cache" / "fd-spaces").iterdir())  # the MLP is cached for the next call
    res = gaml("eval", "fd", "--images", p, "--ref", "digits", "--features", "pixels,bogus")
    assert res.code == 2 and "unknown space bogus" in res.err and res.out == ""


def test_eval_compare_prints_one_line_with_every_space_and_the_speed_ratio(gaml, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from gaml_cli.core.artifacts import save_artifact
    from gaml_cli.datasets import digits

    monkeypatch.setenv("GAML_CACHE", str(tmp_path / "cache"))
    d = digits.load()
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for p, lo, rate, nfe in ((a, 0, 1000.0, 1), (b, 40, 40.0, 35)):
        save_artifact(p, {"images": d["images"][lo:lo + 40], "labels": d["labels"][lo:lo + 40]}, kind="images",
                      config={"dataset": "digits", "classes": digits.CLASSES, "source": {"nfe": nfe}},
                      prov_extra={"images_per_s": rate})
    res = gaml("eval", "compare", "--images", a, "--against", b, "--ref", "digits", "--features", "classifier,pixels")
    assert res.code == 0, res.err
    line = res.err.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("1 NFE vs 35 NFE, n=40:") and "classifier FD" in line and "pixels FD" in line
    assert "25x the images/s" in line
    res = gaml("eval", "compare", "--images", a, "--against", b, "--ref", "digits", "--features", "pixels", "-f", "json")
    out = json.loads(res.out)
    sa, sb = out["images"]["spaces"]["pixels"], out["against"]["spaces"]["pixels"]
    assert out["fd_vs"]["pixels"] == pytest.approx(sa["fd"] / sb["fd"]) and out["speedup"] == pytest.approx(25.0)
    assert sa["fd_floor"] == sb["fd_floor"]  # one reference split for both
    # different sample counts would compare FDs at different n: refused, one line, exit 2
    c = tmp_path / "c.safetensors"
    save_artifact(c, {"images": d["images"][:30], "labels": d["labels"][:30]}, kind="images",
                  config={"dataset": "digits", "classes": digits.CLASSES})
    res = gaml("eval", "compare", "--images", a, "--against", c, "--ref", "digits")
    assert res.code == 2 and "40 samples and --against 30" in res.err and len(res.err.strip().splitlines()) == 1
