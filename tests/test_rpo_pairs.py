"""Preference pairs for gaml align (methods/rpo/pairs.py): JSONL with image paths, Pick-a-Pic
parquet shards, the resize + centre crop, ties, swaps, and one-line refusals of bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gaml_cli.core.errors import InputError, UsageError
from gaml_cli.methods.rpo.pairs import PairSet, read_pairs, tensor_bytes

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _solid(color, w=16, h=16, mode="RGB") -> Image.Image:
    return Image.new(mode, (w, h), color)


def _save(img: Image.Image, path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def _bytes(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _as_color(x: torch.Tensor) -> tuple[float, ...]:
    """Mean colour of a (C, H, W) tensor in [-1, 1], back in 0..255."""
    return tuple(((x.mean(dim=(1, 2)) + 1) * 127.5).tolist())


def _close(x: torch.Tensor, color, tol=3.0) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(_as_color(x), color))


def _jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    """data/img/{red.png, blue.png, green.jpg, white.webp}; the JSONL goes in data/."""
    img = tmp_path / "data" / "img"
    _save(_solid(RED), img / "red.png")
    _save(_solid(BLUE, 20, 12), img / "blue.png")
    _save(_solid(GREEN, 12, 30), img / "green.jpg")
    _save(_solid(WHITE), img / "white.webp")
    return tmp_path / "data"


def _one_line_error(path, match, **kw):
    with pytest.raises(InputError) as exc:
        read_pairs(str(path), **{"size": 8, **kw})
    msg = exc.value.one_line()
    assert "\n" not in str(exc.value) and match in msg, msg
    return msg


# ---- JSONL ---------------------------------------------------------------------------------


def test_jsonl_pairs_relative_paths_labels_ties_and_swaps(images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # image paths are relative to the JSONL's folder, not the cwd
    src = _jsonl(images / "pairs.jsonl", [
        {"prompt": "red over blue", "chosen": "img/red.png", "rejected": "img/blue.png"},
        {"prompt": "green over red", "chosen": "img/red.png", "rejected": "img/green.jpg", "label": 0},
        {"prompt": "a tie", "chosen": "img/red.png", "rejected": "img/blue.png", "label": 0.5},
        "",
        {"prompt": "webp over jpeg", "chosen": "img/white.webp", "rejected": "img/green.jpg", "label": 1.0},
    ])
    ps = read_pairs(str(src), size=8)
    assert isinstance(ps, PairSet) and len(ps) == 3
    assert ps.prompts == ["red over blue", "green over red", "webp over jpeg"]
    assert ps.chosen.shape == ps.rejected.shape == (3, 3, 8, 8)
    assert ps.chosen.dtype == ps.rejected.dtype == torch.float32
    assert ps.chosen.min() >= -1 and ps.chosen.max() <= 1 and ps.rejected.min() >= -1
    assert ps.chosen.min() == -1 and ps.chosen.max() == 1  # pure red: 0 -> -1, 255 -> 1
    assert _close(ps.chosen[0], RED) and _close(ps.rejected[0], BLUE)
    assert _close(ps.chosen[1], GREEN) and _close(ps.rejected[1], RED)  # label 0: swapped
    assert _close(ps.chosen[2], WHITE) and _close(ps.rejected[2], GREEN)
    assert (ps.ties_dropped, ps.swapped, ps.unlabeled_dropped, ps.same_dropped) == (1, 1, 0, 0)
    assert ps.source_lines == [1, 2, 5]
    assert ps.where(2) == f"{src} line 5"
    assert ps.counts() == {"pairs": 3, "ties_dropped": 1, "unlabeled_dropped": 0, "same_dropped": 0, "swapped": 1}


def test_resize_short_side_then_centre_crop(tmp_path):
    """A 60 x 20 image in three vertical thirds red | green | blue: the short side goes to 10
    (30 x 10), the centre 10 x 10 crop is the green third. A tall one likewise."""
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :20] = RED
    wide[:, 20:40] = GREEN
    wide[:, 40:] = BLUE
    _save(Image.fromarray(wide), tmp_path / "wide.png")
    _save(Image.fromarray(np.ascontiguousarray(wide.transpose(1, 0, 2))), tmp_path / "tall.png")
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "chosen": "wide.png", "rejected": "tall.png"}])
    ps = read_pairs(src, size=10)
    assert ps.chosen.shape == (1, 3, 10, 10)
    for x in (ps.chosen[0], ps.rejected[0]):
        inner = x[:, 2:8, 2:8]  # away from the bicubic seams at the crop's edges
        assert _close(inner, GREEN, tol=2)


def test_upscales_small_images_and_keeps_exact_size(tmp_path):
    _save(_solid(RED, 4, 6), tmp_path / "small.png")
    _save(_solid(BLUE, 32, 32), tmp_path / "exact.png")
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "chosen": "small.png", "rejected": "exact.png"}])
    ps = read_pairs(src, size=32)
    assert ps.chosen.shape == (1, 3, 32, 32)
    assert _close(ps.chosen[0], RED) and torch.equal(ps.rejected[0][2], torch.ones(32, 32))


def test_modes_grey_alpha_palette_and_sixteen_bit(tmp_path):
    _save(_solid((200, 100, 50, 0), mode="RGBA"), tmp_path / "clear.png")  # transparent: white
    _save(_solid(128, mode="L"), tmp_path / "grey.png")
    pal = _solid(RED).convert("P")
    _save(pal, tmp_path / "pal.png")
    _save(Image.fromarray(np.full((16, 16), 65535, np.uint16)), tmp_path / "deep.png")
    src = _jsonl(tmp_path / "p.jsonl", [
        {"prompt": "a", "chosen": "clear.png", "rejected": "grey.png"},
        {"prompt": "b", "chosen": "pal.png", "rejected": "deep.png"},
    ])
    rgb = read_pairs(src, size=8, channels=3)
    assert _close(rgb.chosen[0], WHITE) and _close(rgb.rejected[0], (128, 128, 128), tol=1)
    assert _close(rgb.chosen[1], RED) and _close(rgb.rejected[1], WHITE)  # 16-bit full scale
    grey = read_pairs(src, size=8, channels=1)
    assert grey.chosen.shape == (2, 1, 8, 8)
    assert _close(grey.chosen[0], (255,)) and _close(grey.rejected[0], (128,), tol=1)
    assert _close(grey.rejected[1], (255,))


def test_exif_orientation_is_applied(tmp_path):
    """Stored 30 wide x 10 high, top half red, bottom half blue, EXIF orientation 6 (shown turned
    90 degrees clockwise: 10 wide x 30 high, the stored top on the right). Shown, the centre crop
    is blue on the left and red on the right; unrotated it would be red above blue."""
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:5] = RED
    arr[5:] = BLUE
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100, subsampling=0)
    _save(_solid(GREEN, 10, 30), tmp_path / "g.png")
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "chosen": "rot.jpg", "rejected": "g.png"}])
    x = read_pairs(src, size=10).chosen[0]
    assert _close(x[:, :, :3], BLUE, tol=8) and _close(x[:, :, 7:], RED, tol=8)


def test_limit_stops_reading(images):
    src = _jsonl(images / "pairs.jsonl", [
        {"prompt": "a", "chosen": "img/red.png", "rejected": "img/blue.png", "label": 0.5},
        {"prompt": "b", "chosen": "img/red.png", "rejected": "img/blue.png"},
        {"prompt": "c", "chosen": "img/green.jpg", "rejected": "img/blue.png"},
        "{not json",  # never read
    ])
    ps = read_pairs(src, size=4, limit=2)
    assert ps.prompts == ["b", "c"] and ps.ties_dropped == 1


def test_stdin_paths_relative_to_cwd(images, monkeypatch):
    monkeypatch.chdir(images)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(
        {"prompt": "p", "chosen": "img/red.png", "rejected": "img/blue.png"}) + "\n"))
    ps = read_pairs("-", size=4)
    assert len(ps) == 1 and ps.where(0) == "<stdin> line 1"


def test_subset_and_len(images):
    src = _jsonl(images / "pairs.jsonl", [
        {"prompt": str(i), "chosen": "img/red.png", "rejected": "img/blue.png"} for i in range(4)])
    ps = read_pairs(src, size=4)
    sub = ps.subset([3, 1])
    assert len(sub) == 2 and sub.prompts == ["3", "1"] and sub.source_lines == [4, 2]
    assert torch.equal(sub.chosen, ps.chosen[[3, 1]]) and torch.equal(sub.rejected, ps.rejected[[3, 1]])
    assert ps.subset(torch.tensor([0])).prompts == ["0"] and ps.subset(slice(1, 3)).prompts == ["1", "2"]
    assert sub.where(0) == f"{src} line 4"
    with pytest.raises(IndexError):
        ps.subset([4])
    assert tensor_bytes(1000, 512, 3) == 2 * 1000 * 3 * 512 * 512 * 4


# ---- bad JSONL: one line naming the file and line ----------------------------------------------

GOOD = {"prompt": "ok", "chosen": "img/red.png", "rejected": "img/blue.png"}


@pytest.mark.parametrize("line,expected", [
    ('{"prompt": "x", "chosen": ', "malformed JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ({"chosen": "img/red.png", "rejected": "img/blue.png"}, 'no "prompt"'),
    ({**GOOD, "prompt": ""}, '"prompt" is empty'),
    ({**GOOD, "prompt": " \t "}, '"prompt" is empty'),
    ({**GOOD, "prompt": 3}, '"prompt" must be text'),
    ({"prompt": "x", "chosen": "img/red.png"}, 'no "rejected"'),
    ({**GOOD, "chosen": 7}, '"chosen" must be an image path'),
    ({**GOOD, "label": 2}, '"label" must be 1'),
    ({**GOOD, "label": 0.7}, '"label" must be 1'),
    ({**GOOD, "label": "1"}, '"label" must be 1'),
    ({**GOOD, "label": True}, '"label" must be 1'),
    ({**GOOD, "label": None}, '"label" must be 1'),
    ({**GOOD, "rejected": "img/red.png"}, "chosen and rejected are the same file"),
    ({**GOOD, "rejected": "./img/../img/red.png"}, "chosen and rejected are the same file"),
])
def test_bad_lines_are_named(images, line, expected):
    src = _jsonl(images / "pairs.jsonl", [GOOD, line, GOOD])
    msg = _one_line_error(src, expected)
    assert msg.startswith(f"{src} line 2: "), msg


def test_same_file_through_a_link(images):
    (images / "img" / "alias.png").symlink_to(images / "img" / "red.png")
    src = _jsonl(images / "pairs.jsonl", [{**GOOD, "rejected": "img/alias.png"}])
    _one_line_error(src, f"{src} line 1: chosen and rejected are the same file")


def test_bad_images_are_named_with_line_and_path(images):
    img = images / "img"
    (img / "notes.png").write_text("not an image at all")
    full = _bytes(_solid(RED, 64, 64), "PNG")
    (img / "cut.png").write_bytes(full[: len(full) // 2])
    jpg = _bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    (img / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    (img / "sub").mkdir()
    (img / "empty.png").write_bytes(b"")
    cases = [("img/missing.png", "not found"), ("img/notes.png", "not a readable image"),
             ("img/cut.png", "not a readable image"), ("img/cut.jpg", "not a readable image"),
             ("img/sub", "is a folder"), ("img/empty.png", "not a readable image")]
    for rel, why in cases:
        for key in ("chosen", "rejected"):
            src = _jsonl(images / "pairs.jsonl", [GOOD, GOOD, {**GOOD, key: rel}])
            msg = _one_line_error(src, why)
            assert msg.startswith(f"{src} line 3: image {images / rel}"), msg


def test_labels_swapped_image_still_named(images):
    src = _jsonl(images / "pairs.jsonl", [{**GOOD, "rejected": "img/gone.png", "label": 0}])
    _one_line_error(src, f"{src} line 1: image {images / 'img/gone.png'} not found")


def test_all_ties_and_empty_inputs_are_refused(images):
    src = _jsonl(images / "pairs.jsonl", [{**GOOD, "label": 0.5}, {**GOOD, "label": 0.5}])
    _one_line_error(src, f"{src}: no preference pairs to train on (dropped: 2 ties)")
    empty = _jsonl(images / "empty.jsonl", ["", "  "])
    _one_line_error(empty, f"{empty}: no preference pairs to train on")


def test_missing_paths_and_usage(tmp_path, images):
    _one_line_error(tmp_path / "nope.jsonl", "no such file")
    (tmp_path / "shards").mkdir()
    _one_line_error(tmp_path / "shards", "no *.parquet files")
    (images / "bad.jsonl").write_bytes(b'{"prompt": "\xff"}\n')
    _one_line_error(images / "bad.jsonl", "line 1: not UTF-8")
    src = _jsonl(images / "pairs.jsonl", [GOOD])
    for kw in ({"size": 0}, {"size": 8, "channels": 2}, {"size": 8, "limit": 0}):
        with pytest.raises(UsageError):
            read_pairs(src, **kw)


# ---- Pick-a-Pic parquet ----------------------------------------------------------------------


def _pickapic(path: Path, rows: list[dict], struct_images: bool = False, drop: tuple = ()) -> Path:
    cols: dict[str, list] = {k: [r.get(k) for r in rows] for k in
                             ("caption", "jpg_0", "jpg_1", "label_0", "has_label", "are_different")}
    cols["label_1"] = [None if r.get("label_0") is None else 1 - r["label_0"] for r in rows]
    if struct_images:
        for k in ("jpg_0", "jpg_1"):
            cols[k] = [{"bytes": b, "path": None} for b in cols[k]]
    table = pa.table({k: v for k, v in cols.items() if k not in drop})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


R, B, G = (_bytes(_solid(c, 24, 16)) for c in (RED, BLUE, GREEN))


def _row(caption="a cat", j0=R, j1=B, label=1.0, has_label=True, are_different=True):
    return {"caption": caption, "jpg_0": j0, "jpg_1": j1, "label_0": label,
            "has_label": has_label, "are_different": are_different}


@pytest.mark.parametrize("struct_images", [False, True])
def test_pickapic_shard(tmp_path, struct_images):
    src = _pickapic(tmp_path / "train-0.parquet", [
        _row("image 0 wins", R, B, 1.0),
        _row("image 1 wins", R, G, 0.0),
        _row("tie", R, B, 0.5),
        _row("unlabeled", R, B, 1.0, has_label=False),
        _row("same images", R, B, 1.0, are_different=False),
        _row("null label", R, B, None),
        _row("identical bytes", G, G, 1.0),
        _row("", R, B, 0.5),  # an empty caption on a dropped row is not inspected
    ], struct_images=struct_images)
    ps = read_pairs(src, size=8)
    assert ps.prompts == ["image 0 wins", "image 1 wins"] and ps.source_lines == [1, 2]
    assert _close(ps.chosen[0], RED, tol=4) and _close(ps.rejected[0], BLUE, tol=4)
    assert _close(ps.chosen[1], GREEN, tol=4) and _close(ps.rejected[1], RED, tol=4)
    assert ps.chosen.shape == (2, 3, 8, 8) and ps.chosen.min() >= -1 and ps.chosen.max() <= 1
    assert (ps.ties_dropped, ps.unlabeled_dropped, ps.same_dropped, ps.swapped) == (2, 2, 2, 0)
    assert ps.where(1) == f"{src} row 2"


def test_pickapic_folder_of_shards_in_name_order_with_limit(tmp_path):
    _pickapic(tmp_path / "shards" / "b.parquet", [_row("b1"), _row("b2")])
    _pickapic(tmp_path / "shards" / "a.parquet", [_row("a1", label=0.5), _row("a2")],
              drop=("has_label", "are_different"))
    (tmp_path / "shards" / "notes.txt").write_text("ignored")
    ps = read_pairs(tmp_path / "shards", size=4)
    assert ps.prompts == ["a2", "b1", "b2"] and ps.ties_dropped == 1
    assert read_pairs(tmp_path / "shards", size=4, limit=2).prompts == ["a2", "b1"]


def test_parquet_found_by_its_magic_bytes(tmp_path):
    src = _pickapic(tmp_path / "shard.bin", [_row()])
    assert read_pairs(src, size=4).prompts == ["a cat"]


def test_pickapic_missing_columns_listed(tmp_path):
    src = _pickapic(tmp_path / "s.parquet", [_row()], drop=("jpg_1", "label_0"))
    _one_line_error(src, f"{src}: missing the Pick-a-Pic columns jpg_1, label_0")


@pytest.mark.parametrize("row,expected", [
    (_row(label=0.3), "row 2: label_0 must be 1"),
    (_row(caption="  "), "row 2: caption is empty"),
    (_row(caption=None), "row 2: caption is empty"),
    (_row(j1=b"not a jpeg"), "row 2: jpg_1: not a readable image"),
    (_row(j0=R[: len(R) // 2], label=0.0), "row 2: jpg_0: not a readable image"),
    (_row(j0=None), "row 2: jpg_0 holds no image bytes"),
])
def test_pickapic_bad_rows_are_named(tmp_path, row, expected):
    src = _pickapic(tmp_path / "s.parquet", [_row(), row, _row()])
    msg = _one_line_error(src, expected)
    assert msg.startswith(f"{src} row 2: "), msg


def test_not_a_parquet_file_and_all_dropped(tmp_path):
    (tmp_path / "x.parquet").write_text("hello")
    _one_line_error(tmp_path / "x.parquet", "not a readable parquet file")
    src = _pickapic(tmp_path / "s.parquet", [_row(label=0.5), _row(has_label=False)])
    _one_line_error(src, "no preference pairs to train on (dropped: 1 ties, 1 unlabeled)")


def test_truncated_parquet_is_one_line(tmp_path):
    full = _pickapic(tmp_path / "full.parquet", [_row(), _row()]).read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(full[: len(full) // 2])
    _one_line_error(cut, f"{cut}: not a readable parquet file")


def test_jsonl_with_a_byte_order_mark(images):
    src = images / "bom.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n").encode())
    assert read_pairs(src, size=4).prompts == ["ok"]
