"""gaml dataset digits / shapes: contents, determinism, captions that match the pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gaml_cli.core.artifacts import load_artifact, read_jsonl
from gaml_cli.datasets import shapes as S


def test_digits_artifact(gaml, tmp_path):
    from sklearn.datasets import load_digits

    out = tmp_path / "d.safetensors"
    res = gaml("dataset", "digits", "--out", out, "--grid", tmp_path / "d.png", "-f", "json")
    assert res.code == 0
    summary = json.loads(res.out)
    assert summary["images"] == 1797 and summary["train"] + summary["test"] == 1797
    art = load_artifact(out, "images")
    x, y, split = art["images"], art["labels"], art["split"]
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    raw = load_digits()
    np.testing.assert_array_equal(y, raw.target)
    np.testing.assert_allclose((x[:, 0] + 1) * 8, raw.images)  # the documented pixel map
    for c in range(10):  # stratified 80/20
        frac = split[y == c].mean()
        assert abs(frac - 0.2) < 0.01
    assert art.config["classes"] == [str(i) for i in range(10)]
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digits_split_depends_on_seed(gaml, tmp_path):
    assert gaml("dataset", "digits", "--out", tmp_path / "a.safetensors", "--seed", "1", "-q").code == 0
    assert gaml("dataset", "digits", "--out", tmp_path / "b.safetensors", "--seed", "2", "-q").code == 0
    a = load_artifact(tmp_path / "a.safetensors", "images")["split"]
    b = load_artifact(tmp_path / "b.safetensors", "images")["split"]
    assert (a != b).any() and a.sum() == b.sum()


def test_shapes_deterministic_and_prefix_stable(gaml, tmp_path):
    for name, n, seed in (("a", 40, 3), ("b", 40, 3), ("c", 25, 3), ("d", 40, 4)):
        assert gaml("dataset", "shapes", "-n", n, "--seed", seed, "--out", tmp_path / f"{name}.safetensors", "-q").code == 0
    a, b, c, d = (load_artifact(tmp_path / f"{k}.safetensors", "images") for k in "abcd")
    assert np.array_equal(a["images"], b["images"])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert np.array_equal(a["images"][:25], c["images"])  # image i does not depend on n
    assert not np.array_equal(a["images"], d["images"])


def _color(name):
    return np.array(S.COLORS[name], np.float32) / 127.5 - 1


def test_shapes_captions_match_pixels(tmp_path):
    tensors, records = S.generate(200, seed=0)
    x = tensors["images"]
    assert x.shape == (200, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    tol = 2 * S.JITTER / 127.5
    for img, rec, attrs in zip(x, records, tensors["attrs"]):
        assert rec["caption"] == f"a {rec['color']} {rec['shape']} on a {rec['background']} background"
        assert S.SHAPES[attrs[0]] == rec["shape"] and S.COLOR_NAMES[attrs[1]] == rec["color"]
        assert rec["color"] != rec["background"]
        cx, cy = int(rec["x"] * 32), int(rec["y"] * 32)
        assert np.abs(img[:, cy, cx] - _color(rec["color"])).max() <= tol  # centre is the shape
        assert np.abs(img[:, 0, 0] - _color(rec["background"])).max() <= tol  # corner is background
    # every attribute value occurs
    assert set(tensors["attrs"][:, 0]) == set(range(len(S.SHAPES)))
    assert set(tensors["attrs"][:, 1]) == set(range(len(S.COLOR_NAMES)))


def test_shapes_geometry_differs_by_shape():
    """Same position and size: the covered area orders square > circle > diamond > triangle."""
    areas = {}
    for shape in S.SHAPES:
        img, _ = S.draw_one(0, 0, 32, spec={"shape": shape, "color": "white", "background": "black",
                                            "radius": 0.3, "x": 0.5, "y": 0.5})
        areas[shape] = float(((img[0] + 1) / 2 > 0.5).mean())
    # analytic areas with r = 0.3: square (1.72r)^2=.266, circle pi r^2=.283, diamond 2(1.15r)^2=.238,
    # triangle (3*sqrt(3)/4)(1.2r)^2=.168
    assert abs(areas["circle"] - np.pi * 0.09) < 0.02
    assert abs(areas["square"] - (2 * 0.86 * 0.3) ** 2) < 0.02
    assert abs(areas["diamond"] - 2 * (1.15 * 0.3) ** 2) < 0.02
    assert abs(areas["triangle"] - 3 * np.sqrt(3) / 4 * (1.2 * 0.3) ** 2) < 0.02


def test_shapes_spec_and_captions_on_stdout(gaml, tmp_path):
    spec = '{"shape": "circle", "color": "red", "background": "blue"}\n{"shape": "triangle", "radius": 0.25}\n'
    out = tmp_path / "s.safetensors"
    res = gaml("dataset", "shapes", "--spec", "-", "--captions", "-", "--out", out, "-f", "json", stdin=spec)
    assert res.code == 0
    lines = res.out.splitlines()  # stdout carries only the captions stream
    recs = [json.loads(l) for l in lines]
    assert len(recs) == 2 and recs[0]["caption"] == "a red circle on a blue background"
    assert recs[1]["shape"] == "triangle" and recs[1]["radius"] == 0.25
    assert json.loads(res.err_lines[-1])["images"] == 2  # the JSON summary went to stderr
    art = load_artifact(out, "images")
    assert art["images"].shape == (2, 3, 32, 32)


def test_shapes_jsonl_file_next_to_images(gaml, tmp_path):
    out = tmp_path / "s.safetensors"
    assert gaml("dataset", "shapes", "-n", "30", "--size", "16", "--out", out, "-q").code == 0
    recs = list(read_jsonl(tmp_path / "s.jsonl"))
    art = load_artifact(out, "images")
    assert len(recs) == 30 and art["images"].shape == (30, 3, 16, 16)
    assert [r["split"] == "test" for r in recs] == list(art["split"] == 1)
    assert art.config["captions_file"] == "s.jsonl"
    from gaml_cli.core.artifacts import file_sha256

    assert art.config["captions_sha256"] == file_sha256(tmp_path / "s.jsonl")


def test_grid_of_digits(gaml, tmp_path, digits_artifact):
    from PIL import Image

    out = tmp_path / "g.png"
    res = gaml("grid", digits_artifact, "--label", "3", "--n", "16", "--nrow", "4", "--scale", "2", "--out", out, "-f", "json")
    assert res.code == 0 and json.loads(res.out)["images"] == 16
    im = Image.open(out)
    assert im.size == (2 * (4 * 9 + 1), 2 * (4 * 9 + 1))
