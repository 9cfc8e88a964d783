"""An offline language task with a checkable answer: two-digit sums.

`gaml dataset arithmetic --out DIR` writes train.jsonl and test.jsonl of
{"prompt": "37+48=", "completion": "85"}: a and b are integers 0-99, the prompt is exactly
"{a}+{b}=" and the completion the decimal sum. The 10,000 ordered pairs are shuffled by the seed;
the first `test` of them are the test set and never appear in train. `exact_match` scores
completions against the data (gaml eval answers).
"""

from __future__ import annotations

import random

from ..core.errors import InputError


def make(test: int = 500, train: int | None = None, seed: int = 0) -> tuple[list[dict], list[dict]]:
    pairs = [(a, b) for a in range(100) for b in range(100)]
    random.Random(seed).shuffle(pairs)
    if not 0 < test < len(pairs):
        raise InputError(f"--test must be between 1 and {len(pairs) - 1}")
    rest = pairs[test:]
    if train is not None:
        rest = rest[:train]
    rec = lambda ab: {"prompt": f"{ab[0]}+{ab[1]}=", "completion": str(ab[0] + ab[1])}
    return [rec(p) for p in rest], [rec(p) for p in pairs[:test]]


def exact_match(completions: list[dict], data: list[dict]) -> dict:
    """Accuracy of completions against reference answers, matched by prompt (whitespace around
    an answer is ignored). Every prompt of the completions must be in the data."""
    answers = {}
    for d in data:
        ref = d.get("completion", d.get("chosen"))
        if not isinstance(d.get("prompt"), str) or not isinstance(ref, str):
            raise InputError("the reference data needs string 'prompt' and 'completion' (or 'chosen') fields")
        answers[d["prompt"]] = ref.strip()
    right, missing = 0, []
    for c in completions:
        if c["prompt"] not in answers:
            missing.append(c["prompt"])
            continue
        right += c["completion"].strip() == answers[c["prompt"]]
    if missing:
        raise InputError(f"{len(missing)} completions have prompts that are not in the reference data "
                         f"(first: {missing[0]!r})")
    n = len(completions)
    return {"n": n, "correct": right, "accuracy": right / n if n else 0.0}
