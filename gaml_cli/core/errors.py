"""Error types that the entry point maps to one stderr line and an exit code.

Exit codes (DESIGN.md): 0 ok, 1 runtime failure, 2 bad usage or bad input.
"""

from __future__ import annotations


class GamlError(Exception):
    """An error the user can act on; shown as one line, no traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        # Never let an embedded newline break the one-line contract.
        return " ".join(text.split())


class UsageError(GamlError):
    """Impossible or contradictory options."""

    exit_code = 2


class InputError(GamlError):
    """A file or record the user gave us is missing, corrupt or of the wrong kind."""

    exit_code = 2


class ModelNotFoundError(InputError):
    """A model alias or path that cannot be resolved to local weights."""


class RuntimeFailure(GamlError):
    """Something failed while doing the work (not the user's input)."""

    exit_code = 1
