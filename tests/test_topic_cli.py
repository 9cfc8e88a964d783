"""gaml topic end to end on tiny data: vocab -> fit -> show -> transform -> perplexity, pipes,
interruption and bit-exact resume, and bad input (exit 2, one line, no file left behind)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

pytest.importorskip("torch")

GROUPS = {
    "space": "orbit rocket launch shuttle nasa moon planet satellite telescope astronaut".split(),
    "faith": "god church bible belief religion prayer atheist scripture faith heaven".split(),
    "sport": "team game season player coach league score match football hockey".split(),
}
FIT = ["--layers", "4,2", "--hidden", "16", "--steps", "150", "--lr", "3e-2", "--batch-size", "16", "--seed", "0"]


def corpus_lines(n=60, seed=0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    names = sorted(GROUPS)
    out = []
    for i in range(n):
        g = names[i % 3]
        words = list(rng.choice(GROUPS[g], size=36)) + list(rng.choice(GROUPS[names[(i + 1) % 3]], size=4))
        out.append((" ".join(words) + " and the of", g))
    return out


@pytest.fixture
def text_corpus(tmp_path):
    p = tmp_path / "docs.txt"
    p.write_text("\n".join(t for t, _ in corpus_lines()) + "\n")
    return p


@pytest.fixture
def jsonl_corpus(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "label": g}) for t, g in corpus_lines()) + "\n")
    return p


def _one_line_failure(res, needle, *paths):
    assert res.code == 2, (res.code, res.err)
    assert len(res.err_lines) == 1, res.err
    assert res.err_lines[0].startswith("gaml: error:") and needle in res.err, res.err
    assert "Traceback" not in res.err
    for p in paths:
        assert not p.exists()
        assert not [q for q in p.parent.iterdir() if ".gaml-tmp-" in q.name]


def test_vocab_fit_show_transform_perplexity(gaml, tmp_path, jsonl_corpus):
    bow, model = tmp_path / "bow.safetensors", tmp_path / "m.safetensors"
    res = gaml("topic", "vocab", "--corpus", jsonl_corpus, "--out", bow, "--min-df", "1", "--max-df", "1.0", "-f", "json")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    assert info["documents"] == 60 and info["labels"] == ["faith", "space", "sport"]
    assert info["vocab_size"] == 30  # stop words and short tokens gone
    assert info["test"] == 12  # 20% held out, stratified: 4 of each label
    res = gaml("topic", "fit", "--corpus", bow, "--out", model, *FIT, "-f", "json")
    assert res.code == 0, res.err
    fitted = json.loads(res.out)
    assert fitted["model"] == "generalized GBN" and fitted["layers"] == [4, 2] and fitted["train_docs"] == 48
    res = gaml("topic", "show", "--model", model, "--top", "5", "-f", "json")
    assert res.code == 0, res.err
    layers = json.loads(res.out)["layers"]
    assert [len(l) for l in layers] == [4, 2]
    for layer in layers:
        for t in layer:
            assert len(t["words"]) == 5 and t["weights"] == sorted(t["weights"], reverse=True)
            assert set(t["words"]) <= {w for g in GROUPS.values() for w in g}
    res = gaml("topic", "show", "--model", model, "--layer", "2", "-f", "json")
    assert res.code == 0, res.err
    assert [len(l) for l in json.loads(res.out)["layers"]] == [2]
    res = gaml("topic", "show", "--model", model)
    assert res.code == 0 and "[2.0]" in res.out and "[1." in res.out
    # transform: JSONL on stdout (a pipe), one record per document, theta per layer
    res = gaml("topic", "transform", "--model", model, "--corpus", bow, "-q")
    recs = [json.loads(l) for l in res.out.splitlines()]
    assert len(recs) == 60 and [len(t) for t in recs[0]["theta"]] == [4, 2]
    assert recs[0]["label"] in GROUPS
    theta_file = tmp_path / "theta.safetensors"
    assert gaml("topic", "transform", "--model", model, "--corpus", bow, "--split", "test", "--out", theta_file).code == 0
    from gaml_cli.core.artifacts import load_artifact

    art = load_artifact(theta_file, "topic-theta")
    assert art["theta_1"].shape == (12, 4) and art["theta_2"].shape == (12, 2)
    # the JSONL's test documents carry the safetensors' thetas, document for document and layer for layer
    test_recs = [r for r in recs if r["split"] == "test"]
    assert [r["doc"] for r in test_recs] == art["doc_ids"].tolist()
    for l in (1, 2):
        got = np.array([r["theta"][l - 1] for r in test_recs])
        assert got.min() > 0 and np.allclose(got, art[f"theta_{l}"], rtol=1e-5, atol=2e-6)
    res = gaml("topic", "perplexity", "--model", model, "--corpus", bow, "--refine", "5", "-f", "json")
    assert res.code == 0, res.err
    ppl = json.loads(res.out)
    assert ppl["documents"] == 12 and 1.0 < ppl["perplexity"] < 20  # 30 words: uniform guessing scores 30, knowing the group ~11
    # scored in chunks of 5 (3 chunks): the same split, the same draws, the same perplexity
    res = gaml("topic", "perplexity", "--model", model, "--corpus", bow, "--refine", "5", "--batch-size", "5", "-f", "json")
    assert res.code == 0, res.err
    chunked = json.loads(res.out)
    assert chunked["heldout_words"] == ppl["heldout_words"]
    assert chunked["perplexity"] == pytest.approx(ppl["perplexity"], rel=1e-6)
    chunked_theta = tmp_path / "theta5.safetensors"
    assert gaml("topic", "transform", "--model", model, "--corpus", bow, "--split", "test", "--refine", "5",
                "--batch-size", "5", "--out", chunked_theta).code == 0
    assert gaml("topic", "transform", "--model", model, "--corpus", bow, "--split", "test", "--refine", "5",
                "--out", theta_file).code == 0
    assert np.allclose(load_artifact(chunked_theta, "topic-theta")["theta_1"], load_artifact(theta_file, "topic-theta")["theta_1"],
                       rtol=1e-5, atol=1e-7)


def test_pipes_and_linear_baseline(gaml, tmp_path, text_corpus):
    bow, model = tmp_path / "bow.safetensors", tmp_path / "lin.safetensors"
    env = {"OMP_NUM_THREADS": "1"}
    res = gaml("topic", "vocab", "--corpus", "-", "--out", bow, "--min-df", "1", "-q", stdin=text_corpus.read_text())
    assert res.code == 0, res.err
    res = gaml("topic", "fit", "--corpus", bow, "--out", model, "--linear", *FIT[:4], "--steps", "5", "-q", "-f", "json")
    assert res.code == 0 and json.loads(res.out)["model"] == "linear GBN", res.err
    cmd = (f"{sys.executable} -m gaml_cli topic transform --model {model} --corpus {bow} -q"
           f" | {sys.executable} -c \"import sys, json; print(sum(1 for l in sys.stdin if json.loads(l)['theta']))\"")
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    assert p.returncode == 0 and p.stdout.strip() == "60", p.stderr


def _tensors(path):
    from gaml_cli.core.artifacts import load_artifact

    return load_artifact(path, "topic-model").tensors


def test_resume_is_bit_exact(gaml, tmp_path, jsonl_corpus):
    """A run resumed from its step-10 checkpoint ends with the same weights, bit for bit, as
    the run that went straight through (same --steps: the learning-rate schedule spans them)."""
    import shutil

    bow = tmp_path / "bow.safetensors"
    assert gaml("topic", "vocab", "--corpus", jsonl_corpus, "--out", bow, "--min-df", "1", "-q").code == 0
    once, twice = tmp_path / "once.safetensors", tmp_path / "twice.safetensors"
    base = FIT[:4] + ["--batch-size", "16", "--seed", "0", "--steps", "20", "--checkpoint-every", "10"]
    assert gaml("topic", "fit", "--corpus", bow, "--out", once, *base, "-q").code == 0
    shutil.copytree(tmp_path / "once.ckpt", tmp_path / "twice.ckpt")
    (tmp_path / "twice.ckpt" / "step-00000020.safetensors").unlink()
    (tmp_path / "twice.ckpt" / "latest.json").write_text(json.dumps({"step": 10, "file": "step-00000010.safetensors"}))
    res = gaml("topic", "fit", "--corpus", bow, "--out", twice, *base, "--resume")
    assert res.code == 0, res.err
    assert "resumed from" in res.err and "at step 10" in res.err
    a, b = _tensors(once), _tensors(twice)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(gaml, tmp_path, jsonl_corpus):
    bow, model = tmp_path / "bow.safetensors", tmp_path / "m.safetensors"
    assert gaml("topic", "vocab", "--corpus", jsonl_corpus, "--out", bow, "--min-df", "1", "-q").code == 0
    ckpt = tmp_path / "m.ckpt"
    args = [sys.executable, "-m", "gaml_cli", "topic", "fit", "--corpus", str(bow), "--out", str(model),
            "--layers", "4,2", "--hidden", "16", "--steps", "100000", "--checkpoint-every", "5"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 90
    while not (ckpt / "latest.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (ckpt / "latest.json").exists(), "no checkpoint within 90 s"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    assert not model.exists()
    step = json.loads((ckpt / "latest.json").read_text())["step"]
    res = gaml("topic", "fit", "--corpus", bow, "--out", model, "--layers", "4,2", "--hidden", "16",
               "--steps", str(step + 5), "--resume", "-q", "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["steps"] == step + 5


# ------------------------------------------------------------------ bad input


def test_empty_corpus(gaml, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    out = tmp_path / "bow.safetensors"
    _one_line_failure(gaml("topic", "vocab", "--corpus", empty, "--out", out), "the corpus is empty", out)


def test_corpus_without_any_vocabulary_word(gaml, tmp_path):
    p = tmp_path / "stop.txt"
    p.write_text("the and of\nit is a\n")
    out = tmp_path / "bow.safetensors"
    _one_line_failure(gaml("topic", "vocab", "--corpus", p, "--out", out), "no word passes the vocabulary filters", out)


def test_document_with_no_vocabulary_word_is_named_and_dropped(gaml, tmp_path, text_corpus):
    lines = text_corpus.read_text().splitlines()
    lines.insert(2, "the and of it")  # line 3 has no vocabulary word
    p = tmp_path / "docs2.txt"
    p.write_text("\n".join(lines) + "\n")
    out = tmp_path / "bow.safetensors"
    res = gaml("topic", "vocab", "--corpus", p, "--out", out, "--min-df", "1", "-f", "json")
    assert res.code == 0, res.err
    assert "1 document(s) with no in-vocabulary words were dropped (line/record 3)" in res.err
    assert json.loads(res.out)["documents"] == 60


def test_malformed_jsonl_names_the_line(gaml, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "orbit rocket"}\n{"text": "god church"}\n{"text": "team game",\n')
    out = tmp_path / "bow.safetensors"
    _one_line_failure(gaml("topic", "vocab", "--corpus", p, "--out", out), "bad.jsonl line 3: malformed JSON", out)
    p.write_text('{"text": "orbit rocket"}\n{"txt": "god church"}\n')
    _one_line_failure(gaml("topic", "vocab", "--corpus", p, "--out", out), "bad.jsonl line 2: no 'text' field", out)


def test_vocabulary_mismatch(gaml, tmp_path, jsonl_corpus, text_corpus):
    bow, other, model = tmp_path / "bow.safetensors", tmp_path / "other.safetensors", tmp_path / "m.safetensors"
    assert gaml("topic", "vocab", "--corpus", jsonl_corpus, "--out", bow, "--min-df", "1", "-q").code == 0
    assert gaml("topic", "vocab", "--corpus", text_corpus, "--out", other, "--min-df", "1", "--max-size", "20", "-q").code == 0
    assert gaml("topic", "fit", "--corpus", bow, "--out", model, *FIT[:4], "--steps", "2", "-q").code == 0
    out = tmp_path / "theta.jsonl"
    _one_line_failure(gaml("topic", "transform", "--model", model, "--corpus", other, "--out", out),
                      "was built with another vocabulary", out)
    res = gaml("topic", "perplexity", "--model", model, "--corpus", other)
    assert res.code == 2 and len(res.err_lines) == 1 and "another vocabulary" in res.err
    # the cure the message names works: encode the documents with the model's vocabulary
    same = tmp_path / "same.safetensors"
    assert gaml("topic", "vocab", "--corpus", text_corpus, "--vocab", bow, "--out", same, "-q").code == 0
    assert gaml("topic", "perplexity", "--model", model, "--corpus", same, "--split", "all", "--refine", "0", "-q").code == 0


@pytest.mark.parametrize("args,needle", [
    (["topic", "fit", "--corpus", "{txt}", "--out", "{out}"], "expected a bag-of-words artifact"),
    (["topic", "fit", "--corpus", "{bow}", "--out", "{out}", "--layers", "8,x"], "--layers"),
    (["topic", "fit", "--corpus", "{bow}", "--out", "{out}", "--layers", "8,0"], "--layers"),
    (["topic", "fit", "--corpus", "{bow}", "--out", "{out}", "--resume"], "no checkpoint folder"),
    (["topic", "fit", "--corpus", "{model}", "--out", "{out}"], "is an artifact of kind 'topic-model', but this needs 'bow'"),
    (["topic", "show", "--model", "{bow}"], "is an artifact of kind 'bow'"),
])
def test_bad_fit_and_show_input(gaml, tmp_path, jsonl_corpus, args, needle):
    bow, model = tmp_path / "bow.safetensors", tmp_path / "m.safetensors"
    assert gaml("topic", "vocab", "--corpus", jsonl_corpus, "--out", bow, "--min-df", "1", "-q").code == 0
    assert gaml("topic", "fit", "--corpus", bow, "--out", model, *FIT[:4], "--steps", "2", "-q").code == 0
    out = tmp_path / "new.safetensors"
    sub = {"{txt}": str(jsonl_corpus), "{out}": str(out), "{bow}": str(bow), "{model}": str(model)}
    res = gaml(*[sub.get(a, a) for a in args])
    _one_line_failure(res, needle, out)


def test_no_test_documents(gaml, tmp_path, jsonl_corpus):
    bow, model = tmp_path / "bow.safetensors", tmp_path / "m.safetensors"
    assert gaml("topic", "vocab", "--corpus", jsonl_corpus, "--out", bow, "--min-df", "1", "--test-fraction", "0", "-q").code == 0
    assert gaml("topic", "fit", "--corpus", bow, "--out", model, *FIT[:4], "--steps", "2", "-q").code == 0
    res = gaml("topic", "perplexity", "--model", model, "--corpus", bow)
    assert res.code == 2 and len(res.err_lines) == 1 and "no test documents" in res.err
