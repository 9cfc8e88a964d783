"""gaml align sapo | sft | dpo | orpo | generate | init-lm: preference alignment of causal
language models. SAPO is gaml's own loop (methods/sapo); SFT, DPO and ORPO run through TRL.
These commands join the `align` group (app.py registers COMMANDS into it)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, PrecisionOpt, QuietOpt, check_out, joined_signature, out_file, out_folder, setup, value


class SapoLoss(str, Enum):
    dpo = "dpo"
    hinge = "hinge"
    orpo = "orpo"


class DpoLoss(str, Enum):
    sigmoid = "sigmoid"
    hinge = "hinge"


class Optim(str, Enum):
    adamw = "adamw"
    rmsprop = "rmsprop"


class Arch(str, Enum):
    llama = "llama"
    gpt2 = "gpt2"


MODEL_HELP = ("The causal LM: a transformers model folder, a hub id or alias (loaded offline from the HF cache), "
              "or a gaml LM align run (a peft adapter is loaded onto its base).")


def _options(
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Run folder: the aligned model as transformers/peft load it (adapter_config.json + adapter_model.safetensors naming the base folder, or a full model folder), the tokenizer, align.json, checkpoints/ and log.jsonl.")],
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 200,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per optimizer step.")] = 8,
    lr: Annotated[float, typer.Option(min=0.0, help="Learning rate (constant).")] = 5e-5,
    lora_rank: Annotated[int, typer.Option(min=0, help="Rank of peft LoRA adapters on every linear layer but the head; 0: train all weights.")] = 16,
    precision: PrecisionOpt = "fp32",
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute activations in the backward pass (less memory, more time).")] = False,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use at most this many records.")] = None,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N steps (0: at the end and on Ctrl-C).")] = 100,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the data order, LoRA init, cut points, draws and sampling.")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """(Signature holder: the options every LM align command takes.)"""


def _sapo_options(
    data: Annotated[str, typer.Option("--data", "-d", help="JSONL of {\"prompt\", \"chosen\"}, TRL's {\"prompt\", \"completion\"} or {\"messages\": [...]} (the last, assistant message is the chosen answer; the model's chat template renders it). Only the chosen side: SAPO makes the rejected ones.")],
    loss: Annotated[SapoLoss, typer.Option(help="dpo (sigmoid) or hinge against a reference refreshed from the EMA model; orpo: no reference.")] = SapoLoss.dpo,
    beta: Annotated[Optional[float], typer.Option(help="DPO's beta (default 0.1) or ORPO's lambda (default 0.05).")] = None,
    ema_beta: Annotated[float, typer.Option(min=0.0, max=0.999, help="EMA decay: theta_ema <- ema_beta theta_ema + (1 - ema_beta) theta after every step.")] = 0.5,
    segment_length: Annotated[int, typer.Option(min=1, help="Most tokens the EMA model regenerates after the cut point.")] = 256,
    buffer_size: Annotated[int, typer.Option(min=1, help="Replay buffer size (FIFO); draws favour items drawn fewer times (weight 1/(1 + draws)).")] = 2000,
    ref_sync_steps: Annotated[int, typer.Option(min=1, help="Copy the EMA model into the reference every N steps.")] = 100,
    top_k: Annotated[int, typer.Option(min=0, help="Segment sampling: top-k (0: off).")] = 50,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Segment sampling: nucleus top-p.")] = 0.95,
    temperature: Annotated[float, typer.Option(min=0.0, help="Segment sampling temperature (0: greedy).")] = 0.7,
    micro_batch: Annotated[Optional[int], typer.Option(min=1, help="Compute the loss in micro-batches of this size (one generation per step); must divide --batch-size.")] = None,
    optimizer: Annotated[Optim, typer.Option(help="adamw, or rmsprop (the authors' SAPO-DPO runs).")] = Optim.adamw,
):
    """(Signature holder: SAPO's own options.)"""


def _pairs_option(
    pairs: Annotated[str, typer.Option("--pairs", "-p", help="TRL's preference pairs: JSONL {\"prompt\", \"chosen\", \"rejected\"} (strings, or conversational lists of messages).")],
    beta: Annotated[Optional[float], typer.Option(help="DPO's beta / ORPO's lambda (default: TRL's, 0.1).")] = None,
):
    """(Signature holder: the pairs of dpo and orpo.)"""


def _dpo_loss(
    loss: Annotated[DpoLoss, typer.Option(help="sigmoid (DPO) or hinge.")] = DpoLoss.sigmoid,
):
    """(Signature holder.)"""


def _sft_data(
    data: Annotated[str, typer.Option("--data", "-d", help="JSONL of {\"prompt\", \"completion\"}, {\"prompt\", \"chosen\"} or {\"messages\": [...]}; the loss is on the completion only.")],
):
    """(Signature holder.)"""


def _check_paths(kw: dict, data_key: str) -> None:
    from ..core.paths import check_outputs

    check_outputs({}, inputs={f"--{data_key}": kw[data_key], "--model": kw["model"]}, folders={"--out": kw["out"]})


def sapo(**kw):
    """SAPO: self-augmented preference optimisation of a causal LM from prompts and chosen answers only.

    Every step an EMA copy of the policy cuts each chosen answer at a random point and
    regenerates a segment; the spliced answer is the rejected one. The pairs pass through a
    FIFO replay buffer drawn toward rarely drawn items; the loss is DPO (or hinge) against a
    reference refreshed from the EMA every --ref-sync-steps, or ORPO without a reference
    (arXiv 2405.20830). gaml's own explicit loop on transformers (not TRL).

    Example:

    \b
        gaml dataset arithmetic --out data/arith
        gaml align sapo --model arith-lm --data data/arith/train.jsonl --loss orpo --lora-rank 0 --lr 1e-4 --batch-size 32 --segment-length 8 --out runs/sapo
        gaml align generate --model runs/sapo --prompts data/arith/test.jsonl > sapo.jsonl
        gaml eval answers --completions sapo.jsonl --data data/arith/test.jsonl
    """
    setup(kw.pop("fmt"), kw.pop("quiet"))
    from ..core import console
    from ..methods.sapo.run import SapoOptions, run

    kw = {k: value(v) for k, v in kw.items()}
    _check_paths(kw, "data")
    summary = run(SapoOptions(**kw))
    if summary is not None:  # None: a non-main process of a multi-process run
        console.summary(summary, title="align sapo")


def _peer(method: str, kw: dict, data_key: str) -> None:
    setup(kw.pop("fmt"), kw.pop("quiet"))
    from ..core import console
    from ..methods.sapo.peers import PeerOptions, run_peer

    kw = {k: value(v) for k, v in kw.items()}
    _check_paths(kw, data_key)
    kw["data"] = kw.pop(data_key)
    console.summary(run_peer(PeerOptions(method=method, **kw)), title=f"align {method}")


def sft(**kw):
    """Supervised fine-tuning on prompts and answers through TRL's SFTTrainer (the loss on the answers only).

    Example:

    \b
        gaml align sft --model arith-lm --data data/arith/train.jsonl --out runs/sft
        gaml align init-lm --out runs/arith-init
        gaml align sft --model runs/arith-init --data data/arith/train.jsonl --lora-rank 0 --lr 1e-3 --out runs/arith-start
    """
    _peer("sft", kw, "data")


def dpo(**kw):
    """DPO on chosen/rejected pairs through TRL's DPOTrainer (reference: the starting model).

    Example:

    \b
        gaml align dpo --model arith-lm --pairs pairs.jsonl --out runs/dpo
    """
    _peer("dpo", kw, "pairs")


def orpo(**kw):
    """ORPO on chosen/rejected pairs through TRL's ORPO trainer (trl.experimental), no reference.

    Example:

    \b
        gaml align orpo --model arith-lm --pairs pairs.jsonl --out runs/orpo
    """
    _peer("orpo", kw, "pairs")


def generate(
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)],
    prompts: Annotated[str, typer.Option("--prompts", help="Prompts: a text file, one prompt a line, or JSONL with a 'prompt' field.")],
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most tokens generated per prompt.")] = 32,
    temperature: Annotated[float, typer.Option(min=0.0, help="0: greedy; above 0: sampling, each prompt from its own seed.")] = 0.0,
    top_k: Annotated[int, typer.Option(min=0, help="Sampling: top-k (0: off).")] = 0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Sampling: nucleus top-p.")] = 1.0,
    seed: Annotated[int, typer.Option(min=0, help="Base seed of the per-prompt sampling seeds.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per batch (greedy).")] = 64,
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".jsonl", stdout=True), help="Where the JSONL goes: '-' (stdout) or a .jsonl file (written atomically).")] = "-",
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
):
    """Complete prompts with a causal LM: JSONL {"prompt", "completion"} on stdout, one line per prompt in input order.

    Example:

    \b
        gaml align generate --model arith-lm --prompts data/arith/test.jsonl > start.jsonl
        gaml eval answers --completions start.jsonl --data data/arith/test.jsonl
    """
    setup("human", quiet)
    from ..core import console, runtime
    from ..core.artifacts import JsonlWriter
    from ..methods.sapo.data import read_prompts
    from ..methods.sapo.generate import complete
    from ..methods.sapo.lm import load_lm

    check_out(out, ".jsonl", inputs={"--prompts": prompts}, stdout_ok=True)
    items = read_prompts(prompts)
    dev = runtime.pick_device(value(device))
    lm, tok, _ = load_lm(model, device=dev)
    with JsonlWriter(out) as w, console.progress(len(items), "generate") as bar:
        for rec in complete(lm, tok, items, max_new_tokens, temperature, top_k, top_p, seed, batch_size, dev):
            w.write(rec)
            bar.update(1)


def init_lm(
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Model folder to write (config.json, model.safetensors, tokenizer).")],
    arch: Annotated[Arch, typer.Option(help="llama (Llama-style: RMSNorm, RoPE, SwiGLU, grouped-query attention) or gpt2.")] = Arch.llama,
    layers: Annotated[int, typer.Option(min=1, help="Transformer blocks.")] = 4,
    hidden: Annotated[int, typer.Option(min=8, help="Hidden size.")] = 128,
    heads: Annotated[int, typer.Option(min=1, help="Attention heads.")] = 4,
    context: Annotated[int, typer.Option(min=8, help="Context length in tokens (characters).")] = 64,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the random weights.")] = 0,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Write a small causal LM with random weights and a character-level tokenizer (a starting point for gaml align sft).

    Example:

    \b
        gaml align init-lm --out runs/arith-init
        gaml align sft --model runs/arith-init --data data/arith/train.jsonl --lora-rank 0 --lr 1e-3 --out runs/arith-start
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core import console
    from ..core.errors import UsageError
    from ..core.paths import probe_writable_dir
    from ..methods.sapo.tiny import build_tiny_lm

    if Path(out).exists() and any(Path(out).iterdir()):
        raise UsageError(f"--out {out} is not empty; pick a new folder")
    if hidden % heads:
        raise UsageError(f"--hidden {hidden} must be a multiple of --heads {heads}")
    probe_writable_dir(out, "--out")
    console.summary(build_tiny_lm(out, value(arch), layers, hidden, heads, context, seed), title="align init-lm")


sapo.__signature__ = joined_signature(_options, _sapo_options, before="steps")
sft.__signature__ = joined_signature(_options, _sft_data, before="steps")
dpo.__signature__ = joined_signature(_options, _pairs_option, _dpo_loss, before="steps")
orpo.__signature__ = joined_signature(_options, _pairs_option, before="steps")

# (name, function) of the commands app.py adds to the align group
COMMANDS = (("sapo", sapo), ("sft", sft), ("dpo", dpo), ("orpo", orpo), ("generate", generate), ("init-lm", init_lm))
