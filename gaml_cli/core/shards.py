"""`--shard i/N`: the i-th of N contiguous slices of a command's inputs (i counts from 0).

A job array (SLURM_ARRAY_TASK_ID, a Ray or Dask map) runs the same command line with
i = 0 .. N-1; together the N runs cover every input exactly once, with no scheduler of gaml's
own. Slices are contiguous and differ in size by at most one item.
"""

from __future__ import annotations

import re
from typing import Sequence, TypeVar

from .errors import UsageError

T = TypeVar("T")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str | None, option: str = "--shard") -> tuple[int, int] | None:
    """'i/N' -> (i, N); None -> None. UsageError unless 0 <= i < N."""
    if text is None:
        return None
    m = _SHARD.match(text)
    if not m:
        raise UsageError(f"{option} {text!r}: expected i/N, e.g. 0/4 (slice i of N, counting from 0)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"{option} {text}: need 0 <= i < N (slices are numbered 0 .. N-1)")
    return i, n


def take_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The items of slice i of N (all items when shard is None)."""
    if shard is None:
        return list(items)
    i, n = shard
    total = len(items)
    return list(items[i * total // n:(i + 1) * total // n])
