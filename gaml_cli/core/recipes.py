"""Check and execute recipes against the gaml command tree (in-process, one step at a time).

The command tree (a click group) is passed in by the caller, so core imports no command."""

from __future__ import annotations

import time
from pathlib import Path

from .config import Recipe, load_recipe
from .errors import GamlError, InputError, UsageError


def _command_for(group, argv: list[str]):
    """(click command, info name path, remaining args) for a step's argv."""
    from . import clicompat as cc

    ctx = cc.context(group, "gaml")
    cmd, names, rest = group, ["gaml"], list(argv)
    while cc.is_group(cmd):
        if not rest or rest[0].startswith("-"):
            raise UsageError(f"'{' '.join(names)}' needs a subcommand")
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            raise UsageError(f"'{' '.join(names)}' has no subcommand {rest[0]!r}")
        names.append(rest.pop(0))
        ctx = cc.context(sub, names[-1], parent=ctx)
        cmd = sub
    return cmd, ctx.parent, names, rest


def check_step(group, argv: list[str]) -> None:
    """Parse a step's command line exactly as the CLI would, without running it."""
    from . import clicompat as cc

    cmd, parent, names, rest = _command_for(group, argv)
    if cmd.name == "run":
        raise UsageError("a recipe step cannot run another recipe")
    try:
        cmd.make_context(names[-1], list(rest), parent=parent)
    except GamlError:
        raise
    except Exception as exc:
        if cc.is_exit(exc):
            return
        if cc.is_click_exception(exc):
            raise UsageError(cc.usage_message(exc)) from None
        raise


def plan(group, path: str, overrides: list[str], only: list[str] | None = None) -> Recipe:
    rec = load_recipe(path, overrides)
    if only:
        names = {s.name for s in rec.steps}
        unknown = [o for o in only if o not in names]
        if unknown:
            raise UsageError(f"--only {unknown[0]}: {path} has no such step (steps: {', '.join(names)})")
        rec.steps = [s for s in rec.steps if s.name in set(only)]
    for s in rec.steps:
        try:
            check_step(group, s.argv)
        except GamlError as exc:
            raise InputError(f"{path}: step {s.name!r}: {exc.one_line()}") from None
    return rec


def execute(group, rec: Recipe, skip_existing: bool = False) -> dict:
    from . import clicompat as cc
    from . import console
    from .artifacts import current_command, output_group

    done, skipped = [], []
    t0 = time.perf_counter()
    saved = (console.state.quiet, console.state.format)
    for i, s in enumerate(rec.steps, 1):
        outs = [Path(str(v)) for v in s.outputs.values()]
        if skip_existing and outs and all(p.exists() for p in outs):
            console.log(f"[dim][{i}/{len(rec.steps)}] {s.name}: outputs exist, skipped[/dim]")
            skipped.append(s.name)
            continue
        line = " ".join(["gaml", *s.argv])
        console.log(f"[bold][{i}/{len(rec.steps)}] {s.name}[/bold]: {line}")
        token = current_command.set(["gaml", *s.argv])
        started = time.perf_counter()
        try:
            console.state.quiet, console.state.format = saved[0], "human"
            with output_group():  # each step's files land when the step succeeds, so the next reads them
                rv = group.main(args=list(s.argv), prog_name="gaml", standalone_mode=False)
            # typer turns Ctrl-C / SIGTERM into a returned 130 rather than an exception
            if rv == 130:
                raise KeyboardInterrupt
            if isinstance(rv, int) and rv != 0:
                raise GamlError(f"recipe {rec.path} step {s.name!r} exited with {rv}")
        except GamlError as exc:
            exc.message = f"recipe {rec.path} step {s.name!r}: {exc.message}"
            raise
        except Exception as exc:
            if cc.is_exit(exc):
                if exc.exit_code == 130:
                    raise KeyboardInterrupt from None
                if exc.exit_code:
                    raise GamlError(f"recipe {rec.path} step {s.name!r} exited with {exc.exit_code}") from None
            elif cc.is_click_exception(exc):
                raise UsageError(f"recipe {rec.path} step {s.name!r}: {exc.format_message()}") from None
            else:
                raise
        finally:
            current_command.reset(token)
            console.state.quiet, console.state.format = saved
        done.append({"name": s.name, "seconds": round(time.perf_counter() - started, 3),
                     "outputs": s.outputs})
    return {"recipe": str(rec.path), "steps": done, "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 3)}
