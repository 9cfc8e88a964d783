"""Recipe files: a list of gaml steps with named outputs, `${...}` references and overrides.

    # gaml run recipes/quickstart.yaml
    description: what this recipe does
    vars:                      # free parameters, overridable on the command line
      out: runs/quickstart
      seed: 0
    steps:
      - name: digits           # unique; later steps refer to it
        command: dataset digits
        outputs:               # named outputs of this step
          images: ${vars.out}/digits.safetensors
        args:                  # --key value (True -> --key, False -> --no-key, list -> repeated)
          out: ${outputs.images}
          seed: ${vars.seed}
      - name: info
        command: inspect
        args:
          _:                    # positional arguments
            - ${digits.images}

References: `${vars.NAME}`, `${outputs.NAME}` (this step's), `${STEP.OUTPUT}` (an earlier
step's), `${env.NAME}`. A value that is exactly one reference keeps its type.
Overrides: `key=value` with a dotted key (`vars.seed=3`, `steps.digits.args.seed=3`, or a
bare var name `seed=3`); values are parsed as YAML scalars/lists.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, UsageError

TOP_KEYS = {"description", "vars", "steps"}
STEP_KEYS = {"name", "command", "args", "outputs", "description"}
_REF = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass
class Step:
    name: str
    command: list[str]
    args: dict[str, Any]
    outputs: dict[str, Any]
    argv: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    path: Path
    description: str
    vars: dict[str, Any]
    steps: list[Step]
    header: str | None  # the command in the first comment line


def parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def parse_overrides(items: list[str]) -> list[tuple[list[str], Any]]:
    out = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".")]
        if not key.strip() or any(not p for p in parts):
            raise UsageError(f"override {item!r} has an empty key")
        out.append((parts, parse_value(value)))
    return out


def apply_overrides(data: dict, overrides: list[tuple[list[str], Any]], where: str) -> dict:
    data = copy.deepcopy(data)
    for parts, value in overrides:
        if parts[0] not in TOP_KEYS:
            if parts[0] in (data.get("vars") or {}) or len(parts) == 1:
                parts = ["vars", *parts]
        node: Any = data
        for i, key in enumerate(parts[:-1]):
            if isinstance(node, list):
                idx = _find_step(node, key)
                if idx is None:
                    raise UsageError(f"override {'.'.join(parts)}: {where} has no step {key!r}")
                node = node[idx]
                continue
            if not isinstance(node, dict):
                raise UsageError(f"override {'.'.join(parts)}: {'.'.join(parts[:i])} is not a mapping")
            if key not in node or node[key] is None:
                node[key] = {}
            node = node[key]
        last = parts[-1]
        if isinstance(node, list):
            raise UsageError(f"override {'.'.join(parts)}: cannot replace a whole step")
        if not isinstance(node, dict):
            raise UsageError(f"override {'.'.join(parts)}: parent is not a mapping")
        if parts[0] == "vars" and len(parts) == 2 and last not in (data.get("vars") or {}):
            known = ", ".join(sorted(data.get("vars") or {})) or "none"
            raise UsageError(f"override {'.'.join(parts[1:])}: {where} has no var {last!r} (vars: {known})")
        node[last] = value
    return data


def _find_step(steps: list, key: str) -> int | None:
    for i, s in enumerate(steps):
        if isinstance(s, dict) and s.get("name") == key:
            return i
    if key.isdigit() and int(key) < len(steps):
        return int(key)
    return None


def load_yaml(path: str | os.PathLike) -> tuple[dict, str | None]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such recipe file")
    raw = p.read_bytes()
    try:
        if b"\0" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\0"), raw.index(b"\0") + 1, "NUL byte")
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a YAML recipe (binary, not UTF-8 text)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"{p}{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: a recipe is a mapping with 'steps'")
    header = None
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if first.startswith("#"):
        header = first.lstrip("#").strip()
    return data, header


class _Resolver:
    def __init__(self, where: str, vars_: dict, outputs: dict[str, dict]):
        self.where = where
        self.vars = vars_
        self.outputs = outputs  # step name -> outputs
        self.own: dict | None = None

    def lookup(self, ref: str, ctx: str) -> Any:
        parts = ref.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise InputError(f"{self.where}: {ctx}: bad reference ${{{ref}}} (use vars.X, outputs.X, STEP.X or env.X)")
        head, key = parts
        if head == "vars":
            if key not in self.vars:
                raise InputError(f"{self.where}: {ctx}: unknown var ${{{ref}}}")
            return self.vars[key]
        if head == "env":
            if key not in os.environ:
                raise InputError(f"{self.where}: {ctx}: environment variable {key} is not set")
            return os.environ[key]
        if head == "outputs":
            if self.own is None or key not in self.own:
                raise InputError(f"{self.where}: {ctx}: this step declares no output {key!r}")
            return self.own[key]
        if head not in self.outputs:
            raise InputError(f"{self.where}: {ctx}: ${{{ref}}} refers to no earlier step {head!r}")
        if key not in self.outputs[head]:
            raise InputError(f"{self.where}: {ctx}: step {head!r} has no output {key!r}")
        return self.outputs[head][key]

    def resolve(self, value: Any, ctx: str, depth: int = 0) -> Any:
        if depth > 20:
            raise InputError(f"{self.where}: {ctx}: references nest too deeply (a cycle?)")
        if isinstance(value, str):
            m = _REF.fullmatch(value.strip())
            if m:
                return self.resolve(self.lookup(m.group(1), ctx), ctx, depth + 1)
            if "${" not in value:
                return value
            return _REF.sub(lambda mm: str(self.resolve(self.lookup(mm.group(1), ctx), ctx, depth + 1)), value)
        if isinstance(value, list):
            return [self.resolve(v, ctx, depth) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v, ctx, depth) for k, v in value.items()}
        return value


def to_argv(args: dict[str, Any], where: str) -> list[str]:
    argv: list[str] = []
    positional = args.get("_", [])
    for key, value in args.items():
        if key == "_":
            continue
        flag = "--" + str(key).replace("_", "-")
        if value is None:
            continue
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + flag[2:])
        elif isinstance(value, list):
            for v in value:
                argv += [flag, _scalar(v, where, key)]
        elif isinstance(value, dict):
            raise InputError(f"{where}: argument {key!r} is a mapping; give a scalar or a list")
        else:
            argv += [flag, _scalar(value, where, key)]
    if not isinstance(positional, list):
        positional = [positional]
    return argv + [_scalar(v, where, "_") for v in positional]


def _scalar(v: Any, where: str, key: str) -> str:
    if isinstance(v, (dict, list)):
        raise InputError(f"{where}: argument {key!r} has a nested value")
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Parse, override, validate and resolve a recipe into concrete gaml command lines."""
    raw, header = load_yaml(path)
    where = str(path)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise InputError(f"{where}: unknown top-level key(s) {sorted(unknown)} (allowed: {sorted(TOP_KEYS)})")
    data = apply_overrides(raw, parse_overrides(overrides or []), where)
    vars_ = data.get("vars") or {}
    if not isinstance(vars_, dict):
        raise InputError(f"{where}: 'vars' must be a mapping")
    steps_raw = data.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise InputError(f"{where}: 'steps' must be a non-empty list")

    resolver = _Resolver(where, {}, {})
    # vars may refer to other vars and env, in order of appearance
    for k, v in vars_.items():
        resolver.vars = {**resolver.vars}
        resolver.vars[k] = resolver.resolve(v, f"vars.{k}")

    steps: list[Step] = []
    seen: set[str] = set()
    for i, s in enumerate(steps_raw, 1):
        if not isinstance(s, dict):
            raise InputError(f"{where}: step {i} must be a mapping")
        name = s.get("name")
        ctx = f"step {i}" + (f" ({name})" if name else "")
        bad = set(s) - STEP_KEYS
        if bad:
            raise InputError(f"{where}: {ctx}: unknown key(s) {sorted(bad)} (allowed: {sorted(STEP_KEYS)})")
        if not isinstance(name, str) or not _NAME.match(name) or name in ("vars", "env", "outputs"):
            raise InputError(f"{where}: {ctx}: needs a 'name' (letters, digits, _ or -)")
        if name in seen:
            raise InputError(f"{where}: {ctx}: duplicate step name {name!r}")
        seen.add(name)
        command = s.get("command")
        if isinstance(command, str):
            command = command.split()
        if not command or not all(isinstance(c, str) for c in command):
            raise InputError(f"{where}: {ctx}: needs a 'command' such as 'dataset digits'")
        if command[0] == "gaml":
            command = command[1:]
        args = s.get("args") or {}
        outputs = s.get("outputs") or {}
        if not isinstance(args, dict) or not isinstance(outputs, dict):
            raise InputError(f"{where}: {ctx}: 'args' and 'outputs' must be mappings")
        resolver.own = None
        outs = {k: resolver.resolve(v, f"{ctx} outputs.{k}") for k, v in outputs.items()}
        resolver.own = outs
        res_args = resolver.resolve(args, f"{ctx} args")
        step = Step(name=name, command=list(command), args=res_args, outputs=outs)
        step.argv = [*command, *to_argv(res_args, f"{where}: {ctx}")]
        steps.append(step)
        resolver.outputs[name] = outs

    return Recipe(path=Path(path), description=str(data.get("description", "")),
                  vars=resolver.vars, steps=steps, header=header)
