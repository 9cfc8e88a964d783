"""The jobs behind `gaml boost fit | predict | eval`, each from one options object, so that
Python users run exactly what the CLI runs:

    from gaml_cli.methods.dbt.run import FitOptions, fit, PredictOptions, predict
    summary = fit(FitOptions(data="train.csv", target="y", out="model.dbt"))
    predict(PredictOptions(model="model.dbt", data="test.csv", out="pred.jsonl"))

Each function checks its options (UsageError / InputError: one line, exit 2 in the CLI),
does the work, writes its files and returns the summary the command prints. The commands
keep only option parsing, the output-path checks and printing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core import console
from ...core.errors import InputError, UsageError


def check_finite(options: dict) -> None:
    """Refuse inf/nan in a float option (a range check lets inf through when it has no maximum)."""
    for name, value in options.items():
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{name} {value:g}: must be a finite number")


@dataclass
class FitOptions:
    """`gaml boost fit`'s options, by the same names."""

    data: str
    target: str
    out: str
    task: str = "regress"  # regress | classify
    drop: list[str] = field(default_factory=list)
    timesteps: int = 1000
    noise_samples: int = 10
    num_leaves: int = 31
    min_child_samples: int = 20
    trees_per_step: int = 1
    learning_rate: float = 1.0
    mean_estimators: int = 100
    cross_fit: int | None = None  # None: the default 5, lowered with a warning on a small table
    temperature: float = 0.1
    max_classes: int = 50
    seed: int = 0
    threads: int = 1
    resume: bool = False


DEFAULT_CROSS_FIT = 5


def fit(o: FitOptions) -> dict[str, Any]:
    """Fit a DBT model on a table and write it to o.out (checkpoints in o.out + '.ckpt/')."""
    from pathlib import Path

    from ...core.artifacts import provenance
    from . import io as dbt_io
    from .model import DBTClassifier, DBTConfig, DBTRegressor, _label
    from .tables import Schema, check_numeric_columns, numeric_target, read_table, row_locator, split_target

    check_finite({"--learning-rate": o.learning_rate, "--temperature": o.temperature})
    cross_fit = DEFAULT_CROSS_FIT if o.cross_fit is None else o.cross_fit
    cfg = DBTConfig(n_timesteps=o.timesteps, noise_samples=o.noise_samples, num_leaves=o.num_leaves,
                    min_child_samples=o.min_child_samples, trees_per_step=o.trees_per_step,
                    learning_rate=o.learning_rate, mean_estimators=o.mean_estimators, cross_fit=cross_fit,
                    temperature=o.temperature, seed=o.seed, num_threads=o.threads)
    cfg.check()
    if o.resume and not Path(o.out + ".ckpt").is_dir():
        raise UsageError(f"--resume: no checkpoint folder {o.out}.ckpt (nothing to resume; leave out --resume to start)")
    df = read_table(o.data)
    X, y = split_target(df, o.target)
    for col in o.drop or []:
        if col == o.target:
            raise UsageError(f"--drop {col}: {col} is the target (--target); it is not a feature, so there is "
                             "nothing to drop")
        if col not in X.columns:
            raise UsageError(f"--drop {col}: the table has no such column")
    X = X.drop(columns=list(o.drop or []))
    if X.shape[1] == 0:
        raise UsageError("no feature columns left besides the target")
    keep = y.notna().to_numpy()
    if not keep.all():
        console.warn(f"{int((~keep).sum())} row(s) with a missing {o.target!r} dropped")
        X, y = X[keep].reset_index(drop=True), y[keep].reset_index(drop=True)
    in_file, pos = row_locator(o.data, len(df)), np.flatnonzero(keep)

    def where(i: int) -> str:  # row i of X, y (after the drop) as the file numbers it
        return in_file(int(pos[i]))

    check_numeric_columns(X, where)
    if len(y) < 2:
        raise UsageError(f"{o.data}: need at least 2 rows with a target to fit")
    if cross_fit >= 2 and len(y) < 2 * cross_fit:  # the model would quietly fit f(x) in-sample
        if o.cross_fit is not None:
            most = f"at most {len(y) // 2} folds (2 rows a fold)" if len(y) >= 4 else "no cross-fitting"
            raise UsageError(f"--cross-fit {cross_fit}: {len(y)} rows with a target allow {most}; "
                             "give fewer folds, or --cross-fit 0 for an in-sample f(x)")
        console.warn(f"{len(y)} rows: too few for --cross-fit {cross_fit} (2 rows a fold); f(x) is fitted in-sample")
    if o.task == "regress":
        yv = numeric_target(y, o.target, where)
        model = DBTRegressor(**cfg.__dict__)
    elif o.task == "classify":
        k = len({_label(v) for v in y})
        if k > o.max_classes:
            raise UsageError(f"target {o.target!r} has {k} distinct values over {len(y)} rows; --task classify expects "
                             f"class labels, at most --max-classes {o.max_classes} ({k} classes take {k} trees a "
                             f"timestep, {k * o.timesteps} in all): use --task regress for a real-valued target, or "
                             "raise --max-classes")
        yv = y
        model = DBTClassifier(**cfg.__dict__)
    else:
        raise UsageError(f"--task must be regress or classify, not {o.task!r}")

    Xe, _ = Schema.infer(X).encode(X)
    meta = {"config": cfg.__dict__, "task": o.task, "columns": [str(c) for c in X.columns],
            "data": dbt_io.data_fingerprint(Xe, np.asarray([str(v) for v in yv]))}
    ckpt = dbt_io.DirStore(o.out + ".ckpt", meta, resume=o.resume)
    done = {"t": 0}
    t0 = time.perf_counter()
    try:
        with console.progress(o.timesteps, "dbt fit (trees)") as bar:
            def on_tree(t: int) -> None:
                done["t"] = t
                bar.update(1)

            model.fit(X, yv, store=ckpt, progress=on_tree)
    except KeyboardInterrupt:
        console.warn(f"interrupted after {done['t']} of {o.timesteps} timesteps; trees kept in {ckpt.folder} "
                     "(rerun with --resume)")
        raise
    seconds = time.perf_counter() - t0
    model.save(o.out, provenance=provenance(seed=o.seed, parents=[o.data]))
    ckpt.remove()
    summary = {"out": o.out, "task": o.task, "rows": int(len(yv)), "features": int(X.shape[1]),
               "categorical": sorted(model.schema.categorical), "timesteps": o.timesteps,
               "trees": o.timesteps * model.n_outputs * o.trees_per_step, "fit_seconds": round(seconds, 2),
               "resumed_members": ckpt.reused}
    if o.task == "classify":
        summary["classes"] = model.classes_
    return summary


def parse_quantiles(text: str) -> list[float]:
    try:
        qs = [float(q) for q in text.split(",") if q.strip()]
    except ValueError:
        raise UsageError(f"--quantiles {text!r}: give numbers in (0, 1) separated by commas") from None
    if not qs or any(not 0.0 < q < 1.0 for q in qs):
        raise UsageError(f"--quantiles {text!r}: every quantile must be in (0, 1)")
    return qs


@dataclass
class PredictOptions:
    """`gaml boost predict`'s options, by the same names."""

    model: str
    data: str
    out: str = "-"
    samples: int = 100
    quantiles: str = "0.05,0.5,0.95"
    interval: float = 0.95
    no_samples: bool = False
    alpha: float = 0.05
    seed: int = 0
    threads: int = 1


def predict(o: PredictOptions) -> dict[str, Any]:
    """One JSON line per row of o.data (in its order) to o.out ('-': stdout): draws from p(y|x)."""
    from ...core.artifacts import JsonlWriter
    from .metrics import defer_test, sample_probabilities
    from .model import load
    from .tables import read_table, row_locator

    check_finite({"--interval": o.interval, "--alpha": o.alpha})
    qs = parse_quantiles(o.quantiles)
    m = load(o.model)
    m.config.num_threads = o.threads
    df = read_table(o.data)
    Xe, unseen = m.schema.encode(df, row_locator(o.data, len(df)))
    for col, count in unseen.items():
        console.warn(f"column {col!r}: {count} row(s) with a level not seen at fit time, treated as missing")
    n = len(Xe)
    lo_q, hi_q = (1 - o.interval) / 2, 1 - (1 - o.interval) / 2
    chunk = max(1, 200_000 // o.samples)
    with JsonlWriter(o.out) as w, console.progress(n, "dbt predict (rows)") as bar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            rows = np.arange(start, stop)
            draws = m._sample_internal(Xe[start:stop], o.samples, o.seed, row_ids=rows)
            if m.task == "regress":
                ys = draws[..., 0] * m.y_std + m.y_mean
                qv = np.quantile(ys, qs + [lo_q, hi_q], axis=1)
                for i in range(stop - start):
                    rec = {"row": int(rows[i]), "mean": float(ys[i].mean()), "std": float(ys[i].std()),
                           "quantiles": {f"{q:g}": float(qv[j, i]) for j, q in enumerate(qs)},
                           "interval": {"level": o.interval, "low": float(qv[-2, i]), "high": float(qv[-1, i])}}
                    if not o.no_samples:
                        rec["samples"] = [float(v) for v in ys[i]]
                    w.write(rec)
            else:
                probs = sample_probabilities(draws, m.config.temperature)
                top, second, p = defer_test(probs)
                mean = probs.mean(axis=1)
                for i in range(stop - start):
                    w.write({"row": int(rows[i]), "label": m.classes_[top[i]],
                             "probs": {str(c): float(mean[i, k]) for k, c in enumerate(m.classes_)},
                             "second": m.classes_[second[i]], "p_value": float(p[i]), "defer": bool(p[i] >= o.alpha)})
            bar.update(stop - start)
    return {"rows": n, "samples": o.samples, "task": m.task, "out": o.out, "model": o.model, "unseen_levels": unseen}


@dataclass
class EvalOptions:
    """`gaml boost eval`'s options, by the same names."""

    predictions: str
    data: str
    target: str
    alpha: float | None = None


def evaluate(o: EvalOptions) -> dict[str, Any]:
    """Score predictions (JSONL from predict, '-' = stdin) against the truth column of o.data."""
    from ...core.artifacts import read_jsonl
    from . import metrics
    from .model import _label
    from .tables import numeric_target, read_table, row_locator, split_target

    check_finite({"--alpha": o.alpha})
    df = read_table(o.data)
    _, y = split_target(df, o.target)
    n = len(y)
    state = {"kind": None, "S": None}

    def check(rec: dict) -> None:
        r = rec.get("row")
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r < n:
            raise ValueError(f"'row' must be an integer in 0..{n - 1} (the table {o.data} has {n} rows)")
        kind = "classify" if "label" in rec else "regress"
        if state["kind"] is None:
            state["kind"] = kind
        elif state["kind"] != kind:
            raise ValueError("mixes classification and regression records")
        if kind == "regress":
            s = rec.get("samples")
            if not isinstance(s, list) or not s:
                raise ValueError("no 'samples' list (run gaml boost predict without --no-samples)")
            # JSON's NaN / Infinity parse as floats; they would turn the metrics into null
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in s):
                raise ValueError("'samples' must hold finite numbers")
            if state["S"] is None:
                state["S"] = len(s)
            elif state["S"] != len(s):
                raise ValueError(f"{len(s)} samples where earlier lines have {state['S']}")
        else:
            if not isinstance(rec.get("p_value"), (int, float)) or not isinstance(rec.get("probs"), dict):
                raise ValueError("a classification record needs 'label', 'probs' and 'p_value'")

    recs: dict[int, dict] = {}
    name = "<stdin>" if o.predictions == "-" else o.predictions
    for rec in read_jsonl(o.predictions, validate=check):
        if rec["row"] in recs:
            raise InputError(f"{name}: row {rec['row']} appears twice")
        recs[rec["row"]] = rec
    if not recs:
        raise InputError(f"{name}: no predictions")
    if len(recs) != n:
        raise UsageError(f"{name} covers {len(recs)} of the {n} rows of {o.data}; predict on the same table")
    order = np.arange(n)
    keep = y.notna().to_numpy()
    if not keep.all():
        console.warn(f"{int((~keep).sum())} row(s) with a missing {o.target!r} left out")
    order = order[keep]
    if state["kind"] == "regress":
        in_file = row_locator(o.data, n)
        yt = numeric_target(y[keep], o.target, lambda i: in_file(int(order[i])))
        s = np.array([recs[i]["samples"] for i in order], dtype=np.float64)
        result = metrics.regression_report(s, yt)
        result["samples"] = int(s.shape[1])
    else:
        truth = [str(_label(v)) for v in y[keep]]
        labels = [str(recs[i]["label"]) for i in order]
        correct = np.array([a == b for a, b in zip(labels, truth)])
        p = np.array([recs[i]["p_value"] for i in order], dtype=np.float64)
        if o.alpha is None:
            deferred = np.array([bool(recs[i].get("defer", False)) for i in order])
            result = metrics.defer_report(correct, np.where(deferred, 1.0, 0.0), 0.5)
            result["curve"] = metrics.defer_report(correct, p, 0.05)["curve"]
            result["alpha"] = "as predicted"
        else:
            result = metrics.defer_report(correct, p, o.alpha)
        pt = np.array([float(recs[i]["probs"].get(t, 0.0)) for i, t in zip(order, truth)])
        result["nll"] = float(np.mean(-np.log(np.clip(pt, 1e-12, 1.0))))
    result.update({"predictions": name, "data": o.data})
    return result
