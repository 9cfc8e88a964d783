"""The house's floors (docs/layout.md): commands -> methods -> shared pieces (diffusion/, graphs/,
datasets/) -> core, never back up; no import circles between the files of one package; no
command module imports another. Imports inside functions count: a lazy import is still a
dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "gaml_cli"
SHARED = ("diffusion", "graphs", "datasets", "embeddings")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every gaml_cli module (or package) the file imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gaml_cli")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("gaml_cli"):
                continue
            found.add(mod)
            for a in node.names:  # `from . import io` imports the module gaml_cli.x.io
                found.add(f"{mod}.{a.name}")
    return found


def _files(*subdirs: str) -> list[Path]:
    return sorted(p for d in subdirs for p in (PKG / d).rglob("*.py"))


def _existing(names: set[str]) -> set[str]:
    """Keep the names that are modules or packages of gaml_cli (drop `from x import function`)."""
    keep = set()
    for n in names:
        p = PKG.parent / Path(*n.split("."))
        if p.with_suffix(".py").is_file() or (p / "__init__.py").is_file():
            keep.add(n)
    return keep


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) == 1:
        return "root"
    return parts[1] if parts[1] in ("app", "commands", "methods", "core", *SHARED) else "root"


# What each layer may import from gaml_cli (besides itself and the package root's __version__).
ALLOWED = {
    "core": {"core"},
    "diffusion": {"core", *SHARED},
    "graphs": {"core", *SHARED},
    "datasets": {"core", *SHARED},
    "embeddings": {"core", *SHARED},
    "methods": {"core", "methods", *SHARED},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_layer_reaches_up(layer):
    bad = []
    for f in _files(layer):
        for mod in _existing(_imports(f)):
            target = _layer(mod)
            if target == "root":
                continue
            if target not in ALLOWED[layer]:
                bad.append(f"{f.relative_to(PKG.parent)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_core_and_methods_never_import_the_cli():
    bad = [f"{f.relative_to(PKG.parent)} imports {m}"
           for f in _files("core", "methods", *SHARED) for m in _imports(f)
           if m.startswith(("gaml_cli.app", "gaml_cli.commands"))]
    assert not bad, "\n".join(bad)


def test_no_command_module_imports_another():
    """commands/ may share the private option modules (_common, _sid_options), nothing else."""
    bad = []
    for f in _files("commands"):
        for m in _existing(_imports(f)):
            if m.startswith("gaml_cli.commands.") and not m.split(".")[2].startswith("_"):
                if m != _module_name(f):
                    bad.append(f"{f.name} imports {m}")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return cycles


def test_no_import_circles_inside_a_package():
    """Files of one package (methods/dbt, core, ...) import each other in one direction only."""
    graph: dict[str, set[str]] = {}
    for f in _files("."):
        mod = _module_name(f)
        pkg = mod.rsplit(".", 1)[0] if f.name != "__init__.py" else mod
        graph[mod] = {m for m in _existing(_imports(f))
                      if m != mod and m.rsplit(".", 1)[0] == pkg and m != pkg}
    assert not _cycles(graph), "import circles: " + "; ".join(" -> ".join(c) for c in _cycles(graph))


def test_the_checker_sees_a_planted_circle_and_an_upward_import(tmp_path):
    """The scanner itself: relative imports resolve, lazy imports count."""
    f = PKG / "methods" / "dbt" / "io.py"
    assert "gaml_cli.core.artifacts" in _imports(f)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert "gaml_cli.methods.dbt.run" in _imports(PKG / "commands" / "boost.py")
