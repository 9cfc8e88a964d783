"""Speed and peak memory of one Diffusion-DPO and one Diffusion-RPO step of `gaml align` on a
Stable Diffusion 1.5-sized UNet with random weights (no download: SD 1.5's UNet config written
out), LoRA rank 8 and full fine-tuning, batch 1 and 8 pairs (RPO needs 2 pairs: its batch 1 row
runs 2). The step is gaml's own (methods/rpo/train.py: prepare_policy, Reference, batch_backward,
AdamW), so the figures are those of `gaml align ... --model sd15` less the VAE encoding (done
once per run) and the text encoder (frozen; its states are computed once per run).

    python bench/align_sd_speed.py                    # full size; needs a GPU
    python bench/align_sd_speed.py --size tiny        # the same script at toy size (CPU check)

One JSON row per (method, LoRA, batch): iterations/s after warm-up, seconds per step, peak
GPU memory (torch.cuda.max_memory_allocated), the device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _cli import row  # noqa: E402

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, cross_attention_dim=32,
                 block_out_channels=(32, 64), attention_head_dim=8, norm_num_groups=8,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


def build(size: str, device):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from gaml_cli.diffusion.sd import VPEpsDenoiser

    cfg = SD15_UNET if size == "full" else TINY_UNET
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    den = VPEpsDenoiser(unet, sched.alphas_cumprod, "epsilon").to(device).eval().requires_grad_(False)
    tokens, dim = (77, cfg["cross_attention_dim"])
    return den, (4, cfg["sample_size"], cfg["sample_size"]), (tokens, dim)


def one_case(den, latent, text, method, lora_rank, batch, args, device):
    from gaml_cli.methods.rpo import train as T
    from gaml_cli.methods.rpo.sd import SDFamily

    ac = T.AlignConfig(method=method, batch_size=batch, lora_rank=lora_rank, lr=1e-5, precision=args.precision,
                       gradient_checkpointing=args.gradient_checkpointing, micro_batch=args.micro_batch)
    policy, _ = T.prepare_policy(den, ac)
    if ac.gradient_checkpointing:
        policy.unet.enable_gradient_checkpointing()
    ref = T.Reference(policy, lora=lora_rank > 0)
    fam = SDFamily(SimpleNamespace(denoiser=policy))
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ac.lr)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[ac.precision]
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else T.nullcontext
    g = torch.Generator().manual_seed(0)
    x_w, x_l = (torch.randn(batch, *latent, generator=g).to(device) for _ in range(2))
    cond = torch.randn(batch, *text, generator=g).to(device)
    emb = cond.mean(1)

    def step():
        sigma = fam.draw_sigma(batch, g, ac).to(device)
        noise = torch.randn(batch, *latent, generator=g).to(device)
        opt.zero_grad(set_to_none=True)
        T.batch_backward(ac, policy, policy, ref, x_w, x_l, cond, sigma, noise, emb, fam, autocast)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    row(kind="align-sd-step", size=args.size, method=method, lora_rank=lora_rank, batch=batch,
        precision=args.precision, gradient_checkpointing=args.gradient_checkpointing, micro_batch=args.micro_batch,
        trained_parameters=sum(p.numel() for p in params), it_per_s=round(1 / dt, 3), s_per_step=round(dt, 4),
        peak_gib=None if peak is None else round(peak, 2), device=str(torch.cuda.get_device_name()
                                                                        if device.type == "cuda" else "cpu"))
    del policy, ref, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["full", "tiny"], default="full")
    ap.add_argument("--methods", default="dpo,rpo")
    ap.add_argument("--lora-ranks", default="8,0")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--micro-batch", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.size == "full" and device.type == "cpu":
        sys.exit("the full-size rows need a GPU (use --size tiny to check the script on CPU)")
    den, latent, text = build(args.size, device)
    for method in args.methods.split(","):
        for rank in (int(r) for r in args.lora_ranks.split(",")):
            for b in (int(x) for x in args.batches.split(",")):
                one_case(den, latent, text, method, rank, max(b, 2) if method == "rpo" else b, args, device)


if __name__ == "__main__":
    main()
