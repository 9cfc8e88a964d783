"""The shipped teachers meet the bar of their model cards through the CLI, end to end."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")


def test_digits_teacher_at_35_nfe(gaml, tmp_path):
    s = tmp_path / "s.safetensors"
    res = gaml("sample", "--model", "digits", "-n", "300", "--steps", "18", "--device", "cpu", "--out", s, "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["nfe"] == 35
    out = json.loads(gaml("eval", "fd", "--images", s, "--ref", "digits", "-f", "json").out)
    assert out["accuracy"] >= 0.95
    assert out["fd"] <= 1.5 * out["floor"]


def test_digits_teacher_one_class_and_guidance(gaml, tmp_path):
    s = tmp_path / "s.safetensors"
    assert gaml("sample", "--model", "digits", "-n", "40", "--class", "7", "--steps", "10", "--guidance", "2",
                "--device", "cpu", "--out", s, "-q").code == 0
    out = json.loads(gaml("eval", "fd", "--images", s, "--ref", "digits", "-f", "json").out)
    assert out["accuracy"] >= 0.95  # asked for sevens, got sevens
