"""GraphMAE's evaluation protocols for embeddings, with scikit-learn (code outside gaml):

- node level (`linear_probe`): for each of `seeds` seeds, a stratified random split of the rows
  (a share `train_fraction` for training, the rest for testing; or a given split), embeddings
  standardised on the training rows, a multinomial logistic regression (lbfgs, C = 1), test
  accuracy; mean and std over the seeds. (GraphMAE trains a linear layer with Adam on the
  public split; a logistic regression is the same model family fitted to convergence.)
- graph level (`svm_probe`): for each of `seeds` seeds, 10-fold stratified cross-validation;
  in each fold an SVC (RBF) whose C is chosen from 1e-3..1e3 by 5-fold grid search on the
  training folds; the mean accuracy of the 10 folds; mean and std over the seeds (GraphMAE's
  protocol).
- `nmi`: normalised mutual information of an assignment (e.g. DiGGR's dominant factor) against
  the labels (arithmetic normalisation, scikit-learn's default).
- images (`image_probe`, embeddings of level "image": gaml embed cfa|simclr|ncl|transform): the
  artifact's train/test split (a stratified 80/20 split, seed 0, when it has none); a logistic
  regression on standardised embeddings fitted on the training rows, its test accuracy and its
  expected calibration error (`ece`: 15 equal-width bins of the top probability, the bin-size
  weighted mean |accuracy - confidence|, Guo et al. 2017); kNN accuracy (`knn_accuracy`: k
  nearest training rows by cosine distance, majority vote); with an uncertainty per row, the
  AUROC with which it flags the probe's wrong test rows (`uncertainty_auroc_errors`) and, given
  out-of-distribution rows, the AUROC separating them from the test rows (`ood_auroc`); the share
  of (near) zero entries (`sparsity`: |x| <= zero_tol) and the number of dimensions non-zero in at
  least one row (`active_dims`, non-negative contrastive learning's measure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import UsageError


def _check(x: np.ndarray, y: np.ndarray) -> None:
    if len(x) != len(y):
        raise UsageError(f"{len(y)} labels for {len(x)} embedding rows: they must match")
    if not np.isfinite(x).all():
        raise UsageError("the embeddings hold NaN or infinite values")
    if len(np.unique(y)) < 2:
        raise UsageError("the labels have a single class: nothing to probe")


def linear_probe(x: np.ndarray, y: np.ndarray, seeds: int = 20, train_fraction: float = 0.1,
                 split: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    _check(x, y)
    classes = len(np.unique(y))
    n_train = max(classes, int(round(train_fraction * len(y))))
    if split is None and (n_train >= len(y) or np.bincount(y).min() < 2):
        raise UsageError(f"cannot split {len(y)} rows of {classes} classes with --train-fraction {train_fraction}")
    accs = []
    for seed in range(seeds):
        if split is None:
            tr, te = train_test_split(np.arange(len(y)), train_size=n_train, stratify=y, random_state=seed)
        else:
            tr, te = split
        sc = StandardScaler().fit(x[tr])
        clf = LogisticRegression(max_iter=2000, random_state=seed).fit(sc.transform(x[tr]), y[tr])
        accs.append(float((clf.predict(sc.transform(x[te])) == y[te]).mean()))
    return {"protocol": "linear", "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "seeds": seeds, "train_rows": int(len(tr)), "test_rows": int(len(te))}


def svm_probe(x: np.ndarray, y: np.ndarray, seeds: int = 5, folds: int = 10) -> dict[str, Any]:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    _check(x, y)
    if np.bincount(y)[np.bincount(y) > 0].min() < folds:
        raise UsageError(f"every class needs at least {folds} graphs for {folds}-fold cross-validation")
    means = []
    for seed in range(seeds):
        accs = []
        for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
            sc = StandardScaler().fit(x[tr])
            inner = min(5, int(np.bincount(y[tr])[np.bincount(y[tr]) > 0].min()))
            grid = GridSearchCV(SVC(random_state=seed), {"C": [1e-3, 1e-2, 1e-1, 1, 10, 100, 1000]}, cv=inner)
            grid.fit(sc.transform(x[tr]), y[tr])
            accs.append(float((grid.predict(sc.transform(x[te])) == y[te]).mean()))
        means.append(float(np.mean(accs)))
    return {"protocol": "svm", "accuracy": float(np.mean(means)), "accuracy_std": float(np.std(means)),
            "seeds": seeds, "folds": folds}


def nmi(assignment: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    if len(assignment) != len(y):
        raise UsageError(f"{len(y)} labels for {len(assignment)} assignments: they must match")
    return float(normalized_mutual_info_score(y, assignment))


def expected_calibration_error(prob: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of class probabilities prob (N, K) for integer labels y given as column indices:
    sum_b |B_b|/N |acc(B_b) - conf(B_b)| over equal-width bins of the top probability."""
    conf = prob.max(1)
    correct = (prob.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def sparsity(x: np.ndarray, zero_tol: float = 1e-3) -> dict[str, Any]:
    """Share of entries with |x| <= zero_tol; dimensions above it in at least one row."""
    small = np.abs(x) <= zero_tol
    return {"sparsity": float(small.mean()), "active_dims": int((~small).any(0).sum()), "dims": int(x.shape[1]),
            "nonnegative": bool((x >= 0).all())}


def image_probe(x: np.ndarray, y: np.ndarray, split: np.ndarray | None, k: int = 20,
                uncertainty: np.ndarray | None = None, ood_uncertainty: np.ndarray | None = None,
                zero_tol: float = 1e-3) -> dict[str, Any]:
    """The image protocol (module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    _check(x, y)
    if split is not None and {0, 1} <= set(np.unique(split).tolist()):
        tr, te = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
        split_name = "artifact"
    else:
        if np.bincount(y).min() < 2:
            raise UsageError("no train/test split in the artifact and a class with one row: cannot split")
        tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
        split_name = "stratified 80/20, seed 0"
    if len(np.unique(y[tr])) < 2:
        raise UsageError("the training rows hold a single class: nothing to probe")
    sc = StandardScaler().fit(x[tr])
    clf = LogisticRegression(max_iter=3000, random_state=0).fit(sc.transform(x[tr]), y[tr])
    prob = clf.predict_proba(sc.transform(x[te]))
    pred = clf.classes_[prob.argmax(1)]
    wrong = pred != y[te]
    col = {c: i for i, c in enumerate(clf.classes_)}
    y_col = np.asarray([col.get(v, -1) for v in y[te]])
    knn = KNeighborsClassifier(n_neighbors=min(k, len(tr)), metric="cosine").fit(x[tr], y[tr])
    out: dict[str, Any] = {"protocol": "image", "split": split_name, "train_rows": int(len(tr)),
                           "test_rows": int(len(te)), "accuracy": float(1 - wrong.mean()),
                           "knn_accuracy": float((knn.predict(x[te]) == y[te]).mean()), "knn_k": int(min(k, len(tr))),
                           "ece": expected_calibration_error(prob, y_col)}
    if uncertainty is not None:
        u = np.asarray(uncertainty, dtype=np.float64)
        if len(u) != len(x) or not np.isfinite(u).all():
            raise UsageError("the uncertainty must be finite, one value per embedding row")
        out["uncertainty_auroc_errors"] = (float(roc_auc_score(wrong, u[te])) if 0 < wrong.sum() < len(wrong)
                                           else None)
        if ood_uncertainty is not None:
            v = np.asarray(ood_uncertainty, dtype=np.float64)
            if not np.isfinite(v).all():
                raise UsageError("the out-of-distribution uncertainty holds NaN or infinite values")
            out["ood_auroc"] = float(roc_auc_score(np.r_[np.zeros(len(te)), np.ones(len(v))], np.r_[u[te], v]))
            out["ood_rows"] = int(len(v))
    out.update(sparsity(x, zero_tol))
    return out


# ------------------------------------------------------------------------- gaml embed probe


@dataclass
class ProbeOptions:
    """The options of `gaml embed probe`, by the same names."""

    embeddings: str
    labels: str | None = None  # JSONL with a "label" per line (e.g. graph records); None: the artifact's
    protocol: str | None = None  # linear | svm; None: by the artifact's level
    seeds: int | None = None
    train_fraction: float = 0.1
    split: str = "given"  # given: the artifact's split when it holds one (else random); random
    uncertainty: bool = False  # images: score the rows' uncertainty (AUROC of the probe's errors)
    ood: str | None = None  # images: embeddings of out-of-distribution rows (their uncertainty)
    k: int = 20  # images: neighbours of the kNN probe
    zero_tol: float = 1e-3  # images: |x| at or below counts as zero (sparsity, active dims)


def read_labels(path: str) -> np.ndarray:
    """Labels in row order from JSONL lines that carry a "label" (encode_labels)."""
    from ..core.artifacts import read_jsonl

    def validate(rec):
        if "label" not in rec:
            raise ValueError("no 'label' field")

    return encode_labels([rec["label"] for rec in read_jsonl(path, validate=validate)])


def encode_labels(values: list) -> np.ndarray:
    """Labels as integers: ints as they are, any other JSON values by their sorted distinct values."""
    import json

    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    keys = sorted({json.dumps(v, sort_keys=True) for v in values})
    index = {k: i for i, k in enumerate(keys)}
    return np.asarray([index[json.dumps(v, sort_keys=True)] for v in values], dtype=np.int64)


def probe(o: ProbeOptions) -> dict[str, Any]:
    """Score an embeddings artifact (module docstring); keys accuracy, accuracy_std, nmi (when the
    artifact holds an `assignment`)."""
    import math

    from ..core.artifacts import load_artifact
    from ..core.errors import InputError

    if not math.isfinite(o.train_fraction) or not 0 < o.train_fraction < 1:
        raise UsageError("--train-fraction must be in (0, 1)")
    art = load_artifact(o.embeddings, "embeddings")
    if "embeddings" not in art.tensors:
        raise InputError(f"{o.embeddings}: no 'embeddings' tensor")
    x = np.asarray(art["embeddings"], dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"{o.embeddings}: 'embeddings' must be a matrix, got shape {list(x.shape)}")
    if art.config.get("level") == "image":
        return _probe_images(o, art, x)
    if o.uncertainty or o.ood:
        raise UsageError("--uncertainty and --ood score image embeddings (gaml embed cfa); these are graphs'")
    if o.labels is not None:
        y = read_labels(o.labels)
    elif "labels" in art.tensors:
        y = np.asarray(art["labels"]).astype(np.int64)
    else:
        raise UsageError(f"{o.embeddings} holds no labels; give --labels")
    protocol = o.protocol or ("svm" if art.config.get("level") == "graph" else "linear")
    if o.split not in ("given", "random"):
        raise UsageError("--split must be given or random")
    if protocol == "linear":
        given = None
        if o.split == "given" and "split" in art.tensors:
            s = np.asarray(art["split"]).astype(np.int64)
            if len(s) != len(x):
                raise InputError(f"{o.embeddings}: 'split' has {len(s)} rows for {len(x)} embeddings")
            given = (np.flatnonzero(s == 0), np.flatnonzero(s == 2))
            if not len(given[0]) or not len(given[1]):
                raise InputError(f"{o.embeddings}: the given split has no training or no test rows (--split random)")
        out = linear_probe(x, y, seeds=o.seeds or 20, train_fraction=o.train_fraction, split=given)
        out["split"] = "given" if given is not None else "random"
    elif protocol == "svm":
        out = svm_probe(x, y, seeds=o.seeds or 5)
    else:
        raise UsageError("--protocol must be linear or svm")
    if "assignment" in art.tensors:
        out["nmi"] = nmi(np.asarray(art["assignment"]), y)
    return {"embeddings": o.embeddings, "rows": int(len(x)), "classes": int(len(np.unique(y))), **out}


def _image_labels(o: ProbeOptions, art) -> np.ndarray:
    """--labels attr:NAME (a column of the artifact's attrs, e.g. shapes' shape), a JSONL, or the
    artifact's labels."""
    if o.labels is not None and o.labels.startswith("attr:"):
        name = o.labels[len("attr:"):]
        cols = list(art.config.get("attrs_columns") or [])
        if "attrs" not in art.tensors or name not in cols:
            raise UsageError(f"--labels {o.labels}: {o.embeddings} has no attribute {name!r}"
                             + (f" (it has {', '.join(cols)})" if cols else ""))
        return np.asarray(art["attrs"])[:, cols.index(name)].astype(np.int64)
    if o.labels is not None:
        return read_labels(o.labels)
    if "labels" in art.tensors:
        return np.asarray(art["labels"]).astype(np.int64)
    cols = art.config.get("attrs_columns")
    raise UsageError(f"{o.embeddings} holds no labels; give --labels"
                     + (f" (e.g. attr:{cols[0]})" if cols else ""))


def _probe_images(o: ProbeOptions, art, x: np.ndarray) -> dict[str, Any]:
    import math

    from ..core.artifacts import load_artifact
    from ..core.errors import InputError

    if o.k < 1:
        raise UsageError("--k must be at least 1")
    if not math.isfinite(o.zero_tol) or o.zero_tol < 0:
        raise UsageError("--zero-tol must be a finite number >= 0")
    y = _image_labels(o, art)
    u = v = None
    if o.uncertainty or o.ood:
        if "uncertainty" not in art.tensors:
            raise UsageError(f"{o.embeddings} holds no uncertainty (SimCLR and NCL rows have none; "
                             "CFA's posterior entropy does)")
        u = np.asarray(art["uncertainty"])
        if o.ood:
            other = load_artifact(o.ood, "embeddings")
            if "uncertainty" not in other.tensors:
                raise InputError(f"--ood {o.ood}: holds no uncertainty (embed it with the same CFA model)")
            v = np.asarray(other["uncertainty"])
    if o.split not in ("given", "random"):
        raise UsageError("--split must be given or random")
    split = np.asarray(art["split"]).astype(np.int64) if "split" in art.tensors and o.split == "given" else None
    out = image_probe(x, y, split, k=o.k, uncertainty=u, ood_uncertainty=v, zero_tol=o.zero_tol)
    return {"embeddings": o.embeddings, "method": art.config.get("method"), "rows": int(len(x)),
            "classes": int(len(np.unique(y))), **out}
