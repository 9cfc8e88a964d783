"""gaml's FD and accuracy metrics (diffusion/features.py, diffusion/eval.py) against hand computations.

A stand-in classifier whose features are the image's pixels and whose heads read a class off a
pixel makes every number predictable: the Frechet distance in closed form, which real images
form the floor's two halves and which the generated set is compared with, and the (attribute)
accuracies with unknown (-1) targets left out.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

from gaml_cli.core.artifacts import Artifact, ArtifactInfo  # noqa: E402
from gaml_cli.diffusion.eval import fd_with_floor, score  # noqa: E402
from gaml_cli.diffusion.features import frechet_distance  # noqa: E402


def _fd_2d(f1, f2):
    """FD of 2-d features in closed form: for 2x2 M with positive eigenvalues,
    Tr M^(1/2) = sqrt(Tr M + 2 sqrt(det M))."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def _fd_eig(f1, f2):
    """FD in any dimension by eigenvalues: Tr (S1 S2)^(1/2) = sum sqrt eig(S1^(1/2) S2 S1^(1/2))."""
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)
    return float(((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev).sum())


def test_frechet_distance_in_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 2)) @ np.array([[1.0, 0.3], [0.0, 0.5]])
    b = rng.normal(size=(40, 2)) * np.array([2.0, 0.7]) + np.array([1.0, -2.0])
    assert frechet_distance(a, b) == pytest.approx(_fd_2d(a, b), rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    # a shift by (3, 4) adds exactly 25; the same set is at distance 0
    assert frechet_distance(a, a + np.array([3.0, 4.0])) == pytest.approx(25.0, rel=1e-9)
    assert abs(frechet_distance(a, a)) < 1e-9
    # mean 0, covariances diag(2/3, 8/3) and diag(8/3, 2/3) (n - 1 = 3): for commuting covariances
    # FD = sum_i (sqrt(a_i) - sqrt(b_i))^2 = 2 (sqrt(2/3) - sqrt(8/3))^2 = 4/3
    p = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    q = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert frechet_distance(p, q) == pytest.approx(4 / 3, rel=1e-9)


class PixelClassifier:
    """features = the 4 pixels of a (1, 2, 2) image; head k predicts round(pixel k) (10 classes)."""

    config = {"image_shape": [1, 2, 2]}

    def __init__(self, heads):
        self.heads = {k: self._head(i) for i, k in enumerate(heads)}

    @staticmethod
    def _head(i):
        return lambda f: torch.nn.functional.one_hot(f[:, i].round().long().clamp(0, 9), 10).float()

    def features(self, x):
        return x.flatten(1)


def test_fd_with_floor_uses_disjoint_halves_of_the_real_set():
    """m = min(#generated, #real // 2); real images split by the seed's permutation into A (first m)
    and B (next m): fd = FD(generated[:m], B), floor = FD(A, B)."""
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(30, 1, 2, 2)).astype(np.float32)
    gen = (rng.normal(size=(20, 4)) * 1.5 + 0.5)
    clf = PixelClassifier(["label"])
    out = fd_with_floor(clf, gen, ref, seed=7)
    perm = np.random.default_rng(7).permutation(30)
    A, B = ref[perm[:15]].reshape(15, 4), ref[perm[15:30]].reshape(15, 4)
    assert out["n"] == 15
    assert out["fd"] == pytest.approx(_fd_eig(gen[:15], B.astype(np.float64)), rel=1e-6)
    assert out["floor"] == pytest.approx(_fd_eig(A.astype(np.float64), B.astype(np.float64)), rel=1e-6)
    assert out["ratio"] == pytest.approx(out["fd"] / out["floor"])
    # fewer generated than half the real set: m follows the generated set
    out = fd_with_floor(clf, gen[:6], ref, seed=7)
    assert out["n"] == 6
    assert out["floor"] == pytest.approx(_fd_eig(ref[perm[:6]].reshape(6, 4).astype(np.float64),
                                                 ref[perm[6:12]].reshape(6, 4).astype(np.float64)), rel=1e-6)


def _images(pixels):
    return np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 2, 2)


def _art(tensors, config=None):
    info = ArtifactInfo(path=Path("<test>"), kind="images", version=None, config=config or {}, provenance={},
                        tensors={})
    return Artifact(info=info, tensors=tensors)


def test_label_accuracy_by_hand():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(20, 1, 2, 2)).astype(np.float32)
    # predicted labels (pixel 0): 3, 1, 4, 1, 5, 9; asked for: 3, 1, 4, 2, 6, 9 -> 4 of 6 right
    x = _images([[3, 0.1, 0.2, 0.3], [1, 0.5, -0.2, 0.0], [4, -0.4, 0.9, 0.1], [1, 0.2, 0.2, -0.7],
                 [5, 0.8, -0.5, 0.4], [9, -0.1, 0.3, 0.6]])
    s = score(PixelClassifier(["label"]), _art({"images": x, "labels": np.array([3, 1, 4, 2, 6, 9])}), ref)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["samples"] == 6


def test_attribute_accuracy_leaves_unknown_targets_out():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(20, 1, 2, 2)).astype(np.float32)
    # predicted (shape, colour, background) = pixels 0, 1, 2
    x = _images([[0, 1, 2, 0.3], [1, 1, 1, -0.2], [2, 0, 2, 0.5], [0, 2, 1, 0.1], [1, 0, 0, -0.4]])
    attrs = np.array([[0, 1, 2],     # all right
                      [1, 2, 1],     # colour wrong
                      [2, 0, -1],    # background unknown: shape and colour right
                      [-1, 2, 0],    # shape unknown, background wrong
                      [1, 0, 0]])    # all right
    s = score(PixelClassifier(["shape", "color", "background"]), _art({"images": x, "attrs": attrs}), ref)
    per = s["attribute_accuracy"]
    assert per["shape"] == pytest.approx(4 / 4)       # rows 0, 1, 2, 4
    assert per["color"] == pytest.approx(4 / 5)       # row 1 wrong
    assert per["background"] == pytest.approx(3 / 4)  # rows 0, 1, 3, 4; row 3 wrong
    # all three right, over the rows whose three targets are all known (0, 1, 4): rows 0 and 4
    assert s["accuracy"] == pytest.approx(2 / 3)


def test_bad_input_is_a_usage_error():
    """Too few images or the wrong image size reach the user as exit code 2."""
    from gaml_cli.core.errors import GamlError

    clf = PixelClassifier(["label"])
    ref = np.zeros((10, 1, 2, 2), dtype=np.float32)
    for call, needle in (
        (lambda: fd_with_floor(clf, np.zeros((1, 4)), ref), "at least 2 generated"),
        (lambda: fd_with_floor(clf, np.zeros((5, 4)), ref[:3]), "4 reference images"),
        (lambda: score(clf, _art({"images": np.zeros((3, 1, 4, 4), np.float32)}), ref), "the classifier expects"),
    ):
        with pytest.raises(GamlError) as e:
            call()
        assert e.value.exit_code == 2 and needle in e.value.one_line()


def test_eval_forget_metrics_by_hand(monkeypatch):
    """methods/sfd/evaluate.py on a model whose answers are known: asked for 0 it draws a 1, asked
    for 5 a 6, else what it is asked (label = 10 x pixel 0). Pairs 0 -> 1 and 7 -> 2: recognised
    0 and 1, into 1 and 0, so both means are 0.5; retained classes cycled over 16 samples hold
    two 5s: accuracy 14/16; the retained FD is against the real images of retained classes only."""
    from types import SimpleNamespace

    from gaml_cli.core import runtime
    from gaml_cli.diffusion import eval as eval_mod
    from gaml_cli.diffusion import io as io_mod
    from gaml_cli.methods.sfd.evaluate import evaluate

    draws = {0: 1, 5: 6}

    class Net(torch.nn.Module):
        cond_type, num_classes = "class", 10

        def encode_condition(self, cond, n, device="cpu"):
            return torch.as_tensor([int(c) for c in cond])

        def null_condition(self, n, device="cpu"):
            return torch.full((n,), 10)

        def forward(self, x, sigma, cond):
            out = (x / 4).clone()
            out[:, 0, 0, 0] = torch.tensor([draws.get(int(c), int(c)) / 10 for c in cond])
            return out

    class LabelReader(PixelClassifier):
        def __init__(self):
            self.heads = {"label": lambda f: torch.nn.functional.one_hot((f[:, 0] * 10).round().long().clamp(0, 9), 10).float()}

    rng = np.random.default_rng(4)
    ref_x = rng.uniform(-1, 1, size=(60, 1, 2, 2)).astype(np.float32)
    ref_y = np.arange(60) % 10
    cfg = {"data": {"dataset": "digits"}, "model": {"image_shape": [1, 2, 2]}, "generator": {"sigma_init": 2.0}}
    monkeypatch.setattr(io_mod, "load_model", lambda p, device=None: (Net(), SimpleNamespace(config=cfg, kind="generator")))
    monkeypatch.setattr(eval_mod, "load_classifier", lambda name, ref, c: (LabelReader(), Path("<clf>")))
    monkeypatch.setattr(eval_mod, "reference_data", lambda ref, clf: (ref_x, {"labels": ref_y}, "toy"))
    out = evaluate(Path("<model>"), [(0, 1), (7, 2)], 16, 3, {}, "cpu")
    assert [(p["recognised"], p["into_rate"]) for p in out["pairs"]] == [(0.0, 1.0), (1.0, 0.0)]
    assert out["forgotten_recognised"] == 0.5 and out["into_rate"] == 0.5
    assert out["retained_accuracy"] == pytest.approx(14 / 16) and out["nfe"] == 1
    # the retained samples, rebuilt: G(2 z; 2, c) clamped, with classes 1..9 without 7 cycled
    retained = [1, 2, 3, 4, 5, 6, 8, 9]
    conds = [retained[i % 8] for i in range(16)]
    z = runtime.randn_per_sample((1, 2, 2), runtime.sample_seeds(3, range(16)))
    f_r = Net()(2.0 * z, torch.full((16,), 2.0), conds).clamp(-1, 1).flatten(1).double().numpy()
    keep = ref_x[~np.isin(ref_y, [0, 7])].reshape(-1, 4).astype(np.float64)  # 48 images
    m = min(16, len(keep) // 2)
    perm = np.random.default_rng(3).permutation(len(keep))
    assert out["n_fd"] == m == 16
    assert out["retained_fd"] == pytest.approx(_fd_eig(f_r[:m], keep[perm[m:2 * m]]), rel=1e-6)
    assert out["retained_floor"] == pytest.approx(_fd_eig(keep[perm[:m]], keep[perm[m:2 * m]]), rel=1e-6)


def test_eval_forget_with_a_clip_judge_by_hand(monkeypatch):
    """evaluate_sd on a one-step generator that forgot "cat" (it draws every prompt with "cat" made
    "dog") and a judge whose cosine is the word overlap (Jaccard) of the drawn prompt and the text.
    Pair cat -> dog: every sample is nearer its override: recognised 0, into 1. Pair house -> tree:
    nearer the forget prompt: recognised 1, into 0. Retained prompts (no cat, no house): "a red dog",
    drawn as itself, cosine 1 x 0.8."""
    import re

    from gaml_cli.diffusion import clip as clip_mod
    from gaml_cli.diffusion import sample as sample_mod
    from gaml_cli.diffusion import sd as sd_mod
    from gaml_cli.methods.sfd.evaluate import evaluate_sd

    drawn: list[str] = []
    calls = []

    def words(t):
        return set(re.findall(r"[a-z]+", t.lower()))

    class Judge:
        def __init__(self, name, device="cpu"):
            self.path = name

        def cosines(self, images, texts):
            out = []
            for img, t in zip(images, texts):
                d = words(drawn[int(round(float(img.flat[0]) * 1000))])
                out.append(0.8 * len(d & words(t)) / len(d | words(t)))
            return np.array(out)

    def onestep(comp, sigma_init, spec, texts, device, **kw):
        calls.append((sigma_init, spec.seed, list(texts)))
        idx = []
        for t in texts:
            drawn.append(re.sub("cat", "dog", t, flags=re.IGNORECASE))
            idx.append(len(drawn) - 1)
        return torch.tensor(idx, dtype=torch.float32).view(-1, 1, 1, 1) / 1000, {"nfe": 1}

    monkeypatch.setattr(clip_mod, "ClipScorer", Judge)
    monkeypatch.setattr(sd_mod, "load_sd_generator", lambda path, cfg, device=None: object())
    monkeypatch.setattr(sample_mod, "generate_sd_onestep", onestep)
    prompts = ["a photo of a cat", "a red dog", "a house"]
    out = evaluate_sd(Path("<run>"), {"generator": {"sigma_init": 2.2}}, [("cat", "dog"), ("house", "tree")], prompts,
                      6, 10, "clip", {}, "cpu")
    assert [(p["recognised"], p["into_rate"]) for p in out["pairs"]] == [(0.0, 1.0), (1.0, 0.0)]
    assert out["forgotten_recognised"] == 0.5 and out["into_rate"] == 0.5
    assert out["retained_clip"] == pytest.approx(0.8) and out["retained_fd"] is None and out["nfe"] == 1
    # forget prompts of each pair (seeds 11, 12), then the retained prompts (seed 10), at sigma_init 2.2
    assert [(s, seed) for s, seed, _ in calls] == [(2.2, 11), (2.2, 12), (2.2, 10)]
    assert calls[0][2] == ["a photo of a cat", "a red dog, cat", "a house, cat"] * 2
    assert calls[1][2] == ["a photo of a cat, house", "a red dog, house", "a house"] * 2
    assert calls[2][2] == ["a red dog"] * 6
