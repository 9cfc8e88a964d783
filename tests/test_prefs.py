"""Preference data and oracles: the oracles against hand values on drawn images and against the
shapes generator's own records, `gaml dataset prefs` on the shipped shapes teacher, and
`gaml eval reward`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gaml_cli.datasets import oracles

BG = (0.2, 0.4, 0.8)  # colours in [0, 1]
FG = (0.9, 0.1, 0.1)


def canvas(size: int = 32, bg=BG) -> np.ndarray:
    """(3, size, size) in [0, 1] filled with bg."""
    return np.broadcast_to(np.asarray(bg, np.float64)[:, None, None], (3, size, size)).copy()


def paint(img: np.ndarray, rows: slice, cols: slice, colour=FG, cover: float = 1.0) -> np.ndarray:
    """Blend `colour` over img[:, rows, cols] with coverage `cover` (an anti-aliased edge)."""
    c = np.asarray(colour, np.float64)[:, None, None]
    img[:, rows, cols] = cover * c + (1 - cover) * img[:, rows, cols]
    return img


def batch(*imgs: np.ndarray) -> np.ndarray:
    """[0, 1] images -> (N, C, H, W) float32 in [-1, 1], as artifacts hold them."""
    return (np.stack(imgs) * 2 - 1).astype(np.float32)


# ----------------------------------------------------------------------------- oracles by hand


def test_oracle_names_match_the_cli_choices():
    from gaml_cli.commands._common import Oracle

    assert [o.value for o in Oracle] == list(oracles.ORACLES)
    assert {"size", "left", "centered"} <= set(oracles.ORACLES)


def test_oracles_on_a_drawn_square():
    # an 8 x 8 square in rows 4..11, cols 2..9 of a 32 x 32 image: area 64 / 1024 = 0.0625;
    # centroid at pixel (row 7.5, col 5.5) -> x = 6 / 32 = 0.1875, y = 8 / 32 = 0.25
    x = batch(paint(canvas(), slice(4, 12), slice(2, 10)))
    assert oracles.score("size", x) == pytest.approx([0.0625])
    assert oracles.score("small", x) == pytest.approx([0.9375])
    assert oracles.score("left", x) == pytest.approx([1 - 0.1875])
    assert oracles.score("centered", x) == pytest.approx([-np.sqrt(0.3125 ** 2 + 0.25 ** 2)])


def test_oracles_order_two_squares_and_a_blank():
    big_left = paint(canvas(), slice(10, 22), slice(1, 13))  # 12 x 12, centroid x = 7 / 32
    small_mid = paint(canvas(), slice(14, 18), slice(14, 18))  # 4 x 4 at the centre
    blank = canvas()
    x = batch(big_left, small_mid, blank)
    assert oracles.score("size", x) == pytest.approx([144 / 1024, 16 / 1024, 0.0])
    assert oracles.score("small", x) == pytest.approx([1 - 144 / 1024, 1 - 16 / 1024, 1.0])
    assert oracles.score("left", x) == pytest.approx([1 - 7 / 32, 0.5, 0.0])
    assert oracles.score("centered", x) == pytest.approx([-(0.5 - 7 / 32), 0.0, -np.sqrt(0.5)])


def test_the_shape_is_the_largest_component_and_edges_count_from_half_coverage():
    img = paint(canvas(), slice(8, 16), slice(8, 16))  # 64 pixels
    paint(img, slice(30, 31), slice(30, 31))  # a stray speck: not the shape
    paint(img, slice(8, 16), slice(16, 17), cover=0.6)  # an anti-aliased edge at 60%: counted
    paint(img, slice(8, 16), slice(7, 8), cover=0.4)  # one at 40%: background
    m = oracles.measure(batch(img))
    assert m["area"][0] * 1024 == pytest.approx(72)
    # centroid of cols 8..16 (9 columns) = 12 -> (12 + 0.5) / 32; rows 8..15 -> (11.5 + 0.5) / 32
    assert m["x"][0] == pytest.approx(12.5 / 32)
    assert m["y"][0] == pytest.approx(12 / 32)


def test_background_is_the_border_median_whatever_its_colour():
    # the same square on another background and in another colour: the same scores
    a = batch(paint(canvas(bg=(1.0, 1.0, 1.0)), slice(3, 9), slice(20, 30), colour=(0.9, 0.85, 0.2)))
    b = batch(paint(canvas(bg=(0.1, 0.1, 0.1)), slice(3, 9), slice(20, 30), colour=(0.2, 0.7, 0.3)))
    for name in oracles.ORACLES:
        assert oracles.score(name, a) == pytest.approx(oracles.score(name, b))
    assert oracles.score("size", a) == pytest.approx([60 / 1024])


def test_oracles_on_grey_images_and_bad_input():
    grey = np.full((1, 1, 8, 8), -1.0, np.float32)
    grey[0, 0, 2:4, 2:4] = 1.0
    assert oracles.score("size", grey) == pytest.approx([4 / 64])
    assert oracles.score("left", grey) == pytest.approx([1 - 3 / 8])
    with pytest.raises(ValueError, match="unknown oracle"):
        oracles.score("bigness", grey)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        oracles.score("size", grey[0])


SHAPE_AREA = {  # area / radius^2 of the generator's shapes (an independent check of the oracle)
    "circle": np.pi,
    "square": (2 * 0.86) ** 2,
    "diamond": 2 * 1.15 ** 2,
    "triangle": 3 * np.sqrt(3) / 4 * 1.2 ** 2,
}


@pytest.mark.parametrize("size", [16, 32])
def test_oracles_follow_the_shapes_generators_records(gaml, tmp_path, size):
    """On `gaml dataset shapes` images the oracles track the radius and position the generator
    recorded (which the oracles never read)."""
    from gaml_cli.core.artifacts import load_artifact

    out = tmp_path / "s.safetensors"
    assert gaml("dataset", "shapes", "-n", "400", "--size", str(size), "--seed", "3", "--out", out, "-q").code == 0
    x = load_artifact(out, "images")["images"]
    recs = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    r = np.array([rec["radius"] for rec in recs])
    cx, cy = np.array([rec["x"] for rec in recs]), np.array([rec["y"] for rec in recs])
    kind = np.array([rec["shape"] for rec in recs])
    m = oracles.measure(x)
    assert m["found"].all()
    size_score = oracles.score("size", x)
    for shape in SHAPE_AREA:
        sel = kind == shape
        assert np.corrcoef(size_score[sel], r[sel])[0, 1] > 0.9, shape
    area = np.array([SHAPE_AREA[k] for k in kind]) * r ** 2
    assert np.corrcoef(size_score, area)[0, 1] > 0.95
    assert np.abs(size_score / area - 1).mean() < 0.1  # the area itself, not only its order
    assert np.corrcoef(oracles.score("small", x), area)[0, 1] < -0.95
    assert np.corrcoef(oracles.score("left", x), -cx)[0, 1] > 0.99
    assert np.abs(m["x"] - cx).max() < 1.5 / size and np.abs(m["y"] - cy).max() < 1.5 / size
    assert np.corrcoef(oracles.score("centered", x), -np.hypot(cx - 0.5, cy - 0.5))[0, 1] > 0.95


# ----------------------------------------------------------------------------- gaml dataset prefs


def read_prefs(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "prefs.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def shapes_prefs(tmp_path_factory):
    """`gaml dataset prefs -n 4 --steps 4` on the shipped shapes teacher (runs once)."""
    from gaml_cli.__main__ import main

    out = tmp_path_factory.mktemp("prefs") / "size"
    assert main(["dataset", "prefs", "--model", "shapes", "--oracle", "size", "-n", "4", "--steps", "4",
                 "--out", str(out), "-q"]) == 0
    return out


def test_prefs_on_the_shapes_teacher(shapes_prefs):
    from PIL import Image

    recs = read_prefs(shapes_prefs)
    assert len(recs) == 4
    assert sorted(p.name for p in (shapes_prefs / "images").iterdir()) == [
        f"{i:05d}-{s}.png" for i in range(4) for s in "ab"]
    for i, rec in enumerate(recs):
        assert set(rec) == {"prompt", "chosen", "rejected", "label", "oracle", "chosen_score", "rejected_score"}
        assert rec["oracle"] == "size"
        assert rec["chosen_score"] >= rec["rejected_score"]
        assert rec["label"] == (0.5 if rec["chosen_score"] == rec["rejected_score"] else 1)
        assert {rec["chosen"], rec["rejected"]} == {f"images/{i:05d}-a.png", f"images/{i:05d}-b.png"}
        assert rec["prompt"].startswith("a ") and rec["prompt"].endswith(" background")
        for key in ("chosen", "rejected"):
            with Image.open(shapes_prefs / rec[key]) as im:
                assert im.size == (16, 16) and im.mode == "RGB"  # the teacher's resolution


def test_prefs_scores_are_the_oracle_of_the_written_images(shapes_prefs):
    from PIL import Image

    for rec in read_prefs(shapes_prefs):
        for key in ("chosen", "rejected"):
            with Image.open(shapes_prefs / rec[key]) as im:
                x = np.asarray(im, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1
            assert oracles.score("size", x)[0] == pytest.approx(rec[f"{key}_score"], abs=2 / 256)


def test_prefs_json_summary_and_per_pair_seeds(gaml, tmp_path, shapes_prefs):
    out = tmp_path / "two"
    res = gaml("dataset", "prefs", "--oracle", "size", "-n", "2", "--steps", "4", "--batch-size", "3",
               "--out", out, "--format", "json", "-q")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    recs = read_prefs(out)
    assert summary["pairs"] == 2 and summary["oracle"] == "size" and summary["seconds"] >= 0
    assert summary["mean_margin"] == pytest.approx(np.mean([r["chosen_score"] - r["rejected_score"] for r in recs]))
    assert recs == read_prefs(shapes_prefs)[:2]  # pair i depends neither on -n nor on the batch size


def test_prefs_with_captions_file(gaml, tmp_path):
    caps = tmp_path / "caps.txt"
    caps.write_text("a red circle on a blue background\na white square on a black background\n")
    out = tmp_path / "left"
    res = gaml("dataset", "prefs", "--oracle", "left", "--captions", caps, "--steps", "3", "--out", out, "-q")
    assert res.code == 0, res.err
    recs = read_prefs(out)
    assert [r["prompt"] for r in recs] == caps.read_text().splitlines()
    assert all(r["oracle"] == "left" and r["chosen_score"] >= r["rejected_score"] for r in recs)


@pytest.mark.parametrize("args, message", [
    (["--oracle", "bigness"], "--oracle"),
    (["--model", "digits"], "class-conditional"),
    (["-n", "0"], "--n"),
])
def test_prefs_bad_options_exit_2(gaml, tmp_path, args, message):
    out = tmp_path / "p"
    res = gaml("dataset", "prefs", *args, "--steps", "2", "--out", out)
    assert res.code == 2
    assert len(res.err_lines) == 1 and message in res.err
    assert not out.exists()


def test_prefs_unwritable_or_used_out_exits_2(gaml, tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    for out, message in ((a_file, "is a file"), (a_file / "sub", "cannot be written")):
        res = gaml("dataset", "prefs", "-n", "1", "--steps", "2", "--out", out)
        assert res.code == 2 and len(res.err_lines) == 1 and message in res.err, res.err
    used = tmp_path / "used"
    used.mkdir()
    (used / "prefs.jsonl").write_text("{}\n")
    res = gaml("dataset", "prefs", "-n", "1", "--steps", "2", "--out", used)
    assert res.code == 2 and "not empty" in res.err
    assert (used / "prefs.jsonl").read_text() == "{}\n"


def test_prefs_failure_leaves_nothing(gaml, tmp_path, monkeypatch):
    """A write that fails after the images were written: no PNG, no JSONL, no folder."""
    import errno

    import gaml_cli.core.artifacts as artifacts

    def full_disk(path, records):
        with artifacts.atomic_write(path, "w") as fh:
            fh.write("{")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "write_jsonl", full_disk)
    out = tmp_path / "deep" / "p"
    res = gaml("dataset", "prefs", "-n", "2", "--steps", "2", "--out", out)
    assert res.code == 1 and "no space left" in res.err
    assert not (tmp_path / "deep").exists()


# ----------------------------------------------------------------------------- gaml eval reward


@pytest.fixture
def shapes_images(gaml, tmp_path) -> Path:
    out = tmp_path / "s.safetensors"
    assert gaml("dataset", "shapes", "-n", "60", "--size", "16", "--out", out, "-q").code == 0
    return out


@pytest.mark.parametrize("oracle", list(oracles.ORACLES))
def test_eval_reward_is_the_oracle_on_the_artifact(gaml, shapes_images, oracle):
    from gaml_cli.core.artifacts import load_artifact

    res = gaml("eval", "reward", "--images", shapes_images, "--oracle", oracle, "--format", "json")
    assert res.code == 0, res.err
    got = json.loads(res.out)
    s = oracles.score(oracle, load_artifact(shapes_images, "images")["images"])
    assert got["oracle"] == oracle and got["n"] == 60 and got["no_shape"] == 0
    assert got["mean"] == pytest.approx(s.mean()) and got["std"] == pytest.approx(s.std())
    assert got["min"] == pytest.approx(s.min()) and got["max"] == pytest.approx(s.max())
    assert [got[k] for k in ("q05", "q25", "median", "q75", "q95")] == pytest.approx(
        np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95]))


def test_eval_reward_refuses_other_artifacts_and_nan_images(gaml, tmp_path):
    from gaml_cli.core.artifacts import save_artifact
    import gaml_cli

    teacher = Path(gaml_cli.__file__).parent / "assets" / "shapes-teacher.safetensors"
    res = gaml("eval", "reward", "--images", teacher, "--oracle", "size")
    assert res.code == 2 and len(res.err_lines) == 1 and "'teacher'" in res.err
    x = np.zeros((3, 3, 8, 8), np.float32)
    x[1, 0, 0, 0] = np.nan
    bad = save_artifact(tmp_path / "nan.safetensors", {"images": x}, kind="images")
    res = gaml("eval", "reward", "--images", bad)
    assert res.code == 2 and len(res.err_lines) == 1 and "1 of 3 images hold nan" in res.err
    res = gaml("eval", "reward", "--images", bad, "--oracle", "bigness")
    assert res.code == 2
