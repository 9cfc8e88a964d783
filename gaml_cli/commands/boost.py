"""gaml boost: Diffusion Boosted Trees (DBT) — conditional distributions p(y|x) from trees."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, List, Optional

import typer

from ._common import FormatOpt, QuietOpt, check_out, setup

app = typer.Typer(
    help="Diffusion Boosted Trees: p(y|x) for tables from one LightGBM tree per diffusion timestep.",
    no_args_is_help=True,
)


class Task(str, Enum):
    regress = "regress"
    classify = "classify"


class DataName(str, Enum):
    diabetes = "diabetes"
    breast_cancer = "breast-cancer"
    engel = "engel"
    bimodal = "bimodal"


def _need() -> None:
    """One clear line when the boost extra is not installed."""
    import importlib.util

    from ..core.errors import UsageError

    missing = [m for m in ("lightgbm", "pandas", "scipy") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"gaml boost needs {', '.join(missing)}: pip install 'gaml[boost]'")


DataOpt = Annotated[str, typer.Option("--data", "-d", help="Table: .csv, .tsv, .parquet or .jsonl.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help="LightGBM threads.")]


@app.command("fit")
def fit(
    data: DataOpt,
    target: Annotated[str, typer.Option("--target", "-t", help="The column to model.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Model file to write (.dbt).")],
    task: Annotated[Task, typer.Option(help="regress: real-valued y; classify: class labels (with learning to defer).")] = Task.regress,
    drop: Annotated[Optional[List[str]], typer.Option("--drop", help="A column that is not a feature (an id, say); repeatable.")] = None,
    timesteps: Annotated[int, typer.Option("--timesteps", "-T", min=1, max=100_000, help="Diffusion timesteps T = number of trees (per class for classify).")] = 1000,
    noise_samples: Annotated[int, typer.Option(min=1, max=1000, help="Draws of y_t per training row and timestep.")] = 10,
    num_leaves: Annotated[int, typer.Option(min=2, help="Leaves of each timestep's tree.")] = 31,
    min_child_samples: Annotated[int, typer.Option(min=1, help="Minimum rows in a leaf of a timestep's tree.")] = 20,
    trees_per_step: Annotated[int, typer.Option(min=1, help="Boosting rounds per timestep (1 = the paper's single tree).")] = 1,
    learning_rate: Annotated[float, typer.Option(min=1e-6, help="Shrinkage of each timestep's booster (1 for a single tree).")] = 1.0,
    mean_estimators: Annotated[int, typer.Option(min=1, help="Boosting rounds of the mean model f(x).")] = 100,
    cross_fit: Annotated[int, typer.Option(min=0, help="Folds of out-of-fold f(x) the trees train around (0 = in-sample).")] = 5,
    temperature: Annotated[float, typer.Option(min=1e-6, help="classify: softmax(-(y0-1)^2 / temperature).")] = 0.1,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the noise (timestep t uses (seed, t)) and of LightGBM.")] = 0,
    threads: ThreadsOpt = 1,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint folder OUT.ckpt of an interrupted fit.")] = False,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Fit a DBT model: a LightGBM mean model f(x), then one tree per diffusion timestep.

    Each timestep's tree predicts y_0 from (x, y_t, f(x)) with y_t drawn from CARD's forward
    process around f(x). Categorical columns (strings) and missing values go to LightGBM
    natively; rows whose target is missing are dropped (with a warning). Ctrl-C or SIGTERM
    keeps the trees fitted so far in OUT.ckpt/ (exit 130); --resume finishes the same model.

    Example:

    \b
        gaml boost data diabetes --train train.csv --test test.csv
        gaml boost fit --data train.csv --target y --out model.dbt
        gaml boost fit --data cancer.csv --target diagnosis --task classify --out cancer.dbt
    """
    setup(fmt, quiet)
    _need()
    import time

    from ..core import console
    from ..core.artifacts import provenance
    from ..core.errors import UsageError
    from ..methods.dbt import io as dbt_io
    from ..methods.dbt.model import DBTClassifier, DBTConfig, DBTRegressor
    from ..methods.dbt.tables import numeric_target, read_table, split_target

    check_out(out, ".dbt")
    cfg = DBTConfig(n_timesteps=timesteps, noise_samples=noise_samples, num_leaves=num_leaves,
                    min_child_samples=min_child_samples, trees_per_step=trees_per_step, learning_rate=learning_rate,
                    mean_estimators=mean_estimators, cross_fit=cross_fit, temperature=temperature, seed=seed,
                    num_threads=threads)
    cfg.check()
    df = read_table(data)
    X, y = split_target(df, target)
    for col in drop or []:
        if col not in X.columns:
            raise UsageError(f"--drop {col}: the table has no such column")
    X = X.drop(columns=list(drop or []))
    if X.shape[1] == 0:
        raise UsageError("no feature columns left besides the target")
    keep = y.notna().to_numpy()
    if not keep.all():
        console.warn(f"{int((~keep).sum())} row(s) with a missing {target!r} dropped")
        X, y = X[keep].reset_index(drop=True), y[keep].reset_index(drop=True)
    if len(y) < 2:
        raise UsageError(f"{data}: need at least 2 rows with a target to fit")
    if task == Task.regress:
        yv = numeric_target(y, target)
        model = DBTRegressor(**cfg.__dict__)
    else:
        yv = y
        model = DBTClassifier(**cfg.__dict__)

    import numpy as np

    from ..methods.dbt.tables import Schema

    Xe, _ = Schema.infer(X).encode(X)
    meta = {"config": cfg.__dict__, "task": task.value, "columns": [str(c) for c in X.columns],
            "data": dbt_io.data_fingerprint(Xe, np.asarray([str(v) for v in yv]))}
    from pathlib import Path

    if resume and not Path(out + ".ckpt").exists():
        console.warn(f"--resume: no checkpoint {out}.ckpt, starting from the beginning")
    ckpt = dbt_io.DirStore(out + ".ckpt", meta, resume=resume)
    done = {"t": 0}
    t0 = time.perf_counter()
    try:
        with console.progress(timesteps, "dbt fit (trees)") as bar:
            def on_tree(t: int) -> None:
                done["t"] = t
                bar.update(1)

            model.fit(X, yv, store=ckpt, progress=on_tree)
    except KeyboardInterrupt:
        console.warn(f"interrupted after {done['t']} of {timesteps} timesteps; trees kept in {ckpt.folder} "
                     "(rerun with --resume)")
        raise
    seconds = time.perf_counter() - t0
    model.save(out, provenance=provenance(seed=seed, parents=[data]))
    ckpt.remove()
    summary = {"out": out, "task": task.value, "rows": int(len(yv)), "features": int(X.shape[1]),
               "categorical": sorted(model.schema.categorical), "timesteps": timesteps,
               "trees": timesteps * model.n_outputs * trees_per_step, "fit_seconds": round(seconds, 2),
               "resumed_members": ckpt.reused}
    if task == Task.classify:
        summary["classes"] = model.classes_
    console.summary(summary, title="boost fit")


def _parse_quantiles(text: str) -> list[float]:
    from ..core.errors import UsageError

    try:
        qs = [float(q) for q in text.split(",") if q.strip()]
    except ValueError:
        raise UsageError(f"--quantiles {text!r}: give numbers in (0, 1) separated by commas") from None
    if not qs or any(not 0.0 < q < 1.0 for q in qs):
        raise UsageError(f"--quantiles {text!r}: every quantile must be in (0, 1)")
    return qs


@app.command("predict")
def predict(
    model: Annotated[str, typer.Option("--model", "-m", help="A .dbt model from gaml boost fit.")],
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Predictions JSONL ('-' = stdout).")] = "-",
    samples: Annotated[int, typer.Option("--samples", "-S", min=1, max=100_000, help="Draws from p(y|x) per row.")] = 100,
    quantiles: Annotated[str, typer.Option(help="Quantiles to report, comma-separated.")] = "0.05,0.5,0.95",
    interval: Annotated[float, typer.Option(min=0.01, max=0.999, help="Coverage of the central interval reported per row.")] = 0.95,
    no_samples: Annotated[bool, typer.Option("--no-samples", help="regress: leave the raw draws out of each line (eval needs them).")] = False,
    alpha: Annotated[float, typer.Option(min=1e-6, max=1.0, help="classify: defer a row when the top-two paired t-test has p >= alpha.")] = 0.05,
    seed: Annotated[int, typer.Option(min=0, help="Row i draws from the stream (seed, i): results do not depend on batching.")] = 0,
    threads: ThreadsOpt = 1,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Sample p(y|x) for every row of a table; one JSON line per row, in the input's order.

    regress: {"row", "mean", "std", "quantiles": {"0.05": ...}, "interval": {"level",
    "low", "high"}, "samples": [S draws]}. classify: {"row", "label", "probs": {class: p},
    "p_value", "defer"}: probabilities are the mean over samples of softmax(-(y0-1)^2/temp),
    and a row is deferred when the paired t-test between its two most likely classes gives
    p >= --alpha. A categorical level not seen at fit time is treated as missing (warning).

    Example:

    \b
        gaml boost predict --model model.dbt --data test.csv --samples 100 > predictions.jsonl
        gaml boost predict --model model.dbt --data test.csv --quantiles 0.05,0.5,0.95 --no-samples
    """
    setup(fmt, quiet)
    _need()
    import numpy as np

    from ..core import console
    from ..core.artifacts import JsonlWriter
    from ..core.errors import UsageError
    from ..methods.dbt import io as dbt_io
    from ..methods.dbt.metrics import defer_test, sample_probabilities
    from ..methods.dbt.tables import read_table

    qs = _parse_quantiles(quantiles)
    if out != "-":
        from pathlib import Path

        if Path(out).is_dir():
            raise UsageError(f"--out {out} is a folder; give a .jsonl file name")
    m = dbt_io.load(model)
    m.config.num_threads = threads
    df = read_table(data)
    Xe, unseen = m.schema.encode(df)
    for col, count in unseen.items():
        console.warn(f"column {col!r}: {count} row(s) with a level not seen at fit time, treated as missing")
    n = len(Xe)
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    chunk = max(1, 200_000 // samples)
    with JsonlWriter(out) as w, console.progress(n, "dbt predict (rows)") as bar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            rows = np.arange(start, stop)
            draws = m._sample_internal(Xe[start:stop], samples, seed, row_ids=rows)
            if m.task == "regress":
                ys = draws[..., 0] * m.y_std + m.y_mean
                qv = np.quantile(ys, qs + [lo_q, hi_q], axis=1)
                for i in range(stop - start):
                    rec = {"row": int(rows[i]), "mean": float(ys[i].mean()), "std": float(ys[i].std()),
                           "quantiles": {f"{q:g}": float(qv[j, i]) for j, q in enumerate(qs)},
                           "interval": {"level": interval, "low": float(qv[-2, i]), "high": float(qv[-1, i])}}
                    if not no_samples:
                        rec["samples"] = [float(v) for v in ys[i]]
                    w.write(rec)
            else:
                probs = sample_probabilities(draws, m.config.temperature)
                top, second, p = defer_test(probs)
                mean = probs.mean(axis=1)
                for i in range(stop - start):
                    w.write({"row": int(rows[i]), "label": m.classes_[top[i]],
                             "probs": {str(c): float(mean[i, k]) for k, c in enumerate(m.classes_)},
                             "second": m.classes_[second[i]], "p_value": float(p[i]), "defer": bool(p[i] >= alpha)})
            bar.update(stop - start)
    console.summary({"rows": n, "samples": samples, "task": m.task, "out": out, "model": model,
                     "unseen_levels": unseen}, title="boost predict", stdout_busy=(out == "-"))


@app.command("eval")
def evaluate(
    predictions: Annotated[str, typer.Option("--predictions", "-p", help="JSONL from gaml boost predict ('-' = stdin).")],
    data: DataOpt,
    target: Annotated[str, typer.Option("--target", "-t", help="The column holding the truth.")],
    alpha: Annotated[Optional[float], typer.Option(min=1e-6, max=1.0, help="classify: re-decide deferral at this alpha from the p-values (default: the lines' defer flags).")] = None,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Score predictions against the truth.

    regress: RMSE of the sample mean, NLL of a Gaussian fitted to each row's samples, QICE
    (10 quantile bins), PICP of the [2.5, 97.5] percentile interval (all as CARD defines
    them) and CRPS. classify: accuracy on all rows, accuracy on the kept (not deferred)
    rows, the deferral rate, and that trade-off along a sweep of alpha.

    Example:

    \b
        gaml boost predict --model model.dbt --data test.csv | gaml boost eval --predictions - --data test.csv --target y --format json
    """
    setup(fmt, quiet)
    _need()
    import math

    import numpy as np

    from ..core import console
    from ..core.artifacts import read_jsonl
    from ..core.errors import InputError, UsageError
    from ..methods.dbt import metrics
    from ..methods.dbt.model import _label
    from ..methods.dbt.tables import numeric_target, read_table, split_target

    df = read_table(data)
    _, y = split_target(df, target)
    n = len(y)
    state = {"kind": None, "S": None}

    def check(rec: dict) -> None:
        r = rec.get("row")
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r < n:
            raise ValueError(f"'row' must be an integer in 0..{n - 1} (the table {data} has {n} rows)")
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
    name = "<stdin>" if predictions == "-" else predictions
    for lineno, rec in enumerate(read_jsonl(predictions, validate=check), 1):
        if rec["row"] in recs:
            raise InputError(f"{name}: row {rec['row']} appears twice")
        recs[rec["row"]] = rec
    if not recs:
        raise InputError(f"{name}: no predictions")
    if len(recs) != n:
        raise UsageError(f"{name} covers {len(recs)} of the {n} rows of {data}; predict on the same table")
    order = np.arange(n)
    keep = y.notna().to_numpy()
    if not keep.all():
        console.warn(f"{int((~keep).sum())} row(s) with a missing {target!r} left out")
    order = order[keep]
    if state["kind"] == "regress":
        yt = numeric_target(y[keep], target)
        s = np.array([recs[i]["samples"] for i in order], dtype=np.float64)
        result = metrics.regression_report(s, yt)
        result["samples"] = int(s.shape[1])
    else:
        truth = [str(_label(v)) for v in y[keep]]
        labels = [str(recs[i]["label"]) for i in order]
        correct = np.array([a == b for a, b in zip(labels, truth)])
        p = np.array([recs[i]["p_value"] for i in order], dtype=np.float64)
        if alpha is None:
            deferred = np.array([bool(recs[i].get("defer", False)) for i in order])
            result = metrics.defer_report(correct, np.where(deferred, 1.0, 0.0), 0.5)
            result["curve"] = metrics.defer_report(correct, p, 0.05)["curve"]
            result["alpha"] = "as predicted"
        else:
            result = metrics.defer_report(correct, p, alpha)
        pt = np.array([float(recs[i]["probs"].get(t, 0.0)) for i, t in zip(order, truth)])
        result["nll"] = float(np.mean(-np.log(np.clip(pt, 1e-12, 1.0))))
    result.update({"predictions": name, "data": data})
    console.summary(result, title="boost eval")


@app.command("data")
def data_cmd(
    name: Annotated[DataName, typer.Argument(help="diabetes | breast-cancer (scikit-learn), engel (statsmodels), bimodal (synthetic).")],
    train: Annotated[str, typer.Option("--train", help="Training table to write (.csv, .parquet or .jsonl).")],
    test: Annotated[Optional[str], typer.Option("--test", help="Test table to write (a random --test-fraction of the rows).")] = None,
    test_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of rows held out for --test.")] = 0.1,
    n: Annotated[Optional[int], typer.Option("--n", "-n", min=10, help="bimodal: number of rows (default 2000).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split (and of the synthetic data).")] = 0,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Write an offline table (no download) split into train and test files.

    Example:

    \b
        gaml boost data diabetes --train train.csv --test test.csv --test-fraction 0.1 --seed 0
    """
    setup(fmt, quiet)
    _need()
    from ..core import console
    from ..core.errors import UsageError
    from ..methods.dbt import data as ds
    from ..methods.dbt.tables import write_table

    if test is not None and test == train:
        raise UsageError("--train and --test are the same file")
    df = ds.load(name.value, n=n, seed=seed)
    if test is not None:
        tr, te = ds.split(df, test_fraction, seed)
        write_table(tr, train)
        write_table(te, test)
    else:
        tr, te = df, None
        write_table(tr, train)
    console.summary({"name": name.value, "target": ds.TARGETS[name.value], "task": ds.TASKS[name.value],
                     "train": train, "train_rows": int(len(tr)), "test": test,
                     "test_rows": int(len(te)) if te is not None else 0, "columns": list(df.columns)},
                    title="boost data")
