"""Recipes: every shipped recipe is valid; references, overrides, dry-run, execution, errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from conftest import ROOT
from gaml_cli.core.config import load_recipe
from gaml_cli.core.errors import InputError, UsageError
from gaml_cli.app import click_app
from gaml_cli.core.recipes import plan

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_is_valid(path):
    """Headed by the command that runs it; every step parses against the real command tree."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# gaml run recipes/" + path.name), first
    words = shlex.split(first[1:].strip())
    overrides = [w for w in words[3:] if "=" in w]
    rec = plan(click_app(), str(path), overrides)
    assert rec.steps
    assert "${" not in json.dumps([s.argv for s in rec.steps])  # every reference resolved


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


BASIC = """# gaml run r.yaml
vars:
  out: {out}
  seed: 0
steps:
  - name: digits
    command: dataset digits
    outputs:
      images: ${{vars.out}}/d.safetensors
    args:
      out: ${{outputs.images}}
      seed: ${{vars.seed}}
      quiet: true
  - name: pic
    command: grid
    outputs:
      png: ${{vars.out}}/d.png
    args:
      _:
        - ${{digits.images}}
      out: ${{outputs.png}}
      label: 7
"""


def test_references_and_overrides(tmp_path):
    p = _write(tmp_path, BASIC.format(out="o"))
    rec = load_recipe(p, ["seed=4", "vars.out=elsewhere", "steps.pic.args.label=3"])
    assert rec.steps[0].argv == ["dataset", "digits", "--out", "elsewhere/d.safetensors", "--seed", "4", "--quiet"]
    assert rec.steps[1].argv == ["grid", "--out", "elsewhere/d.png", "--label", "3", "elsewhere/d.safetensors"]
    with pytest.raises(UsageError, match="has no var 'sed'"):
        load_recipe(p, ["sed=4"])
    with pytest.raises(UsageError, match="not key=value"):
        load_recipe(p, ["seed"])


def test_run_executes_steps_in_order(gaml, tmp_path):
    p = _write(tmp_path, BASIC.format(out=tmp_path / "o"))
    res = gaml("run", p, "--format", "json")
    assert res.code == 0, res.err
    summary = json.loads(res.out.splitlines()[-1])
    assert [s["name"] for s in summary["steps"]] == ["digits", "pic"]
    assert (tmp_path / "o" / "d.png").exists()
    from gaml_cli.core.artifacts import read_header

    prov = read_header(tmp_path / "o" / "d.safetensors").provenance
    assert prov["argv"][:3] == ["gaml", "dataset", "digits"]  # each step records its own command
    res = gaml("run", p, "--skip-existing", "--format", "json")
    assert json.loads(res.out.splitlines()[-1])["skipped"] == ["digits", "pic"]


def test_dry_run_prints_commands_only(gaml, tmp_path):
    p = _write(tmp_path, BASIC.format(out="o"))
    res = gaml("run", p, "seed=9", "--dry-run")
    assert res.code == 0
    assert res.out.splitlines() == [
        "gaml dataset digits --out o/d.safetensors --seed 9 --quiet",
        "gaml grid --out o/d.png --label 7 o/d.safetensors",
    ]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("mutate,needle", [
    (lambda t: t.replace("seed: ${vars.seed}", "sede: 1"), "step 'digits': No such option: --sede"),
    (lambda t: t.replace("${digits.images}", "${digitz.images}"), "refers to no earlier step 'digitz'"),
    (lambda t: t.replace("${digits.images}", "${digits.png}"), "step 'digits' has no output 'png'"),
    (lambda t: t.replace("command: grid", "command: gird"), "has no subcommand 'gird'"),
    (lambda t: t.replace("label: 7", "label: seven"), "step 'pic': --label: expected an integer"),
    (lambda t: t.replace("- name: pic", "- name: digits"), "duplicate step name 'digits'"),
    (lambda t: t.replace("steps:", "stepz:"), "unknown top-level key"),
    (lambda t: t.replace("  seed: 0\n", "  seed: [0\n"), "r.yaml line"),
])
def test_bad_recipes_fail_before_running(gaml, tmp_path, mutate, needle):
    text = BASIC.format(out=tmp_path / "o").replace("{{", "{").replace("}}", "}")
    p = _write(tmp_path, mutate(text))
    res = gaml("run", p)
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1 and needle in res.err, res.err
    assert not (tmp_path / "o").exists()  # nothing ran


def test_step_failure_names_the_step(gaml, tmp_path):
    text = BASIC.format(out=tmp_path / "o").replace("label: 7", "label: 11")
    p = _write(tmp_path, text)
    res = gaml("run", p)
    errors = [l for l in res.err_lines if l.startswith("gaml: error:")]
    assert res.code == 2 and len(errors) == 1 and errors == res.err_lines[-1:]
    assert "step 'pic'" in errors[0] and "no images match" in errors[0]
    assert (tmp_path / "o" / "d.safetensors").exists() and not (tmp_path / "o" / "d.png").exists()


def test_env_and_only(gaml, tmp_path, monkeypatch):
    monkeypatch.setenv("GAML_TEST_OUT", str(tmp_path / "env"))
    text = BASIC.format(out="${env.GAML_TEST_OUT}").replace("${{", "${").replace("}}", "}")
    p = _write(tmp_path, text)
    res = gaml("run", p, "--only", "digits", "--dry-run")
    assert res.out.strip() == f"gaml dataset digits --out {tmp_path}/env/d.safetensors --seed 0 --quiet"
    res = gaml("run", p, "--only", "nope")
    assert res.code == 2 and "no such step" in res.err


def test_interrupted_step_stops_the_recipe(gaml, tmp_path, monkeypatch):
    """Ctrl-C/SIGTERM in a step: exit 130, 'interrupted', and no later step runs."""
    from gaml_cli.datasets import digits

    def interrupted(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(digits, "load", interrupted)
    p = _write(tmp_path, BASIC.format(out=tmp_path / "o"))
    res = gaml("run", p)
    assert res.code == 130
    assert res.err_lines[-1] == "gaml: interrupted"
    assert "[2/2]" not in res.err and not (tmp_path / "o").exists()


def test_sigterm_during_training_saves_a_checkpoint_and_exits_130(tmp_path):
    """The batch-job case: SIGTERM (preemption) mid-training leaves a resumable checkpoint."""
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("diffusers")
    from conftest import ROOT, run_process

    assert run_process("dataset", "digits", "--out", tmp_path / "d.safetensors", "-q").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "gaml_cli", "train", "--data", str(tmp_path / "d.safetensors"),
                             "--out", str(tmp_path / "t.safetensors"), "--steps", "100000", "--batch-size", "4",
                             "--checkpoint-every", "0", "--device", "cpu"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "GAML_PROGRESS_SECONDS": "0.2", "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    for line in proc.stderr:  # wait until training steps are being made
        if line.startswith("train ") and "/100000" in line and not line.startswith("train 0/"):
            break
        assert time.time() < deadline
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "checkpoint saved" in err and "gaml: interrupted" in err
    assert not (tmp_path / "t.safetensors").exists()
    ck = list((tmp_path / "t.ckpt").glob("step-*.safetensors"))
    assert len(ck) == 1
