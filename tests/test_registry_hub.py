"""Model aliases, `gaml models ls/where/download`, and resolving real weights offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gaml_cli.core import hub, registry
from gaml_cli.core.errors import ModelNotFoundError


def fake_hf_snapshot(hf_home: Path, hub_id: str, files: list[str], commit: str = "a" * 40) -> Path:
    """Lay out a hub cache entry exactly as huggingface_hub does (refs/main -> snapshots/<commit>)."""
    repo = Path(hf_home) / "hub" / ("models--" + hub_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for f in files:
        p = snap / f
        p.parent.mkdir(parents=True, exist_ok=True)
        if f.endswith(".safetensors"):
            from safetensors.numpy import save_file

            save_file({"w": np.zeros((2, 2), np.float32)}, str(p))
        else:
            p.write_text(json.dumps({"_class_name": "Tiny", "file": f}))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


SD_FILES = list(registry.REQUIRED_FILES["sd-pipeline"]) + ["unet/diffusion_pytorch_model.safetensors"]


def test_builtin_aliases_are_plain_data():
    by = {e.alias: e for e in registry.entries()}
    assert by["sd15"].hub_id == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert by["sdxl"].hub_id == "stabilityai/stable-diffusion-xl-base-1.0"
    assert by["sd21"].hub_id == "stabilityai/stable-diffusion-2-1"
    assert all(e.revision for e in by.values() if e.source == "hub")


def test_models_ls_json(gaml):
    res = gaml("models", "ls", "--format", "json")
    rows = {r["alias"]: r for r in json.loads(res.out)}
    assert {"sd15", "sd21", "sdxl"} <= set(rows)
    assert rows["sd15"]["present"] is False and rows["sd15"]["source"] == "hub"


def test_where_missing_then_present(gaml, _private_hf_home):
    res = gaml("models", "where", "sd15", "--format", "json")
    data = json.loads(res.out)
    assert res.code == 0 and data["present"] is False
    assert data["looked_in"] == [str(_private_hf_home / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5")]
    snap = fake_hf_snapshot(_private_hf_home, "stable-diffusion-v1-5/stable-diffusion-v1-5", SD_FILES)
    data = json.loads(gaml("models", "where", "sd15", "--format", "json").out)
    assert data["present"] is True and data["path"] == str(snap)
    assert hub.resolve("sd15") == snap
    res = gaml("models", "download", "sd15")  # already local: no network needed
    assert res.code == 0 and res.out.strip() == str(snap)


def test_incomplete_snapshot_is_not_present(_private_hf_home):
    fake_hf_snapshot(_private_hf_home, "stabilityai/stable-diffusion-xl-base-1.0", ["model_index.json"])
    loc = hub.locate(registry.get("sdxl"))
    assert loc.present is False and "unet/config.json" in loc.missing_files
    with pytest.raises(ModelNotFoundError, match="incomplete copy"):
        hub.resolve("sdxl")


def test_resolve_missing_alias_offline_message(_private_hf_home):
    with pytest.raises(ModelNotFoundError) as exc:
        hub.resolve("sd15", option="--teacher")
    line = exc.value.one_line()
    assert "\n" not in line
    assert "'sd15'" in line and "stable-diffusion-v1-5/stable-diffusion-v1-5@main" in line
    assert str(_private_hf_home / "hub") in line  # where it looked
    assert "--teacher /path/to/sd15" in line and "HF_HOME" in line  # how to provide it
    assert "network access is off" in line


def test_unknown_alias_and_missing_path(gaml):
    res = gaml("models", "where", "nosuchmodel")
    assert res.code == 2 and "unknown model alias 'nosuchmodel'" in res.err and "sd15" in res.err
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        hub.resolve("./models/missing-dir")


def test_local_path_and_hub_id(tmp_path, _private_hf_home):
    assert hub.resolve(str(tmp_path)) == tmp_path
    snap = fake_hf_snapshot(_private_hf_home, "someone/tiny-model", ["config.json"])
    assert hub.resolve("someone/tiny-model") == snap


def test_user_aliases_from_gaml_models_file(gaml, tmp_path, monkeypatch):
    local = tmp_path / "my-sd"
    for f in SD_FILES:
        (local / f).parent.mkdir(parents=True, exist_ok=True)
        (local / f).write_text("{}")
    cfg = tmp_path / "models.yaml"
    cfg.write_text("mysd:\n  kind: sd-pipeline\n  path: my-sd\n  description: ours\n")
    monkeypatch.setenv("GAML_MODELS", str(cfg))
    rows = {r["alias"]: r for r in json.loads(gaml("models", "ls", "-f", "json").out)}
    assert rows["mysd"]["present"] is True and rows["mysd"]["source"] == "path"
    assert hub.resolve("mysd") == local.resolve()
    cfg.write_text("broken:\n  kind: x\n")
    res = gaml("models", "ls")
    assert res.code == 2 and "needs exactly one of hub_id, path" in res.err


def test_shipped_asset_alias(monkeypatch, tmp_path):
    """An asset alias is listed only when its file is in the package's assets folder."""
    entry = registry.ModelEntry(alias="tiny-teacher", kind="gaml-teacher", description="t", asset="tiny.safetensors")
    monkeypatch.setattr(registry, "SHIPPED", (entry,))
    monkeypatch.setattr(registry, "ASSETS_DIR", tmp_path)
    monkeypatch.setattr(hub, "ASSETS_DIR", tmp_path)
    assert "tiny-teacher" not in {e.alias for e in registry.entries()}
    (tmp_path / "tiny.safetensors").write_bytes(b"x")
    assert "tiny-teacher" in {e.alias for e in registry.entries()}
    assert hub.resolve("tiny-teacher") == tmp_path / "tiny.safetensors"
