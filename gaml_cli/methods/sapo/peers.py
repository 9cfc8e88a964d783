"""SAPO's peers through TRL: `gaml align sft` (SFTTrainer), `gaml align dpo` (DPOTrainer) and
`gaml align orpo` (ORPOTrainer, in trl.experimental in TRL 1.x, imported guardedly: TRL has
removed experimental trainers before without notice).

gaml only prepares what TRL takes, the way TRL documents it: the data checked line by line and
handed over as a datasets.Dataset in TRL's own formats, the model loaded by gaml (alias, folder,
or a gaml LM run) and passed as a model object, a peft LoraConfig for LoRA, and a TRL config.
The reference of DPO is the model with its adapters off (LoRA) or an explicit frozen copy (full
fine-tuning: TRL would otherwise reload it from the config's name or path). gaml adds to the
trainer only callbacks: the progress bar, log.jsonl, and Ctrl-C / SIGTERM, which ask the
trainer to save a checkpoint and stop after the current step. TRL's checkpoints (checkpoint-N
folders of transformers' Trainer, in RUN/checkpoints/) are its own format; --resume hands the
last one back to trainer.train(resume_from_checkpoint=...).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...core.errors import UsageError

METHODS = ("sft", "dpo", "orpo")
WRITES = "adapter or model files, tokenizer, align.json, checkpoints/, log.jsonl"


@dataclass
class PeerOptions:
    method: str  # sft | dpo | orpo
    model: str
    data: str  # SFT: prompt/chosen, prompt/completion or messages; DPO/ORPO: pairs
    out: str
    steps: int = 200
    batch_size: int = 8
    lr: float = 5e-5
    beta: float | None = None  # DPO's beta / ORPO's lambda; None: TRL's default (0.1 for both)
    loss: str = "sigmoid"  # DPO only: sigmoid | hinge
    lora_rank: int = 16
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    limit: int | None = None
    checkpoint_every: int = 100
    resume: bool = False
    seed: int = 0
    device: str = "auto"


def import_trl(method: str):
    """(Trainer class, Config class) of TRL for `method`; one clear line when TRL lacks it."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        import trl
    except ImportError:
        raise UsageError(f"gaml align {method} runs on TRL, which is not installed: pip install 'gaml[align]' "
                         "(or pip install trl)") from None
    if method == "sft":
        return trl.SFTTrainer, trl.SFTConfig
    if method == "dpo":
        return trl.DPOTrainer, trl.DPOConfig
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:
        try:
            from trl import ORPOConfig, ORPOTrainer  # older TRL kept it at the top level
        except ImportError:
            raise UsageError(f"the installed TRL {trl.__version__} has no ORPO trainer (neither trl.experimental.orpo "
                             "nor trl.ORPOTrainer); use gaml align sapo --loss orpo, or install a TRL that has it") from None
    return ORPOTrainer, ORPOConfig


def _records(method: str, examples) -> list[dict]:
    """The examples in TRL's own dataset formats."""
    if method == "sft":
        if examples[0].conversational:
            return [{"messages": e.prompt + e.chosen} for e in examples]
        return [{"prompt": e.prompt, "completion": e.chosen} for e in examples]
    return [{"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected} for e in examples]


def _check_no_run(out: Path, resume: bool) -> None:
    ckpt = out / "checkpoints"
    if not resume and ckpt.is_dir() and any(ckpt.glob("checkpoint-*")):
        raise UsageError(f"--out {out} already holds a run; add --resume to continue it or pick a new folder")
    if resume and not any(ckpt.glob("checkpoint-*")):
        raise UsageError(f"--resume: {out} has no TRL checkpoint (checkpoints/checkpoint-N) to resume from")


class _Stop:
    """Ctrl-C / SIGTERM during training: the first asks the trainer to save and stop after the
    step it is in; a second stops at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False


def _callback(bar, log_path: Path, stop: _Stop):
    from transformers import TrainerCallback

    class GamlCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            bar.update(1)
            if stop.requested:
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(row) + "\n")

    return GamlCallback()


def run_peer(o: PeerOptions) -> dict[str, Any]:
    import copy

    from ...core import console, runtime
    from ...core.paths import check_run_folder
    from .data import context_length, read_examples, tokenize_examples
    from .lm import adapter_base, check_precision, disable_dropout, load_lm, lora_config, save_run

    if o.method not in METHODS:
        raise UsageError(f"unknown method {o.method!r} ({', '.join(METHODS)})")
    for name in ("lr", "beta"):
        v = getattr(o, name)
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise UsageError(f"--{name} {v}: expected a positive finite number")
    if o.loss not in ("sigmoid", "hinge"):
        raise UsageError("--loss must be sigmoid or hinge")
    Trainer, Config = import_trl(o.method)
    out = check_run_folder(o.out, o.resume, WRITES)
    _check_no_run(out, o.resume)
    dev = runtime.pick_device(o.device)
    dtype = check_precision(o.precision, dev)
    option = "--data" if o.method == "sft" else "--pairs"
    examples = read_examples(o.data, pairs=o.method != "sft", limit=o.limit, option=option)
    model, tok, model_path = load_lm(o.model, device=dev, dtype=dtype)
    ctx = context_length(model.config)
    tokenize_examples(tok, examples, ctx, o.data)  # every prompt must fit the context (one line if not)
    if o.method != "sft":
        from .data import Example

        tokenize_examples(tok, [Example(e.line, e.prompt, e.rejected, conversational=e.conversational)
                                for e in examples], ctx, o.data)
    import datasets

    dataset = datasets.Dataset.from_list(_records(o.method, examples))
    disable_dropout(model)
    lora = o.lora_rank > 0
    gpu = dev.type == "cuda"
    kw = dict(output_dir=str(out / "checkpoints"), max_steps=o.steps, per_device_train_batch_size=o.batch_size,
              gradient_accumulation_steps=1, learning_rate=o.lr, lr_scheduler_type="constant", warmup_steps=0,
              logging_steps=10, save_strategy="steps", save_steps=o.checkpoint_every or o.steps, save_total_limit=2,
              report_to=[], disable_tqdm=True, seed=o.seed, data_seed=o.seed, use_cpu=dev.type == "cpu",
              bf16=gpu and o.precision == "bf16", fp16=gpu and o.precision == "fp16",
              gradient_checkpointing=o.gradient_checkpointing, dataloader_num_workers=0, max_length=ctx)
    if o.method == "dpo":
        kw["loss_type"] = [o.loss]
    if o.beta is not None and o.method != "sft":
        kw["beta"] = o.beta
    if o.method == "orpo":
        kw["max_completion_length"] = None
        kw["remove_unused_columns"] = False  # its collator needs the raw columns (it says so otherwise)
    args = Config(**kw)
    trainer_kw = dict(model=model, args=args, train_dataset=dataset, processing_class=tok,
                      peft_config=lora_config(o.lora_rank) if lora else None)
    if o.method == "dpo" and not lora:
        trainer_kw["ref_model"] = copy.deepcopy(model).eval().requires_grad_(False)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    console.log(f"{o.method} (TRL): {len(examples)} records, {o.steps} steps of {o.batch_size} on {dev}, "
                f"{'LoRA rank ' + str(o.lora_rank) if lora else 'all weights'}")
    import time

    t0 = time.perf_counter()
    with _Stop() as stop, console.progress(o.steps, o.method) as bar:
        trainer = Trainer(**trainer_kw)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for cb in (PrinterCallback, ProgressCallback):  # they print to stdout: gaml's stdout is for data
            trainer.remove_callback(cb)
        trainer.add_callback(_callback(bar, log_path, stop))
        result = trainer.train(resume_from_checkpoint=True if o.resume else None)
    if stop.requested:
        console.warn(f"interrupted after step {trainer.state.global_step}; checkpoint saved to {out / 'checkpoints'} "
                     "(rerun with --resume)")
        raise KeyboardInterrupt
    seconds = time.perf_counter() - t0
    policy = trainer.model
    if lora and adapter_base(model_path) is not None:
        policy, lora = policy.merge_and_unload(), False  # the input was itself an adapter: save the whole model
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    last = {}
    if log_path.is_file():
        rows = [json.loads(l) for l in log_path.read_text().splitlines() if l.strip()]
        rows = [r for r in rows if "loss" in r]
        last = {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}
    report = {"steps": int(trainer.state.global_step), "train_seconds": round(seconds, 1), "records": len(examples),
              "train_loss": metrics.get("train_loss"), **{f"last_{k}": v for k, v in last.items()
                                                          if k in ("loss", "rewards/accuracies", "rewards/margins",
                                                                   "mean_token_accuracy", "step")}}
    import trl

    meta = {"kind": "lm-align", "method": f"{o.method} (TRL {trl.__version__})", "base_model": str(model_path),
            "data": str(o.data), "settings": asdict(o), "lora": lora, **report}
    save_run(policy, tok, out, model_path, lora, meta)
    return {"out": str(out), "method": o.method, "trl": trl.__version__, "lora": lora, **report}
