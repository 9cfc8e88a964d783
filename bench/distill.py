"""Benchmark of `gaml distill` (SiD-LSG): one JSON row per line on stdout.

In one run, for each teacher given (default: the shipped digits teacher):
  - the teacher itself at 35 function evaluations (Heun, 18 steps), sampled at every
    --sample-seeds seed: FD and KID in each feature space of `gaml eval fd` (gaml's classifier,
    a scikit-learn MLP, pixels) as mean and sd over those seeds, accuracy, images/s;
  - the peer users would reach for first, the same teacher with fewer steps (1, 3, 10 NFE);
  - `gaml distill` at its defaults (or --steps K, --distill-args) for each --train-seeds seed,
    its FD curve against wall-clock (--eval-every), then the one-step generator at the same
    sampling seeds: every space, accuracy, images/s, the speed-up over 35 NFE and its FD over
    the teacher's in each space;
  - with --sida W: SiDA (`--real-data`, adversarial weight W) beside it, from scratch and as a
    fine-tune of the SiD run (--sida-finetune-steps);
  - the paper's reference numbers (CIFAR-10, SD1.5), as rows marked "reference" (not measured here).
With CUDA (--sd-step): one SiD-LSG iteration on a full-size SD1.5 UNet with random weights
(4x64x64 latents, 77x768 prompts) in bf16: iterations/s and peak memory per batch size, with
and without LoRA and gradient checkpointing, timed after one untimed warm-up iteration.

    python bench/distill.py                                   # digits, defaults (about 15 min on 2 cores)
    python bench/distill.py --train-seeds 5,7 --skip-peers --sida 1 --skip-sida-scratch
    python bench/distill.py --teacher shapes-teacher.safetensors --ref shapes --lsg 1.5
    python bench/distill.py --sd-step --batch-sizes 1,2,4,8   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _cli import gaml, row  # bench/ is on sys.path when a bench runs as a script

REFERENCE = [
    {"what": "SiD one-step, CIFAR-10 uncond (paper)", "fid": 1.923, "peer": "EDM teacher 35 NFE", "peer_fid": 1.97},
    {"what": "SiD one-step, CIFAR-10 cond (paper)", "fid": 1.710, "peer": "EDM teacher 35 NFE", "peer_fid": 1.79},
    {"what": "SiD-LSG SD1.5 one-step, LSG 1.5, COCO-30k (paper)", "fid": 8.71, "clip": 0.302,
     "peer": "SD1.5 50 steps cfg 3", "peer_fid": 8.59},
    {"what": "DMD2 SD1.5 one-step, COCO-30k (as cited by SiD-LSG)", "fid": 8.35},
]


def score(model: str, ref: str, n: int, tmp: Path, name: str, **sample_args) -> dict:
    out = tmp / f"{name}.safetensors"
    extra = [a for k, v in sample_args.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    s = gaml("sample", "--model", model, "-n", n, "--out", out, "--batch-size", 500, *extra)
    e = gaml("eval", "fd", "--images", out, "--ref", ref)
    spaces = {k: {"fd": round(v["fd"], 4), "fd_floor": round(v["fd_floor"], 4), "kid": round(v["kid"], 5),
                  "kid_se": round(v["kid_se"], 5)} for k, v in e["spaces"].items()}
    return {"fd": round(e["fd"], 4), "floor": round(e["floor"], 4), "ratio": round(e["ratio"], 3),
            "accuracy": e.get("accuracy"), "attribute_accuracy": e.get("attribute_accuracy"),
            "nfe": s["nfe"], "images_per_s": s["images_per_s"], "n": e["n"], "spaces": spaces}


def over_seeds(model: str, args, tmp: Path, name: str, **sample_args) -> dict:
    """The model sampled at every --sample-seeds seed: per space FD / KID mean and sd over the
    seeds (distill_compare.summarise), and the mean images/s."""
    from distill_compare import summarise

    evals, rates = [], []
    for seed in args.sample_seeds:
        out = tmp / f"{name}-s{seed}.safetensors"
        extra = [a for k, v in sample_args.items() for a in (f"--{k.replace('_', '-')}", str(v))]
        s = gaml("sample", "--model", model, "-n", args.n, "--seed", seed, "--out", out, "--batch-size", 500, *extra)
        evals.append(gaml("eval", "fd", "--images", out, "--ref", args.ref))
        rates.append(s["images_per_s"])
    return {**summarise(evals), "images_per_s": round(sum(rates) / len(rates), 1), "nfe": s["nfe"],
            "sample_seeds": args.sample_seeds}


def vs(one: dict, teacher: dict) -> dict:
    return {k: round(one[k]["fd"] / teacher[k]["fd"], 3) for k in one
            if isinstance(one[k], dict) and "fd" in one[k] and k in teacher}


def bench_teacher(args, tmp: Path) -> None:
    teacher, ref = args.teacher, args.ref
    kw = {"guidance": args.lsg} if args.lsg is not None else {}
    t35 = over_seeds(teacher, args, tmp, "t35", steps=18, **kw)
    row(bench="distill", data=ref, model="teacher", sampler="heun 18 steps", **t35)
    if not args.skip_peers:
        for sampler, steps in (("euler", 1), ("heun", 2), ("euler", 10)):
            r = score(teacher, ref, args.n, tmp, f"t{sampler}{steps}", steps=steps, sampler=sampler, **kw)
            row(bench="distill", data=ref, model="teacher, fewer steps (peer)", sampler=f"{sampler} {steps} steps",
                sample_seed=0, **r)
    sample_kw = {"prompts": args.prompts} if args.prompts else {}
    for train_seed in args.train_seeds:
        run = tmp / f"run-{train_seed}"
        dargs = ["--teacher", teacher, "--out", run, "--eval-every", args.eval_every, "--eval-n", args.n,
                 "--seed", train_seed, *args.distill_args]
        if args.steps:
            dargs += ["--steps", args.steps]
        if args.lsg is not None:
            dargs += ["--lsg", args.lsg]
        t0 = time.perf_counter()
        d = gaml("distill", *dargs)
        wall = time.perf_counter() - t0
        for rec in (json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()):
            if "fd" in rec:
                row(bench="distill", data=ref, curve="fd vs wall-clock", train_seed=train_seed, step=rec["step"],
                    seconds=rec["seconds"], fd=round(rec["fd"], 4), accuracy=rec.get("accuracy"))
        one = over_seeds(str(run), args, tmp, f"g1-{train_seed}", **sample_kw)
        label = f"SiD{'-LSG' if args.lsg else ''} one-step ({d['steps']} iterations)"
        row(bench="distill", data=ref, model=label, sampler="one step", train_seed=train_seed,
            distill_seconds=round(wall, 1), train_seconds=d["train_seconds"], **one,
            speedup_vs_35nfe=round(one["images_per_s"] / t35["images_per_s"], 1), fd_vs_teacher=vs(one, t35))
        if args.sida is not None:  # SiDA beside plain SiD: from scratch, and fine-tuning the SiD run
            for how, extra in (("from scratch", []), ("fine-tuning the SiD run",
                                                      ["--init-from", run, "--steps", args.sida_finetune_steps])):
                if not extra and args.skip_sida_scratch:
                    continue
                srun = tmp / f"sida-{train_seed}-{'ft' if extra else 'scratch'}"
                sargs = ["--teacher", teacher, "--out", srun, "--seed", train_seed, "--real-data", args.sida_data or ref,
                         "--adversarial-weight", args.sida, *args.distill_args]
                if args.lsg is not None:
                    sargs += ["--lsg", args.lsg]
                if args.steps and not extra:
                    sargs += ["--steps", args.steps]
                t0 = time.perf_counter()
                sd_ = gaml("distill", *sargs, *extra)
                swall = time.perf_counter() - t0
                sone = over_seeds(str(srun), args, tmp, f"sida-{train_seed}-{len(extra)}", **sample_kw)
                row(bench="distill", data=ref, model=f"SiDA one-step, adversarial weight {args.sida}, {how} "
                    f"({sd_['steps']} iterations)", sampler="one step", train_seed=train_seed,
                    distill_seconds=round(swall, 1), train_seconds=sd_["train_seconds"], **sone,
                    speedup_vs_35nfe=round(sone["images_per_s"] / t35["images_per_s"], 1), fd_vs_teacher=vs(sone, t35))


def sd15_unet(smoke: bool = False):
    """SD1.5's UNet architecture (860M parameters), random weights; smoke=True: 32..64 channels,
    to check the code path on a CPU."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64, 64, 64) if smoke else (320, 640, 1280, 1280), cross_attention_dim=768,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


class RandomSD:
    """A teacher with SD1.5's real shapes and schedule but random weights and random prompt
    embeddings (no VAE / CLIP needed to time the three-network step)."""

    family = "sd"
    cond_type = "text"
    dataset = None
    default_t_range = (20, 980)

    def __init__(self, device, dtype, smoke: bool = False):
        import torch

        from gaml_cli.diffusion.sd import VPEpsDenoiser

        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        abar = torch.cumprod(1 - betas, 0)
        self.net = VPEpsDenoiser(sd15_unet(smoke).to(device, dtype), abar).to(device).eval().requires_grad_(False)
        side = 16 if smoke else 64
        self.device, self.x_shape, self.path = device, (4, side, side), "random SD1.5 UNet"
        self.sigma_min, self.sigma_max = self.net.sigma_min, self.net.sigma_max
        self.default_sigma_init = float(self.net.sigmas[625])
        self._null = torch.zeros(1, 77, 768, device=device)

    def core(self, m):
        return m.unet

    def trainable_copy(self):
        import copy

        from gaml_cli.diffusion.sd import VPEpsDenoiser

        return VPEpsDenoiser(copy.deepcopy(self.net.unet).float().train().requires_grad_(True),
                             1 / (1 + self.net.sigmas.double() ** 2)).to(self.device)

    def draw_conditions(self, n, gen):
        return list(range(n))

    def encode(self, conds, n):
        import torch

        return torch.randn(n, 77, 768, device=self.device)

    def null(self, n):
        return self._null.expand(n, -1, -1)

    def fake_sigma(self, n, gen, dc):
        import torch

        return self.net.sigmas.cpu()[torch.randint(dc.t_min, dc.t_max, (n,), generator=gen)].to(self.device)

    gen_sigma = fake_sigma

    def fake_weight(self, sigma):
        from gaml_cli.methods.sid.loss import eps_weight

        return eps_weight(sigma)

    def describe(self):
        return {"family": "sd", "path": self.path}


def bench_sd_step(args) -> None:
    import torch

    from gaml_cli.core import console
    from gaml_cli.methods.sid.train import DistillConfig, distill

    smoke = not torch.cuda.is_available()
    if smoke and not args.sd_smoke:
        row(bench="distill-sd15-step", skipped="no CUDA device (--sd-smoke runs a narrow UNet on the CPU)")
        return
    console.set_options(quiet=True)
    from gaml_cli.diffusion.sd import _quiet_libraries

    _quiet_libraries()
    dev = torch.device("cpu" if smoke else "cuda")
    cuda = dev.type == "cuda"
    prec = "bf16" if cuda else "fp32"
    device_name = torch.cuda.get_device_name() if cuda else "cpu (smoke: 32-64 channel UNet, not SD1.5 size)"
    for lora in ((0, 4) if smoke else (0, 64)):
        for ckpt in (False, True):
            for b in (int(x) for x in args.batch_sizes.split(",")):
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                try:
                    t = RandomSD(dev, torch.float32 if smoke else torch.bfloat16, smoke=smoke)
                    dc = DistillConfig(steps=args.sd_iters, batch_size=b, lr=1e-6, lr_fake=1e-6, alpha=1.0,
                                       sigma_init=t.default_sigma_init, kappa1=1.5, kappa2=1.5, kappa4=1.5,
                                       p_uncond=0.1, t_min=20, t_max=980, ema_halflife_kimg=0 if lora else 50,
                                       precision=prec, gradient_checkpointing=ckpt, lora_rank=lora,
                                       checkpoint_every=0)
                    # one untimed iteration first: kernel selection and the allocator's first
                    # allocations would otherwise dominate a few timed iterations
                    with tempfile.TemporaryDirectory() as d:
                        distill(t, replace(dc, steps=1), Path(d), dev)
                    with tempfile.TemporaryDirectory() as d:
                        t0 = time.perf_counter()
                        _, rep, _ = distill(t, dc, Path(d), dev)
                        if cuda:
                            torch.cuda.synchronize()
                    secs = time.perf_counter() - t0
                    row(bench="distill-sd15-step", batch=b, lora_rank=lora, gradient_checkpointing=ckpt,
                        precision=prec, iterations=args.sd_iters, seconds=round(secs, 2),
                        iterations_per_s=round(args.sd_iters / rep["train_seconds"], 3),
                        images_per_s=round(args.sd_iters * b / rep["train_seconds"], 2),
                        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                        device=device_name)
                except torch.cuda.OutOfMemoryError:
                    row(bench="distill-sd15-step", batch=b, lora_rank=lora, gradient_checkpointing=ckpt,
                        precision=prec, oom=True)
                    break
                finally:
                    t = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="digits")
    ap.add_argument("--ref", default="digits")
    ap.add_argument("--lsg", type=float, default=None)
    ap.add_argument("--prompts", default=None)
    ap.add_argument("--steps", type=int, default=None, help="distill iterations (default: gaml distill's)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("-n", type=int, default=1000, help="samples per FD (and the eval batch)")
    ap.add_argument("--sample-seeds", default="0,1,2", help="sampling seeds of the teacher and each generator")
    ap.add_argument("--train-seeds", default="0", help="training seeds of gaml distill (one run each)")
    ap.add_argument("--distill-args", default="", help="extra gaml distill options, e.g. '--lr 3e-5'")
    ap.add_argument("--skip-peers", action="store_true", help="leave out the teacher at 1, 3 and 10 NFE")
    ap.add_argument("--sida", type=float, default=None, help="also run SiDA (--real-data) with this adversarial weight")
    ap.add_argument("--sida-data", default=None, help="SiDA's real images (default: --ref)")
    ap.add_argument("--sida-finetune-steps", type=int, default=200, help="SiDA iterations when fine-tuning the SiD run")
    ap.add_argument("--skip-sida-scratch", action="store_true", help="SiDA only as a fine-tune of the SiD run")
    ap.add_argument("--sd-step", action="store_true", help="time SiD-LSG on a full-size SD1.5 UNet (CUDA)")
    ap.add_argument("--sd-only", action="store_true")
    ap.add_argument("--sd-smoke", action="store_true", help="without CUDA: run the SD step on a narrow UNet on CPU")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16")
    ap.add_argument("--sd-iters", type=int, default=5)
    args = ap.parse_args()
    args.sample_seeds = [int(v) for v in args.sample_seeds.split(",")]
    args.train_seeds = [int(v) for v in args.train_seeds.split(",")]
    args.distill_args = args.distill_args.split()
    for r in REFERENCE:
        row(bench="distill", reference=True, **r)
    with tempfile.TemporaryDirectory() as d:
        if not args.sd_only:
            bench_teacher(args, Path(d))
    if args.sd_step or args.sd_only:
        bench_sd_step(args)


if __name__ == "__main__":
    main()
