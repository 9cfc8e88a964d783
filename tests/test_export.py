"""gaml export --diffusers: gaml's teachers and one-step generators loaded by plain diffusers.

Each test loads the exported unet/ with nothing but `diffusers.UNet2DModel.from_pretrained`,
applies the preconditioning of gaml_edm.json by hand (EDM Table 1 with gaml's timestep
scale) and compares with gaml's own denoiser D(x; sigma, c) on the same inputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from torch import nn  # noqa: E402

TOL = 1e-5
DISTILL_TINY = ["--steps", "2", "--batch-size", "8", "--device", "cpu", "-q"]


# --------------------------------------------------------------------------- by hand, no gaml code


def plain_unet(folder: Path):
    return diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()


def plain_D(unet, meta: dict, x, sigma, class_labels):
    """D(x; sigma, c) = c_skip x + c_out F(c_in x, scale * c_noise) from gaml_edm.json's numbers."""
    pre = meta["preconditioning"]
    sd, scale = pre["sigma_data"], pre["c_noise_scale"]
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / torch.sqrt(s**2 + sd**2)
    c_in = 1 / torch.sqrt(s**2 + sd**2)
    c_noise = torch.log(sigma) / 4
    return c_skip * x + c_out * unet(c_in * x, scale * c_noise, class_labels=class_labels).sample


class PlainTextEncoder(nn.Module):
    """gaml's caption encoder rebuilt from text_encoder/config.json alone."""

    def __init__(self, c: dict):
        super().__init__()
        self.c = c
        self.tok = nn.Embedding(len(c["vocab"]), c["dim"])
        self.pos = nn.Embedding(c["max_len"], c["dim"])
        layer = nn.TransformerEncoderLayer(c["dim"], c["heads"], c["ffn_dim"], dropout=0.0,
                                           layer_norm_eps=c["layer_norm_eps"], batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c["layers"], enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c["dim"])
        self.proj = nn.Linear(c["dim"], c["out_dim"])

    def tokenize(self, texts):
        c = self.c
        ids = torch.full((len(texts), c["max_len"]), c["pad_id"], dtype=torch.long)
        for i, t in enumerate(texts):
            words = re.findall("[a-z0-9]+", t.lower())
            toks = [c["cls_id"]] + [c["vocab"].index(w) if w in c["vocab"] else c["unk_id"] for w in words]
            toks = toks[: c["max_len"]]
            ids[i, : len(toks)] = torch.tensor(toks)
        return ids

    def forward(self, ids):
        pad = ids == self.c["pad_id"]
        h = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))[None]
        h = self.norm(self.encoder(h, src_key_padding_mask=pad))
        if self.c["pool"] == "cls":
            return self.proj(h[:, 0])
        keep = (~pad).unsqueeze(-1).float()
        return self.proj((h * keep).sum(1) / keep.sum(1).clamp(min=1))


def random_inputs(shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g) * 3
    # noise levels across gaml's whole range, sigma_min 0.002 .. sigma_max 80
    sigma = torch.exp(torch.empty(n).uniform_(float(torch.log(torch.tensor(0.002))),
                                              float(torch.log(torch.tensor(80.0))), generator=g))
    return x, sigma


def read_meta(folder: Path) -> dict:
    meta = json.loads((folder / "gaml_edm.json").read_text())
    pre = meta["preconditioning"]
    # the formulas the test applies are the ones the file states
    assert pre["sigma_data"] == 0.5 and pre["c_noise_scale"] == 250.0
    assert pre["c_skip"] == "sigma_data**2 / (sigma**2 + sigma_data**2)"
    assert pre["c_out"] == "sigma * sigma_data / sqrt(sigma**2 + sigma_data**2)"
    assert pre["c_in"] == "1 / sqrt(sigma**2 + sigma_data**2)"
    assert pre["c_noise"] == "log(sigma) / 4"
    return meta


def readme_blocks(folder: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), flags=re.S)


def gaml_model(path):
    from gaml_cli.core import hub
    from gaml_cli.diffusion.io import load_model, run_artifact

    return load_model(run_artifact(hub.resolve(str(path))))


# --------------------------------------------------------------------------- the tests


def test_digits_teacher_export_matches_gaml_in_plain_diffusers(gaml, tmp_path):
    out = tmp_path / "digits-diffusers"
    res = gaml("export", "--model", "digits", "--diffusers", out, "-f", "json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["kind"] == "teacher" and summary["conditioning"] == "class"
    assert summary["check_max_abs_diff"] < TOL
    assert (out / "unet" / "config.json").is_file() and (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (out / "text_encoder").exists() and (out / "README.md").is_file()
    meta = read_meta(out)
    cond = meta["conditioning"]
    assert (cond["type"], cond["num_classes"], cond["null_label"]) == ("class", 10, 10)
    assert meta["sampling"]["sampler"] == "heun" and meta["sampling"]["steps"] == 18
    assert "generator" not in meta

    unet = plain_unet(out)
    net, _ = gaml_model("digits")
    x, sigma = random_inputs((1, 8, 8), 11)
    labels = torch.arange(11)  # 0..9 and the null label 10
    with torch.no_grad():
        diff = (plain_D(unet, meta, x, sigma, labels) - net(x, sigma, labels)).abs().max().item()
    print(f"digits teacher: max |D_gaml - D_diffusers| = {diff:.3g}")
    assert diff < TOL


def test_readme_snippet_reproduces_the_denoiser_and_samples(gaml, tmp_path):
    out = tmp_path / "d"
    assert gaml("export", "--model", "digits", "--diffusers", out, "-q").code == 0
    blocks = readme_blocks(out)
    assert len(blocks) == 2  # D, then a sampler
    assert len(blocks[0].strip().splitlines()) <= 14
    ns: dict = {}
    exec(blocks[0], ns)  # DIR is the folder as given to --diffusers
    net, _ = gaml_model("digits")
    x, sigma = random_inputs((1, 8, 8), 6, seed=1)
    labels = torch.tensor([0, 3, 5, 9, 10, 10])
    with torch.no_grad():
        assert (ns["D"](x, sigma, labels) - net(x, sigma, labels)).abs().max().item() < TOL
    torch.manual_seed(0)
    exec(blocks[1], ns)
    assert ns["x"].shape == (16, 1, 8, 8) and torch.isfinite(ns["x"]).all()


def test_text_teacher_exports_its_encoder_for_plain_torch(gaml, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "shapes-diffusers"
    res = gaml("export", "--model", "shapes", "--diffusers", out, "-f", "json")
    assert res.code == 0, res.err
    meta = read_meta(out)
    assert meta["conditioning"]["type"] == "text" and meta["conditioning"]["null_caption"] == ""
    tcfg = json.loads((out / "text_encoder" / "config.json").read_text())
    enc = PlainTextEncoder(tcfg).eval()
    enc.load_state_dict(load_file(out / "text_encoder" / "model.safetensors"))  # strict: every tensor fits
    unet = plain_unet(out)
    net, _ = gaml_model("shapes")

    captions = ["a red circle on a blue background", "", "a Purple DIAMOND on a white background!",
                "a zebra square on a green background",  # an unknown word
                " ".join(["a green triangle on a yellow background"] * 3)]  # longer than max_len
    ids = enc.tokenize(captions)
    assert torch.equal(ids, net.encode_condition(captions, len(captions)))
    x, sigma = random_inputs((3, 16, 16), len(captions), seed=2)
    with torch.no_grad():
        emb = enc(ids)
        assert (emb - net.text(ids)).abs().max().item() < TOL
        diff = (plain_D(unet, meta, x, sigma, emb) - net(x, sigma, ids)).abs().max().item()
    print(f"shapes text teacher: max |D_gaml - D_diffusers| = {diff:.3g}")
    assert diff < TOL

    # the README's own code (denoiser + caption encoder) gives the same
    ns: dict = {}
    for block in readme_blocks(out)[:2]:
        exec(block, ns)
    with torch.no_grad():
        d_readme = ns["D"](x, sigma, ns["text_encoder"](ns["tokenize"](captions)))
        assert (d_readme - net(x, sigma, ids)).abs().max().item() < TOL


def test_one_step_generator_export(gaml, tmp_path):
    run = tmp_path / "run"
    assert gaml("distill", "--teacher", "digits", "--out", run, *DISTILL_TINY).code == 0
    out = tmp_path / "onestep"
    res = gaml("export", "--model", run, "--diffusers", out, "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["kind"] == "generator"
    meta = read_meta(out)
    sigma_init = meta["generator"]["sigma_init"]
    assert sigma_init == 2.5 and "sampling" not in meta

    unet = plain_unet(out)
    net, info = gaml_model(run)
    assert info.kind == "generator"
    z = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(10)
    s = torch.full((10,), sigma_init)
    with torch.no_grad():
        diff = (plain_D(unet, meta, sigma_init * z, s, labels) - net(sigma_init * z, s, labels)).abs().max().item()
    assert diff < TOL
    # the exported weights are the generator's, not the teacher's
    assert torch.equal(unet.state_dict()["conv_in.weight"], net.unet.state_dict()["conv_in.weight"])

    # the same from the artifact path, and the README's one-step block runs
    out2 = tmp_path / "onestep2"
    assert gaml("export", "--model", run / "generator.safetensors", "--diffusers", out2, "-q").code == 0
    ns: dict = {}
    for block in readme_blocks(out2):
        exec(block, ns)
    assert ns["x"].shape == (16, 1, 8, 8)
    print(f"one-step generator: max |G_gaml - G_diffusers| = {diff:.3g}")


def test_unconditional_teacher_and_unlearn_generator(gaml, tmp_path, digits_artifact):
    teacher = tmp_path / "unc.safetensors"
    assert gaml("train", "--data", digits_artifact, "--cond", "none", "--steps", "1", "--batch-size", "8",
                "--channels", "8,16", "--out", teacher, "-q").code == 0
    out = tmp_path / "unc"
    assert gaml("export", "--model", teacher, "--diffusers", out, "-q").code == 0
    meta = read_meta(out)
    assert meta["conditioning"]["type"] == "none"
    net, _ = gaml_model(teacher)
    x, sigma = random_inputs((1, 8, 8), 5, seed=4)
    with torch.no_grad():
        assert (plain_D(plain_unet(out), meta, x, sigma, None) - net(x, sigma, None)).abs().max().item() < TOL

    run = tmp_path / "sfd"
    assert gaml("unlearn", "--teacher", "digits", "--forget", "0", "--into", "1", "--out", run,
                *DISTILL_TINY).code == 0
    out = tmp_path / "sfd-diffusers"
    assert gaml("export", "--model", run, "--diffusers", out, "-q").code == 0
    meta = read_meta(out)
    assert meta["generator"]["forget"]["pairs"] == [[0, 1]] and "SFD" in meta["generator"]["method"]
    net, _ = gaml_model(run)
    z, s, labels = torch.randn(4, 1, 8, 8), torch.full((4,), 2.5), torch.tensor([0, 1, 2, 10])
    with torch.no_grad():
        assert (plain_D(plain_unet(out), meta, 2.5 * z, s, labels) - net(2.5 * z, s, labels)).abs().max().item() < TOL


def test_force_replaces_and_nothing_is_left_behind(gaml, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "old.txt").write_text("keep me unless --force")
    res = gaml("export", "--model", "digits", "--diffusers", out)
    assert res.code == 2 and "--force" in res.err and len(res.err_lines) == 1
    assert (out / "old.txt").is_file()
    assert gaml("export", "--model", "digits", "--diffusers", out, "--force", "-q").code == 0
    assert not (out / "old.txt").exists() and (out / "gaml_edm.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no temp or old folders
    # an empty folder is fine without --force
    empty = tmp_path / "empty"
    empty.mkdir()
    assert gaml("export", "--model", "digits", "--diffusers", empty, "-q").code == 0


def test_interrupted_export_leaves_the_previous_folder(tmp_path, monkeypatch):
    from gaml_cli.diffusion import export as ex

    out = tmp_path / "exp"
    out.mkdir()
    (out / "old.txt").write_text("previous")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "check_export", boom)
    with pytest.raises(KeyboardInterrupt):
        ex.export_diffusers("digits", out, force=True)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    with pytest.raises(KeyboardInterrupt):
        ex.export_diffusers("digits", tmp_path / "new")
    with pytest.raises(KeyboardInterrupt):
        ex.export_diffusers("digits", tmp_path / "a" / "b" / "new")  # folders it made are removed too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def _bad_inputs(tmp_path: Path, digits_artifact: Path) -> dict[str, tuple[list[str], str]]:
    sd = tmp_path / "sd-pipeline"
    sd.mkdir()
    (sd / "model_index.json").write_text("{}")
    plain = tmp_path / "plain-folder"
    plain.mkdir()
    (tmp_path / "a-file").write_text("x")
    return {
        "missing": (["--model", str(tmp_path / "nope.safetensors")], "no such file"),
        "images": (["--model", str(digits_artifact)], "'images'"),
        "sd-alias": (["--model", "sd15"], "diffusers format"),
        "sd-folder": (["--model", str(sd)], "diffusers format"),
        "classifier": (["--model", "digits-classifier"], "classifier"),
        "plain-folder": (["--model", str(plain)], "generator.safetensors"),
        "out-is-file": (["--model", "digits", "--diffusers", str(tmp_path / "a-file")], "is a file"),
    }


@pytest.mark.parametrize("case", ["missing", "images", "sd-alias", "sd-folder", "classifier", "plain-folder",
                                  "out-is-file"])
def test_bad_input_is_one_line_and_exit_2(gaml, tmp_path, digits_artifact, case):
    args, words = _bad_inputs(tmp_path, digits_artifact)[case]
    if "--diffusers" not in args:
        args = [*args, "--diffusers", str(tmp_path / "out")]
    res = gaml("export", *args)
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1 and res.err.startswith("gaml: error:") and words in res.err
    assert not (tmp_path / "out").exists()


def test_export_never_destroys_its_input(gaml, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    src = Path(gaml_model("digits")[1].path)
    (run / "generator.safetensors").write_bytes(src.read_bytes())  # a teacher under the generator's name
    res = gaml("export", "--model", run, "--diffusers", run, "--force")
    assert res.code == 2 and "destroy the input" in res.err
    res = gaml("export", "--model", run / "generator.safetensors", "--diffusers", tmp_path, "--force")
    assert res.code == 2 and "destroy the input" in res.err
    assert (run / "generator.safetensors").is_file()
