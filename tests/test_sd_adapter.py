"""Stable Diffusion adapter on a tiny random pipeline saved to disk: the real loading code, offline."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from gaml_cli.core.errors import InputError, ModelNotFoundError  # noqa: E402
from gaml_cli.diffusion.sd import VPEpsDenoiser, load_sd  # noqa: E402
from sd_tiny import build_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd"))


def test_sigma_t_maps_are_inverse_and_exact_on_the_grid(tiny_sd):
    comp = load_sd(str(tiny_sd))
    den = comp.denoiser
    t = torch.tensor([0.0, 1.0, 250.0, 624.0, 999.0])
    assert torch.allclose(den.sigma_to_t(den.sigmas[t.long()]), t, atol=1e-3)
    tc = torch.tensor([10.3, 500.5, 998.9])
    assert torch.allclose(den.sigma_to_t(den.t_to_sigma(tc)), tc, atol=1e-3)
    # SD's scaled-linear schedule: sigma at t=624 is about 2.49 (SiD-LSG's t_init 625)
    assert den.sigmas[624].item() == pytest.approx(2.4925, abs=2e-3)


def test_epsilon_denoiser_is_x_minus_sigma_eps(tiny_sd):
    comp = load_sd(str(tiny_sd))
    den = comp.denoiser
    cond = comp.encode_prompts(["a cat", "a dog"])
    x = torch.randn(2, *comp.latent_shape)
    t = torch.tensor([100, 700])
    sigma = den.sigmas[t]
    with torch.no_grad():
        eps = den.unet(x / (sigma.view(-1, 1, 1, 1) ** 2 + 1).sqrt(), t.float(), encoder_hidden_states=cond).sample
        assert torch.allclose(den(x, sigma, cond), x - sigma.view(-1, 1, 1, 1) * eps, atol=1e-5)


def test_v_prediction_matches_diffusers_x0():
    """x0 = sqrt(abar) x_t - sqrt(1 - abar) v (diffusers' DDPM scheduler), in our VE variables."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type="v_prediction", clip_sample=False)
    v = torch.randn(1, 4, 2, 2)

    class FixedV(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states=None):
            return type("Out", (), {"sample": v})()

    den = VPEpsDenoiser(FixedV(), sched.alphas_cumprod, "v_prediction")
    t = 400
    abar = sched.alphas_cumprod[t]
    x_t = torch.randn(1, 4, 2, 2)
    x0_ref = sched.step(v, t, x_t).pred_original_sample
    x_ve = x_t / abar.sqrt()
    out = den(x_ve, den.sigmas[t].view(1), None)
    assert torch.allclose(out, x0_ref, atol=1e-5)


def test_load_through_alias_from_hf_cache_and_user_file(tiny_sd, _private_hf_home, tmp_path, monkeypatch):
    from test_registry_hub import fake_hf_snapshot

    snap = fake_hf_snapshot(_private_hf_home, "stable-diffusion-v1-5/stable-diffusion-v1-5", ["model_index.json"])
    shutil.rmtree(snap)
    shutil.copytree(tiny_sd, snap)
    comp = load_sd("sd15")
    assert comp.path == snap and comp.latent_shape == (4, 8, 8)
    cfg = tmp_path / "models.yaml"
    cfg.write_text(f"mine:\n  kind: sd-pipeline\n  path: {tiny_sd}\n")
    monkeypatch.setenv("GAML_MODELS", str(cfg))
    assert load_sd("mine").path == tiny_sd.resolve()


def test_missing_or_broken_pipeline_is_one_clear_line(tiny_sd, tmp_path):
    with pytest.raises(ModelNotFoundError, match="'sd15' not found locally"):
        load_sd("sd15")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(InputError, match="cannot load the Stable Diffusion pipeline"):
        load_sd(str(broken))


def test_gaml_sample_on_sd_pipeline(gaml, tiny_sd, tmp_path):
    out = tmp_path / "s.safetensors"
    res = gaml("sample", "--model", tiny_sd, "--prompt", "a cat", "-n", "3", "--steps", "2", "--batch-size", "2",
               "--device", "cpu", "--out", out, "-f", "json")
    assert res.code == 0, res.err
    facts = json.loads(res.out)
    assert facts["nfe"] == 3 and facts["guidance"] == 7.5
    from gaml_cli.core.artifacts import load_artifact

    art = load_artifact(out, "images")
    assert art["images"].shape == (3, 3, 16, 16)
    assert art.config["prompts"] == ["a cat"] * 3
    res = gaml("sample", "--model", "sd15", "--prompt", "x", "--out", tmp_path / "y.safetensors")
    assert res.code == 2 and len(res.err_lines) == 1 and "--model /path/to/sd15" in res.err
