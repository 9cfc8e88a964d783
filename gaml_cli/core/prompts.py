"""Prompt lists for text-conditional models: a text file, a JSONL file, or stdin."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from .artifacts import read_jsonl
from .errors import InputError


def _check(rec: dict) -> None:
    if not isinstance(rec.get("prompt", rec.get("caption")), str):
        raise ValueError("needs a 'prompt' (or 'caption') string")


def read_prompts(path: str) -> list[str]:
    """Prompts from a text file (one a line), a JSONL file ('prompt' or 'caption' key), or
    '-' (stdin, either format: JSONL when the first non-blank line starts with '{').
    A bad JSONL record is reported with its line number."""
    if path == "-":
        from .artifacts import require_piped_stdin

        require_piped_stdin("prompts")
        text, name = sys.stdin.read(), "<stdin>"
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: no such file")
        try:
            text, name = p.read_text(encoding="utf-8"), path
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if path.endswith((".jsonl", ".ndjson")) or first.startswith("{"):
        texts = [r.get("prompt", r.get("caption")) for r in read_jsonl(io.StringIO(text), validate=_check, name=name)]
    else:
        texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise InputError(f"{name}: no prompts")
    return texts


def cycle(texts: list[str], n: int) -> list[str]:
    """texts repeated over n samples (sample i gets texts[i mod len])."""
    return [texts[i % len(texts)] for i in range(n)]


def image_prompts(prompts_path: str | None, listed, n: int, images_name: str) -> list[str]:
    """The prompt of each of n images: a prompts file's (cycled) when given, else the list the
    images artifact carries (`listed`, its config's "prompts"), which must have one per image."""
    from .errors import UsageError

    if prompts_path is not None:
        return cycle(read_prompts(prompts_path), n)
    if not listed or len(listed) != n:
        raise UsageError(f"{images_name} lists no prompts for its images; give --prompts")
    return list(listed)
