"""gaml train -> sample -> eval fd on a tiny budget, through files and pipes."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from gaml_cli.core.artifacts import load_artifact, read_header, save_artifact  # noqa: E402

TINY = ["--steps", "4", "--batch-size", "8", "--warmup", "2", "--checkpoint-every", "2", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from gaml_cli.__main__ import main

    d = tmp_path_factory.mktemp("diff")
    assert main(["dataset", "digits", "--out", str(d / "digits.safetensors"), "-q"]) == 0
    assert main(["dataset", "shapes", "-n", "64", "--size", "16", "--out", str(d / "shapes.safetensors"), "-q"]) == 0
    return d


def test_train_sample_eval_chain_digits(gaml, data, tmp_path):
    teacher = tmp_path / "t.safetensors"
    assert gaml("train", "--data", data / "digits.safetensors", "--out", teacher, *TINY).code == 0
    info = read_header(teacher)
    assert info.kind == "teacher" and info.config["model"]["cond"] == {"type": "class", "num_classes": 10}
    assert info.provenance["parents"][0]["path"].endswith("digits.safetensors")
    samples = tmp_path / "s.safetensors"
    res = gaml("sample", "--model", teacher, "-n", "20", "--steps", "2", "--out", samples, "--batch-size", "7",
               "--device", "cpu", "-f", "json")
    assert res.code == 0, res.err
    facts = json.loads(res.out)
    assert facts["nfe"] == 3 and facts["sampler"] == "heun"
    art = load_artifact(samples, "images")
    assert art["images"].shape == (20, 1, 8, 8)
    assert list(art["labels"]) == [i % 10 for i in range(20)]  # balanced by default
    clf = tmp_path / "clf.safetensors"
    assert gaml("eval", "train-classifier", "--data", data / "digits.safetensors", "--out", clf,
                "--epochs", "1", "-q").code == 0
    res = gaml("eval", "fd", "--images", samples, "--ref", "digits", "--classifier", clf, "-f", "json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert {"fd", "floor", "accuracy"} <= set(out) and out["n"] == 20
    assert out["fd"] > out["floor"] > 0  # 4 training steps are far from the data


def test_batch_size_does_not_change_samples(gaml, data, tmp_path):
    teacher = tmp_path / "t.safetensors"
    assert gaml("train", "--data", data / "digits.safetensors", "--out", teacher, *TINY).code == 0
    # Euler: Heun's last correction divides by sigma ~0.002 and would amplify float noise ~300x
    for bs in ("3", "16"):
        assert gaml("sample", "--model", teacher, "-n", "6", "--steps", "3", "--sampler", "euler", "--batch-size", bs,
                    "--device", "cpu", "--out", tmp_path / f"s{bs}.safetensors", "-q").code == 0
    a = load_artifact(tmp_path / "s3.safetensors", "images")["images"]
    b = load_artifact(tmp_path / "s16.safetensors", "images")["images"]
    np.testing.assert_allclose(a, b, atol=1e-4)  # float reassociation across batch shapes; wrong seeding is O(1)


def test_text_teacher_with_prompts_from_a_pipe(gaml, data, tmp_path):
    teacher = tmp_path / "shapes-t.safetensors"
    assert gaml("train", "--data", data / "shapes.safetensors", "--out", teacher, *TINY).code == 0
    cfg = read_header(teacher).config
    assert cfg["model"]["cond"]["type"] == "text" and "circle" in cfg["model"]["cond"]["vocab"]
    prompts = '{"prompt": "a red circle on a blue background"}\n{"prompt": "a green square on a white background"}\n'
    out = tmp_path / "s.safetensors"
    res = gaml("sample", "--model", teacher, "--prompts", "-", "-n", "4", "--steps", "1", "--guidance", "2",
               "--device", "cpu", "--out", out, "-q", stdin=prompts)
    assert res.code == 0, res.err
    art = load_artifact(out, "images")
    assert art.config["prompts"] == ["a red circle on a blue background", "a green square on a white background"] * 2
    # attrs parsed from the captions: shape, colour, background ids
    assert art["attrs"][0].tolist() == [0, 0, 2] and art["attrs"][1].tolist() == [1, 1, 5]


def test_resume_reproduces_uninterrupted_training(gaml, data, tmp_path):
    straight, resumed = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    args = ["--data", data / "digits.safetensors", "--batch-size", "8", "--warmup", "2", "--device", "cpu", "-q"]
    assert gaml("train", *args, "--steps", "6", "--out", straight).code == 0
    assert gaml("train", *args, "--steps", "3", "--checkpoint-every", "3", "--out", resumed).code == 0
    assert gaml("train", *args, "--steps", "6", "--resume", "--out", resumed).code == 0
    ta = load_artifact(straight, "teacher")
    tb = load_artifact(resumed, "teacher")
    assert set(ta.tensors) == set(tb.tensors)
    for k in ta.tensors:
        np.testing.assert_array_equal(ta[k], tb[k])


def test_generator_artifact_is_one_step(gaml, data, tmp_path):
    """A 'generator' is sampled with one evaluation: x = D(sigma_init z; sigma_init, c)."""
    from gaml_cli.diffusion.io import load_model, save_model

    teacher = tmp_path / "t.safetensors"
    assert gaml("train", "--data", data / "digits.safetensors", "--out", teacher, *TINY).code == 0
    model, info = load_model(teacher)
    gen_path = tmp_path / "g.safetensors"
    save_model(gen_path, model, kind="generator", config={**info.config, "generator": {"sigma_init": 2.5}}, seed=0)
    out = tmp_path / "s.safetensors"
    res = gaml("sample", "--model", gen_path, "-n", "3", "--class", "4", "--device", "cpu", "--out", out, "-f", "json")
    assert res.code == 0 and json.loads(res.out)["nfe"] == 1
    from gaml_cli.core import runtime

    z = runtime.randn_per_sample((1, 8, 8), runtime.sample_seeds(0, range(3)))
    with torch.no_grad():
        expected = model(2.5 * z, torch.full((3,), 2.5), torch.full((3,), 4)).clamp(-1, 1)
    np.testing.assert_allclose(load_artifact(out, "images")["images"], expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("make,needle", [
    (lambda d, t: ["--model", d / "digits.safetensors"], "is an artifact of kind 'images', but this needs 'teacher' or 'generator'"),
    (lambda d, t: ["--model", t, "--class", "12"], "the model has classes 0..9"),
    (lambda d, t: ["--model", t, "--prompt", "a red circle"], "need a text-conditional model"),
    (lambda d, t: ["--model", t, "--class", "1", "--prompt", "x"], "at most one of"),
])
def test_sample_bad_input(gaml, data, tmp_path, make, needle):
    teacher = tmp_path / "t.safetensors"
    assert gaml("train", "--data", data / "digits.safetensors", "--out", teacher, *TINY).code == 0
    out = tmp_path / "s.safetensors"
    res = gaml("sample", *make(data, teacher), "--out", out)
    assert res.code == 2 and len(res.err_lines) == 1 and needle in res.err, res.err
    assert not out.exists()


def test_train_bad_input(gaml, data, tmp_path):
    other = save_artifact(tmp_path / "x.safetensors", {"w": np.zeros(2)}, kind="teacher")
    res = gaml("train", "--data", other, "--out", tmp_path / "t.safetensors")
    assert res.code == 2 and "this needs 'images'" in res.err
    res = gaml("train", "--data", data / "digits.safetensors", "--out", tmp_path / "t.safetensors", "--resume")
    assert res.code == 2 and "no checkpoint folder" in res.err
    res = gaml("train", "--data", data / "digits.safetensors", "--cond", "text", "--out", tmp_path / "t.safetensors")
    assert res.code == 2 and "has no captions" in res.err
    assert not (tmp_path / "t.safetensors").exists()


def test_unet_size_options(gaml, data, tmp_path):
    out = tmp_path / "t.safetensors"
    assert gaml("train", "--data", data / "digits.safetensors", "--out", out, "--channels", "16,32",
                "--layers-per-block", "1", *TINY).code == 0
    unet = read_header(out).config["model"]["unet"]
    assert unet["block_out_channels"] == [16, 32] and unet["layers_per_block"] == 1
    assert unet["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]
    for bad, needle in (("12,32", "multiples of 8"), ("16,32,32,64,64", "divisible by 16"), ("a,b", "expected integers")):
        res = gaml("train", "--data", data / "digits.safetensors", "--out", tmp_path / "x.safetensors", "--channels", bad)
        assert res.code == 2 and needle in res.err, res.err
