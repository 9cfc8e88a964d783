"""gaml's shipped models: present, small, documented, loadable, and as good as their cards say."""

from __future__ import annotations

import numpy as np
import pytest

from gaml_cli.core import hub, registry
from gaml_cli.core.artifacts import read_header

torch = pytest.importorskip("torch")

ASSETS = registry.ASSETS_DIR


def test_every_shipped_entry_has_file_and_card():
    shipped = {e.alias: e for e in registry.SHIPPED if (ASSETS / e.asset).is_file()}
    assert {"digits", "shapes", "digits-classifier", "shapes-classifier"} <= set(shipped)
    for e in shipped.values():
        info = read_header(ASSETS / e.asset)
        assert info.kind == e.kind
        card = (ASSETS / e.asset).with_suffix(".md")
        assert card.is_file(), f"{e.asset} has no model card"
        text = card.read_text()
        assert "Reproduce" in text and "recipes/" in text and "Metrics" in text
    listed = {e.alias for e in registry.entries()}
    assert set(shipped) <= listed


def test_assets_are_small():
    total = sum(p.stat().st_size for p in ASSETS.glob("*.safetensors"))
    assert total < 20 * 1024 * 1024, f"assets take {total / 2**20:.1f} MB"


def test_digits_classifier_on_held_out_digits():
    from gaml_cli.datasets import digits
    from gaml_cli.diffusion.eval import load_classifier
    from gaml_cli.diffusion.features import accuracy

    clf, path = load_classifier(None, "digits", {})
    assert path == hub.resolve("digits-classifier")
    d = digits.load()
    test = d["split"] == 1
    acc = accuracy(clf, d["images"][test], {"label": d["labels"][test]})
    assert acc["label"] >= 0.97


def test_shapes_classifier_on_fresh_shapes():
    from gaml_cli.datasets import shapes
    from gaml_cli.diffusion.eval import load_classifier
    from gaml_cli.diffusion.features import accuracy

    clf, _ = load_classifier(None, "shapes", {})
    t, _ = shapes.generate(400, seed=99, size=16)
    y = {k: t["attrs"][:, i] for i, k in enumerate(["shape", "color", "background"])}
    acc = accuracy(clf, t["images"], y)
    assert min(acc.values()) >= 0.98, acc


def test_fd_floor_of_real_digits_is_small_and_fd_of_noise_is_large(gaml, tmp_path):
    """The metric separates real data from noise by orders of magnitude."""
    from gaml_cli.core.artifacts import save_artifact
    from gaml_cli.datasets import digits

    d = digits.load()
    real = save_artifact(tmp_path / "real.safetensors", {"images": d["images"][:600], "labels": d["labels"][:600]},
                         kind="images", config={"dataset": "digits"})
    noise = np.random.default_rng(0).uniform(-1, 1, (600, 1, 8, 8)).astype(np.float32)
    fake = save_artifact(tmp_path / "noise.safetensors", {"images": noise, "labels": d["labels"][:600]},
                         kind="images", config={"dataset": "digits"})
    import json

    r = json.loads(gaml("eval", "fd", "--images", real, "--ref", "digits", "-f", "json").out)
    f = json.loads(gaml("eval", "fd", "--images", fake, "--ref", "digits", "-f", "json").out)
    assert r["accuracy"] > 0.97 and f["accuracy"] < 0.3
    assert r["fd"] < 1.5 * r["floor"]
    assert f["fd"] > 20 * f["floor"]
