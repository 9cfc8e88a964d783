"""gaml align: preference alignment of text-to-image diffusion models (Diffusion-RPO, Diffusion-DPO)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, PrecisionOpt, QuietOpt, joined_signature, out_folder, setup, value

app = typer.Typer(
    help="Preference alignment. Diffusion models: Diffusion-RPO (a reconstruction: its authors released no "
         "code) and Diffusion-DPO, on pairs of a chosen and a rejected image per prompt. Language models: SAPO "
         "(prompts and chosen answers only), and TRL's SFT, DPO and ORPO as peers.\n\nExample:\n\n\b\n"
         "    gaml dataset prefs --model shapes --oracle size -n 1000 --out prefs\n"
         "    gaml align rpo --model shapes --pairs prefs/prefs.jsonl --out runs/rpo\n"
         "    gaml sample --model runs/rpo --prompt \"a red circle on a blue background\" -n 16 --out s.safetensors\n"
         "    gaml dataset arithmetic --out data/arith\n"
         "    gaml align sapo --model arith-lm --data data/arith/train.jsonl --out runs/sapo --loss orpo",
    no_args_is_help=True,
)


class Loss(str, Enum):
    sigmoid = "sigmoid"
    hinge = "hinge"
    ipo = "ipo"


class BetaConvention(str, Enum):
    original = "original"
    diffusers = "diffusers"


class Placement(str, Enum):
    inside = "inside"
    outside = "outside"


class Embeddings(str, Enum):
    model = "model"
    clip_text = "clip-text"
    clip_image = "clip-image"
    clip = "clip"


def _options(
    model: Annotated[str, typer.Option("--model", "-m", help="The model to align: a gaml caption-conditioned teacher (shapes, or a gaml train artifact with captions) or a Stable Diffusion 1.x/2.x pipeline (sd15, a hub id or a diffusers folder; epsilon or v prediction; the UNet trains, VAE and text encoder stay frozen).")],
    pairs: Annotated[str, typer.Option("--pairs", "-p", help="Preference pairs: JSONL {\"prompt\", \"chosen\", \"rejected\"[, \"label\"]} (images relative to the file; label 0.5 = tie, dropped; 0 = swapped) or Pick-a-Pic v2 parquet shards (a file or folder).")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Run folder: checkpoints/, log.jsonl and the aligned model: model.safetensors (gaml teacher); for Stable Diffusion pytorch_lora_weights.safetensors (diffusers' pipe.load_lora_weights(RUN)) or unet/ (--lora-rank 0) and align.json naming the base pipeline. gaml sample --model RUN reads either.")],
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per step.")] = 16,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="AdamW learning rate (LoRA adapters, or the whole UNet with --lora-rank 0). Default: 1e-3 for gaml's teachers (measured on shapes), 1e-5 for Stable Diffusion (the diffusers Diffusion-DPO example's LoRA setting).")] = None,
    beta: Annotated[float, typer.Option(min=0.0, help="Diffusion-DPO's beta. In the original convention the loss is -log sigmoid(-beta/2 (model_diff - ref_diff)): the paper's 5000 for SD equals the diffusers example's 2500 with --beta-convention diffusers.")] = 5000.0,
    beta_convention: Annotated[BetaConvention, typer.Option(help="original: the scale is beta/2 (Salesforce's code); diffusers: the scale is beta (diffusers' example).")] = BetaConvention.original,
    loss: Annotated[Loss, typer.Option(help="sigmoid (DPO), hinge or ipo (the margin's loss).")] = Loss.sigmoid,
    lora_rank: Annotated[int, typer.Option(min=0, help="Rank of the LoRA adapters (peft) on the UNet; the reference is the same network with adapters off. 0: full fine-tuning against a frozen copy.")] = 8,
    micro_batch: Annotated[int, typer.Option(min=0, help="Pairs per forward pass (0: the whole per-process batch); the gradient is the whole batch's either way (Diffusion-RPO recomputes each micro-batch once more to keep its cross-pair terms exact).")] = 0,
    precision: PrecisionOpt = "fp32",
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute the UNet's activations in the backward pass (less memory, about a third more time).")] = False,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use at most this many pairs.")] = None,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N steps (0: at the end and on Ctrl-C).")] = 200,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the batches, noise levels and noise.")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """(Signature holder: the options both align commands take.)"""


def _rpo_options(
    tau: Annotated[float, typer.Option(min=0.0, help="Temperature of RPO's weights w_ij = softmax_j(-(1 - cos(e_i, e_j)) / tau) over the pairs' embeddings (0: each pair weighs only itself).")] = 0.5,
    embeddings: Annotated[Embeddings, typer.Option(help="What e_i is: model (the caption vectors the model itself conditions on), clip-text (CLIP's prompt embedding), clip-image (CLIP's embedding of the chosen image) or clip (both; the cosine is the mean of the two). The paper uses CLIP without saying how: these are gaml's choices.")] = Embeddings.model,
    clip_model: Annotated[str, typer.Option(help="CLIP for --embeddings clip*: alias (clip-l14), hub id or a local transformers folder.")] = "clip-l14",
    weight_placement: Annotated[Placement, typer.Option(help="inside: l(s w_ij logits_ij) averaged over j (the authors' LLM RPO code); outside: sum_j w_ij l(s logits_ij) (identity weights = Diffusion-DPO exactly).")] = Placement.inside,
):
    """(Signature holder: the options only rpo adds.)"""


def _run(method: str, kw: dict) -> None:
    setup(kw.pop("fmt"), kw.pop("quiet"))
    from ..core import console
    from ..core.paths import check_outputs
    from ..methods.rpo.run import AlignOptions, run

    kw = {k: value(v) for k, v in kw.items()}
    check_outputs({}, inputs={"--pairs": kw["pairs"], "--model": kw["model"]}, folders={"--out": kw["out"]})
    summary = run(AlignOptions(method=method, **kw))
    if summary is not None:  # None: a non-main process of a multi-GPU run
        console.summary(summary, title=f"align {method}")


def rpo(**kw):
    """Diffusion-RPO: Diffusion-DPO's per-timestep preference loss over every winner-loser
    combination of a batch, weighted by how related the pairs' prompts are.

    gaml's Diffusion-RPO is a RECONSTRUCTION from the paper (arXiv 2406.06382): its authors
    released no code. The weighting follows their public LLM RPO loss: the M x M margins
    logits_ij = s_w(i) - s_l(j) (s: how much the model lowered an image's denoising error
    below the reference's) weighted by softmax_j(-(1 - cos(e_i, e_j)) / tau) of the model's
    caption embeddings (or CLIP's: --embeddings). Each pair's winner and loser share one noise
    and one noise level. Several GPUs: `torchrun --nproc_per_node N -m gaml_cli align rpo ...`
    (or `accelerate launch -m gaml_cli align rpo ...`), same options; RPO's weights then span
    each process's pairs.

    Example:

    \b
        gaml dataset prefs --model shapes --oracle size -n 1000 --out prefs
        gaml align rpo --model shapes --pairs prefs/prefs.jsonl --out runs/rpo
        gaml sample --model runs/rpo --prompt "a red circle on a blue background" -n 16 --out s.safetensors
        gaml eval reward --images s.safetensors --oracle size
    """
    _run("rpo", kw)


def diffusion_dpo(**kw):
    """Diffusion-DPO (Wallace et al. 2023): the per-timestep preference loss on pairs with the
    same prompt, -log sigmoid(-beta/2 ((mse_w - mse_l) - (ref_w - ref_l))).

    Winner and loser share one noise and one noise level; ties are dropped; the reference is the
    starting model (LoRA adapters off, no second copy in memory). Errors are the denoiser's,
    weighted as in its own training loss (EDM's lambda(sigma) for gaml's teachers; for
    Stable Diffusion exactly the UNet's epsilon- or v-MSE at t ~ randint(0, 1000)). Several
    GPUs: `torchrun --nproc_per_node N -m gaml_cli align diffusion-dpo ...`, same options.

    Example:

    \b
        gaml align diffusion-dpo --model shapes --pairs prefs/prefs.jsonl --out runs/dpo
        gaml sample --model runs/dpo --prompt "a red circle on a blue background" -n 16 --out s.safetensors
        gaml align diffusion-dpo --model sd15 --pairs pickapic/ --limit 2000 --out runs/sd-dpo
    """
    _run("dpo", kw)





rpo.__signature__ = joined_signature(_options, _rpo_options, before="device")
diffusion_dpo.__signature__ = joined_signature(_options, before="device")
app.command("rpo")(rpo)
app.command("diffusion-dpo")(diffusion_dpo)
