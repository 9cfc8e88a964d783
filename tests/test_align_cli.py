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


def test_rpo_with_clip_embeddings_and_scale_options(gaml, prefs, tmp_path):
    """--embeddings clip with a local CLIP folder, micro-batches, bf16 and gradient checkpointing
    on the CLI; the run records them. fp16 on CPU and --embeddings on diffusion-dpo: one line, exit 2."""
    from sd_tiny import build_tiny_clip

    clip = build_tiny_clip(tmp_path)
    run = tmp_path / "run"
    res = gaml("align", "rpo", "--model", "shapes", "--pairs", prefs / "prefs.jsonl", "--out", run, *FAST,
               "--embeddings", "clip", "--clip-model", clip, "--micro-batch", "1", "--precision", "bf16",
               "--gradient-checkpointing", "-f", "json")
    assert res.code == 0, res.err
    info = json.loads(gaml("inspect", run / "model.safetensors", "-f", "json").out)["config"]["align"]
    assert info["micro_batch"] == 1 and info["precision"] == "bf16" and info["gradient_checkpointing"] is True
    assert info["embeddings"] == "clip"
    for extra, msg in [(["--precision", "fp16"], "fp16 needs a GPU"),
                       (["--embeddings", "clip-lol"], "--embeddings")]:
        res = gaml("align", "rpo", "--model", "shapes", "--pairs", prefs / "prefs.jsonl", "--out", tmp_path / "x",
                   *FAST, *extra)
        assert res.code == 2 and msg in res.err and not (tmp_path / "x").exists(), res.err
    res = gaml("align", "rpo", "--model", "shapes", "--pairs", prefs / "prefs.jsonl", "--out", tmp_path / "y",
               *FAST, "--embeddings", "clip-text", "--clip-model", tmp_path / "no-clip")
    assert res.code == 2 and "no-clip" in res.err and not (tmp_path / "y").exists(), res.err


def test_two_processes_under_torchrun(prefs, tmp_path):
    """The same command under torchrun (what `accelerate launch` sets up): DDP over gloo on CPU,
    the batch split over the processes, one run folder written by rank 0."""
    import os
    import subprocess
    import sys

    from gaml_cli.core.artifacts import read_header

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gaml_cli",
                          "align", "rpo", "--model", "shapes", "--pairs", str(prefs / "prefs.jsonl"), "--out", str(run),
                          "--steps", "2", "--batch-size", "4", "--lora-rank", "2", "--device", "cpu", "-f", "json",
                          "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["processes"] == 2
    assert read_header(run / "model.safetensors").config["align"]["processes"] == 2
    assert len(list((run / "checkpoints").glob("step-*.safetensors"))) == 1
    assert len((run / "log.jsonl").read_text().splitlines()) == 1  # rank 0 alone logs


def test_inspect_and_export_of_run_folders(gaml, prefs, tmp_path):
    """gaml inspect RUN shows the run's model (a gaml align run of a gaml teacher) or align.json
    (a Stable Diffusion align run); gaml export says the SD run is already in diffusers format."""
    run = tmp_path / "run"
    assert gaml("align", "diffusion-dpo", "--model", "shapes", "--pairs", prefs / "prefs.jsonl", "--out", run,
                *FAST).code == 0
    info = json.loads(gaml("inspect", run, "-f", "json").out)
    assert info["kind"] == "teacher" and info["path"] == str(run / "model.safetensors")
    sd = tmp_path / "sd-run"
    sd.mkdir()
    (sd / "align.json").write_text(json.dumps({"kind": "sd-align", "pipeline": "sd15", "align": {"method": "rpo"}}))
    (sd / "pytorch_lora_weights.safetensors").write_bytes(b"")
    res = gaml("inspect", sd, "-f", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["format"] == "sd-align-run" and out["config"]["pipeline"] == "sd15" and "LoRA" in out["weights"]
    assert "sd-align run of sd15" in gaml("inspect", sd).out
    res = gaml("export", "--model", sd, "--diffusers", tmp_path / "exp")
    assert res.code == 2 and "already in diffusers format" in res.err and not (tmp_path / "exp").exists(), res.err
    (sd / "align.json").write_text("{not json")
    res = gaml("inspect", sd)
    assert res.code == 2 and len(res.err_lines) == 1 and "align.json" in res.err
