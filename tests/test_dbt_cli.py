"""gaml boost end to end on tiny data (fit -> predict through stdout -> eval) and its
answers to bad input: exit 2, one stderr line, no file left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zipfile

import pytest

pytest.importorskip("lightgbm")

from conftest import ROOT  # noqa: E402

FAST = ["--timesteps", "6", "--noise-samples", "2", "--mean-estimators", "20"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("boost")
    assert main(["-q", "boost", "data", "diabetes", "--train", str(d / "train.csv"), "--test", str(d / "test.csv")]) == 0
    assert main(["-q", "boost", "data", "breast-cancer", "--train", str(d / "c_train.parquet"),
                 "--test", str(d / "c_test.jsonl")]) == 0
    assert main(["-q", "boost", "data", "bimodal", "-n", "300", "--train", str(d / "b_train.csv"),
                 "--test", str(d / "b_test.csv")]) == 0
    return d


@pytest.fixture(scope="module")
def model(tables):
    from gaml_cli.__main__ import main

    out = tables / "m.dbt"
    assert main(["-q", "boost", "fit", "--data", str(tables / "train.csv"), "--target", "y", "--out", str(out), *FAST]) == 0
    return out


def _clean_failure(res, needle, out=None):
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1, res.err
    assert "Traceback" not in res.err and res.err_lines[0].startswith("gaml: error:")
    assert needle in res.err, res.err
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if ".gaml-tmp-" in p.name]


def test_fit_predict_eval_through_a_pipe(gaml, tables, model):
    res = gaml("boost", "predict", "--model", model, "--data", tables / "test.csv", "--samples", "40",
               "--quantiles", "0.1,0.5,0.9", "-q")
    assert res.code == 0, res.err
    lines = [json.loads(l) for l in res.out.splitlines()]
    assert [r["row"] for r in lines] == list(range(44))  # the input's row order
    r = lines[0]
    assert len(r["samples"]) == 40 and r["mean"] == pytest.approx(sum(r["samples"]) / 40)
    assert r["quantiles"]["0.1"] <= r["quantiles"]["0.5"] <= r["quantiles"]["0.9"]
    assert r["interval"]["low"] < r["interval"]["high"]
    import numpy as np

    for r in lines:   # every row's summary is that of its own draws: --quantiles, the 95% interval's ends, std
        s = np.array(r["samples"])
        assert [r["quantiles"][q] for q in ("0.1", "0.5", "0.9")] == pytest.approx(np.quantile(s, [0.1, 0.5, 0.9]), rel=1e-12)
        assert (r["interval"]["level"], r["interval"]["low"], r["interval"]["high"]) == pytest.approx(
            (0.95, *np.quantile(s, [0.025, 0.975])), rel=1e-12)
        assert r["std"] == pytest.approx(s.std(), rel=1e-12)
    ev = gaml("boost", "eval", "--predictions", "-", "--data", tables / "test.csv", "--target", "y",
              "--format", "json", stdin=res.out)
    assert ev.code == 0, ev.err
    m = json.loads(ev.out)
    assert set(m) >= {"rmse", "nll_card", "nll_gaussian", "qice", "picp", "crps"} and m["n"] == 44
    assert "nll" not in m  # two NLLs, each under its own name
    assert 30 < m["rmse"] < 90 and m["qice"] < 0.2  # diabetes' target has std 77
    # the report's numbers, recomputed here from the lines and the table (CARD's definitions)
    import numpy as np
    import pandas as pd

    y = pd.read_csv(tables / "test.csv")["y"].to_numpy(dtype=float)
    S = np.array([r["samples"] for r in lines])
    mu, sd = S.mean(1), S.std(1)
    assert m["rmse"] == pytest.approx(float(np.sqrt(np.mean((mu - y) ** 2))), rel=1e-9)
    assert m["nll_gaussian"] == pytest.approx(float(np.mean(0.5 * np.log(2 * np.pi * sd**2) + (y - mu) ** 2 / (2 * sd**2))), rel=1e-9)
    # CARD's: a mixture of Gaussians at the draws, precision 1 / unbiased variance of the draws
    v = S.var(1, ddof=1)
    mix = np.exp(-0.5 * (y[:, None] - S) ** 2 / v[:, None]).mean(1) / np.sqrt(2 * np.pi * v)
    assert m["nll_card"] == pytest.approx(float(np.mean(-np.log(mix))), rel=1e-9)
    lo, hi = np.percentile(S, 2.5, axis=1), np.percentile(S, 97.5, axis=1)
    assert m["picp"] == pytest.approx(float(np.mean((lo <= y) & (y <= hi))))
    pair = np.abs(S[:, :, None] - S[:, None, :]).mean((1, 2))
    assert m["crps"] == pytest.approx(float(np.mean(np.abs(S - y[:, None]).mean(1) - 0.5 * pair)), rel=1e-9)
    bins = [np.clip(np.searchsorted(np.percentile(s, np.linspace(0, 100, 11)), v) - 1, 0, 9) for s, v in zip(S, y)]
    assert m["qice"] == pytest.approx(float(np.mean(np.abs(np.bincount(bins, minlength=10) / 44 - 0.1))))


def test_model_file_is_a_documented_zip(model):
    with zipfile.ZipFile(model) as zf:
        names = zf.namelist()
        head = json.loads(zf.read("gaml.json"))
    assert head["gaml.kind"] == "dbt" and head["task"] == "regress"
    assert "mean_model.txt" in names and "trees/t00006_k0.txt" in names
    assert head["provenance"]["command"].startswith("gaml")


def test_classify_with_deferral(gaml, tables):
    out = tables / "c.dbt"
    res = gaml("-q", "boost", "fit", "--data", tables / "c_train.parquet", "--target", "diagnosis",
               "--task", "classify", "--out", out, *FAST)
    assert res.code == 0, res.err
    pred = gaml("-q", "boost", "predict", "--model", out, "--data", tables / "c_test.jsonl", "--samples", "30")
    assert pred.code == 0, pred.err
    lines = [json.loads(l) for l in pred.out.splitlines()]
    assert {l["label"] for l in lines} <= {"benign", "malignant"}
    assert all(isinstance(l["defer"], bool) and abs(sum(l["probs"].values()) - 1) < 1e-9 for l in lines)
    assert all(l["defer"] == (l["p_value"] >= 0.05) for l in lines)   # predict's --alpha default
    assert all(l["label"] == max(l["probs"], key=l["probs"].get) for l in lines)
    # the probabilities are the mean over row i's draws (stream (0, i)) of softmax(-(y0 - 1)^2 / temperature)
    import numpy as np
    import pandas as pd

    from gaml_cli.methods.dbt.model import DBTClassifier

    clf = DBTClassifier.load(str(out))
    feats = pd.read_json(tables / "c_test.jsonl", lines=True).drop(columns=["diagnosis"])
    draws = clf.sample(feats, 30, seed=0)
    logits = -((draws - 1) ** 2) / clf.config.temperature
    p_hand = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).mean(1)
    got = np.array([[l["probs"][str(c)] for c in clf.classes_] for l in lines])
    assert np.allclose(got, p_hand, rtol=1e-9, atol=1e-12)
    ev = gaml("boost", "eval", "-p", "-", "--data", tables / "c_test.jsonl", "--target", "diagnosis",
              "--alpha", "0.05", "-f", "json", stdin=pred.out)
    assert ev.code == 0, ev.err
    m = json.loads(ev.out)
    assert m["accuracy"] > 0.85 and m["curve"]
    # recomputed from the lines: deferred where p >= 0.05; accuracy on all and on the kept rows
    import numpy as np
    import pandas as pd

    truth = pd.read_json(tables / "c_test.jsonl", lines=True)["diagnosis"].astype(str).tolist()
    correct = np.array([l["label"] == t for l, t in zip(lines, truth)])
    p = np.array([l["p_value"] for l in lines])
    assert m["accuracy"] == pytest.approx(correct.mean())
    assert m["defer_rate"] == pytest.approx(float(np.mean(p >= 0.05)))
    assert m["accuracy_kept"] == pytest.approx(float(correct[p < 0.05].mean()))
    assert m["nll"] == pytest.approx(float(np.mean([-np.log(max(l["probs"][t], 1e-12)) for l, t in zip(lines, truth)])))


def test_unseen_categorical_level_is_treated_as_missing(gaml, tables):
    out = tables / "b.dbt"
    assert gaml("-q", "boost", "fit", "--data", tables / "b_train.csv", "--target", "y", "--out", out, *FAST).code == 0
    test = tables / "b_test_new_level.csv"
    text = (tables / "b_test.csv").read_text().splitlines()
    text[1] = text[1].replace("north", "east").replace("south", "east").replace("west", "east")
    test.write_text("\n".join(text) + "\n")
    res = gaml("boost", "predict", "--model", out, "--data", test, "--samples", "5")
    assert res.code == 0, res.err
    assert "level not seen at fit time" in res.err and len(res.out.splitlines()) == 30


def test_missing_target_column(gaml, tables):
    out = tables / "x.dbt"
    _clean_failure(gaml("boost", "fit", "--data", tables / "train.csv", "--target", "price", "--out", out),
                   "no target column 'price'", out)


def test_non_numeric_target_for_regression(gaml, tables):
    out = tables / "x.dbt"
    _clean_failure(gaml("boost", "fit", "--data", tables / "c_train.parquet", "--target", "diagnosis", "--out", out),
                   "is not numeric", out)


def test_corrupt_and_foreign_model_files(gaml, tables, model, tmp_path):
    cut = tmp_path / "cut.dbt"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    _clean_failure(gaml("boost", "predict", "--model", cut, "--data", tables / "test.csv"), "not a gaml .dbt model")
    other = tmp_path / "other.dbt"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("gaml.json", json.dumps({"gaml.kind": "images"}))
    _clean_failure(gaml("boost", "predict", "--model", other, "--data", tables / "test.csv"), "kind 'images'")
    edited = tmp_path / "edited.dbt"
    with zipfile.ZipFile(model) as src, zipfile.ZipFile(edited, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data.replace(b"leaf_value=", b"leaf_value=1") if name.startswith("trees/t00003") else data)
    _clean_failure(gaml("boost", "predict", "--model", edited, "--data", tables / "test.csv"), "checksum")
    notes = tmp_path / "notes.dbt"
    notes.write_text("hello")
    _clean_failure(gaml("boost", "predict", "--model", notes, "--data", tables / "test.csv"), "not a gaml .dbt model")


def test_malformed_predictions_name_the_line(gaml, tables):
    stdin = '{"row": 0, "samples": [1, 2]}\n{"row": 1, "samples": [1, 2]\n'
    _clean_failure(gaml("boost", "eval", "-p", "-", "--data", tables / "test.csv", "--target", "y", stdin=stdin),
                   "<stdin> line 2: malformed JSON")
    stdin = '{"row": 0, "samples": [1, 2]}\n{"row": 1, "samples": [1, 2, 3]}\n'
    _clean_failure(gaml("boost", "eval", "-p", "-", "--data", tables / "test.csv", "--target", "y", stdin=stdin),
                   "line 2: 3 samples where earlier lines have 2")
    # a NaN or infinite draw (JSON's NaN / Infinity) is bad input, not a report of null metrics
    for bad in ("NaN", "Infinity"):
        stdin = '{"row": 0, "samples": [1, 2]}\n{"row": 1, "samples": [1, %s]}\n' % bad
        _clean_failure(gaml("boost", "eval", "-p", "-", "--data", tables / "test.csv", "--target", "y", stdin=stdin),
                       "line 2: 'samples' must hold finite numbers")


def test_bad_table_files(gaml, tables, tmp_path):
    out = tmp_path / "x.dbt"
    _clean_failure(gaml("boost", "fit", "--data", tmp_path / "t.xlsx", "--target", "y", "--out", out), "unknown table type", out)
    _clean_failure(gaml("boost", "fit", "--data", tmp_path / "none.csv", "--target", "y", "--out", out), "no such file", out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1, "y": 2}\n{"a": 2, "y": \n')
    _clean_failure(gaml("boost", "fit", "--data", bad, "--target", "y", "--out", out), "bad.jsonl line 2", out)
    _clean_failure(gaml("boost", "fit", "--data", tables / "train.csv", "--target", "y", "--out", tmp_path / "m.pkl"),
                   "ending in .dbt")


def test_sigterm_keeps_the_trees_and_resume_finishes_the_same_model(tables, tmp_path):
    """Kill a fit mid-way (SIGTERM): exit 130, no model, a checkpoint; --resume completes
    it to the model an uninterrupted fit makes."""
    from gaml_cli.__main__ import main

    args = ["boost", "fit", "--data", str(tables / "train.csv"), "--target", "y", "--timesteps", "150",
            "--noise-samples", "2", "--mean-estimators", "10", "-q"]
    out = tmp_path / "k.dbt"
    proc = subprocess.Popen([sys.executable, "-m", "gaml_cli", *args, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "k.dbt.ckpt" / "trees"
    deadline = time.time() + 60
    while time.time() < deadline and not (ckpt.exists() and len(list(ckpt.iterdir())) >= 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists() and ckpt.exists()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    ref = tmp_path / "ref.dbt"
    assert main([*args, "--out", str(ref)]) == 0
    with zipfile.ZipFile(out) as a, zipfile.ZipFile(ref) as b:
        ha, hb = json.loads(a.read("gaml.json")), json.loads(b.read("gaml.json"))
    assert ha["members"] == hb["members"]
    assert not (tmp_path / "k.dbt.ckpt").exists()
