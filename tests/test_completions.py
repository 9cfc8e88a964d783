"""Completion scripts are generated from the app, current, and work in real shells."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT
from gaml_cli.app import click_app
from gaml_cli.core.completion import FILES, GENERATORS

COMPLETIONS = ROOT / "completions"


@pytest.mark.parametrize("shell", sorted(FILES))
def test_completion_files_are_current(shell):
    committed = (COMPLETIONS / FILES[shell]).read_text()
    assert committed == GENERATORS[shell](click_app()), (
        f"completions/{FILES[shell]} is stale: run `gaml completion {shell} > completions/{FILES[shell]}`"
    )


def test_cli_prints_the_same_script(gaml):
    res = gaml("completion", "bash")
    assert res.code == 0 and res.out == (COMPLETIONS / "gaml.bash").read_text()


def _bash_complete(words: list[str]) -> list[str]:
    script = COMPLETIONS / "gaml.bash"
    arr = " ".join(f"'{w}'" for w in words)
    cmd = f"source {script}; COMP_WORDS=({arr}); COMP_CWORD={len(words) - 1}; _gaml; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [l for l in proc.stdout.splitlines() if l]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completes_commands_options_and_choices():
    top = _bash_complete(["gaml", ""])
    assert {"dataset", "models", "run", "grid", "completion"} <= set(top)
    assert _bash_complete(["gaml", "dataset", "sh"]) == ["shapes"]
    assert _bash_complete(["gaml", "models", ""]) == ["download", "ls", "where"]
    assert set(_bash_complete(["gaml", "dataset", "shapes", "--s"])) == {"--seed", "--size", "--spec"}
    assert _bash_complete(["gaml", "info", "--device", "c"]) == ["cpu", "cuda"]
    assert _bash_complete(["gaml", "dataset", "shapes", "--format", ""]) == ["human", "json"]
    assert _bash_complete(["gaml", "completion", "z"]) == ["zsh"]
    # the value of an option is not mistaken for a subcommand
    assert "--grid" in _bash_complete(["gaml", "dataset", "digits", "--out", "models", "--g"])


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
def test_zsh_script_parses_and_defines_function():
    proc = subprocess.run(["zsh", "-c", f"autoload -U compinit; compinit -u; source {COMPLETIONS / 'gaml.zsh'}; "
                           "whence -w _gaml; _gaml_subcommands dataset"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "_gaml: function" in proc.stdout and "digits shapes" in proc.stdout


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish_completes():
    def complete(line):
        proc = subprocess.run(["fish", "-c", f"source {COMPLETIONS / 'gaml.fish'}; complete -C '{line}'"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return [l.split("\t")[0] for l in proc.stdout.splitlines()]

    assert complete("gaml models ") == ["download", "ls", "where"]
    assert complete("gaml info --device ") == ["auto", "cpu", "cuda", "mps"]
    assert "--spec" in complete("gaml dataset shapes --sp")
