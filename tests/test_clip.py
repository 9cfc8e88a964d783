"""gaml eval clip on a tiny random CLIP saved in transformers format (the real loading code, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from gaml_cli.core.artifacts import save_artifact  # noqa: E402
from sd_tiny import build_tiny_clip  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


def _images(tmp_path, n=5, prompts=True):
    x = np.random.default_rng(0).uniform(-1, 1, (n, 3, 20, 24)).astype(np.float32)
    cfg = {"prompts": [f"a cat number {i}" for i in range(n)]} if prompts else {}
    return save_artifact(tmp_path / "imgs.safetensors", {"images": x}, kind="images", config=cfg), x


def _by_hand(model, tok, x):
    """CLIPModel's outputs for the (5, 3, 20, 24) images of _images and their prompts, with CLIP's
    preprocessing written out (bicubic resize of the short side to 32, centre crop, OpenAI mean/std)."""
    from torch.nn import functional as F

    img = F.interpolate(torch.from_numpy((x + 1) / 2), size=(32, round(24 * 32 / 20)), mode="bicubic",
                        antialias=True).clamp(0, 1)
    left = (img.shape[-1] - 32) // 2
    img = img[..., left:left + 32]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    ids = tok([f"a cat number {i}" for i in range(5)], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=(img - mean) / std)


def test_clip_score_matches_an_independent_computation(gaml, tiny_clip, tmp_path):
    from torch.nn import functional as F
    from transformers import CLIPModel, CLIPTokenizer

    path, x = _images(tmp_path)
    res = gaml("eval", "clip", "--images", path, "--model", tiny_clip, "--device", "cpu", "--batch-size", "2", "-f", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    # independent route: the same preprocessing written out, CLIPModel's own feature functions
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tok = CLIPTokenizer.from_pretrained(tiny_clip)
    o = _by_hand(model, tok, x)
    cos = F.cosine_similarity(o.image_embeds, o.text_embeds).numpy()
    assert out["clip_score"] == pytest.approx(float(cos.mean()), abs=1e-5)
    assert out["clipscore_100"] == pytest.approx(float((100 * np.maximum(cos, 0)).mean()), abs=1e-3)
    assert out["n"] == 5


def test_clip_needs_prompts_and_weights(gaml, tiny_clip, tmp_path):
    path, _ = _images(tmp_path, prompts=False)
    res = gaml("eval", "clip", "--images", path, "--model", tiny_clip)
    assert res.code == 2 and "lists no prompts" in res.err
    res = gaml("eval", "clip", "--images", path, "--model", "clip-l14", "--prompts", "-", stdin="a cat\n")
    assert res.code == 2 and len(res.err_lines) == 1
    assert "'clip-l14' not found locally" in res.err and "openai/clip-vit-large-patch14" in res.err


def test_reward_model_score_is_clips_own_logit(gaml, tiny_clip, tmp_path):
    """gaml eval reward --model: PickScore's score exp(logit_scale) * cos, checked against
    CLIPModel's own logits_per_image (its diagonal: each image against its own prompt)."""
    from transformers import CLIPModel, CLIPTokenizer

    path, x = _images(tmp_path)
    res = gaml("eval", "reward", "--images", path, "--model", tiny_clip, "--device", "cpu", "--batch-size", "2",
               "-f", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tok = CLIPTokenizer.from_pretrained(tiny_clip)
    o = _by_hand(model, tok, x)
    scores = torch.diagonal(o.logits_per_image).numpy()
    assert out["mean"] == pytest.approx(float(scores.mean()), rel=1e-4)
    assert out["max"] == pytest.approx(float(scores.max()), rel=1e-4) and out["n"] == 5
    assert "oracle" not in out and out["reward_model"] == str(tiny_clip)


def test_reward_model_bad_input(gaml, tiny_clip, tmp_path):
    path, _ = _images(tmp_path)
    res = gaml("eval", "reward", "--images", path, "--model", tiny_clip, "--oracle", "size")
    assert res.code == 2 and "not both" in res.err
    res = gaml("eval", "reward", "--images", path, "--model", "pickscore")
    assert res.code == 2 and len(res.err_lines) == 1
    assert "'pickscore' not found locally" in res.err and "yuvalkirstain/PickScore_v1" in res.err
    bare, _ = _images(tmp_path / "..", prompts=False)
    res = gaml("eval", "reward", "--images", bare, "--model", tiny_clip)
    assert res.code == 2 and "lists no prompts" in res.err


def test_a_reward_model_without_tokenizer_takes_one_from_elsewhere(tiny_clip, tmp_path):
    """PickScore's repository holds the model only; its tokenizer comes from clip-h14
    (registry.TOKENIZER_FROM). Same path here with a folder stripped of its tokenizer."""
    import shutil

    from gaml_cli.core.registry import TOKENIZER_FROM
    from gaml_cli.diffusion.clip import ClipScorer

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_clip / f, bare / f)
    s = ClipScorer(str(bare), tokenizer=str(tiny_clip))
    ref = ClipScorer(str(tiny_clip))
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    assert np.allclose(s.cosines(x, ["a", "b"]), ref.cosines(x, ["a", "b"]))
    assert TOKENIZER_FROM["pickscore"] == "clip-h14"
