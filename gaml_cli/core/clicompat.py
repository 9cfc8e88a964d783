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
