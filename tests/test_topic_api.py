"""gaml topic from Python: methods/gbn/run.py's jobs (vocab -> fit -> transform -> perplexity)
give what the command line gives on the same inputs, bit for bit, and refuse the same options
with the same messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_topic_cli import corpus_lines

pytest.importorskip("torch")

FIT = dict(layers="4,2", hidden=16, steps=20, lr=3e-2, batch_size=16, seed=0)


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "label": g}) for t, g in corpus_lines()) + "\n")
    return p


def _strip_time(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "train_seconds"}


def test_python_api_equals_the_command_line(gaml, tmp_path, corpus, monkeypatch):
    from gaml_cli.core.artifacts import load_artifact
    from gaml_cli.methods.gbn.run import (FitOptions, PerplexityOptions, ShowOptions, TransformOptions,
                                          VocabOptions, fit, perplexity, show, transform, vocab)

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cli, api = tmp_path / "cli", tmp_path / "api"
    cli.mkdir(), api.mkdir()

    # the command line
    res = gaml("topic", "vocab", "--corpus", corpus, "--out", cli / "bow.safetensors", "--min-df", "1", "--max-df", "1.0",
               "-f", "json")
    assert res.code == 0, res.err
    cli_vocab = json.loads(res.out)
    res = gaml("topic", "fit", "--corpus", cli / "bow.safetensors", "--out", cli / "m.safetensors",
               *[a for k, v in FIT.items() for a in (f"--{k.replace('_', '-')}", str(v))], "-f", "json")
    assert res.code == 0, res.err
    cli_fit = json.loads(res.out)
    res = gaml("topic", "transform", "--model", cli / "m.safetensors", "--corpus", cli / "bow.safetensors",
               "--refine", "3", "--out", cli / "theta.safetensors", "-q")
    assert res.code == 0, res.err
    res = gaml("topic", "show", "--model", cli / "m.safetensors", "--top", "4", "-f", "json")
    assert res.code == 0, res.err
    cli_show = json.loads(res.out)
    res = gaml("topic", "perplexity", "--model", cli / "m.safetensors", "--corpus", cli / "bow.safetensors",
               "--refine", "3", "-f", "json")
    assert res.code == 0, res.err
    cli_ppl = json.loads(res.out)

    # the same jobs from Python
    s = vocab(VocabOptions(corpus=str(corpus), out=str(api / "bow.safetensors"), min_df=1, max_df=1.0))
    assert {**s, "out": None} == {**cli_vocab, "out": None}
    s = fit(FitOptions(corpus=str(api / "bow.safetensors"), out=str(api / "m.safetensors"), **FIT))
    assert s["out"] == str(api / "m.safetensors") and s["checkpoints"] == str(api / "m.ckpt")
    assert _strip_time({**s, "out": None, "checkpoints": None}) == _strip_time({**cli_fit, "out": None, "checkpoints": None})
    s = transform(TransformOptions(model_path=str(api / "m.safetensors"), corpus=str(api / "bow.safetensors"),
                                   refine=3, out=str(api / "theta.safetensors")))
    assert s["documents"] == 60 and s["layers"] == [4, 2]
    assert show(ShowOptions(model_path=str(api / "m.safetensors"), top=4))["layers"] == cli_show["layers"]
    s = perplexity(PerplexityOptions(model_path=str(api / "m.safetensors"), corpus=str(api / "bow.safetensors"), refine=3))
    assert {**s, "model": None, "corpus": None} == {**cli_ppl, "model": None, "corpus": None}

    for name, kind in [("bow", "bow"), ("m", "topic-model"), ("theta", "topic-theta")]:
        a = load_artifact(cli / f"{name}.safetensors", kind).tensors
        b = load_artifact(api / f"{name}.safetensors", kind).tensors
        assert sorted(a) == sorted(b)
        for k in a:  # bit for bit: the fitted weights, theta at every layer
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), (name, k)


def test_python_api_refuses_with_the_command_line_messages(tmp_path, corpus):
    from gaml_cli.core.errors import UsageError
    from gaml_cli.methods.gbn.run import FitOptions, VocabOptions, fit, vocab

    bow = str(tmp_path / "bow.safetensors")
    with pytest.raises(UsageError, match=r"^--token-pattern '\(': not a regular expression"):
        vocab(VocabOptions(corpus=str(corpus), out=bow, token_pattern="("))
    vocab(VocabOptions(corpus=str(corpus), out=bow, min_df=1, max_df=1.0))
    out = str(tmp_path / "m.safetensors")
    cases = [({"layers": "2,4"}, "--layers 2,4: the number of topics must not grow from one layer to the next"),
             ({"layers": [2, 4]}, "--layers 2,4: the number of topics must not grow"),
             ({"lr": 0.0}, "--lr 0: must be > 0 (Adam's learning rate)"),
             ({"eta": float("inf")}, "--eta inf: must be a finite number"),
             ({"link": "sum"}, "--link must be gate or residual, not 'sum'"),
             ({"init": "lda"}, "--init must be corpus or nmf, not 'lda'"),
             ({"resume": True}, f"--resume: no checkpoint folder {tmp_path / 'm.ckpt'}")]
    for kw, message in cases:
        with pytest.raises(UsageError) as exc:
            fit(FitOptions(corpus=bow, out=out, **kw))
        assert exc.value.message.startswith(message), (kw, exc.value.message)
    assert not (tmp_path / "m.safetensors").exists()
