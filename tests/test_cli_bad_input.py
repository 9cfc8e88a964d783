"""Bad input through the CLI: exit code 2, exactly one stderr line, no output file left."""

from __future__ import annotations

import numpy as np
import pytest

from gaml_cli.core.artifacts import save_artifact


def _assert_clean_failure(res, out_path, needle):
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1, res.err
    assert "Traceback" not in res.err
    assert needle in res.err
    assert not out_path.exists()
    assert not [p for p in out_path.parent.iterdir() if ".gaml-tmp-" in p.name]


def test_non_safetensors_file(gaml, tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_text("these are my notes")
    out = tmp_path / "g.png"
    _assert_clean_failure(gaml("grid", bad, "--out", out), out, "not a safetensors file")


def test_safetensors_of_another_kind(gaml, tmp_path):
    other = save_artifact(tmp_path / "t.safetensors", {"w": np.zeros(3)}, kind="teacher")
    out = tmp_path / "g.png"
    _assert_clean_failure(gaml("grid", other, "--out", out), out, "is an artifact of kind 'teacher', but this needs 'images'")


def test_truncated_file(gaml, tmp_path, digits_artifact):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(digits_artifact.read_bytes()[:5000])
    out = tmp_path / "g.png"
    _assert_clean_failure(gaml("grid", cut, "--out", out), out, "truncated")


def test_missing_file(gaml, tmp_path):
    out = tmp_path / "g.png"
    _assert_clean_failure(gaml("grid", tmp_path / "nope.safetensors", "--out", out), out, "no such file")


def test_jsonl_broken_line_3(gaml, tmp_path):
    spec = tmp_path / "spec.jsonl"
    spec.write_text('{"shape": "circle"}\n{"color": "red"}\n{"shape": "square",\n{"shape": "diamond"}\n')
    out = tmp_path / "s.safetensors"
    res = gaml("dataset", "shapes", "--spec", spec, "--out", out)
    _assert_clean_failure(res, out, "spec.jsonl line 3: malformed JSON")
    assert not (tmp_path / "s.jsonl").exists()


def test_jsonl_invalid_record_names_line(gaml, tmp_path):
    out = tmp_path / "s.safetensors"
    res = gaml("dataset", "shapes", "--spec", "-", "--out", out,
               stdin='{"shape": "circle"}\n{"shape": "hexagon"}\n')
    _assert_clean_failure(res, out, "<stdin> line 2: shape 'hexagon' is not one of")


def test_missing_alias_offline(gaml, tmp_path):
    res = gaml("models", "download", "sd15")
    assert res.code == 2 and len(res.err_lines) == 1
    assert "'sd15'" in res.err and "network access is off" in res.err


@pytest.mark.parametrize("args,needle", [
    (["dataset", "digits"], "Missing option '--out'"),
    (["dataset", "digits", "--out", "x.txt"], "expected a file name ending in .safetensors"),
    (["dataset", "shapes", "--out", "x.safetensors", "--n", "0"], "--n"),
    (["dataset", "shapes", "--out", "x.safetensors", "--size", "64"], "--size"),
    (["grid", "x.safetensors", "--out", "x.jpg"], "ending in .png"),
    (["nosuchcommand"], "No such command"),
    (["info", "--device", "tpu"], "--device"),
])
def test_impossible_options(gaml, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    res = gaml(*args)
    assert res.code == 2
    assert len(res.err_lines) == 1, res.err
    assert needle in res.err
    assert list(tmp_path.iterdir()) == []


def test_unexpected_error_is_one_line_exit_1_and_debug_shows_traceback(gaml, monkeypatch, tmp_path):
    from gaml_cli.datasets import digits

    def broken(**kw):
        raise ZeroDivisionError("kaboom")

    monkeypatch.setattr(digits, "load", broken)
    res = gaml("dataset", "digits", "--out", tmp_path / "d.safetensors")
    assert res.code == 1 and len(res.err_lines) == 1
    assert "ZeroDivisionError: kaboom" in res.err and "GAML_DEBUG=1" in res.err
    monkeypatch.setenv("GAML_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        gaml("dataset", "digits", "--out", tmp_path / "d.safetensors")


@pytest.mark.parametrize("args", [
    ["dataset", "digits", "--out", "d.safetensors", "--grid", "d.jpg"],
    ["dataset", "shapes", "-n", "4", "--out", "s.safetensors", "--grid", "s.gif"],
    ["sample", "--model", "digits", "-n", "2", "--out", "x.safetensors", "--grid", "x.jpg"],
])
def test_bad_grid_path_fails_before_any_output(gaml, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    res = gaml(*args)
    assert res.code == 2 and len(res.err_lines) == 1 and "--grid" in res.err and ".png" in res.err
    assert list(tmp_path.iterdir()) == []
