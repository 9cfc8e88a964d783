"""`gaml align rpo | diffusion-dpo` end to end on tiny data: prefs -> align -> sample, the run
folder, resume, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

FAST = ["--steps", "2", "--batch-size", "2", "--lora-rank", "2", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("prefs") / "p"
    assert main(["dataset", "prefs", "--model", "shapes", "--oracle", "size", "-n", "4", "--steps", "4",
                 "--out", str(d), "-q"]) == 0
    return d


@pytest.mark.parametrize("command", ["rpo", "diffusion-dpo"])
def test_align_then_sample_the_run(gaml, prefs, tmp_path, command):
    run = tmp_path / "run"
    res = gaml("align", command, "--model", "shapes", "--pairs", prefs / "prefs.jsonl", "--out", run, *FAST,
               "-f", "json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["steps"] == 2 and summary["method"] == ("rpo" if command == "rpo" else "dpo")
    assert summary["pairs"] + summary["ties_dropped"] == 4
    assert (run / "model.safetensors").is_file() and (run / "checkpoints").is_dir()
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and {"implicit_accuracy", "mse_w", "ref_mse_w", "mse_l", "ref_mse_l"} <= set(log[-1])
    info = json.loads(gaml("inspect", run / "model.safetensors", "-f", "json").out)
    assert info["kind"] == "teacher" and info["config"]["align"]["method"] == summary["method"]
    assert info["config"]["align"]["reconstruction"] is (command == "rpo")
    out = tmp_path / "s.safetensors"
    res = gaml("sample", "--model", run, "--prompt", "a red circle on a blue background", "-n", "2", "--steps", "4",
               "--out", out, "-q")
    assert res.code == 0, res.err and out.is_file()


def test_resume_extends_the_run(gaml, prefs, tmp_path):
    run = tmp_path / "run"
    args = ["align", "diffusion-dpo", "--model", "shapes", "--pairs", prefs / "prefs.jsonl", "--out", run,
            "--batch-size", "2", "--lora-rank", "2", "--device", "cpu", "-q", "--checkpoint-every", "1"]
    assert gaml(*args, "--steps", "1").code == 0
    res = gaml(*args, "--steps", "2")
    assert res.code == 2 and "--resume" in res.err
    res = gaml(*args, "--steps", "2", "--resume", "-f", "json")
    assert res.code == 0, res.err and json.loads(res.out)["steps"] == 2


def _pairs_file(tmp_path, lines, images=("a.png", "b.png")):
    for name in images:
        Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / name)
    p = tmp_path / "pairs.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("lines,needle", [
    (['{"prompt": "a red circle on a blue background", "chosen": "a.png", "rejected": "missing.png"}'],
     "line 1"),
    (['{"prompt": "a red circle on a blue background", "chosen": "a.png", "rejected": "a.png"}'], "line 1"),
    (['{"prompt": "  ", "chosen": "a.png", "rejected": "b.png"}'], "line 1"),
    (['{"prompt": "a red circle on a blue background", "chosen": "a.png", "rejected": "b.png"}',
      '{"prompt": "a red circle", "chosen": "a.png"'], "line 2"),
])
def test_bad_pairs_are_one_line_and_write_nothing(gaml, tmp_path, lines, needle):
    pairs = _pairs_file(tmp_path, lines)
    run = tmp_path / "run"
    res = gaml("align", "rpo", "--model", "shapes", "--pairs", pairs, "--out", run, *FAST)
    assert res.code == 2 and len(res.err_lines) == 1 and needle in res.err, res.err
    assert not run.exists()


def test_models_that_cannot_be_aligned_are_refused(gaml, prefs, tmp_path):
    run = tmp_path / "run"
    res = gaml("align", "rpo", "--model", "digits", "--pairs", prefs / "prefs.jsonl", "--out", run, *FAST)
    assert res.code == 2 and "caption-conditioned" in res.err
    res = gaml("align", "rpo", "--model", "sd15", "--pairs", prefs / "prefs.jsonl", "--out", run, *FAST)
    assert res.code == 2 and "sd15" in res.err and len(res.err_lines) == 1
    res = gaml("align", "rpo", "--model", "shapes", "--pairs", prefs / "prefs.jsonl", "--out", run, *FAST,
               "--batch-size", "1")
    assert res.code == 2 and "at least 2" in res.err
    res = gaml("align", "rpo", "--model", "shapes", "--pairs", prefs / "prefs.jsonl", "--out", run, *FAST,
               "--beta", "nan")
    assert res.code == 2 and "--beta" in res.err
    assert not run.exists()
