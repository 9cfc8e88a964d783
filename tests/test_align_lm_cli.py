"""`gaml align sapo | sft | dpo | orpo | generate` end to end on tiny random Llama and GPT-2 folders
(saved, then loaded through transformers' from_pretrained as a user's checkpoint would be); the
run folders load as they are; resume equals the straight run; bad input: one line, exit 2,
nothing written."""

from __future__ import annotations

import json

import pytest

FAST = ["--steps", "2", "--batch-size", "2", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    from gaml_cli.methods.sapo.tiny import build_tiny_lm

    root = tmp_path_factory.mktemp("lms")
    for arch in ("llama", "gpt2"):
        build_tiny_lm(root / arch, arch, layers=1, hidden=32, heads=2, context=32, seed=0)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("arith") / "d"
    assert main(["dataset", "arithmetic", "--out", str(d), "--test", "6", "--train", "16", "-q"]) == 0
    rows = [json.loads(l) for l in (d / "train.jsonl").read_text().splitlines()]
    with open(d / "pairs.jsonl", "w") as fh:
        for r in rows:
            wrong = str(int(r["completion"]) + 1)
            fh.write(json.dumps({"prompt": r["prompt"], "chosen": r["completion"], "rejected": wrong}) + "\n")
    with open(d / "chat.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                              {"role": "assistant", "content": r["completion"]}]}) + "\n")
    return d


def test_dataset_arithmetic_is_exact_and_split(data):
    train = [json.loads(l) for l in (data / "train.jsonl").read_text().splitlines()]
    test = [json.loads(l) for l in (data / "test.jsonl").read_text().splitlines()]
    assert len(train) == 16 and len(test) == 6
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    for r in train + test:
        a, b = r["prompt"][:-1].split("+")
        assert r["prompt"] == f"{int(a)}+{int(b)}=" and r["completion"] == str(int(a) + int(b))


@pytest.mark.parametrize("arch,extra", [("llama", ["--loss", "dpo", "--lora-rank", "2"]),
                                        ("gpt2", ["--loss", "orpo", "--lora-rank", "0"])])
def test_sapo_run_loads_as_it_is_and_generates(gaml, lms, data, tmp_path, arch, extra):
    run = tmp_path / "run"
    res = gaml("align", "sapo", "--model", lms / arch, "--data", data / "train.jsonl", "--out", run, *FAST,
               "--segment-length", "3", *extra, "-f", "json")
    assert res.code == 0, res.err
    s = json.loads(res.out)
    assert s["steps"] == 2 and s["buffer_items"] == 4 and s["method"] == f"sapo-{extra[1]}"
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and {"loss", "accuracy", "logp_chosen", "logp_rejected"} <= set(log[-1])
    # the folder loads with transformers / peft as it is
    from transformers import AutoModelForCausalLM

    if "--lora-rank" in extra and extra[extra.index("--lora-rank") + 1] != "0":
        from peft import AutoPeftModelForCausalLM

        AutoPeftModelForCausalLM.from_pretrained(str(run))
    else:
        AutoModelForCausalLM.from_pretrained(str(run))
    res = gaml("align", "generate", "--model", run, "--prompts", data / "test.jsonl", "--max-new-tokens", "3", "-q")
    assert res.code == 0, res.err
    rows = [json.loads(l) for l in res.out.splitlines()]
    test = [json.loads(l) for l in (data / "test.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [t["prompt"] for t in test]
    c = tmp_path / "c.jsonl"
    c.write_text(res.out)
    res = gaml("eval", "answers", "--completions", c, "--data", data / "test.jsonl", "-f", "json")
    assert res.code == 0 and json.loads(res.out)["n"] == 6


def test_generate_samples_each_prompt_from_its_own_seed(gaml, lms, tmp_path):
    """With sampling, prompt i draws from seed (seed, i): its completion does not depend on the other
    prompts or the batch; greedy output is one per prompt in input order."""
    both, one = tmp_path / "both.txt", tmp_path / "one.txt"
    both.write_text("1+2=\n30+4=\n")
    one.write_text("1+2=\n")
    args = ["align", "generate", "--model", lms / "llama", "--max-new-tokens", "6", "--temperature", "1.0",
            "--seed", "3", "-q"]
    a = [json.loads(l) for l in gaml(*args, "--prompts", both).out.splitlines()]
    b = [json.loads(l) for l in gaml(*args, "--prompts", one).out.splitlines()]
    assert [r["prompt"] for r in a] == ["1+2=", "30+4="] and a[0] == b[0]
    again = [json.loads(l) for l in gaml(*args, "--prompts", one).out.splitlines()]
    assert again == b


def test_sapo_conversational_data(gaml, lms, data, tmp_path):
    res = gaml("align", "sapo", "--model", lms / "llama", "--data", data / "chat.jsonl", "--out", tmp_path / "r",
               *FAST, "--segment-length", "2", "--lora-rank", "2")
    assert res.code == 0, res.err


def test_sapo_resume_equals_the_straight_run(gaml, lms, data, tmp_path):
    base = ["align", "sapo", "--model", lms / "gpt2", "--data", data / "train.jsonl", "--batch-size", "2",
            "--segment-length", "3", "--lora-rank", "2", "--buffer-size", "3", "--ref-sync-steps", "2",
            "--device", "cpu", "-q", "--checkpoint-every", "2", "-f", "json"]
    straight = gaml(*base, "--out", tmp_path / "a", "--steps", "4")
    assert straight.code == 0, straight.err
    assert gaml(*base, "--out", tmp_path / "b", "--steps", "2").code == 0
    again = gaml(*base, "--out", tmp_path / "b", "--steps", "4")
    assert again.code == 2 and "--resume" in again.err
    resumed = gaml(*base, "--out", tmp_path / "b", "--steps", "4", "--resume")
    assert resumed.code == 0, resumed.err
    a, b = json.loads(straight.out), json.loads(resumed.out)
    assert a["loss"] == b["loss"] and a["mean_draws"] == b["mean_draws"] and b["reference_refreshes"] == 2
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "adapter_model.safetensors"), load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert all((wa[k] == wb[k]).all() for k in wa)


@pytest.mark.parametrize("command,arch", [("sft", "llama"), ("dpo", "gpt2"), ("orpo", "llama"), ("dpo", "llama")])
def test_trl_peers(gaml, lms, data, tmp_path, command, arch):
    pytest.importorskip("trl", reason="TRL is not installed (pip install 'gaml[align]')")
    source = ["--data", data / "train.jsonl"] if command == "sft" else ["--pairs", data / "pairs.jsonl"]
    lora = ["--lora-rank", "0"] if (command, arch) == ("dpo", "llama") else ["--lora-rank", "2"]
    run = tmp_path / "run"
    res = gaml("align", command, "--model", lms / arch, *source, "--out", run, *FAST, *lora, "-f", "json")
    assert res.code == 0, res.err
    s = json.loads(res.out)
    assert s["steps"] == 2 and s["method"] == command
    assert (run / "align.json").is_file() and (run / "tokenizer.json").is_file()
    assert (run / ("adapter_model.safetensors" if lora[1] != "0" else "model.safetensors")).is_file()
    res = gaml("align", "generate", "--model", run, "--prompts", data / "test.jsonl", "--max-new-tokens", "2", "-q")
    assert res.code == 0 and len(res.out.splitlines()) == 6
    f = tmp_path / "answers.jsonl"
    res = gaml("align", "generate", "--model", run, "--prompts", data / "test.jsonl", "--max-new-tokens", "2", "-q",
               "--out", f)
    assert res.code == 0 and res.out == "" and len(f.read_text().splitlines()) == 6


def test_sft_on_conversational_data(gaml, lms, data, tmp_path):
    pytest.importorskip("trl", reason="TRL is not installed (pip install 'gaml[align]')")
    res = gaml("align", "sft", "--model", lms / "llama", "--data", data / "chat.jsonl", "--out", tmp_path / "r",
               *FAST, "--lora-rank", "2")
    assert res.code == 0, res.err


# ------------------------------------------------------------------------------------------ bad input
def _bad(gaml, tmp_path, lms, lines, command="sapo", model=None):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    opt = "--pairs" if command in ("dpo", "orpo") else "--data"
    res = gaml("align", command, "--model", model or lms / "gpt2", opt, f, "--out", out, *FAST)
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1, res.err
    assert not out.exists()
    return res.err_lines[0]


@pytest.mark.parametrize("lines,needle", [
    (['{"prompt": "1+1=", "chosen": "2"}', '{"prompt": "1+2="}'], "line 2: no 'chosen' field"),
    (['{"chosen": "2"}'], "line 1: no 'prompt' field"),
    (['{"prompt": "1+1=", "chosen": ""}'], "line 1: 'chosen' is empty"),
    (['{"prompt": "1+1=", "chosen": "2"}', '{"prompt": '], "line 2: malformed JSON"),
    (['{"prompt": "' + "1" * 40 + '", "chosen": "2"}'], "line 1: the prompt is 40 tokens; the model's context is 32"),
])
def test_bad_data_one_line_exit_2_nothing_written(gaml, lms, tmp_path, lines, needle):
    assert needle in _bad(gaml, tmp_path, lms, lines)


def test_bad_pairs_line_for_dpo(gaml, lms, tmp_path):
    pytest.importorskip("trl")
    msg = _bad(gaml, tmp_path, lms, ['{"prompt": "1+1=", "chosen": "2", "rejected": "3"}',
                                     '{"prompt": "1+1=", "chosen": "2"}'], command="dpo")
    assert "line 2: no 'rejected' field" in msg


def test_missing_model_names_it_and_how_to_provide_it(gaml, lms, tmp_path):
    msg = _bad(gaml, tmp_path, lms, ['{"prompt": "1+1=", "chosen": "2"}'], model="someone/tiny-lm")
    assert "someone/tiny-lm" in msg and "--model /path/to/" in msg and "HF_HOME" in msg
    msg = _bad(gaml, tmp_path, lms, ['{"prompt": "1+1=", "chosen": "2"}'], model="no-such-alias")
    assert "no-such-alias" in msg


def test_orpo_missing_from_trl_is_one_line(gaml, lms, data, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    import builtins

    real = builtins.__import__

    def fake(name, *a, **kw):
        if name in ("trl.experimental.orpo",) or (name == "trl" and a and a[2] and "ORPOTrainer" in a[2]):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    res = gaml("align", "orpo", "--model", lms / "gpt2", "--pairs", data / "pairs.jsonl", "--out", tmp_path / "o",
               *FAST)
    assert res.code == 2 and len(res.err_lines) == 1 and "has no ORPO trainer" in res.err
    assert not (tmp_path / "o").exists()


def test_arith_lm_asset_answers_as_its_card_says(gaml, tmp_path):
    """The shipped starting model loads by its alias and answers the held-out sums as its card says
    (0.104; a margin for float differences between machines)."""
    from gaml_cli.core import hub

    assert (hub.resolve("arith-lm", option="--model") / "config.json").is_file()
    assert gaml("dataset", "arithmetic", "--out", tmp_path / "d", "-q").code == 0
    answers = tmp_path / "a.jsonl"
    res = gaml("align", "generate", "--model", "arith-lm", "--prompts", tmp_path / "d" / "test.jsonl",
               "--max-new-tokens", "5", "--device", "cpu", "--out", answers, "-q")
    assert res.code == 0, res.err
    res = gaml("eval", "answers", "--completions", answers, "--data", tmp_path / "d" / "test.jsonl", "-f", "json")
    acc = json.loads(res.out)["accuracy"]
    assert 0.08 <= acc <= 0.13, acc


# ------------------------------------------------------------------------------------------ Ctrl-C and resume
def test_sapo_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_same_run(gaml, lms, data, tmp_path, monkeypatch):
    import signal

    from gaml_cli.methods.sapo import train

    base = ["align", "sapo", "--model", lms / "gpt2", "--data", data / "train.jsonl", "--batch-size", "2",
            "--segment-length", "3", "--lora-rank", "2", "--device", "cpu", "-q", "--checkpoint-every", "0",
            "--steps", "4", "-f", "json"]
    straight = gaml(*base, "--out", tmp_path / "a")
    assert straight.code == 0, straight.err
    real, calls = train.generate_segments, []

    def interrupted(*a, **kw):  # Ctrl-C arrives while step 2 generates
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(train, "generate_segments", interrupted)
    res = gaml(*base, "--out", tmp_path / "b")
    assert res.code == 130 and "interrupted after step 2" in res.err
    assert (tmp_path / "b" / "checkpoints" / "step-00000002.safetensors").is_file()
    assert not (tmp_path / "b" / "adapter_model.safetensors").exists()
    monkeypatch.setattr(train, "generate_segments", real)
    res = gaml(*base, "--out", tmp_path / "b", "--resume")
    assert res.code == 0, res.err
    assert json.loads(res.out)["loss"] == json.loads(straight.out)["loss"]


def test_trl_peer_ctrl_c_and_resume(gaml, lms, data, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    import signal

    from transformers import Trainer

    base = ["align", "sft", "--model", lms / "llama", "--data", data / "train.jsonl", "--out", tmp_path / "r",
            "--batch-size", "2", "--lora-rank", "2", "--device", "cpu", "-q", "--steps", "3", "-f", "json"]
    real, calls = Trainer.training_step, []

    def interrupted(self, *a, **kw):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)
        return real(self, *a, **kw)

    monkeypatch.setattr(Trainer, "training_step", interrupted)
    res = gaml(*base)
    assert res.code == 130 and "interrupted after step 1" in res.err
    assert (tmp_path / "r" / "checkpoints" / "checkpoint-1").is_dir()
    monkeypatch.setattr(Trainer, "training_step", real)
    assert gaml(*base).code == 2  # a run is there: --resume or a new folder
    res = gaml(*base, "--resume")
    assert res.code == 0, res.err
    assert json.loads(res.out)["steps"] == 3
