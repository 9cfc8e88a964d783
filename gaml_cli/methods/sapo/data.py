"""The data of the LM align commands, read and checked before any work starts.

SAPO and SFT read one of three JSONL formats (one object a line; a malformed line is named by
its number):

  {"prompt": "...", "chosen": "..."}          the chosen side of a preference set
  {"prompt": "...", "completion": "..."}      TRL's prompt-completion format (completion = chosen)
  {"messages": [{"role", "content"}, ...]}    conversational: the last message is the assistant's
                                              answer (chosen), the ones before it the prompt,
                                              rendered with the model's chat template

DPO and ORPO read TRL's pairs {"prompt", "chosen", "rejected"} (strings, or conversational lists
of messages as TRL takes them).

`tokenize_examples` turns records into (prompt ids, response ids) the way TRL's DPOTrainer does:
prompt and prompt + response are tokenized, the response starts where the two diverge and ends
with the EOS token; a prompt that does not fit the model's context is refused with its line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.errors import InputError


@dataclass
class Example:
    line: int  # line number in the file (1-based), for messages
    prompt: Any  # str, or a list of messages (conversational)
    chosen: Any  # str, or the assistant message(s)
    rejected: Any = None  # pairs only
    conversational: bool = False


def _text(rec: dict, key: str) -> str:
    v = rec.get(key)
    if v is None:
        raise ValueError(f"no {key!r} field")
    if not isinstance(v, str):
        raise ValueError(f"{key!r} must be a string, got {type(v).__name__}")
    if not v.strip():
        raise ValueError(f"{key!r} is empty")
    return v


def _messages(v: Any, key: str) -> list[dict]:
    if not isinstance(v, list) or not v:
        raise ValueError(f"{key!r} must be a non-empty list of messages")
    for i, m in enumerate(v):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{key!r} message {i + 1} needs string 'role' and 'content'")
    return v


def _chosen_record(rec: dict, line: int) -> Example:
    if "messages" in rec:
        msgs = _messages(rec["messages"], "messages")
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise ValueError("'messages' must end with the assistant's answer after at least one prompt message")
        if not msgs[-1]["content"].strip():
            raise ValueError("the assistant's answer (the chosen response) is empty")
        return Example(line, msgs[:-1], [msgs[-1]], conversational=True)
    if "prompt" not in rec:
        raise ValueError("no 'prompt' field (expected {\"prompt\", \"chosen\"}, {\"prompt\", \"completion\"} "
                         "or {\"messages\": [...]})")
    prompt = _text(rec, "prompt")
    if "chosen" in rec:
        return Example(line, prompt, _text(rec, "chosen"))
    if "completion" in rec:
        return Example(line, prompt, _text(rec, "completion"))
    raise ValueError("no 'chosen' field (or 'completion')")


def _pair_record(rec: dict, line: int) -> Example:
    for key in ("prompt", "chosen", "rejected"):
        if key not in rec:
            raise ValueError(f"no {key!r} field (pairs are {{\"prompt\", \"chosen\", \"rejected\"}})")
    if isinstance(rec["chosen"], list):
        prompt = _messages(rec["prompt"], "prompt")
        return Example(line, prompt, _messages(rec["chosen"], "chosen"), _messages(rec["rejected"], "rejected"),
                       conversational=True)
    return Example(line, _text(rec, "prompt"), _text(rec, "chosen"), _text(rec, "rejected"))


def read_examples(path: str, pairs: bool = False, limit: int | None = None, option: str = "--data") -> list[Example]:
    """The records of a JSONL file as Examples (pairs: TRL's chosen/rejected pairs). Every
    problem is an InputError naming the file and the line."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{option} {path}: no such file")
    if p.is_dir():
        raise InputError(f"{option} {path}: is a folder, expected a JSONL file")
    out: list[Example] = []
    parse = _pair_record if pairs else _chosen_record
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path} line {lineno}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path} line {lineno}: malformed JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{path} line {lineno}: expected a JSON object, got {type(rec).__name__}")
            try:
                out.append(parse(rec, lineno))
            except ValueError as exc:
                raise InputError(f"{path} line {lineno}: {exc.args[0]}") from None
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise InputError(f"{option} {path}: no records")
    kinds = {e.conversational for e in out}
    if len(kinds) > 1:
        raise InputError(f"{path}: mixes conversational and plain-text records; use one format per file")
    return out


def read_prompts(path: str, option: str = "--prompts") -> list[str]:
    """Prompts for generation: JSONL with a 'prompt' field (a .jsonl file, or lines that start
    with '{'), or plain text, one prompt a line (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{option} {path}: no such file")
    text = p.read_text(encoding="utf-8")
    lines = text.splitlines()
    first = next((l for l in lines if l.strip()), "")
    prompts = []
    if p.suffix == ".jsonl" or first.lstrip().startswith("{"):
        for i, l in enumerate(lines, 1):
            if not l.strip():
                continue
            try:
                rec = json.loads(l)
            except ValueError as exc:
                raise InputError(f"{path} line {i}: malformed JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise InputError(f"{path} line {i}: expected an object with a string 'prompt'")
            prompts.append(rec["prompt"])
    else:
        prompts = [l for l in lines if l.strip()]
    if not prompts:
        raise InputError(f"{option} {path}: no prompts")
    return prompts


def render(tokenizer, ex: Example) -> tuple[str, str]:
    """(prompt text, response text) of an example; conversational ones through the chat template."""
    if not ex.conversational:
        return ex.prompt, ex.chosen
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError(f"line {ex.line}: conversational data, but the model's tokenizer has no chat template")
    prompt = tokenizer.apply_chat_template(ex.prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(ex.prompt + ex.chosen, tokenize=False)
    if not full.startswith(prompt):
        raise InputError(f"line {ex.line}: the chat template renders the prompt differently alone and with "
                         "the answer; cannot tell where the answer starts")
    return prompt, full[len(prompt):]


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def context_length(model_config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(model_config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def tokenize_example(tokenizer, prompt: str, response: str, conversational: bool = False) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids ending with EOS), as TRL's DPOTrainer splits them."""
    kw = {"add_special_tokens": False} if conversational else {}
    eos = tokenizer.eos_token or ""
    if eos and not response.endswith(eos):
        response = response + eos
    p = tokenizer(prompt, **kw)["input_ids"]
    pr = tokenizer(prompt + response, **kw)["input_ids"]
    n = common_prefix_length(p, pr)
    return p[:n], pr[n:]


def tokenize_examples(tokenizer, examples: list[Example], ctx: int | None, name: str) -> tuple[list, int]:
    """[(prompt ids, response ids)] for every example, and how many responses were cut to fit the
    context. A prompt that leaves no room for a response is refused with its line."""
    if tokenizer.eos_token_id is None:
        raise InputError("the model's tokenizer has no EOS token; responses need one to end")
    out, cut = [], 0
    for ex in examples:
        prompt, response = render(tokenizer, ex)
        p, r = tokenize_example(tokenizer, prompt, response, ex.conversational)
        if not p:
            raise InputError(f"{name} line {ex.line}: the prompt tokenizes to nothing")
        if ctx is not None and len(p) + 1 >= ctx:
            raise InputError(f"{name} line {ex.line}: the prompt is {len(p)} tokens; the model's context is {ctx} "
                             "tokens, which leaves no room for a response")
        if not r:
            raise InputError(f"{name} line {ex.line}: the chosen response tokenizes to nothing")
        if ctx is not None and len(p) + len(r) > ctx:
            r = r[: ctx - len(p)]
            cut += 1
        out.append((p, r))
    return out, cut
