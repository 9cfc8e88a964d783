"""Causal language models for the LM align commands: resolve a name (alias, hub id, folder, or a
gaml run folder holding a peft adapter), load through transformers' own from_pretrained
(safetensors, no remote code), add LoRA with peft, save a run folder that transformers / peft
load as it is."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...core.errors import InputError, UsageError

ADAPTER_CONFIG = "adapter_config.json"


def resolve_model(name: str, option: str = "--model") -> Path:
    """A local folder for a model name; one clear line (ModelNotFoundError) when it is absent."""
    from ...core import hub

    path = Path(hub.resolve(name, option=option))
    if not path.is_dir():
        raise InputError(f"{option} {name}: {path} is a file; give a transformers model folder (config.json) "
                         "or a hub id")
    if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
        raise InputError(f"{option} {name}: {path} holds no config.json (not a transformers model folder) "
                         f"and no {ADAPTER_CONFIG} (not a peft adapter)")
    return path


def adapter_base(path: Path) -> str | None:
    """The base model a peft adapter folder names, or None when `path` is a full model."""
    cfg = path / ADAPTER_CONFIG
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text()).get("base_model_name_or_path")


def quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", category=FutureWarning, module="peft")
    warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")  # GPT-2's Conv1D: peft fixes it
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass


def load_tokenizer(path: Path, option: str = "--model"):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{option} {path}: no usable tokenizer ({str(exc).splitlines()[0][:160]})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_lm(name: str, device="cpu", dtype=None, option: str = "--model"):
    """(model, tokenizer, folder) for a model name; a peft adapter folder loads onto its base
    (adapters merged: the result is a plain transformers model to train further)."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    path = resolve_model(name, option)
    base = adapter_base(path)
    kw = {"dtype": dtype or torch.float32, "trust_remote_code": False}
    try:
        if base is not None:
            from peft import PeftModel

            base_path = resolve_model(base, option=f"{option} (the adapter's base model)")
            model = AutoModelForCausalLM.from_pretrained(str(base_path), use_safetensors=True, **kw)
            model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, **kw)
    except (OSError, ValueError) as exc:
        raise InputError(f"{option} {name}: cannot load a causal LM from {path} "
                         f"({str(exc).splitlines()[0][:200]})") from None
    tok_path = path if (path / "tokenizer_config.json").is_file() or base is None else resolve_model(base)
    tok = load_tokenizer(tok_path, option)
    return model.to(device), tok, path


def add_lora(model, rank: int, alpha: float | None = None, seed: int = 0):
    """peft LoRA adapters of rank `rank` on every linear layer but the output head."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules="all-linear", lora_dropout=0.0,
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def lora_config(rank: int, alpha: float | None = None):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules="all-linear", lora_dropout=0.0,
                      task_type="CAUSAL_LM")


def disable_dropout(model) -> None:
    """p = 0 in every dropout layer (as TRL does for preference training): the policy, its EMA
    and the reference then see the same function of their weights."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def save_run(model, tokenizer, out: Path, base_path: Path, lora: bool, meta: dict) -> None:
    """Write the aligned model into `out`: a peft adapter (adapter_config.json naming the base
    folder, adapter_model.safetensors) or a full transformers folder; the tokenizer beside it and
    align.json (settings and final statistics). Files are written in a staging folder first and
    moved in, so an interrupted save leaves no half-written model."""
    import shutil
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".save-", dir=out))
    try:
        if lora:
            model.peft_config["default"].base_model_name_or_path = str(Path(base_path).resolve())
            model.save_pretrained(str(stage), safe_serialization=True)
        else:
            model.save_pretrained(str(stage), safe_serialization=True)
        tokenizer.save_pretrained(str(stage))
        (stage / "align.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
        for f in stage.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_precision(precision: str, device) -> "object":
    from ...core.runtime import pick_dtype

    if precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"--precision must be fp32, bf16 or fp16 (got {precision!r})")
    return pick_dtype(precision, device)
