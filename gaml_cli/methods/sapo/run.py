"""The job behind `gaml align sapo`, from one options object:

    from gaml_cli.methods.sapo.run import SapoOptions, run
    summary = run(SapoOptions(model="path/to/lm", data="train.jsonl", out="runs/sapo"))

Everything the user gave is checked before anything is written (the output folder, the data
line by line, the model, every prompt against the model's context). The run folder then holds
the aligned model as transformers / peft load it (a peft adapter naming its base folder, or a
full model folder), the tokenizer, align.json, checkpoints/ and log.jsonl.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

WRITES = "adapter or model files, tokenizer, align.json, checkpoints/, log.jsonl"


@dataclass
class SapoOptions:
    model: str
    data: str
    out: str
    loss: str = "dpo"
    beta: float | None = None
    ema_beta: float = 0.5
    segment_length: int = 256
    buffer_size: int = 2000
    ref_sync_steps: int = 100
    top_k: int = 50
    top_p: float = 0.95
    temperature: float = 0.7
    steps: int = 200
    batch_size: int = 8
    micro_batch: int | None = None
    lr: float = 5e-5
    optimizer: str = "adamw"
    lora_rank: int = 16
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    limit: int | None = None
    checkpoint_every: int = 100
    resume: bool = False
    seed: int = 0
    device: str = "auto"


def run(o: SapoOptions) -> dict[str, Any] | None:
    """Run SAPO; the summary on the main process, None on the others of a multi-process run."""
    import torch

    from ...core import runtime
    from ...core.paths import check_run_folder
    from .data import context_length, read_examples, tokenize_examples
    from .lm import adapter_base, add_lora, check_precision, load_lm, save_run
    from .train import SapoConfig, sapo_train

    # the training settings are the options of the same names (grad_clip keeps its default)
    cfg = SapoConfig(**{f.name: getattr(o, f.name) for f in fields(SapoConfig) if hasattr(o, f.name)})
    cfg.check()
    out = check_run_folder(o.out, o.resume, WRITES)
    dev = runtime.pick_device(o.device)
    dtype = check_precision(o.precision, dev)
    rank = int(os.environ.get("RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun / accelerate launch: one process per device
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
        if rank > 0:
            from ...core import console

            console.set_options(quiet=True)
    examples = read_examples(o.data, limit=o.limit)
    model, tok, model_path = load_lm(o.model, device=dev, dtype=dtype)
    ctx = context_length(model.config)
    rows, cut = tokenize_examples(tok, examples, ctx, o.data)
    if cut:
        from ...core import console

        console.warn(f"{cut} chosen responses were cut to fit the model's context of {ctx} tokens")
    if cfg.lora_rank > 0:
        model = add_lora(model, cfg.lora_rank, seed=o.seed)
    else:
        model.requires_grad_(True)
    torch.manual_seed(o.seed)
    model, report = sapo_train(model, tok, rows, cfg, out, dev, ctx=ctx, resume=o.resume,
                               identity_extra={"model": str(Path(model_path).resolve()),
                                               "precision": o.precision},
                               progress_label=f"sapo-{cfg.loss}")
    if rank > 0:
        return None  # rank 0 writes the model
    lora = cfg.lora_rank > 0
    if lora and adapter_base(Path(model_path)) is not None:
        model, lora = model.merge_and_unload(), False  # the input was itself an adapter: save the whole model
    meta = {"kind": "lm-align", "method": f"sapo-{cfg.loss}", "base_model": str(Path(model_path).resolve()),
            "data": str(o.data), "settings": {**asdict(cfg), "beta": cfg.resolved_beta(), "precision": o.precision},
            "lora": lora, **report}
    save_run(model, tok, out, model_path, lora, meta)
    return {"out": str(out), "method": f"sapo-{cfg.loss}", "lora": lora, **report}
