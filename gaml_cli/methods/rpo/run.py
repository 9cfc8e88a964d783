"""The job behind `gaml align rpo` and `gaml align diffusion-dpo`, from one options object:

    from gaml_cli.methods.rpo.run import AlignOptions, run
    summary = run(AlignOptions(model="shapes", pairs="prefs/prefs.jsonl", out="runs/rpo"))

For gaml's caption-conditioned EDM teachers the run folder holds model.safetensors (a gaml
teacher artifact: `gaml sample --model RUN` samples it like any gaml model), checkpoints/ and
log.jsonl. For a Stable Diffusion 1.x/2.x pipeline (alias, hub id or folder) the UNet trains
behind gaml's adapter (methods/rpo/sd.py) and the run folder holds the LoRA weights
(pytorch_lora_weights.safetensors, for diffusers' `pipe.load_lora_weights(RUN)`) or unet/
(--lora-rank 0), and align.json naming the base pipeline; `gaml sample --model RUN` loads both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ...core.errors import UsageError

MODEL_FILE = "model.safetensors"
LR_GAML = 1e-3  # measured on shapes (docs/align.md)
LR_SD = 1e-5  # the diffusers Diffusion-DPO example's LoRA setting for SD 1.5 (not measured by gaml)


@dataclass
class AlignOptions:
    """The options of `gaml align rpo` / `gaml align diffusion-dpo`, by the same names."""

    model: str
    pairs: str
    out: str
    method: str = "rpo"  # rpo | dpo | sft (supervised fine-tuning on the chosen images: the peer)
    steps: int = 1000
    batch_size: int = 16
    lr: float | None = None  # None: LR_GAML for gaml's teachers, LR_SD for Stable Diffusion
    beta: float = 5000.0
    beta_convention: str = "original"
    loss: str = "sigmoid"
    tau: float = 0.5
    weight_placement: str = "inside"
    embeddings: str = "model"  # RPO's weights: model | clip-text | clip-image | clip (methods/rpo/embed.py)
    clip_model: str = "clip-l14"
    lora_rank: int = 8
    micro_batch: int = 0
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    limit: int | None = None
    checkpoint_every: int = 200
    resume: bool = False
    seed: int = 0
    device: str = "auto"


def check_out_dir(o: AlignOptions) -> Path:
    from ...core.paths import check_run_folder

    return check_run_folder(o.out, o.resume, f"{MODEL_FILE}, checkpoints/, log.jsonl")


def load_aligned_model(name: str, device):
    """A gaml caption-conditioned teacher (alias or artifact) -> (net, artifact info, path); a
    Stable Diffusion pipeline folder -> (SDComponents, None, path)."""
    from ...core import hub
    from ...core.artifacts import read_header
    from ...diffusion.io import load_model, run_artifact
    from ...diffusion.sd import is_pipeline_folder

    path = run_artifact(hub.resolve(name, option="--model"))
    if is_pipeline_folder(path):
        from ...diffusion.sd import load_sd

        return load_sd(str(path), device=device, option="--model"), None, Path(path)
    if Path(path).is_dir():
        raise UsageError(f"--model {name}: a folder that is neither a diffusers pipeline (model_index.json) nor "
                         "a gaml align run with model.safetensors")
    kind = read_header(path).kind
    if kind != "teacher":
        raise UsageError(f"--model {name}: a '{kind}' artifact; give a multi-step teacher (gaml train, or shapes)")
    net, info = load_model(path, kinds=("teacher",), device=device)
    if net.cond_type != "text":
        raise UsageError(f"--model {name}: {net.cond_type}-conditional; preference pairs need a caption-conditioned "
                         "model (shapes, or gaml train on an artifact with captions)")
    return net, info, Path(path)


def run(o: AlignOptions) -> dict[str, Any] | None:
    """Align o.model on the pairs in o.pairs; writes o.out/model.safetensors; returns the summary
    (None on the other processes of a multi-GPU run: rank 0 writes the run folder)."""
    from ...core import runtime
    from ...diffusion.io import save_model
    from ...diffusion.models import build
    from ..sid.model import merged_state_dict
    from .pairs import read_pairs
    from .train import AlignConfig, align

    for f in fields(o):
        v = getattr(o, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"--{f.name.replace('_', '-')} {v}: expected a finite number")
    ac = AlignConfig(method=o.method, steps=o.steps, batch_size=o.batch_size, lr=LR_GAML if o.lr is None else o.lr,
                     beta=o.beta,
                     beta_convention=o.beta_convention, loss=o.loss, tau=o.tau, placement=o.weight_placement,
                     lora_rank=o.lora_rank, checkpoint_every=o.checkpoint_every, seed=o.seed,
                     micro_batch=o.micro_batch, precision=o.precision,
                     gradient_checkpointing=o.gradient_checkpointing)
    ac.check()
    from .embed import EMBEDDINGS, pair_embeddings

    if o.embeddings not in EMBEDDINGS:
        raise UsageError(f"--embeddings must be one of {', '.join(EMBEDDINGS)}")
    if o.embeddings != "model" and o.method != "rpo":
        raise UsageError("--embeddings sets Diffusion-RPO's weights; the other methods have none")
    dev = runtime.pick_device(o.device)
    runtime.pick_dtype(o.precision, dev)  # fp16 on CPU: one line
    rank, _, dev = runtime.distributed(dev)
    out = check_out_dir(o) if rank == 0 else Path(o.out)
    net, info, model_path = load_aligned_model(o.model, dev)
    if info is None:
        if o.lr is None:
            ac.lr = LR_SD
        return _finish(_run_sd(o, ac, out, dev, net, model_path, rank))
    c, h, _ = net.config["image_shape"]
    pairs = read_pairs(o.pairs, size=h, channels=c, limit=o.limit)
    emb = pair_embeddings(o.embeddings, pairs.prompts, pairs.chosen, o.clip_model, dev) if o.method == "rpo" else None
    policy, report = align(net, pairs.prompts, pairs.chosen, pairs.rejected, ac, out, dev, resume=o.resume,
                           progress_label=o.method, embeddings=emb)
    if rank > 0:
        return _finish(None)
    final = build(info.config["model"])
    final.load_state_dict(merged_state_dict(policy))
    from dataclasses import asdict

    config = {**info.config, "align": {**asdict(ac), **_rpo_meta(o), "reconstruction": ac.method == "rpo",
                                       "pairs": str(o.pairs), "pair_counts": pairs.counts(), **report}}
    parents = [model_path] + ([o.pairs] if Path(o.pairs).is_file() else [])
    path = save_model(out / MODEL_FILE, final, kind="teacher", config=config, seed=o.seed, parents=parents)
    return _finish({"out": str(path), "method": ac.method, **pairs.counts(), **report})


def _rpo_meta(o: AlignOptions) -> dict[str, Any]:
    """What the run folder records of RPO's embeddings (nothing for the other methods)."""
    if o.method != "rpo":
        return {}
    return {"embeddings": o.embeddings, **({"clip_model": o.clip_model} if o.embeddings != "model" else {})}


def _finish(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """Close the process group of a multi-process run (after rank 0 has saved); pass the summary on."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    except ImportError:
        pass
    return summary


def _run_sd(o: AlignOptions, ac, out: Path, dev, comp, model_path: Path, rank: int = 0) -> dict[str, Any] | None:
    """The Stable Diffusion path of run(): pairs at the pipeline's resolution, VAE-encoded once,
    the UNet aligned behind the adapter, LoRA weights or unet/ plus align.json saved."""
    from dataclasses import asdict

    from ...core import console
    from .pairs import read_pairs
    from .sd import SDFamily, base_name, encode_images, pixel_size, save_sd_run
    from .train import align

    pairs = read_pairs(o.pairs, size=pixel_size(comp), channels=3, limit=o.limit)
    console.log(f"encoding {2 * len(pairs)} images with the VAE ({pixel_size(comp)} px -> latents "
                f"{tuple(comp.latent_shape)})")
    chosen = encode_images(comp, pairs.chosen, dev)
    rejected = encode_images(comp, pairs.rejected, dev)
    from .embed import pair_embeddings

    emb = pair_embeddings(o.embeddings, pairs.prompts, pairs.chosen, o.clip_model, dev) if o.method == "rpo" else None
    policy, report = align(comp.denoiser, pairs.prompts, chosen, rejected, ac, out, dev, resume=o.resume,
                           progress_label=o.method, family=SDFamily(comp), embeddings=emb)
    if rank > 0:
        return None
    meta = {**asdict(ac), **_rpo_meta(o), "reconstruction": ac.method == "rpo", "pairs": str(o.pairs),
            "pair_counts": pairs.counts(), **report}
    path = save_sd_run(policy, comp, out, ac.lora_rank, base_name(o.model, model_path), meta)
    return {"out": str(out), "config": str(path), "method": ac.method, **pairs.counts(), **report}
