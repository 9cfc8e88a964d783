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


_WORDING = [  # typer's runtime coercion speaks pydantic; gaml speaks one style
    (r"Input should be greater than or equal to (\S+)", r"must be at least \1"),
    (r"Input should be less than or equal to (\S+)", r"must be at most \1"),
    (r"Input should be greater than (\S+)", r"must be greater than \1"),
    (r"Input should be less than (\S+)", r"must be less than \1"),
    (r"Input should be a valid integer.*", "expected an integer"),
    (r"Input should be a valid number.*", "expected a number"),
    (r"Input should be a valid boolean.*", "expected true or false"),
    (r"Input should be ", "must be "),
    (r"^Value error, ", ""),
]


def usage_message(exc: Exception) -> str:
    """One style for every usage error: the option first, then what is wrong with it."""
    import re

    param = getattr(exc, "param", None)
    message = getattr(exc, "message", None) or exc.format_message()
    for pattern, repl in _WORDING:
        message = re.sub(pattern, repl, message)
    kinds = {c.__name__ for c in type(exc).__mro__}
    if param is not None and "BadParameter" in kinds and "MissingParameter" not in kinds:
        opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(getattr(param, "opts", []))
        name = opts[0] if opts and getattr(param, "param_type_name", "") == "option" else (
            (getattr(param, "name", None) or "argument").upper())
        return f"{name}: {message}"
    return message if message == exc.format_message() else re.sub(
        r"Input should be .*", message, exc.format_message())
