"""`gaml align` on a Stable Diffusion pipeline (tests/sd_tiny.py, epsilon and v prediction):
the loss weight makes the adapter's x0-error the UNet's own epsilon-/v-MSE (checked against the
raw UNet output), the noise levels are the DDPM table's, and `gaml align diffusion-dpo --model
TINY` with LoRA and with --lora-rank 0 writes a run that plain diffusers loads
(`pipe.load_lora_weights(RUN)` / unet/) to the same UNet as gaml's aligned policy, and that
`gaml sample --model RUN` samples."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_tiny import build_tiny_sd  # noqa: E402

pytest.importorskip("diffusers")
pytest.importorskip("peft")

PREDICTIONS = ["epsilon", "v_prediction"]


@pytest.fixture(scope="module", params=PREDICTIONS)
def tiny(request, tmp_path_factory):
    return request.param, build_tiny_sd(tmp_path_factory.mktemp(request.param), prediction_type=request.param)


def test_loss_weight_gives_the_unets_own_mse(tiny):
    """mean (D - x0)^2 * loss_weight(sigma) == mean (unet(x_t, t, c) - target)^2, target = eps
    or v = sqrt(abar) eps - sqrt(1 - abar) x0, with x_t and abar computed by hand."""
    from diffusers import DDPMScheduler

    from gaml_cli.diffusion.sd import load_sd
    from gaml_cli.methods.rpo import loss as L
    from gaml_cli.methods.rpo.sd import SDFamily

    pred, path = tiny
    comp = load_sd(str(path))
    fam = SDFamily(comp)
    abar_all = DDPMScheduler.from_pretrained(path, subfolder="scheduler").alphas_cumprod.double()
    t = torch.tensor([0, 1, 10, 250, 500, 999])
    n = len(t)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, *comp.latent_shape, generator=g)
    eps = torch.randn(n, *comp.latent_shape, generator=g)
    cond = fam.encode(["abc", "a b", "xyz", "q", "hello", "zz"], "cpu")
    sigma = fam.sigmas[t]
    with torch.no_grad():
        D = comp.denoiser(x0 + sigma.view(-1, 1, 1, 1) * eps, sigma, cond)
        ours = L.per_sample_mse(D, x0, fam.loss_weight(sigma))
        a = abar_all[t].view(-1, 1, 1, 1)
        x_t = (a.sqrt() * x0.double() + (1 - a).sqrt() * eps.double()).float()
        out = comp.denoiser.unet(x_t, t, encoder_hidden_states=cond).sample.double()
        target = eps.double() if pred == "epsilon" else a.sqrt() * eps.double() - (1 - a).sqrt() * x0.double()
        raw = (out - target).pow(2).flatten(1).mean(1)
    rel = ((ours.double() - raw).abs() / raw).max().item()
    print(f"{pred}: max relative difference of the weighted x0-error and the raw MSE {rel:.2e}")
    assert rel < 1e-4


def test_noise_levels_are_the_ddpm_table():
    from gaml_cli.methods.rpo.sd import SDFamily

    class Comp:
        class denoiser:
            prediction_type = "epsilon"
            sigmas = torch.linspace(0.03, 14.6, 1000)

    fam = SDFamily(Comp)
    s = fam.draw_sigma(4000, torch.Generator().manual_seed(0), None)
    idx = torch.searchsorted(Comp.denoiser.sigmas, s)
    assert torch.equal(Comp.denoiser.sigmas[idx], s)
    assert idx.min() < 20 and idx.max() > 980  # randint(0, 1000): the whole table


def _pairs(folder: Path, size: int, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        for side in ("w", "l"):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}{side}.png")
        lines.append(json.dumps({"prompt": ["abc", "a b c", "xyz"][i], "chosen": f"{i}w.png", "rejected": f"{i}l.png"}))
    p = folder / "pairs.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def _aligned_unet(path: Path, run: Path, rank: int):
    """gaml's aligned policy from the run's last checkpoint, LoRA merged, as a plain UNet."""
    from diffusers import UNet2DConditionModel

    from gaml_cli.core.checkpoint import CheckpointDir
    from gaml_cli.diffusion.sd import load_sd
    from gaml_cli.methods.rpo.train import AlignConfig, prepare_policy
    from gaml_cli.methods.sid.model import load_trainable, merged_state_dict

    comp = load_sd(str(path))
    policy, _ = prepare_policy(comp.denoiser, AlignConfig(lora_rank=rank))
    _, state, _ = CheckpointDir(run / "checkpoints").load()
    load_trainable(policy, state["policy"])
    unet = UNet2DConditionModel.from_config(comp.denoiser.unet.config)
    unet.load_state_dict(merged_state_dict(policy.unet))
    return unet.eval(), comp


@pytest.mark.parametrize("rank", [2, 0])
def test_align_sd_run_loads_in_plain_diffusers_and_samples(gaml, capsys, tiny, tmp_path, rank):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    pred, path = tiny
    pairs = _pairs(tmp_path, size=16)
    run = tmp_path / "run"
    res = gaml("align", "diffusion-dpo", "--model", path, "--pairs", pairs, "--out", run, "--steps", "2",
               "--batch-size", "2", "--lora-rank", rank, "--lr", "0.01", "--device", "cpu", "-q", "-f", "json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["steps"] == 2 and summary["pairs"] == 3 and summary["method"] == "dpo"
    cfg = json.loads((run / "align.json").read_text())
    assert cfg["kind"] == "sd-align" and cfg["prediction_type"] == pred
    assert Path(cfg["pipeline"]) == Path(path).resolve()
    assert not (run / "model.safetensors").exists()
    if rank:
        assert (run / "pytorch_lora_weights.safetensors").is_file() and cfg["lora"]
    else:
        assert (run / "unet" / "config.json").is_file() and cfg["unet"] == "unet"

    ours, comp = _aligned_unet(path, run, rank)
    pipe = StableDiffusionPipeline.from_pretrained(path)
    if rank:
        pipe.load_lora_weights(run)
        theirs = pipe.unet
    else:
        theirs = UNet2DConditionModel.from_pretrained(run / "unet")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *comp.latent_shape, generator=g)
    t = torch.tensor([10, 700])
    cond = comp.encode_prompts(["abc", "xyz"])
    with torch.no_grad():
        a = theirs(x, t, encoder_hidden_states=cond).sample
        b = ours(x, t, encoder_hidden_states=cond).sample
        base = comp.denoiser.unet(x, t, encoder_hidden_states=cond).sample
    diff, moved = (a - b).abs().max().item(), (b - base).abs().max().item()
    with capsys.disabled():
        print(f"\n{pred} rank {rank}: diffusers vs gaml max abs diff {diff:.2e}; aligned vs base {moved:.2e}")
    assert diff < 1e-4 and moved > 10 * max(diff, 1e-6)
    from gaml_cli.diffusion.sd import load_sd_aligned, sd_align_config

    sampled = load_sd_aligned(run, sd_align_config(run))  # what gaml sample --model RUN loads
    with torch.no_grad():
        c = sampled.denoiser.unet(x, t, encoder_hidden_states=cond).sample
    assert (c - b).abs().max().item() < 1e-4

    out = tmp_path / "s.safetensors"
    res = gaml("sample", "--model", run, "--prompt", "x", "-n", "1", "--steps", "2", "--out", out, "-q")
    assert res.code == 0, res.err
    info = json.loads(gaml("inspect", out, "-f", "json").out)
    assert info["config"]["source"]["kind"] == "sd-align"


def test_sd_rpo_runs_and_a_bad_align_json_is_one_line(gaml, tiny, tmp_path):
    pred, path = tiny
    pairs = _pairs(tmp_path, size=16)
    run = tmp_path / "run"
    res = gaml("align", "rpo", "--model", path, "--pairs", pairs, "--out", run, "--steps", "1", "--batch-size", "3",
               "--lora-rank", "2", "--device", "cpu", "-q", "-f", "json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["method"] == "rpo"
    (run / "align.json").write_text('{"kind": "other"}')
    res = gaml("sample", "--model", run, "--prompt", "x", "-n", "1", "--steps", "2", "--out", tmp_path / "s.safetensors",
               "-q")
    assert res.code == 2 and len(res.err_lines) == 1 and "align.json" in res.err, res.err


def test_sd_resume_continues_the_same_run(tiny, tmp_path):
    from safetensors.torch import load_file

    from gaml_cli.methods.rpo.run import AlignOptions, run

    _, path = tiny
    pairs = _pairs(tmp_path, size=16)
    kw = dict(model=str(path), pairs=str(pairs), batch_size=2, lora_rank=2, lr=0.01, checkpoint_every=1,
              device="cpu", method="rpo")
    run(AlignOptions(out=str(tmp_path / "a"), steps=3, **kw))
    run(AlignOptions(out=str(tmp_path / "b"), steps=1, **kw))
    assert run(AlignOptions(out=str(tmp_path / "b"), steps=3, resume=True, **kw))["steps"] == 3
    a, b = (load_file(tmp_path / r / "pytorch_lora_weights.safetensors") for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sd_default_learning_rate_and_micro_batches(tiny, tmp_path):
    """Without --lr a Stable Diffusion run uses 1e-5 (the diffusers example's LoRA setting), a gaml
    teacher 1e-3; micro-batches of 1 pair give the same weights as whole batches on SD too."""
    from safetensors.torch import load_file

    from gaml_cli.methods.rpo.run import LR_GAML, LR_SD, AlignOptions, run

    _, path = tiny
    pairs = _pairs(tmp_path, size=16)
    kw = dict(model=str(path), pairs=str(pairs), batch_size=2, lora_rank=2, checkpoint_every=0, device="cpu",
              method="rpo", steps=2)
    run(AlignOptions(out=str(tmp_path / "a"), **kw))
    run(AlignOptions(out=str(tmp_path / "b"), micro_batch=1, **kw))
    meta = json.loads((tmp_path / "a" / "align.json").read_text())
    assert meta["align"]["lr"] == LR_SD == 1e-5 and LR_GAML == 1e-3
    a, b = (load_file(tmp_path / r / "pytorch_lora_weights.safetensors") for r in ("a", "b"))
    assert any(float(v.abs().sum()) > 0 for k, v in a.items() if "lora_B" in k)
    # Adam's first steps are nearly sign(g) * lr, so coordinates whose gradient is rounding noise can
    # differ by 2 lr; the weights as a whole agree
    va, vb = (torch.cat([t[k].flatten().double() for k in sorted(t)]) for t in (a, b))
    assert float((va - vb).norm() / va.norm()) < 1e-3, float((va - vb).norm() / va.norm())
