"""`gaml align sapo` under torchrun (what `accelerate launch` sets up): two processes, DDP over gloo
on CPU, the batch split between them, each with its own replay buffer; rank 0 writes the model
and checkpoints that hold both buffers, so a resumed two-process run equals the straight one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


def _torchrun(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gaml_cli",
                           *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def test_sapo_two_processes_and_resume(tmp_path):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    from gaml_cli.methods.sapo.tiny import build_tiny_lm

    build_tiny_lm(tmp_path / "lm", "gpt2", layers=1, hidden=32, heads=2, context=32)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "chosen": str(2 * a)}) + "\n" for a in range(12)))
    base = ["align", "sapo", "--model", tmp_path / "lm", "--data", data, "--batch-size", "4", "--lora-rank", "2",
            "--segment-length", "3", "--checkpoint-every", "2", "--device", "cpu", "-f", "json", "-q"]
    a = _torchrun(*base, "--out", tmp_path / "a", "--steps", "4")
    assert a.returncode == 0, a.stderr
    sa = json.loads(a.stdout.strip().splitlines()[-1])
    assert sa["processes"] == 2 and sa["steps"] == 4 and sa["buffer_items"] == 8  # 2 per process per step
    b = _torchrun(*base, "--out", tmp_path / "b", "--steps", "2")
    assert b.returncode == 0, b.stderr
    b = _torchrun(*base, "--out", tmp_path / "b", "--steps", "4", "--resume")
    assert b.returncode == 0, b.stderr
    sb = json.loads(b.stdout.strip().splitlines()[-1])
    assert sb["loss"] == sa["loss"] and sb["mean_draws"] == sa["mean_draws"]
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "adapter_model.safetensors"), load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert all((wa[k] == wb[k]).all() for k in wa)
