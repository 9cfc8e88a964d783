"""`gaml boost` from Python: methods/dbt/run.py runs exactly what the commands run."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("tables")
    assert main(["boost", "data", "diabetes", "--train", str(d / "t.csv"), "--test", str(d / "e.csv"), "-q"]) == 0
    return d


def test_fit_and_predict_from_python_equal_the_cli(gaml, tables, tmp_path):
    from gaml_cli.methods.dbt.model import load
    from gaml_cli.methods.dbt.run import EvalOptions, FitOptions, PredictOptions, evaluate, fit, predict

    opts = dict(timesteps=4, mean_estimators=10, noise_samples=2)
    summary = fit(FitOptions(data=str(tables / "t.csv"), target="y", out=str(tmp_path / "api.dbt"), **opts))
    assert summary["timesteps"] == 4 and summary["rows"] > 300
    res = gaml("boost", "fit", "--data", tables / "t.csv", "--target", "y", "--out", tmp_path / "cli.dbt",
               "--timesteps", "4", "--mean-estimators", "10", "--noise-samples", "2", "-q")
    assert res.code == 0, res.err
    a, b = load(str(tmp_path / "api.dbt")), load(str(tmp_path / "cli.dbt"))
    assert a.state()["texts"] == b.state()["texts"]  # the same trees, member by member

    predict(PredictOptions(model=str(tmp_path / "api.dbt"), data=str(tables / "e.csv"), out=str(tmp_path / "p.jsonl"),
                           samples=20))
    res = gaml("boost", "predict", "--model", tmp_path / "cli.dbt", "--data", tables / "e.csv", "--samples", "20")
    assert res.code == 0
    api_lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert api_lines == res.out.splitlines()
    scores = evaluate(EvalOptions(predictions=str(tmp_path / "p.jsonl"), data=str(tables / "e.csv"), target="y"))
    cli = json.loads(gaml("boost", "eval", "--predictions", tmp_path / "p.jsonl", "--data", tables / "e.csv",
                          "--target", "y", "-f", "json").out)
    assert scores["rmse"] == cli["rmse"] and scores["crps"] == cli["crps"]
