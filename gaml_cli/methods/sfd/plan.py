"""What to forget and what to put in its place: the condition pairs of Score Forgetting Distillation.

SFD (arXiv 2409.11219, Sec. 3) splits each batch into retained conditions, trained with plain
SiD, and forget conditions c_f, for which the teacher is asked about an override condition c_s
instead. Three kinds of teacher name their conditions differently:

- class labels (digits): `--forget 0 --into 1`; retained = every other class.
- gaml's caption teachers (shapes): one attribute value, `--forget color=red --into color=blue`;
  a forget caption is a random caption with that value ("a red square on a green background"),
  its override is the same caption with the value replaced ("a blue square on a green
  background"); retained = captions without any forgotten value.
- prompt lists (Stable Diffusion, or any text teacher with --prompts): a concept in free text,
  `--forget "brad pitt" --into "a middle aged man"`, `--forget nudity --into ""`. A prompt that
  contains the concept becomes the forget prompt and its override has the concept replaced; a
  prompt without it becomes "PROMPT, CONCEPT" with override "PROMPT, INTO" (or the bare PROMPT
  when INTO is empty: the paper's subject + NSFW keyword -> bare subject). Retained = the prompts
  that name no forgotten concept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ...core.errors import InputError, UsageError

ATTRIBUTE_KEYS = ("shape", "color", "background")


@dataclass
class ForgetPlan:
    """Condition pairs plus how they enter the loss (weight, share of each batch)."""

    mode: str  # "class" | "attribute" | "prompt" | "none"
    pairs: list[tuple[Any, Any]] = field(default_factory=list)
    weight: float = 0.01
    share: float = 0.5
    retained: list[Any] | None = None  # retained classes or prompts (None: the teacher's own draw)

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "pairs": [list(p) for p in self.pairs], "weight": self.weight, "share": self.share}

    def counts(self, n: int) -> tuple[int, int]:
        """(retained rows, forget rows) of a batch of n: round(share n) forget rows, at least one each
        when there are pairs and n > 1."""
        if not self.pairs:
            return n, 0
        nf = int(round(self.share * n))
        nf = min(max(nf, 1), n - 1) if n > 1 else nf
        return n - nf, nf

    def is_retained(self, cond: Any) -> bool:
        """Whether a real image's condition (class or caption) is kept: SiDA's discriminator in
        `gaml unlearn --real-data` sees only retained data."""
        if self.mode == "class":
            return int(cond) not in {int(f) for f, _ in self.pairs}
        if self.mode == "attribute":
            return not any(_has_attr(str(cond), k, v) for (k, v), _ in self.pairs)
        if self.mode == "prompt":
            return not any(_mentions(str(cond), concept) for concept, _ in self.pairs)
        return True

    # -- drawing conditions ------------------------------------------------------------------
    def draw_retained(self, teacher, n: int, gen: torch.Generator) -> list[Any] | None:
        if self.mode == "none" or n == 0:
            return teacher.draw_conditions(n, gen) if n else []
        if self.mode == "class":
            idx = torch.randint(len(self.retained), (n,), generator=gen).tolist()
            return [self.retained[i] for i in idx]
        if self.mode == "prompt":
            idx = torch.randint(len(self.retained), (n,), generator=gen).tolist()
            return [self.retained[i] for i in idx]
        # attributes: rejection-sample the teacher's own captions
        out: list[str] = []
        while len(out) < n:
            for cap in teacher.draw_conditions(n, gen):
                if len(out) < n and not any(_has_attr(cap, k, v) for (k, v), _ in self.pairs):
                    out.append(cap)
        return out

    def draw_forget(self, teacher, n: int, gen: torch.Generator) -> tuple[list[Any], list[Any]]:
        """(forget conditions c_f, override conditions c_s) for n rows, pairs drawn uniformly."""
        if n == 0:
            return [], []
        which = torch.randint(len(self.pairs), (n,), generator=gen).tolist()
        if self.mode == "class":
            return [self.pairs[i][0] for i in which], [self.pairs[i][1] for i in which]
        if self.mode == "prompt":
            pool = teacher.prompts
            idx = torch.randint(len(pool), (n,), generator=gen).tolist()
            f, s = [], []
            for i, p in zip(which, idx):
                concept, into = self.pairs[i]
                fp, sp = concept_prompts(pool[p], concept, into)
                f.append(fp)
                s.append(sp)
            return f, s
        a = teacher.attributes
        f, s = [], []
        for i in which:
            (key, val), (_, into) = self.pairs[i]
            choice = {k: a[k][int(torch.randint(len(a[k]), (1,), generator=gen))] for k in ("shape", "color")}
            choice[key] = val
            taken = {choice["color"], into if key == "color" else choice["color"]}
            bgs = [b for b in a["background"] if b not in taken]
            choice.setdefault("background", bgs[int(torch.randint(len(bgs), (1,), generator=gen))])
            if key == "background":
                choice["background"] = val
                if choice["color"] in (val, into):
                    cols = [c for c in a["color"] if c not in (val, into)]
                    choice["color"] = cols[int(torch.randint(len(cols), (1,), generator=gen))]
            over = dict(choice, **{key: into})
            f.append(_caption(choice))
            s.append(_caption(over))
        return f, s


def _caption(c: dict[str, str]) -> str:
    from ...datasets.shapes import caption

    return caption(c["shape"], c["color"], c["background"])


def _has_attr(caption: str, key: str, value: str) -> bool:
    from ...diffusion.sample import CAPTION

    m = CAPTION.match(caption.strip().lower())
    if not m:
        return False
    got = dict(zip(("color", "shape", "background"), m.groups()))
    return got[key] == value


def concept_prompts(prompt: str, concept: str, into: str) -> tuple[str, str]:
    """(forget prompt, override prompt) for one prompt of the pool (see the module docstring)."""
    pat = re.compile(re.escape(concept), re.IGNORECASE)
    if pat.search(prompt):
        over = pat.sub(into, prompt)
        return prompt, " ".join(over.replace(" ,", ",").split())
    return f"{prompt}, {concept}", (f"{prompt}, {into}" if into else prompt)


def _mentions(prompt: str, concept: str) -> bool:
    return concept.lower() in prompt.lower()


# -- building a plan from the command line ----------------------------------------------------
def read_pairs_file(path: str) -> list[tuple[str, str]]:
    """JSONL with one {"forget": ..., "into": ...} per line."""
    from ...core.artifacts import read_jsonl

    def check(rec: dict) -> None:
        if "forget" not in rec or "into" not in rec:
            raise ValueError("expected an object with 'forget' and 'into'")

    out = [(str(rec["forget"]), str(rec["into"])) for rec in read_jsonl(path, validate=check)]
    if not out:
        raise InputError(f"{path}: no pairs")
    return out


def build_plan(teacher, forget: list[str], into: list[str], pairs_file: str | None,
               weight: float, share: float) -> ForgetPlan:
    """Validate the pairs against the teacher and make the plan (UsageError on any mismatch)."""
    if len(forget) != len(into):
        raise UsageError(f"give one --into for each --forget ({len(forget)} --forget, {len(into)} --into)")
    raw = list(zip(forget, into)) + (read_pairs_file(pairs_file) if pairs_file else [])
    if not raw:
        raise UsageError("nothing to forget: give --forget A --into B (or --pairs FILE); to distil without "
                         "forgetting use gaml distill")
    if not 0 < share < 1:
        raise UsageError(f"--forget-share {share}: must be strictly between 0 and 1")
    cond = teacher.cond_type
    if cond == "class":
        k = teacher.net.num_classes
        pairs = []
        for f, s in raw:
            fi, si = _class(f, k), _class(s, k)
            if fi == si:
                raise UsageError(f"--forget {f} --into {s}: the same class on both sides")
            pairs.append((fi, si))
        gone = {f for f, _ in pairs}
        if any(s in gone for _, s in pairs):
            raise UsageError("an --into class is itself forgotten; the override must be a retained class")
        retained = [c for c in range(k) if c not in gone]
        if not retained:
            raise UsageError("every class is forgotten; nothing is left to retain")
        return ForgetPlan("class", pairs, weight, share, retained)
    if cond != "text":
        raise UsageError("this teacher is unconditional: there is no condition to forget")
    if teacher.prompts is None:  # gaml caption teacher: attribute values
        attrs = teacher.attributes
        pairs = []
        for f, s in raw:
            kf, vf = _attr(f, attrs)
            ks, vs = _attr(s, attrs)
            if kf != ks:
                raise UsageError(f"--forget {f} --into {s}: both sides must name the same attribute")
            if vf == vs:
                raise UsageError(f"--forget {f} --into {s}: the same value on both sides")
            pairs.append(((kf, vf), (ks, vs)))
        gone = {p[0] for p in pairs}
        if any(p[1] in gone for p in pairs):
            raise UsageError("an --into value is itself forgotten; the override must be retained")
        for key in ATTRIBUTE_KEYS:
            if len([v for v in attrs[key] if (key, v) not in gone]) == 0:
                raise UsageError(f"every {key} is forgotten; nothing is left to retain")
        return ForgetPlan("attribute", pairs, weight, share)
    pairs = []
    for f, s in raw:
        if not f.strip():
            raise UsageError("--forget needs a non-empty concept")
        if f.strip().lower() == s.strip().lower():
            raise UsageError(f"--forget {f!r} --into {s!r}: the same concept on both sides")
        pairs.append((f.strip(), s.strip()))
    retained = [p for p in teacher.prompts if not any(_mentions(p, f) for f, _ in pairs)]
    if not retained:
        raise UsageError("every prompt names a forgotten concept; the prompt list must have prompts to retain")
    return ForgetPlan("prompt", pairs, weight, share, retained)


def _class(v: str, k: int) -> int:
    try:
        c = int(str(v).strip())
    except ValueError:
        raise UsageError(f"class {v!r}: this teacher is class-conditional; give a class number 0..{k - 1}") from None
    if not 0 <= c < k:
        raise UsageError(f"class {c}: the teacher knows classes 0..{k - 1}")
    return c


def _attr(v: str, attrs: dict[str, list[str]]) -> tuple[str, str]:
    key, sep, val = str(v).partition("=")
    key, val = key.strip().lower(), val.strip().lower()
    if not sep or key not in ATTRIBUTE_KEYS:
        raise UsageError(f"{v!r}: this caption teacher forgets attribute values; write KEY=VALUE with KEY one of "
                         f"{', '.join(ATTRIBUTE_KEYS)} (e.g. color=red)")
    if val not in attrs.get(key, []):
        raise UsageError(f"{v!r}: the teacher knows {key} {', '.join(attrs.get(key, []))}")
    return key, val
