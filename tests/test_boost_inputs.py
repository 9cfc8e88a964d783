"""gaml boost: input validation (issue: absurd numbers, a continuous target as classes, a bad
cell in a numeric column, --drop of the target, --resume without a checkpoint, file line
numbers in messages). Each bad input: exit 2, one `gaml: error:` line, no file left behind."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lightgbm")

TINY = ["--timesteps", "2", "--noise-samples", "1", "--mean-estimators", "5", "--cross-fit", "0"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("boost_inputs")
    assert main(["-q", "boost", "data", "diabetes", "--train", str(d / "train.csv"), "--test", str(d / "test.csv")]) == 0
    return d


def _refused(res, needle, out=None):
    assert res.code == 2, (res.code, res.err)
    assert len(res.err_lines) == 1, res.err
    assert res.err_lines[0].startswith("gaml: error:") and needle in res.err, res.err
    assert "Traceback" not in res.err
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if ".gaml-tmp-" in p.name or p.name.endswith(".ckpt")]


def _edit_csv(src, dst, row, column, value):
    """Copy a CSV, setting one cell (row: 0-based data row) to a raw string."""
    lines = src.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1 + row].split(",")
    cells[header.index(column)] = value
    lines[1 + row] = ",".join(cells)
    dst.write_text("\n".join(lines) + "\n")
    return dst


# ------------------------------------------------------------------ numbers (issue item 2)


def test_more_folds_than_rows_allow(gaml, tables):
    out = tables / "cf.dbt"
    res = gaml("boost", "fit", "--data", tables / "train.csv", "--target", "y", "--out", out, "--cross-fit", "1000")
    _refused(res, "--cross-fit 1000: 398 rows with a target allow at most 199 folds", out)


@pytest.mark.parametrize("option", ["--learning-rate", "--temperature"])
def test_fit_refuses_infinite_numbers(gaml, tables, option):
    out = tables / "inf.dbt"
    res = gaml("boost", "fit", "--data", tables / "train.csv", "--target", "y", "--out", out, option, "inf", *TINY)
    _refused(res, f"{option} inf: must be a finite number", out)


@pytest.mark.parametrize("args", [
    ["fit", "--learning-rate", "nan"], ["fit", "--temperature", "nan"], ["predict", "--interval", "nan"],
    ["predict", "--alpha", "nan"], ["eval", "--alpha", "nan"], ["data", "--test-fraction", "nan"],
])
def test_nan_is_refused_naming_the_option(gaml, tables, args):
    """typer refuses these itself (nan is outside each option's range); one line, exit 2, the option named."""
    cmd, opt, value = args
    base = {"fit": ["--data", tables / "train.csv", "--target", "y", "--out", tables / "nan.dbt"],
            "predict": ["--model", tables / "none.dbt", "--data", tables / "test.csv"],
            "eval": ["--predictions", "-", "--data", tables / "test.csv", "--target", "y"],
            "data": ["diabetes", "--train", tables / "nan.csv"]}[cmd]
    res = gaml("boost", cmd, *base, opt, value, stdin="")
    assert res.code == 2 and len(res.err_lines) == 1 and "error:" in res.err and opt in res.err, res.err


def test_default_folds_on_a_tiny_table_warn(gaml, tmp_path):
    src = tmp_path / "tiny.csv"
    src.write_text("a,y\n" + "".join(f"{i},{i * 1.5}\n" for i in range(8)))
    res = gaml("boost", "fit", "--data", src, "--target", "y", "--out", tmp_path / "tiny.dbt", "--timesteps", "2",
               "--noise-samples", "1", "--mean-estimators", "2", "--min-child-samples", "1")
    assert res.code == 0, res.err
    assert "8 rows: too few for --cross-fit 5 (2 rows a fold); f(x) is fitted in-sample" in res.err


# ------------------------------------------------------------------ classes and columns (issue item 3)


def test_classify_on_a_continuous_target_is_refused(gaml, tables):
    out = tables / "cls.dbt"
    res = gaml("boost", "fit", "--data", tables / "train.csv", "--target", "y", "--task", "classify", "--out", out, *TINY)
    _refused(res, "target 'y' has 206 distinct values over 398 rows; --task classify expects class labels", out)
    assert "--max-classes" in res.err


def test_max_classes_lets_many_classes_through(gaml, tables, tmp_path):
    import pandas as pd

    df = pd.read_csv(tables / "train.csv")
    df["grade"] = (df["y"] // 50).astype(int)  # 7 classes
    src = tmp_path / "graded.csv"
    df.drop(columns=["y"]).to_csv(src, index=False)
    out = tmp_path / "g.dbt"
    res = gaml("boost", "fit", "--data", src, "--target", "grade", "--task", "classify", "--out", out,
               "--max-classes", "5", *TINY)
    _refused(res, "target 'grade' has 7 distinct values over 398 rows", out)
    res = gaml("boost", "fit", "--data", src, "--target", "grade", "--task", "classify", "--out", out,
               "--max-classes", "7", *TINY, "-q")
    assert res.code == 0, res.err


def test_one_bad_cell_in_a_numeric_column_is_refused_at_fit(gaml, tables, tmp_path):
    src = _edit_csv(tables / "train.csv", tmp_path / "typo.csv", 14, "bmi", "0.0x3")
    out = tmp_path / "typo.dbt"
    res = gaml("boost", "fit", "--data", src, "--target", "y", "--out", out, *TINY)
    _refused(res, "feature column 'bmi' holds numbers but line 16 holds '0.0x3'", out)


def test_a_real_categorical_column_still_fits(gaml, tables, tmp_path):
    import pandas as pd

    df = pd.read_csv(tables / "train.csv")
    df["region"] = "north"
    df.loc[::3, "region"] = "south"
    src = tmp_path / "cat.csv"
    df.to_csv(src, index=False)
    res = gaml("boost", "fit", "--data", src, "--target", "y", "--out", tmp_path / "cat.dbt", *TINY, "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["categorical"] == ["region"]
