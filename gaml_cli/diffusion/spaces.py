"""Feature spaces for `gaml eval fd`, and the kernel inception distance (KID).

A Frechet distance is only as good as the features it is computed in, and gaml's own
classifier is also what gaml's methods are tuned against. So `gaml eval fd` scores in
several spaces:

- ``classifier``: the shipped gaml CNN's 128-d pooled features (diffusion/features.py).
- ``mlp``: a scikit-learn ``MLPClassifier`` (hidden layers 256, 128, ReLU, fixed seed 0)
  trained on the real data's train split (digits: gaml's split of scikit-learn's digits;
  shapes: 4,000 images generated with seed 0, not the held-out reference seed); the features
  are its penultimate layer (the 128 ReLU units). Nothing of gaml's training code is involved.
- ``pixels``: the raw pixels, randomly projected (orthonormal columns, seed 0) to 64
  dimensions when there are more than 64 of them (digits: the 64 pixels themselves).

In each space: FD and KID against real images, and the real-vs-real floor of both at the
same sample size (see `compare`). KID (Binkowski et al. 2018, "Demystifying MMD GANs",
Sec. 3) is the squared MMD with the polynomial kernel k(x, y) = (x.y / d + 1)^3, estimated
by the unbiased U-statistic, so its expectation is 0 when the two sets come from one
distribution, at any n; its standard error is the two-sample jackknife (Arvesen 1969).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import numpy as np

from ..core.errors import UsageError

SPACES = ("classifier", "mlp", "pixels")
MLP_HIDDEN = (256, 128)
MLP_SEED = 0
SHAPES_TRAIN_N = 4000
SHAPES_TRAIN_SEED = 0  # the shapes data set's own training seed; the FD reference uses seed 1
PIXEL_DIM = 64


# --------------------------------------------------------------------------- KID


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for all rows of a against all rows of b (KID's kernel)."""
    d = a.shape[1]
    return (a @ b.T / d + 1.0) ** 3


def kid(f1: np.ndarray, f2: np.ndarray) -> tuple[float, float]:
    """(KID, its jackknife standard error) of two feature sets (rows are samples).

    Unbiased squared MMD with the polynomial kernel:

        MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
                  - 2 sum_{i,j} k(x_i, y_j) / (m n)

    Standard error: the two-sample delete-one jackknife, var = (m-1)/m sum_i (K_(-x_i) - K_x.)^2
    + (n-1)/n sum_j (K_(-y_j) - K_y.)^2, computed in closed form from the kernel row sums."""
    x, y = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    m, n = len(x), len(y)
    if m < 3 or n < 3:
        raise UsageError("KID needs at least 3 samples on each side")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    np.fill_diagonal(kxx, 0.0)
    np.fill_diagonal(kyy, 0.0)
    rx, ry = kxx.sum(1), kyy.sum(1)  # off-diagonal row sums
    sxx, syy = rx.sum(), ry.sum()
    rxy, cxy = kxy.sum(1), kxy.sum(0)
    sxy = rxy.sum()
    value = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)
    # delete x_i: its row and column leave the x-x sum, its row leaves the x-y sum
    del_x = (sxx - 2 * rx) / ((m - 1) * (m - 2)) + syy / (n * (n - 1)) - 2 * (sxy - rxy) / ((m - 1) * n)
    del_y = sxx / (m * (m - 1)) + (syy - 2 * ry) / ((n - 1) * (n - 2)) - 2 * (sxy - cxy) / (m * (n - 1))
    var = (m - 1) / m * ((del_x - del_x.mean()) ** 2).sum() + (n - 1) / n * ((del_y - del_y.mean()) ** 2).sum()
    return float(value), float(np.sqrt(max(var, 0.0)))


# --------------------------------------------------------------------------- spaces


def _mlp_features(mlp, x: np.ndarray) -> np.ndarray:
    """Activations of the MLP's last hidden layer (its penultimate layer)."""
    h = x.reshape(len(x), -1).astype(np.float64)
    for w, b in zip(mlp.coefs_[:-1], mlp.intercepts_[:-1]):
        h = np.maximum(h @ w + b, 0.0)
    return h


def _targets(y: dict[str, np.ndarray]) -> np.ndarray:
    """One class vector (a single target) or a multi-label indicator matrix (several)."""
    if len(y) == 1:
        return next(iter(y.values()))
    cols = []
    for v in y.values():
        k = int(v.max()) + 1
        cols.append(np.eye(k, dtype=np.int64)[v])
    return np.concatenate(cols, axis=1)


class _MLP:
    """The weights of a fitted MLPClassifier (all that `_mlp_features` reads)."""

    def __init__(self, coefs, intercepts):
        self.coefs_, self.intercepts_ = list(coefs), list(intercepts)


def _cache_file(key: str, shape: tuple[int, ...]):
    import os
    from pathlib import Path

    import sklearn

    base = os.environ.get("GAML_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "gaml")
    tag = f"mlp-{key}-{'x'.join(map(str, shape))}-{'-'.join(map(str, MLP_HIDDEN))}-s{MLP_SEED}-sk{sklearn.__version__}-v1"
    return Path(base) / "fd-spaces" / f"{tag}.npz"


@lru_cache(maxsize=4)
def _trained_mlp(key: str, shape: tuple[int, ...]):
    """An MLP trained on a named data set's train split. Training is deterministic (fixed data,
    fixed seed), so its weights are cached per process and on disk ($GAML_CACHE, else
    $XDG_CACHE_HOME/gaml or ~/.cache/gaml; an .npz read without pickle)."""
    import json

    path = _cache_file(key, shape)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                k = int(z["layers"])
                return (_MLP([z[f"w{i}"] for i in range(k)], [z[f"b{i}"] for i in range(k)]),
                        json.loads(str(z["info"])))
        except (OSError, KeyError, ValueError):
            pass  # unreadable: train again and overwrite
    mlp, info = _train_named_mlp(key, shape)
    from ..core.artifacts import atomic_path
    from ..core.errors import RuntimeFailure

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"w{i}": w for i, w in enumerate(mlp.coefs_)} | {f"b{i}": b for i, b in enumerate(mlp.intercepts_)}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, layers=np.int64(len(mlp.coefs_)), info=np.str_(json.dumps(info)), **arrays)
    except (OSError, RuntimeFailure):
        pass  # a read-only cache only costs the training next time
    return mlp, info


def _train_named_mlp(key: str, shape: tuple[int, ...]):
    if key == "digits":
        from ..datasets import digits

        d = digits.load()
        keep = d["split"] == 0
        x, y = d["images"][keep], {"label": d["labels"][keep]}
        x_test, y_test = d["images"][~keep], {"label": d["labels"][~keep]}
    elif key == "shapes":
        from ..datasets import shapes

        t, _ = shapes.generate(SHAPES_TRAIN_N, SHAPES_TRAIN_SEED, size=shape[-1])
        keep = t["split"] == 0
        cols = {c: t["attrs"][:, j] for j, c in enumerate(("shape", "color", "background"))}
        x, y = t["images"][keep], {c: v[keep] for c, v in cols.items()}
        x_test, y_test = t["images"][~keep], {c: v[~keep] for c, v in cols.items()}
    else:  # pragma: no cover - guarded by mlp_space
        raise KeyError(key)
    return _fit_mlp(x, y, x_test, y_test)


def _fit_mlp(x, y, x_test=None, y_test=None):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(hidden_layer_sizes=MLP_HIDDEN, random_state=MLP_SEED, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x.reshape(len(x), -1), _targets(y))
    info: dict[str, Any] = {"train_images": int(len(x))}
    if x_test is not None and len(x_test):
        info["test_accuracy"] = float(mlp.score(x_test.reshape(len(x_test), -1), _targets(y_test)))
    return mlp, info


def mlp_space(dataset: str | None, ref_x: np.ndarray, ref_targets: dict[str, np.ndarray]):
    """(features function, description) of the scikit-learn MLP space: trained on the named data
    set's train split, or, for an images artifact with labels/attrs, on that reference itself."""
    if dataset in ("digits", "shapes"):
        mlp, info = _trained_mlp(dataset, tuple(ref_x.shape[1:]))
    elif ref_targets:
        y = {"label": ref_targets["labels"]} if "labels" in ref_targets else {
            c: ref_targets["attrs"][:, j] for j, c in enumerate(("shape", "color", "background"))}
        mlp, info = _fit_mlp(ref_x, y)
        info["trained_on"] = "the reference"
    else:
        raise UsageError("--features mlp needs --ref digits|shapes or a reference with labels or attrs")
    return (lambda x: _mlp_features(mlp, x)), {"kind": "sklearn MLPClassifier penultimate layer",
                                              "hidden": list(MLP_HIDDEN), "seed": MLP_SEED, **info}


def pixel_space(shape: tuple[int, ...]):
    """(features function, description): flattened pixels, projected to 64 random orthonormal
    directions (seed 0) when there are more than 64."""
    d = int(np.prod(shape))
    if d <= PIXEL_DIM:
        return (lambda x: x.reshape(len(x), -1).astype(np.float64)), {"kind": "pixels", "dim": d}
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, PIXEL_DIM)))
    return (lambda x: x.reshape(len(x), -1).astype(np.float64) @ q), {
        "kind": f"pixels, random orthonormal projection {d} -> {PIXEL_DIM} (seed 0)", "dim": PIXEL_DIM}


def parse_spaces(text: str | None, have_targets: bool) -> list[str]:
    """--features: comma-separated names from SPACES. None: all of them (mlp only where it can
    be trained)."""
    if text is None:
        return [s for s in SPACES if s != "mlp" or have_targets]
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SPACES]
    if bad or not names:
        raise UsageError(f"--features: unknown space {', '.join(bad) or repr(text)} "
                         f"(choose from {', '.join(SPACES)})")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- comparison


def split_reference(n_gen: int, n_ref: int, seed: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(m, indices of half A, indices of half B): m = min(n_gen, n_ref // 2), disjoint halves."""
    m = min(n_gen, n_ref // 2)
    if m < 2:
        raise UsageError("need at least 2 generated and 4 reference images")
    perm = np.random.default_rng(seed).permutation(n_ref)
    return m, perm[:m], perm[m:2 * m]


def compare(f_gen: np.ndarray, f_a: np.ndarray, f_b: np.ndarray) -> dict[str, Any]:
    """FD and KID of the generated features against real half B, and the floor (real half A
    against B), all at one sample size m = len(f_a) = len(f_b) = len(f_gen)."""
    from .features import frechet_distance

    if not len(f_gen) == len(f_a) == len(f_b):
        raise ValueError("compare: the generated set and both real halves must have one size")
    fd, fd_floor = frechet_distance(f_gen, f_b), frechet_distance(f_a, f_b)
    k = k_se = kf = kf_se = None  # KID needs 3 samples a side
    if len(f_gen) >= 3:
        k, k_se = kid(f_gen, f_b)
        kf, kf_se = kid(f_a, f_b)
    return {"fd": fd, "fd_floor": fd_floor, "fd_ratio": fd / fd_floor if fd_floor > 0 else None,
            "kid": k, "kid_se": k_se, "kid_floor": kf, "kid_floor_se": kf_se,
            "n": int(len(f_gen)), "n_floor": int(len(f_a)), "dim": int(f_gen.shape[1])}


def score_spaces(x_gen: np.ndarray, ref_x: np.ndarray, feature_fns: dict[str, Callable[[np.ndarray], np.ndarray]],
                 seed: int = 0) -> dict[str, dict[str, Any]]:
    """`compare` in every space, with one split of the reference shared by all spaces."""
    m, ia, ib = split_reference(len(x_gen), len(ref_x), seed)
    out = {}
    for name, fn in feature_fns.items():
        out[name] = compare(fn(x_gen[:m]), fn(ref_x[ia]), fn(ref_x[ib]))
    return out
