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
