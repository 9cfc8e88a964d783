"""Help, version, lazy imports and start-up time; stdout is data, stderr is for people."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_process


def _all_command_paths():
    from gaml_cli.app import click_app
    from gaml_cli.core.completion import walk

    return [n.path for n in walk(click_app())]


def test_help_lists_every_group(gaml):
    res = gaml("--help")
    assert res.code == 0
    for name in ("dataset", "models", "run", "inspect", "grid", "info", "completion"):
        assert name in res.out


def test_version(gaml):
    from gaml_cli import __version__

    res = gaml("--version")
    assert res.code == 0 and res.out.strip() == f"gaml {__version__}"


@pytest.mark.parametrize("path", _all_command_paths())
def test_every_leaf_command_help_shows_an_example(gaml, path):
    from gaml_cli.app import click_app
    from gaml_cli.core.completion import walk

    node = next(n for n in walk(click_app()) if n.path == path)
    res = gaml(*path.split(), "--help")
    assert res.code == 0
    if not node.subcommands and path:  # a leaf command
        assert "Example:" in res.out
        assert "gaml " + path in res.out  # the example runs this very command


def test_help_and_completion_do_not_import_torch():
    code = (
        "import sys\n"
        "from gaml_cli.__main__ import main\n"
        "for args in (['--help'], ['dataset', '--help'], ['models', '--help'], ['run', '--help'],"
        " ['dataset', 'shapes', '--help'], ['completion', 'bash'], ['completion', 'zsh'], ['completion', 'fish']):\n"
        "    assert main(args) == 0, args\n"
        "bad = [m for m in ('torch', 'numpy', 'safetensors', 'sklearn', 'huggingface_hub') if m in sys.modules]\n"
        "sys.stderr.write(repr(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("[]"), proc.stderr[-300:]


def test_importtime_shows_no_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gaml_cli", "--help"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}


def test_help_is_fast():
    best = min(_timed() for _ in range(3))
    assert best < 0.5, f"gaml --help took {best:.2f}s"


def _timed() -> float:
    t = time.perf_counter()
    proc = run_process("--help")
    assert proc.returncode == 0
    return time.perf_counter() - t


def test_json_summary_is_the_only_stdout(gaml, tmp_path):
    res = gaml("dataset", "shapes", "-n", "20", "--out", tmp_path / "s.safetensors", "--format", "json")
    assert res.code == 0
    data = json.loads(res.out)  # exactly one JSON document
    assert data["images"] == 20 and data["kind"] == "images"
    assert "shapes" in res.err  # progress went to stderr


def test_quiet_silences_stderr(gaml, tmp_path):
    res = gaml("dataset", "shapes", "-n", "20", "--out", tmp_path / "s.safetensors", "--quiet")
    assert res.code == 0 and res.err == "" and res.out == ""
    res = gaml("--quiet", "dataset", "digits", "--out", tmp_path / "d.safetensors")
    assert res.code == 0 and res.err == "" and res.out == ""


def test_info_reports_runtime(gaml):
    pytest.importorskip("torch")
    res = gaml("info", "--format", "json", "--device", "cpu")
    data = json.loads(res.out)
    assert data["device"] == "cpu" and data["offline"] is True
    assert data["hf_cache"].endswith("hub")


def test_console_script_entry_point():
    """The installed `gaml` script and `python -m gaml_cli` are the same program."""
    import shutil

    exe = shutil.which("gaml")
    if exe is None:
        pytest.skip("gaml is not installed as a console script here")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("gaml ")
