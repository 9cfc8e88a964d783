"""gaml graphgen end to end on tiny data: data -> train -> sample (pipe) -> eval / plot;
exact resume, SIGTERM + resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_process

TINY = ["--layers", "1", "--hidden", "8,4,8", "--heads", "2", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def comm(tmp_path_factory):
    d = tmp_path_factory.mktemp("comm")
    res = run_process("graphgen", "data", "--name", "community-small", "--seed", "0", "--out", d, "-f", "json")
    assert res.returncode == 0, res.stderr
    return d


def test_data_split_and_records(comm):
    train = [json.loads(l) for l in (comm / "train.jsonl").read_text().splitlines()]
    test = [json.loads(l) for l in (comm / "test.jsonl").read_text().splitlines()]
    assert len(train) == 80 and len(test) == 20
    assert all(12 <= g["num_nodes"] <= 20 and g["kind"] == "graph" for g in train + test)
    assert all(u < v for g in train for u, v in g["edges"])


def test_train_sample_eval_plot_chain(comm, tmp_path, gaml):
    model = tmp_path / "gbd.safetensors"
    res = gaml("graphgen", "train", "--data", comm / "train.jsonl", "--out", model, "--steps", "3", *TINY,
               "--extra-features", "-f", "json")
    assert res.code == 0, res.err
    rep = json.loads(res.out)
    assert rep["steps"] == 3 and rep["graphs"] == 80 and rep["max_nodes"] == 20
    # sample to stdout, then eval from stdin
    s = run_process("graphgen", "sample", "--model", model, "-n", "6", "--steps", "4", "--device", "cpu", "-q")
    assert s.returncode == 0, s.stderr
    lines = s.stdout.splitlines()
    assert len(lines) == 6 and all(json.loads(l)["kind"] == "graph" for l in lines)
    e = run_process("graphgen", "eval", "--ref", comm / "test.jsonl", "--train", comm / "train.jsonl", "-f", "json",
                    input=s.stdout)
    assert e.returncode == 0, e.stderr
    out = json.loads(e.stdout)
    assert {"degree", "clustering", "orbit", "connected", "unique", "novel"} <= set(out) and out["n"] == 6
    # the command's MMDs are those of the piped samples against --ref (GraphRNN's kernels)
    from gaml_cli.graphs import mmd
    from gaml_cli.graphs.io import graph_from_record, read_graphs

    want = mmd.mmd_all(read_graphs(str(comm / "test.jsonl")), [graph_from_record(json.loads(l)) for l in lines], "emd")
    assert all(out[k] == pytest.approx(want[k], abs=1e-6) for k in ("degree", "clustering", "orbit")), (out, want)
    assert out["kernel"] == "emd" and out["n_ref"] == 20
    png = tmp_path / "g.png"
    p = gaml("graphgen", "plot", "-", "--ref", comm / "test.jsonl", "--out", png, "--count", "4", stdin=s.stdout)
    assert p.code == 0, p.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_of_the_test_set_against_itself_is_zero(comm, gaml):
    res = gaml("graphgen", "eval", comm / "test.jsonl", "--ref", comm / "test.jsonl", "--kernel", "tv", "-f", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert max(abs(out[k]) for k in ("degree", "clustering", "orbit")) < 1e-12 and out["kernel"] == "tv"


def _tensors(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


@pytest.mark.parametrize("grouping", [["--size-groups", "1"], ["--size-groups", "2"],
                                      ["--size-groups", "2", "--workers", "1"]])
def test_resume_reproduces_the_uninterrupted_run(comm, tmp_path, gaml, grouping):
    full, part = tmp_path / "full.safetensors", tmp_path / "part.safetensors"
    args = ["graphgen", "train", "--data", comm / "train.jsonl", *TINY, *grouping, "-q"]
    assert gaml(*args, "--out", full, "--steps", "4").code == 0
    assert gaml(*args, "--out", part, "--steps", "3").code == 0   # grouped: stops inside a draw of 2 batches
    res = gaml(*args, "--out", part, "--steps", "4", "--resume", "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["steps"] == 4
    a, b = _tensors(full), _tensors(part)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_with_other_options_names_them(comm, tmp_path, gaml):
    out = tmp_path / "m.safetensors"
    args = ["graphgen", "train", "--data", comm / "train.jsonl", "--out", out, *TINY, "-q"]
    assert gaml(*args, "--steps", "1", "--size-groups", "1").code == 0
    res = gaml(*args, "--steps", "2", "--resume")   # the default --size-groups is 2
    assert res.code == 2 and "--size-groups 1 (now 2)" in res.err and len(res.err.strip().splitlines()) == 1
    res = gaml(*args, "--steps", "2", "--size-groups", "1", "--resume", "--seed", "3")
    assert res.code == 2 and "--seed 0 (now 3)" in res.err


def test_resume_with_a_broken_optimizer_state_is_one_line(comm, tmp_path, gaml):
    from gaml_cli.core.checkpoint import CheckpointDir

    out = tmp_path / "m.safetensors"
    args = ["graphgen", "train", "--data", comm / "train.jsonl", "--out", out, *TINY, "-q"]
    assert gaml(*args, "--steps", "1").code == 0
    ckpt = CheckpointDir(tmp_path / "m.ckpt")
    step, state, run_cfg = ckpt.load()
    state["opt"]["param_groups"][0]["params"] = [0, 1, 2]  # per-tensor layout of another network
    ckpt.save(step, state, config=run_cfg)
    res = gaml(*args, "--steps", "2", "--resume")
    assert res.code == 2 and "optimizer state does not fit" in res.err and len(res.err.strip().splitlines()) == 1
    assert "Traceback" not in res.err


def test_sigterm_saves_a_checkpoint_and_resume_counts_on(comm, tmp_path):
    out = tmp_path / "gbd.safetensors"
    ckpt = tmp_path / "gbd.ckpt"
    args = [sys.executable, "-m", "gaml_cli", "graphgen", "train", "--data", str(comm / "train.jsonl"), "--out", str(out),
            *TINY, "--checkpoint-every", "3", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, "--steps", "100000"], env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not list(ckpt.glob("step-*.safetensors")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists()
    k = max(int(p.stem.split("-")[1]) for p in ckpt.glob("step-*.safetensors"))
    assert k >= 3
    res = subprocess.run([*args, "--steps", str(k + 2), "--resume", "-f", "json"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["steps"] == k + 2 and out.exists()


@pytest.mark.parametrize("line,needle", [
    ('{"num_nodes": 3, "edges": [[0, 1], [1, 2]]}\n{"num_nodes": 3, "edges": [[0, 5]]}\n', "line 2: edge 0 [0, 5] names a node out of range"),
    ('{"num_nodes": 3, "edges": [[0, 1]]}\n\n{"num_nodes": 3, "edges": [[2, 2]]}\n', "line 3: edge 0 [2, 2] is a self-loop"),
    ('{"num_nodes": 3, "edges": [[0, 1]]}\n{"num_nodes": 3, "edges": [[0, 1]\n', "line 2: malformed JSON"),
])
def test_malformed_graph_lines_name_the_line(tmp_path, gaml, line, needle):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line)
    out = tmp_path / "m.safetensors"
    res = gaml("graphgen", "train", "--data", bad, "--out", out, *TINY)
    assert res.code == 2 and len(res.err_lines) == 1 and needle in res.err, res.err
    assert not out.exists()
    res = gaml("graphgen", "eval", bad, "--ref", bad)
    assert res.code == 2 and needle in res.err


def test_bad_usage_is_one_line_exit_2(comm, tmp_path, gaml, digits_artifact):
    res = gaml("graphgen", "sample", "--model", digits_artifact, "-n", "2")
    assert res.code == 2 and len(res.err_lines) == 1 and "images" in res.err
    res = gaml("graphgen", "train", "--data", comm / "train.jsonl", "--out", tmp_path / "m.safetensors",
               "--hidden", "10,4,8", "--heads", "4")
    assert res.code == 2 and "divisible" in res.err
    res = gaml("graphgen", "train", "--data", comm / "train.jsonl", "--out", tmp_path / "m.safetensors", "--eta", "1000,30")
    assert res.code == 2 and "--eta" in res.err
    res = gaml("graphgen", "train", "--data", comm / "train.jsonl", "--out", tmp_path / "m.safetensors",
               "--t-focus", "0.5,0.9,0.4")
    assert res.code == 2 and "--t-focus" in res.err and not (tmp_path / "m.safetensors").exists()
    res = gaml("graphgen", "train", "--data", comm / "train.jsonl", "--out", tmp_path / "m.safetensors", "--resume")
    assert res.code == 2 and "no checkpoint" in res.err
    res = gaml("graphgen", "eval", "-", "--ref", "-")
    assert res.code == 2
    res = gaml("graphgen", "data", "--name", "community-small", "--out", comm / "train.jsonl")
    assert res.code == 2 and "folder" in res.err
