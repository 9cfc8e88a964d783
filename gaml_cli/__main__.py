"""Entry point: run the app, map errors to one stderr line and an exit code.

0 ok, 1 runtime failure, 2 bad usage or bad input, 130 interrupted. Set GAML_DEBUG=1 to
see the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import signal
import sys


def _say(message: str) -> None:
    sys.stderr.write(" ".join(message.split()) + "\n")
    sys.stderr.flush()


class _Failed(Exception):
    """A command that returned a non-zero code: its staged outputs are dropped."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _on_sigterm(signum, frame):  # turn SIGTERM into an exception so atomic writes clean up
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from .core import console
    from .core.artifacts import current_command
    from .core.errors import GamlError

    console.reset()
    token = current_command.set(["gaml", *args])
    debug = os.environ.get("GAML_DEBUG", "") not in ("", "0")
    try:
        if threading_main():
            signal.signal(signal.SIGTERM, _on_sigterm)
        from .app import click_app
        from .core.artifacts import output_group

        with output_group():  # the command's files land together, or none of them
            rv = click_app().main(args=args, prog_name="gaml", standalone_mode=False)
            if isinstance(rv, int) and rv != 0:
                raise _Failed(rv)
        if rv == 130:  # typer's answer to Ctrl-C / SIGTERM
            _say("gaml: interrupted")
        return rv if isinstance(rv, int) else 0
    except _Failed as exc:
        if exc.code == 130:  # typer's answer to Ctrl-C / SIGTERM
            _say("gaml: interrupted")
        return exc.code
    except GamlError as exc:
        if debug:
            raise
        _say(f"gaml: error: {exc.one_line()}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("gaml: interrupted")
        return 130
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): not an error of ours
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except MemoryError:
        _say("gaml: error: out of memory (try a smaller batch size)")
        return 1
    except Exception as exc:
        code = _click_exit(exc, debug)
        if code is not None:
            return code
        if debug:
            raise
        # an unexpected failure: still one line unless debugging
        first = str(exc).splitlines()[0] if str(exc) else ""
        _say(f"gaml: error: {type(exc).__name__}: {first} (set GAML_DEBUG=1 for the traceback)")
        return 1
    finally:
        current_command.reset(token)


def _click_exit(exc: Exception, debug: bool) -> int | None:
    """Exit code for click's own exceptions (usage errors, --help, abort); None otherwise."""
    from .core import clicompat as cc

    names = cc.exc_names(exc)
    if "NoArgsIsHelpError" in names and getattr(exc, "ctx", None) is not None:
        sys.stderr.write(exc.ctx.get_help() + "\n")
        return 2
    if cc.is_exit(exc):
        if exc.exit_code == 130:
            _say("gaml: interrupted")
        return int(exc.exit_code or 0)
    if cc.is_abort(exc):
        _say("gaml: interrupted")
        return 130
    if not cc.is_click_exception(exc) or debug:
        return None
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "gaml"
    hint = f" (see '{where} --help')" if "UsageError" in names else ""
    _say(f"gaml: error: {cc.usage_message(exc)}{hint}")
    return int(getattr(exc, "exit_code", 2))


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class StdoutClosed(BrokenPipeError):
    """The reader of stdout went away and the command has no files left to finish."""


class _PipeGuard:
    """sys.stdout for the real process: when the reader goes away (`gaml ... | head`), further
    output is dropped quietly, as Unix tools do. A command that still has files to write (staged
    outputs, or one that declared them with console.files_follow()) goes on and finishes them;
    one that only streams stops (StdoutClosed) and exits 0."""

    def __init__(self, inner):
        self._inner = inner
        self.broken = False

    def _closed(self):
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._inner.fileno())
        except (OSError, ValueError):
            pass
        from .core import console
        from .core.artifacts import has_staged

        if not (console.state.files_follow or has_staged()):
            raise StdoutClosed

    def write(self, text):
        if self.broken:
            return len(text)
        try:
            return self._inner.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self):
        if self.broken:
            return
        try:
            self._inner.flush()
        except BrokenPipeError:
            self._closed()

    def __getattr__(self, name):
        return getattr(self._inner, name)


def entry() -> None:
    guard = sys.stdout = _PipeGuard(sys.stdout)
    code = main()
    try:
        guard.flush()
    except BrokenPipeError:
        pass
    if code == 130 and threading_main():
        # the run has stopped and saved what it had: a scheduler's second SIGTERM (or Ctrl-C)
        # landing while the interpreter shuts down must not turn the exit status into 143
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    entry()
