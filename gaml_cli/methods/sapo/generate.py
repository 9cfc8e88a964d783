"""`gaml align generate`: completions of prompts by a causal LM or a gaml LM align run, as JSONL
{"prompt", "completion"} in input order. Greedy by default (batched, left-padded); with
--temperature > 0 each prompt samples from its own seed (runtime.sample_seed(seed, i)), so a
prompt's completion does not depend on the others."""

from __future__ import annotations

from typing import Iterator

import torch


@torch.no_grad()
def complete(model, tok, prompts: list[str], max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, batch_size: int = 64, device="cpu") -> Iterator[dict]:
    from ...core.runtime import sample_seed
    from .data import context_length

    model.eval()
    ctx = context_length(model.config)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = tok.eos_token_id
    step = batch_size if temperature <= 0 else 1
    for start in range(0, len(prompts), step):
        chunk = prompts[start:start + step]
        enc = [tok(p)["input_ids"] for p in chunk]
        width = max(len(e) for e in enc)
        new = max_new_tokens if ctx is None else max(0, min(max_new_tokens, ctx - width))
        ids = torch.full((len(enc), width), pad, dtype=torch.long)
        att = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, width - len(e):] = torch.tensor(e)
            att[i, width - len(e):] = 1
        if new == 0:
            rows = [[] for _ in enc]
        else:
            kw = {"do_sample": False, "top_k": None, "top_p": None, "temperature": None}
            if temperature > 0:
                torch.manual_seed(sample_seed(seed, start))
                kw = {"do_sample": True, "temperature": temperature, "top_k": top_k or None, "top_p": top_p}
            out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), max_new_tokens=new,
                                 pad_token_id=pad, eos_token_id=eos, **kw)
            rows = out[:, width:].tolist()
        for p, r in zip(chunk, rows):
            if eos is not None and eos in r:
                r = r[:r.index(eos)]
            yield {"prompt": p, "completion": tok.decode(r, skip_special_tokens=True)}
