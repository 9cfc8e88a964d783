"""Scoring generated images against real ones with gaml's feature classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.artifacts import Artifact, load_artifact, read_header
from ..core.errors import InputError, UsageError
from ..core.images import check_finite_images
from .features import FeatureNet, frechet_distance, predict

NAMED_REFS = ("digits", "shapes")
REF_SHAPES_N = 10_000
REF_SHAPES_SEED = 1  # not the training seed (0): held-out reference images


def load_classifier(name: str | None, ref: str, gen_cfg: dict[str, Any]) -> tuple[FeatureNet, Path]:
    from ..core import hub

    if name is None:
        dataset = ref if ref in NAMED_REFS else None
        if dataset is None and Path(ref).is_file():
            dataset = read_header(ref).config.get("dataset")
        dataset = dataset or gen_cfg.get("dataset")
        if dataset not in NAMED_REFS:
            raise UsageError("no shipped classifier for this data; pass --classifier "
                             "(train one with gaml eval train-classifier)")
        name = f"{dataset}-classifier"
    path = hub.resolve(name, option="--classifier")
    art = load_artifact(path, "classifier", framework="pt")
    try:
        model = FeatureNet(art.config["model"])
        model.load_state_dict({k: v.float() for k, v in art.tensors.items()})
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise InputError(f"{path}: weights do not fit the classifier config") from None
    model.eval().requires_grad_(False)
    model.classes = art.config.get("classes", {})
    return model, path


def reference_images(ref: str, clf: FeatureNet) -> tuple[np.ndarray, str]:
    x, _, name = reference_data(ref, clf)
    return x, name


def reference_data(ref: str, clf: FeatureNet) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(real images, their targets: 'labels' (digits) or 'attrs' (shapes; columns shape, colour,
    background) where the data has them, a display name)."""
    shape = tuple(clf.config["image_shape"])
    targets: dict[str, np.ndarray] = {}
    if ref == "digits":
        from ..datasets import digits

        data = digits.load()
        x, targets["labels"] = data["images"], data["labels"]
        name = "digits (all 1,797)"
    elif ref == "shapes":
        from ..datasets import shapes

        tensors, _ = shapes.generate(REF_SHAPES_N, REF_SHAPES_SEED, size=shape[-1])
        x, targets["attrs"] = tensors["images"], tensors["attrs"]
        name = f"shapes ({REF_SHAPES_N} at {shape[-1]}px, seed {REF_SHAPES_SEED})"
    else:
        x = load_artifact(ref, "images")["images"]
        check_finite_images(x, ref)
        name = ref
    if tuple(x.shape[1:]) != shape:
        raise UsageError(f"reference images are {tuple(x.shape[1:])}, the classifier expects {shape}")
    return x.astype(np.float32), targets, name


def fd_with_floor(clf: FeatureNet, f_gen: np.ndarray, ref_x: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """FD of generated features against real images, and the floor at the same size: with
    m = min(#generated, #real / 2) the real set is split into disjoint halves A and B of m
    images; fd = FD(generated[:m], B), floor = FD(A, B)."""
    m = min(len(f_gen), len(ref_x) // 2)
    if m < 2:
        raise UsageError("need at least 2 generated and 4 reference images")
    perm = np.random.default_rng(seed).permutation(len(ref_x))
    f_a, _ = predict(clf, ref_x[perm[:m]])
    f_b, _ = predict(clf, ref_x[perm[m:2 * m]])
    fd, floor = frechet_distance(f_gen[:m], f_b), frechet_distance(f_a, f_b)
    return {"fd": fd, "floor": floor, "ratio": fd / floor if floor > 0 else None, "n": int(m)}


def feature_spaces(names: list[str], clf: FeatureNet, dataset: str | None, ref_x: np.ndarray,
                   ref_targets: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """({space: features function}, {space: description}) for `gaml eval fd --features`."""
    from . import spaces

    fns: dict[str, Any] = {}
    about: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == "classifier":
            fns[name] = lambda x: predict(clf, x)[0]
            about[name] = {"kind": "gaml's shipped classifier, pooled CNN features"}
        elif name == "mlp":
            fns[name], about[name] = spaces.mlp_space(dataset, ref_x, ref_targets)
        else:
            fns[name], about[name] = spaces.pixel_space(tuple(ref_x.shape[1:]))
    return fns, about


def score(clf: FeatureNet, gen: Artifact, ref_x: np.ndarray, seed: int = 0,
          feature_fns: dict[str, Any] | None = None) -> dict[str, Any]:
    """FD / floor / accuracy in the classifier's space (the top-level keys); with feature_fns,
    also "spaces": FD and KID with their floors in each of those spaces (diffusion/spaces.py),
    all on one split of the reference."""
    x = gen["images"].astype(np.float32)
    shape = tuple(clf.config["image_shape"])
    if tuple(x.shape[1:]) != shape:
        raise UsageError(f"{gen.info.path}: images are {tuple(x.shape[1:])}, the classifier expects {shape}")
    if min(len(x), len(ref_x) // 2) < 2:
        raise UsageError("need at least 2 generated and 4 reference images")
    f_gen, pred = predict(clf, x)
    out: dict[str, Any] = {**fd_with_floor(clf, f_gen, ref_x, seed), "samples": int(len(x))}
    heads = list(clf.heads)
    if "labels" in gen.tensors and "label" in heads:
        out["accuracy"] = float((pred["label"] == gen["labels"]).mean())
    elif "attrs" in gen.tensors:
        cols = gen.config.get("attrs_columns", ["shape", "color", "background"])
        a = gen["attrs"]
        per, ok = {}, np.ones(len(x), dtype=bool)
        known = np.ones(len(x), dtype=bool)
        for j, c in enumerate(cols):
            if c not in pred:
                continue
            mask = a[:, j] >= 0
            known &= mask
            if mask.any():
                per[c] = float((pred[c][mask] == a[mask, j]).mean())
            ok &= (pred[c] == a[:, j]) | ~mask
        out["attribute_accuracy"] = per
        out["accuracy"] = float(ok[known].mean()) if known.any() else None
    else:
        out["accuracy"] = None
    if feature_fns:
        from .spaces import score_spaces

        out["spaces"] = score_spaces(x, ref_x, feature_fns, seed)
    return out
