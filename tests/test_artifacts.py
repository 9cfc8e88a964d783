"""The artifact layer: self-describing safetensors, JSONL streams, atomic writes."""

from __future__ import annotations

import io
import json
import os
import struct
import sys

import numpy as np
import pytest

from gaml_cli.core import artifacts as A
from gaml_cli.core.errors import InputError


def test_roundtrip_numpy_metadata_and_provenance(tmp_path):
    parent = tmp_path / "parent.jsonl"
    parent.write_text('{"a": 1}\n')
    token = A.current_command.set(["gaml", "test", "--x", "a b"])
    try:
        p = A.save_artifact(tmp_path / "x.safetensors", {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
                            kind="thing", config={"layers": [2, 3]}, seed=7, parents=[parent])
    finally:
        A.current_command.reset(token)
    info = A.read_header(p)
    assert info.kind == "thing" and info.version
    assert info.config == {"layers": [2, 3]}
    assert info.tensors == {"w": {"dtype": "F32", "shape": [2, 3]}}
    prov = info.provenance
    assert prov["seed"] == 7
    assert prov["argv"] == ["gaml", "test", "--x", "a b"]
    assert prov["command"] == "gaml test --x 'a b'"
    assert prov["parents"][0]["sha256"] == A.file_sha256(parent)
    art = A.load_artifact(p, "thing")
    np.testing.assert_array_equal(art["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_roundtrip_torch(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.randn(3, 4)
    p = A.save_artifact(tmp_path / "t.safetensors", {"t": t}, kind="thing")
    back = A.load_artifact(p, "thing", framework="pt")["t"]
    assert torch.equal(back, t)


def test_wrong_kind_and_plain_safetensors(tmp_path):
    from safetensors.numpy import save_file

    p = A.save_artifact(tmp_path / "a.safetensors", {"x": np.zeros(2)}, kind="teacher")
    with pytest.raises(InputError, match="is an artifact of kind 'teacher', but this needs 'images'"):
        A.load_artifact(p, "images")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": np.zeros(2)}, str(plain))
    with pytest.raises(InputError, match="not a gaml artifact"):
        A.load_artifact(plain, "images")


@pytest.mark.parametrize("content,needle", [
    (b"", "not a safetensors file"),
    (b"hello world, not a model", "not a safetensors file"),
    (struct.pack("<Q", 10) + b"{not json}", "unreadable header"),
])
def test_garbage_is_rejected(tmp_path, content, needle):
    p = tmp_path / "g.safetensors"
    p.write_bytes(content)
    with pytest.raises(InputError, match=needle):
        A.read_header(p)


def test_truncated_file_is_detected(tmp_path):
    p = A.save_artifact(tmp_path / "a.safetensors", {"x": np.ones(1000, dtype=np.float32)}, kind="k")
    data = p.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-100])
    with pytest.raises(InputError, match="truncated"):
        A.load_artifact(cut, "k")


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with A.atomic_write(target) as fh:
            fh.write(b"new partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # temp file removed


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with A.atomic_write(target, "w") as fh:
        fh.write("hi")
    assert target.read_text() == "hi"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # no temp file left


def test_jsonl_roundtrip_and_line_numbers(tmp_path):
    p = tmp_path / "r.jsonl"
    assert A.write_jsonl(p, [{"i": i, "s": "é"} for i in range(3)]) == 3
    assert [r["i"] for r in A.read_jsonl(p)] == [0, 1, 2]
    p.write_text('{"i": 0}\n\n{"i": 1}\n{"i": 2,,}\n')
    it = A.read_jsonl(p)
    assert next(it) == {"i": 0} and next(it) == {"i": 1}  # streamed: good lines come first
    with pytest.raises(InputError, match=r"r.jsonl line 4: malformed JSON"):
        next(it)
    p.write_text('{"i": 0}\n[1, 2]\n')
    with pytest.raises(InputError, match="line 2: expected a JSON object, got list"):
        list(A.read_jsonl(p))


def test_jsonl_validation_names_the_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"n": 1}\n{"n": 2}\n{"n": -3}\n')

    def positive(rec):
        if rec["n"] <= 0:
            raise ValueError("n must be positive")

    with pytest.raises(InputError, match="line 3: n must be positive"):
        list(A.read_jsonl(p, validate=positive))


def test_jsonl_stdin_and_stdout(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"a": 1}\n{"a": 2}\n'))
    assert [r["a"] for r in A.read_jsonl("-")] == [1, 2]
    A.write_jsonl("-", [{"b": 1}])
    assert json.loads(capsys.readouterr().out) == {"b": 1}
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"a": 1}\nnope\n'))
    with pytest.raises(InputError, match="<stdin> line 2"):
        list(A.read_jsonl("-"))
