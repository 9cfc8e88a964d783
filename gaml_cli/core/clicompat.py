"""Duck-typed access to the click layer under typer.

Recent typer releases vendor click (typer._click) while older ones use the click package;
gaml relies only on the behaviour both share: exception class names with `exit_code` and
`format_message()`, groups with `list_commands/get_command`, params with
`param_type_name`, and `typer.Context`.
"""

from __future__ import annotations

from typing import Any


def exc_names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def is_click_exception(exc: BaseException) -> bool:
    return "ClickException" in exc_names(exc) and hasattr(exc, "format_message")


def is_exit(exc: BaseException) -> bool:
    return "Exit" in exc_names(exc) and hasattr(exc, "exit_code") and not is_click_exception(exc)


def is_abort(exc: BaseException) -> bool:
    return "Abort" in exc_names(exc)


def is_group(cmd: Any) -> bool:
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def context(cmd: Any, info_name: str, parent: Any = None):
    import typer

    return typer.Context(cmd, info_name=info_name, parent=parent)


def is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def choices(param: Any) -> list[str]:
    """Allowed values of a Choice/Enum parameter, [] for free-form ones."""
    values = getattr(getattr(param, "type", None), "choices", None)
    if values:
        return [str(getattr(v, "value", v)) for v in values]
    # newer typer keeps the annotation instead of a click type
    import enum
    import typing

    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    candidates = [ann, *typing.get_args(ann)] if ann is not None else []
    for c in candidates:
        if isinstance(c, type) and issubclass(c, enum.Enum):
            return [str(m.value) for m in c]
        if typing.get_origin(c) is typing.Literal:
            return [str(v) for v in typing.get_args(c)]
    return []


def finite_floats(root: Any) -> None:
    """Make every float-typed parameter of the command tree refuse nan and inf (a usage error
    naming the option, exit 2), so no command computes garbage from them."""
    import math
    import typing

    def is_float(p) -> bool:
        desc = getattr(p, "type_descriptor", None)
        ann = getattr(desc, "annotation", None)
        if ann is float:
            return True
        return typing.get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
            and float in typing.get_args(ann)

    def wrap(p) -> None:
        inner = p.process_value

        def process_value(ctx, value):
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                try:
                    number = float(v) if v is not None else 0.0
                except (TypeError, ValueError):
                    continue  # the coercion below reports it
                if not math.isfinite(number):
                    raise usage_error(ctx, p, f"{v!r} is not a finite number")
            return inner(ctx, value)

        p.process_value = process_value

    def visit(cmd):
        for p in getattr(cmd, "params", []):
            if is_float(p):
                wrap(p)
        if is_group(cmd):
            for sub in getattr(cmd, "commands", {}).values():
                visit(sub)

    visit(root)


def usage_error(ctx: Any, param: Any, message: str):
    """click's BadParameter (typer's vendored click or click), naming the option."""
    import importlib

    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            BadParameter = importlib.import_module(mod).BadParameter
            break
        except ImportError:
            continue
    return BadParameter(message, ctx=ctx, param=param)
