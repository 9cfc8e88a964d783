"""SAPO's self-augmented rejected response (arXiv 2405.20830, Sec. 3):

  1. cut the chosen response y_w at a random point c (0 <= c < |y_w| - 1: at least one real
     token before the final EOS is regenerated);
  2. the EMA model continues x + y_w[:c] with a segment s of at most `segment_length` tokens
     (top-k, top-p, temperature sampling), stopping at EOS;
  3. rejected y_l = y_w[:c] + s + y_w[c + |s|:]: the segment replaces as many tokens of the chosen
     as it has, and the rest of the chosen follows; a segment that ends with EOS ends the response
     (nothing of the chosen follows it).
"""

from __future__ import annotations

import torch


def cut_points(lengths: list[int], gen: torch.Generator) -> list[int]:
    """A random cut c per response (its length counts the final EOS): uniform in [0, len - 2],
    0 for a response of one token besides EOS."""
    out = []
    for n in lengths:
        hi = max(1, n - 1)
        out.append(int(torch.randint(hi, (1,), generator=gen)))
    return out


def splice(chosen: list[int], cut: int, segment: list[int], eos_id: int | None) -> list[int]:
    """prefix + segment + the rest of the chosen (none after a segment that ends with EOS)."""
    prefix = chosen[:cut]
    if segment and eos_id is not None and segment[-1] == eos_id:
        return prefix + segment
    return prefix + segment + chosen[cut + len(segment):]


def trim_segment(tokens: list[int], eos_id: int | None, pad_id: int | None) -> list[int]:
    """A generated row up to and including its first EOS (generate pads after it)."""
    out = []
    for t in tokens:
        out.append(t)
        if eos_id is not None and t == eos_id:
            return out
    if pad_id is not None and pad_id != eos_id:
        while out and out[-1] == pad_id:
            out.pop()
    return out


@torch.no_grad()
def generate_segments(model, contexts: list[list[int]], max_new: int, pad_id: int, eos_id: int | None,
                      top_k: int, top_p: float, temperature: float, device, ctx: int | None = None) -> list[list[int]]:
    """Sample a continuation of each context (left-padded batch) with transformers' generate."""
    if ctx is not None:
        max_new = min(max_new, ctx - max(len(c) for c in contexts))
    if max_new < 1:
        return [[] for _ in contexts]
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(contexts), width), dtype=torch.long)
    for i, c in enumerate(contexts):
        ids[i, width - len(c):] = torch.tensor(c)
        att[i, width - len(c):] = 1
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=temperature > 0,
                             top_k=top_k if top_k > 0 else None, top_p=top_p,
                             temperature=temperature if temperature > 0 else None, max_new_tokens=max_new,
                             pad_token_id=pad_id, eos_token_id=eos_id)
    finally:
        model.train(was_training)
    rows = out[:, width:].tolist()
    return [trim_segment(r, eos_id, pad_id) for r in rows]
