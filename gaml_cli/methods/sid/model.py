"""The three SiD networks around one teacher: the frozen teacher f_phi, the fake score f_psi and
the generator G_theta, both initialised as copies of the teacher (SiD Sec. 4).

Two teacher families share the loop in train.py through this small interface:

- `GamlTeacher`: an EDM teacher gaml trained (`gaml train`; aliases digits, shapes): class
  labels or captions through the text encoder inside the teacher, pixel space.
- `SDTeacher`: a Stable Diffusion 1.x/2.x pipeline (alias sd15, hub id or folder): its UNet
  behind the EDM adapter (diffusion/sd.py), latent space, prompts through the frozen CLIP
  text encoder, the empty prompt as the unconditional input.

Each gives: conditions to draw (data-free: only labels or prompts), their encoding, the null
condition, the noise levels of both losses and the fake score's loss weight.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ...core.errors import InputError, UsageError
from .loss import edm_weight, eps_weight, sigma_of_t

# Module names LoRA adapts in diffusers UNets (attention projections, ResNet convolutions,
# the transformer blocks' feed-forward layers in SD).
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "time_emb_proj",
                "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


class GamlTeacher:
    family = "edm"

    def __init__(self, path: Path, device: torch.device, prompts: list[str] | None = None):
        from ...diffusion.io import load_model

        self.path = Path(path)
        self.net, info = load_model(path, kinds=("teacher",), device=device)
        self.config = info.config
        self.device = device
        self.x_shape = tuple(self.config["model"]["image_shape"])
        self.sigma_data = float(self.config["model"].get("sigma_data", 0.5))
        self.sigma_min, self.sigma_max = 0.002, 80.0
        self.cond_type = self.net.cond_type
        self.prompts = prompts
        if prompts is not None and self.cond_type != "text":
            raise UsageError(f"--prompts needs a text-conditional teacher; this one is {self.cond_type}-conditional")
        self.attributes = (self.config.get("data") or {}).get("attributes")
        if self.cond_type == "text" and prompts is None and not self.attributes:
            raise UsageError("this text-conditional teacher has no caption attributes; give --prompts FILE")

    default_sigma_init = 2.5
    default_t_range = (0, 800)

    @property
    def dataset(self) -> str | None:
        return (self.config.get("data") or {}).get("dataset")

    def core(self, module: nn.Module) -> nn.Module:
        """The part LoRA adapts and gradient checkpointing wraps: the UNet."""
        return module.unet

    def trainable_copy(self) -> nn.Module:
        return copy.deepcopy(self.net).train().requires_grad_(True)

    def draw_conditions(self, n: int, gen: torch.Generator) -> list[Any] | None:
        if self.cond_type == "class":
            return torch.randint(self.net.num_classes, (n,), generator=gen).tolist()
        if self.cond_type == "text":
            if self.prompts is not None:
                return [self.prompts[i] for i in torch.randint(len(self.prompts), (n,), generator=gen).tolist()]
            a = self.attributes
            out = []
            for _ in range(n):
                shape = a["shape"][int(torch.randint(len(a["shape"]), (1,), generator=gen))]
                color = a["color"][int(torch.randint(len(a["color"]), (1,), generator=gen))]
                bgs = [b for b in a["background"] if b != color]
                out.append(f"a {color} {shape} on a {bgs[int(torch.randint(len(bgs), (1,), generator=gen))]} background")
            return out
        return None

    def encode(self, conds: Sequence[Any] | None, n: int) -> torch.Tensor | None:
        return self.net.encode_condition(conds, n, self.device)

    def null(self, n: int) -> torch.Tensor | None:
        return self.net.null_condition(n, self.device)

    def fake_sigma(self, n: int, gen: torch.Generator, dc) -> torch.Tensor:
        """EDM training noise: ln sigma ~ N(P_mean, P_std^2) (the teacher's own loss)."""
        return (torch.randn(n, generator=gen) * dc.p_std + dc.p_mean).exp().to(self.device)

    def fake_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return edm_weight(sigma, self.sigma_data)

    def gen_sigma(self, n: int, gen: torch.Generator, dc) -> torch.Tensor:
        """t ~ U[t_min, t_max] / 1000, sigma = sigma_of_t(t) on EDM's [0.002, 80] (SiD Sec. 4)."""
        t = (dc.t_min + torch.rand(n, generator=gen) * (dc.t_max - dc.t_min)) / 1000.0
        return sigma_of_t(t, self.sigma_min, self.sigma_max).to(self.device)

    def describe(self) -> dict[str, Any]:
        return {"family": "gaml", "path": str(self.path), "cond": self.cond_type, "dataset": self.dataset}


class SDTeacher:
    family = "sd"
    default_t_range = (20, 980)
    INIT_TIMESTEP = 625  # SiD-LSG's t_init for SD (sigma ~ 2.5)

    def __init__(self, name: str, device: torch.device, prompts: list[str] | None, dtype=torch.float32):
        from ...diffusion.sd import load_sd

        if not prompts:
            raise UsageError("a Stable Diffusion teacher needs --prompts FILE (text or JSONL, one prompt a line); "
                             "SiD-LSG trains on captions only, no images")
        self.comp = load_sd(name, device=device, dtype=dtype, option="--teacher")
        self.path = self.comp.path
        self.net = self.comp.denoiser
        self.device = device
        self.prompts = prompts
        self.cond_type = "text"
        self.x_shape = self.comp.latent_shape
        self.sigma_min, self.sigma_max = self.net.sigma_min, self.net.sigma_max
        self._null = None

    @property
    def default_sigma_init(self) -> float:
        return float(self.net.sigmas[self.INIT_TIMESTEP])

    dataset = None

    def core(self, module: nn.Module) -> nn.Module:
        return module.unet

    def trainable_copy(self) -> nn.Module:
        from ...diffusion.sd import VPEpsDenoiser

        abar = 1.0 / (1.0 + self.net.sigmas.double() ** 2)
        unet = copy.deepcopy(self.net.unet).float().train().requires_grad_(True)
        return VPEpsDenoiser(unet, abar, self.net.prediction_type).to(self.device)

    def draw_conditions(self, n: int, gen: torch.Generator) -> list[str]:
        return [self.prompts[i] for i in torch.randint(len(self.prompts), (n,), generator=gen).tolist()]

    def encode(self, conds: Sequence[str], n: int) -> torch.Tensor:
        return self.comp.encode_prompts(list(conds)).float()

    def null(self, n: int) -> torch.Tensor:
        if self._null is None:
            self._null = self.comp.encode_prompts([""]).float()
        return self._null.expand(n, -1, -1)

    def _timestep_sigma(self, n: int, gen: torch.Generator, dc) -> torch.Tensor:
        t = torch.randint(dc.t_min, dc.t_max, (n,), generator=gen)
        return self.net.sigmas.cpu()[t].to(self.device)

    def fake_sigma(self, n: int, gen: torch.Generator, dc) -> torch.Tensor:
        """t ~ randint(t_min, t_max) of the 1000 DDPM steps, as in SiD-LSG for both losses."""
        return self._timestep_sigma(n, gen, dc)

    gen_sigma = fake_sigma

    def fake_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return eps_weight(sigma)

    def describe(self) -> dict[str, Any]:
        return {"family": "sd", "path": str(self.path), "cond": "text",
                "prediction_type": self.net.prediction_type}


def load_teacher(name: str, device: torch.device, prompts: list[str] | None, dtype=torch.float32):
    """A gaml teacher artifact or alias (digits, shapes, PATH.safetensors) or an SD pipeline."""
    from ...core import hub
    from ...core.artifacts import read_header
    from ...diffusion.sd import is_pipeline_folder

    path = hub.resolve(name, option="--teacher")
    if is_pipeline_folder(path):
        return SDTeacher(str(path), device, prompts, dtype=dtype)
    if Path(path).is_dir():
        raise InputError(f"{path}: neither a diffusers pipeline folder (model_index.json) nor a gaml teacher artifact")
    kind = read_header(path).kind
    if kind != "teacher":
        raise InputError(f"{path}: is a '{kind}' artifact; --teacher needs a 'teacher' (gaml train) or an SD pipeline")
    return GamlTeacher(Path(path), device, prompts)


# -- LoRA (peft) ------------------------------------------------------------------------------
def add_lora(module: nn.Module, rank: int, seed: int) -> None:
    """Freeze `module` and inject rank-r LoRA adapters (peft) into its attention/conv layers;
    only the adapters train. B starts at zero, so the adapted network equals the teacher."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise UsageError("--lora-rank needs peft: pip install 'gaml[diffusion]'") from None
    names = [n for n, _ in module.named_modules()]
    targets = [t for t in LORA_TARGETS if any(n == t or n.endswith("." + t) for n in names)]
    module.requires_grad_(False)
    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, lora_dropout=0.0), module)
    for n, p in module.named_parameters():
        p.requires_grad_("lora_" in n)


def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of `module` with any LoRA adapters merged into the base weights and the peft
    wrappers' names undone, so it loads into the plain architecture."""
    has_lora = any("lora_" in n for n, _ in module.named_parameters())
    if not has_lora:
        return {k: v.detach() for k, v in module.state_dict().items()}
    from peft.tuners.lora import LoraLayer

    m = copy.deepcopy(module)
    for sub in m.modules():
        if isinstance(sub, LoraLayer):
            sub.merge()
    out = {}
    for k, v in m.state_dict().items():
        if "lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v.detach()
    return out


def trainable_state(module: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    params = dict(module.named_parameters())
    return {n: params[n].detach().clone() for n in names}


def load_trainable(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    missing = [n for n in state if n not in params]
    if missing or len(state) == 0:
        raise InputError("checkpoint does not fit this run's networks (different teacher or --lora-rank?)")
    with torch.no_grad():
        for n, v in state.items():
            params[n].copy_(v.to(params[n].device, params[n].dtype))


# -- starting G from a finished run (--init-from) -------------------------------------------------
def read_init(name: str, teacher) -> tuple[Path, float]:
    """(generator artifact, its sigma_init) of a `gaml distill`/`gaml unlearn` run made from this
    teacher's family and architecture; InputError/UsageError with one line otherwise."""
    from ...core.artifacts import expect_kind, read_header

    from ...diffusion.io import run_artifact

    p = run_artifact(Path(name).expanduser())
    if not p.is_file():
        raise InputError(f"--init-from {name}: no generator.safetensors (give a gaml distill or unlearn run)")
    cfg = expect_kind(read_header(p), "generator").config
    if teacher.family == "sd":
        if "sd" not in cfg:
            raise UsageError(f"--init-from {name}: a gaml-teacher generator; this teacher is Stable Diffusion")
        if not (p.parent / cfg["sd"].get("unet", "unet") / "config.json").is_file():
            raise InputError(f"--init-from {name}: the run has no {cfg['sd'].get('unet', 'unet')}/ UNet folder")
    elif cfg.get("model") != teacher.config["model"]:
        raise UsageError(f"--init-from {name}: its generator has another architecture than the teacher")
    return p, float(cfg["generator"]["sigma_init"])


def load_generator_into(G: nn.Module, teacher, path: Path) -> None:
    """Copy a finished run's generator weights into G (the teacher's architecture)."""
    from ...core.artifacts import load_artifact, read_header

    if teacher.family == "sd":
        from diffusers import UNet2DConditionModel

        cfg = read_header(path).config
        unet = UNet2DConditionModel.from_pretrained(path.parent / cfg["sd"].get("unet", "unet"), use_safetensors=True)
        G.unet.load_state_dict(unet.state_dict())
        return
    art = load_artifact(path, "generator", framework="pt")
    G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in art.tensors.items()})
