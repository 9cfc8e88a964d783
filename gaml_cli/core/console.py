"""stderr console for people, stdout for data.

Everything a person reads (logs, warnings, progress bars) goes to stderr through
`err()`/`log()`/`progress()`. stdout carries data only: artifacts written to `-`,
JSON summaries with `--format json`, or a human table when the command's output *is*
the table (`gaml models ls`).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass
class _State:
    quiet: bool = False
    format: str = "human"
    files_follow: bool = False  # the command writes files after streaming stdout (see files_follow())


state = _State()
_stderr_console = None


def set_options(quiet: bool | None = None, fmt: str | None = None) -> None:
    if quiet is not None:
        state.quiet = state.quiet or quiet
    if fmt is not None:
        if fmt not in ("human", "json"):
            from .errors import UsageError

            raise UsageError(f"--format must be 'human' or 'json', not {fmt!r}")
        state.format = fmt


def reset() -> None:
    """Back to defaults (the CLI entry point calls this once per invocation)."""
    global _stderr_console
    state.quiet = False
    state.format = "human"
    state.files_follow = False
    _stderr_console = None


def files_follow() -> None:
    """Declare that this command writes files besides what it streams on stdout: when the
    reader of stdout goes away (`| head`), the command goes on and finishes its files."""
    state.files_follow = True


def err():
    """The stderr rich console (created lazily so `--help` stays fast)."""
    global _stderr_console
    if _stderr_console is None or _stderr_console.file is not sys.stderr:
        from rich.console import Console

        _stderr_console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
    return _stderr_console


def log(message: str) -> None:
    """An informational line on stderr; silenced by --quiet."""
    if not state.quiet:
        err().print(message)


def warn(message: str) -> None:
    """A warning on stderr; shown even with --quiet."""
    err().print(f"[yellow]warning:[/yellow] {message}")


def finite(data: Any) -> Any:
    """NaN/inf -> None, recursively: JSON has no NaN, and jq and friends reject it."""
    if isinstance(data, float):
        return data if data == data and data not in (float("inf"), float("-inf")) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def print_json(data: Any) -> None:
    """One JSON document on stdout (data channel)."""
    sys.stdout.write(json.dumps(finite(data), indent=None, sort_keys=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj: Any):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def summary(data: dict, title: str | None = None, stdout_busy: bool = False) -> None:
    """Print a command's closing summary.

    --format json: one JSON object on stdout (on stderr when the command already streams
    data to stdout). human: a key/value table on stderr unless --quiet.
    """
    if state.format == "json":
        if stdout_busy:
            sys.stderr.write(json.dumps(finite(data), default=_json_default) + "\n")
        else:
            print_json(data)
        return
    if state.quiet:
        return
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, default=_json_default)
        table.add_row(str(key), str(value))
    err().print(table)


class _NullBar:
    def update(self, advance: int = 1, **fields: Any) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass


class _Bar:
    def __init__(self, progress, task):
        self._p = progress
        self._t = task

    def update(self, advance: int = 1, **fields: Any) -> None:
        info = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        if info:
            self._p.update(self._t, advance=advance, info=info)
        else:
            self._p.update(self._t, advance=advance)

    def set_description(self, text: str) -> None:
        self._p.update(self._t, description=text)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class _PlainBar:
    """Progress for logs (stderr not a terminal): a line every `interval` seconds and at the end."""

    def __init__(self, total: int | None, description: str, completed: int, interval: float):
        import time

        self.total, self.description, self.done = total, description, completed
        self.interval = interval
        self.t0 = self.last = time.monotonic()
        self.fields: dict[str, Any] = {}

    def update(self, advance: int = 1, **fields: Any) -> None:
        import time

        self.done += advance
        self.fields.update(fields)
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.emit()

    def set_description(self, text: str) -> None:
        self.description = text

    def emit(self) -> None:
        import time

        el = time.monotonic() - self.t0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total}" if self.total else ""
        info = " ".join(f"{k}={_fmt(v)}" for k, v in self.fields.items())
        sys.stderr.write(f"{self.description} {self.done}{of}{pct} {el:.0f}s {info}".rstrip() + "\n")
        sys.stderr.flush()


@contextmanager
def progress(total: int | None, description: str, completed: int = 0) -> Iterator[_Bar | _NullBar]:
    """A progress bar on stderr (nothing with --quiet). `bar.update(n, loss=...)` shows fields.

    When stderr is not a terminal (logs, CI) it prints a plain line every
    GAML_PROGRESS_SECONDS (default 30) seconds instead of a live bar.
    """
    if state.quiet:
        yield _NullBar()
        return
    if not sys.stderr.isatty():
        import os

        bar = _PlainBar(total, description, completed, float(os.environ.get("GAML_PROGRESS_SECONDS", "30")))
        yield bar
        bar.emit()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=err(), transient=False) as p:
        task = p.add_task(description, total=total, completed=completed, info="")
        yield _Bar(p, task)
