"""gaml unlearn: Score Forgetting Distillation (SFD) — SiD distillation that forgets chosen conditions.

The command takes every option of `gaml distill` (same names, same defaults, one code path:
methods/sid/run.py) plus the forgetting options below; both signatures come from
_sid_options so the two never drift apart.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._sid_options import run_command, signature

FORGET_KEYS = ("forget", "into", "pairs", "forget_weight", "forget_share")


def _forget_options(
    forget: Annotated[Optional[list[str]], typer.Option("--forget", help="A condition to forget: a class (digits: 0), an attribute value (shapes: color=red) or a concept in the prompts (SD: 'brad pitt', nudity). Repeat for several.")] = None,
    into: Annotated[Optional[list[str]], typer.Option("--into", help="What each --forget becomes, in order: a retained class, value (color=blue) or text ('' for the bare prompt).")] = None,
    pairs: Annotated[Optional[str], typer.Option(help="JSONL of {\"forget\": ..., \"into\": ...} pairs, in addition to --forget/--into.")] = None,
    forget_weight: Annotated[Optional[float], typer.Option(min=0.0, help="lambda_f: weight of the forget rows' mean loss against the retained rows' (both networks) [gaml teachers 0.01 as the paper's CIFAR-10 runs; SD 1.0 as its SD script].")] = None,
    forget_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of each batch drawn with forget conditions (the paper: a forget batch as large as the retained one).")] = 0.5,
):
    """(Signature holder: these parameters are prepended to distill's.)"""


def unlearn(**kw):
    """Forget classes or concepts while distilling to one step: Score Forgetting Distillation (SFD).

    SiD distillation (see gaml distill) in which part of every batch asks for a forgotten
    condition c_f: the generator and the fake score see c_f, the frozen teacher is asked
    about the override c_s, so the one-step generator learns to answer c_f the way the
    teacher answers c_s, and every other condition as the teacher does. No real data.
    `gaml eval forget` measures the result.

    Example:

    \b
        gaml unlearn --teacher digits --forget 0 --into 1 --out runs/sfd-digits
        gaml eval forget --model runs/sfd-digits --forget 0 --into 1
        gaml unlearn --teacher shapes --forget color=red --into color=blue --out runs/sfd-shapes
        gaml unlearn --teacher sd15 --prompts coco.txt --forget nudity --into "" --lsg 1.5 --out runs/sfd-sd15
    """
    forget = {k: kw.pop(k) for k in FORGET_KEYS}
    run_command(kw, forget=forget)


unlearn.__signature__ = signature(_forget_options)
