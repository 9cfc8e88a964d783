"""Stable Diffusion behind gaml's denoiser interface D(x; sigma, c).

SD's UNet predicts epsilon (SD 1.x) or v (SD 2.x 768) for the variance-preserving chain
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps. Writing x = x_t / sqrt(abar_t) gives the
variance-exploding form x = x0 + sigma eps with sigma_t = sqrt((1 - abar_t) / abar_t)
(EDM Sec. 2 / Appendix C.1, the same map k-diffusion uses), so

    D(x; sigma, c) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma), c)          (epsilon)
    D(x; sigma, c) = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) * v(...)         (v)

with t(sigma) interpolated linearly in log sigma between the scheduler's 1000 levels.
The VAE (with its scaling factor), the CLIP text encoder and the empty-prompt embedding
(the unconditional input of classifier-free guidance) come with the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..core.errors import InputError


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


class VPEpsDenoiser(nn.Module):
    """Wrap an epsilon- or v-prediction UNet2DConditionModel as an EDM denoiser."""

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise InputError(f"unsupported prediction type {prediction_type!r} (epsilon or v_prediction)")
        self.unet = unet
        self.prediction_type = prediction_type
        self.register_buffer("sigmas", sigmas_from_alphas_cumprod(alphas_cumprod.double()).float(), persistent=False)
        self.register_buffer("log_sigmas", self.sigmas.log(), persistent=False)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep for sigma: linear interpolation in log sigma (k-diffusion's map)."""
        log_sigma = sigma.float().log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        idx = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.log_sigmas) - 1)
        lo, hi = self.log_sigmas[idx - 1], self.log_sigmas[idx]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return (idx - 1).float() + w

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float().clamp(0, len(self.sigmas) - 1)
        lo = t.floor().long().clamp(max=len(self.sigmas) - 2)
        w = t - lo.float()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1]).exp()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1).expand(len(x)) if sigma.numel() == 1 else sigma
        s = sigma.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        c_in = 1 / (s**2 + 1).sqrt()
        t = self.sigma_to_t(sigma)
        out = self.unet(x * c_in, t.to(x.dtype), encoder_hidden_states=cond).sample
        if self.prediction_type == "epsilon":
            return x - s * out
        return x / (s**2 + 1) - s * c_in * out


@dataclass
class SDComponents:
    denoiser: VPEpsDenoiser
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    scaling_factor: float
    path: Path

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP last hidden states, padded to the tokenizer's max length (77 for SD)."""
        dev = next(self.text_encoder.parameters()).device
        ids = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(dev))[0]

    def null_condition(self, n: int) -> torch.Tensor:
        return self.encode_prompts([""]).expand(n, -1, -1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1]."""
        return self.vae.decode(latents / self.scaling_factor).sample.clamp(-1, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.mean * self.scaling_factor

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        u = self.denoiser.unet.config
        return (u.in_channels, u.sample_size, u.sample_size)


def load_sd(name: str, device="cpu", dtype: torch.dtype = torch.float32, option: str = "--teacher") -> SDComponents:
    """Load an SD 1.x/2.x pipeline folder (alias, hub id or path) through diffusers, offline-safe.

    Only safetensors weights are read (use_safetensors=True); a folder without them fails
    with one clear line rather than falling back to pickles."""
    from ..core import hub

    path = hub.resolve(name, option=option)
    if not (Path(path) / "model_index.json").is_file():
        raise InputError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
    try:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as exc:
        raise InputError(f"Stable Diffusion needs diffusers and transformers: pip install 'gaml[diffusion]' ({exc})") from None
    _quiet_libraries()
    kw = dict(local_files_only=True)
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", use_safetensors=True, torch_dtype=dtype, **kw)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", use_safetensors=True, torch_dtype=dtype, **kw)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", use_safetensors=True,
                                                     torch_dtype=dtype, **kw)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **kw)
    except (OSError, ValueError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot load the Stable Diffusion pipeline ({first})") from None
    denoiser = VPEpsDenoiser(unet, scheduler.alphas_cumprod, scheduler.config.prediction_type)
    for m in (denoiser, vae, text_encoder):
        m.to(device).eval().requires_grad_(False)
    return SDComponents(denoiser, vae, text_encoder, tokenizer, float(vae.config.scaling_factor), Path(path))


def _quiet_libraries() -> None:
    """No download/loading bars from diffusers/transformers on our stderr (we draw our own)."""
    try:
        import diffusers.utils.logging as dlog

        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
    except Exception:  # pragma: no cover - optional
        pass
    try:
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except Exception:  # pragma: no cover - optional
        pass


def is_pipeline_folder(path) -> bool:
    return Path(path).is_dir() and (Path(path) / "model_index.json").is_file()


def load_sd_generator(path, config: dict, device="cpu", dtype: torch.dtype = torch.float32) -> SDComponents:
    """A `gaml distill` Stable Diffusion generator: the base pipeline's VAE and text encoder with
    the distilled UNet from the run folder (config["sd"]["unet"], a diffusers folder)."""
    sd = config["sd"]
    unet_dir = Path(path).parent / sd.get("unet", "unet")
    if not (unet_dir / "config.json").is_file():
        raise InputError(f"{path}: its UNet folder {unet_dir} is missing")
    comp = load_sd(sd["pipeline"], device=device, dtype=dtype, option="--model")
    comp.denoiser.unet = _unet_folder(unet_dir, dtype, "distilled").to(device).eval().requires_grad_(False)
    return comp


def _unet_folder(unet_dir: Path, dtype: torch.dtype, what: str):
    """A diffusers UNet folder a gaml run wrote (distilled or aligned); one line when it cannot load."""
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel.from_pretrained(unet_dir, use_safetensors=True, torch_dtype=dtype,
                                                    local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"{unet_dir}: cannot load the {what} UNet ({str(exc).splitlines()[0]})") from None


ALIGN_CONFIG = "align.json"  # a `gaml align` run of a Stable Diffusion pipeline names its base here
LORA_FILE = "pytorch_lora_weights.safetensors"  # its LoRA weights (diffusers' load_lora_weights format)


def sd_align_config(path) -> dict | None:
    """The align.json of a `gaml align` run folder made from a Stable Diffusion pipeline, else None."""
    import json

    p = Path(path) / ALIGN_CONFIG
    if not (Path(path).is_dir() and p.is_file()):
        return None
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not readable JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("kind") != "sd-align" or "pipeline" not in cfg:
        raise InputError(f"{p}: not a gaml align run of a Stable Diffusion pipeline (kind sd-align, pipeline)")
    return cfg


def load_sd_aligned(path, config: dict, device="cpu", dtype: torch.dtype = torch.float32) -> SDComponents:
    """A `gaml align` run of an SD pipeline: the base pipeline (config["pipeline"]) with the run's
    LoRA weights loaded into its UNet, or with the run's full fine-tuned unet/."""
    run = Path(path)
    comp = load_sd(config["pipeline"], device=device, dtype=dtype, option="--model")
    unet = comp.denoiser.unet
    if config.get("lora"):
        f = run / config["lora"]
        if not f.is_file():
            raise InputError(f"{run}: its LoRA weights {f.name} are missing")
        try:
            unet.load_lora_adapter(str(run), weight_name=config["lora"], prefix="unet", adapter_name="align")
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{f}: cannot load the LoRA weights ({str(exc).splitlines()[0]})") from None
    else:
        unet_dir = run / config.get("unet", "unet")
        if not (unet_dir / "config.json").is_file():
            raise InputError(f"{run}: its UNet folder {unet_dir.name}/ is missing")
        unet = _unet_folder(unet_dir, dtype, "aligned")
    comp.denoiser.unet = unet.to(device).eval().requires_grad_(False)
    return comp
