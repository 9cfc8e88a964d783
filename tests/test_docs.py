"""The README is the front door and docs/ holds the rest: links resolve, the README stays short,
every command its table names exists, every method has its page.

Cheap on purpose: no torch at import (the command tree is built lazily, as `gaml --help` does).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
METHOD_PAGES = ("distill", "unlearn", "graphgen", "topic", "boost")

# [text](target) and [text](target "title"); images ![alt](target) too. Code spans and fenced
# blocks are removed first, so `[x](y)` inside code is not a link.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")


def _pages() -> list[Path]:
    """README, docs/ and the development diaries beside the benchmark rows."""
    return [README, *sorted(DOCS.glob("*.md")), *sorted((ROOT / "bench" / "results").glob("*.md"))]


def _prose(text: str) -> str:
    return _CODE.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Relative link targets of a markdown text (http(s), mailto and pure #anchors left out)."""
    out = []
    for target in _LINK.findall(_prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        out.append(target)
    return out


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation other than '-' and '_' dropped, spaces to
    '-', a repeated id suffixed -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Relative links of a page whose file is missing, or whose #anchor names no heading of a
    markdown file."""
    bad = []
    for target in links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve()
        if not dest.exists():
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            bad.append(target)
    return bad


def command_table_rows(text: str) -> list[str]:
    """First cells of the table under the README's '## Commands' heading."""
    section = re.search(r"^## Commands\s*$(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README has no '## Commands' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("|")]
    assert len(rows) > 2, "README's command table is empty"
    cells = []
    for line in rows[2:]:  # header and |---| rule
        # a '\|' inside a cell is an escaped pipe, not a column break
        cells.append(re.split(r"(?<!\\)\|", line)[1])
    return cells


def commands_named(cell: str) -> list[list[str]]:
    """The command paths of the backticked `gaml ...` spans of a table cell: the words after
    `gaml` up to the first option (-x), placeholder (CAPITALS, [optional], a|b choice) or word
    that is not a subcommand name."""
    paths = []
    for span in re.findall(r"`([^`]*)`", cell):
        words = span.replace("\\|", "|").split()
        if not words or words[0] != "gaml":
            continue
        path = []
        for w in words[1:]:
            if w.startswith("-") or w.startswith("[") or "|" in w or w != w.lower() or not re.fullmatch(r"[a-z][a-z0-9-]*", w):
                break
            path.append(w)
        paths.append(path)
    return paths


def _is_group(cmd) -> bool:
    # duck-typed: recent typer releases vendor click, so isinstance(cmd, click.Group) is not reliable
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _root():
    import typer

    from gaml_cli.app import click_app

    root = click_app()
    return root, typer.Context(root, info_name="gaml")


def resolve(path: list[str]):
    """Walk the command tree: (the command, the words left over as a leaf's arguments), or
    (None, the rest) when a word is not a subcommand of the group before it."""
    import typer

    cmd, ctx = _root()
    for i, word in enumerate(path):
        if not _is_group(cmd):
            return cmd, path[i:]  # the rest are a leaf command's arguments (`completion bash`)
        sub = cmd.get_command(ctx, word)
        if sub is None:
            return None, path[i:]
        ctx = typer.Context(sub, info_name=word, parent=ctx)
        cmd = sub
    return cmd, []


def leaf_paths() -> set[str]:
    """Every command that is not a group, as 'graphgen eval'."""
    import typer

    out = set()

    def visit(cmd, path, ctx):
        if _is_group(cmd):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not getattr(sub, "hidden", False):
                    visit(sub, [*path, name], typer.Context(sub, info_name=name, parent=ctx))
        else:
            out.add(" ".join(path))

    root, ctx = _root()
    visit(root, [], ctx)
    return out


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n < 300, f"README.md has {n} lines; move detail to docs/"


def test_every_command_in_the_readme_table_exists():
    cells = command_table_rows(README.read_text(encoding="utf-8"))
    named = [p for cell in cells for p in commands_named(cell)]
    assert named, "no `gaml ...` command found in the README's command table"
    missing = []
    for path in named:
        cmd, rest = resolve(path)
        if cmd is None:
            missing.append(" ".join(path))
    assert missing == [], f"README's command table names commands gaml does not have: {missing}"


def test_every_command_is_in_the_readme_table():
    cells = command_table_rows(README.read_text(encoding="utf-8"))
    listed = set()
    for path in (p for cell in cells for p in commands_named(cell)):
        cmd, rest = resolve(path)
        if cmd is not None:
            listed.add(" ".join(path[: len(path) - len(rest)]))
    assert sorted(leaf_paths() - listed) == []


@pytest.mark.parametrize("method", METHOD_PAGES)
def test_method_page_exists_and_is_linked_from_readme(method):
    page = DOCS / f"{method}.md"
    assert page.is_file(), f"docs/{method}.md is missing"
    assert f"docs/{method}.md" in links(README.read_text(encoding="utf-8"))
    assert f"{method}.md" in links((DOCS / "index.md").read_text(encoding="utf-8"))


# ------------------------------------------------------------------- the checks catch what they should


def test_link_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    (tmp_path / "there.md").write_text("# `gaml x`: one (A-B)\n## Benchmarks\n## Benchmarks\n")
    page.write_text("[a](there.md) [b](there.md#benchmarks-1) [c](missing.md#y) [d](https://e.org/z) "
                    "[g](there.md#gaml-x-one-a-b) [h](there.md#nowhere) "
                    "`[e](in-code.md)`\n```\n[f](in-fence.md)\n```\n")
    assert broken_links(page) == ["missing.md#y", "there.md#nowhere"]


def test_command_parse_stops_at_options_and_placeholders():
    cell = r"`gaml graphgen eval SAMPLES --ref t.jsonl` / `gaml completion bash\|zsh` / `gaml models ls`"
    assert commands_named(cell) == [["graphgen", "eval"], ["completion"], ["models", "ls"]]
    assert resolve(["graphgen", "eval"])[0] is not None
    assert resolve(["graphgen", "evaluate"])[0] is None
    assert resolve(["no-such-command"])[0] is None
    assert resolve(["completion", "bash"]) == (resolve(["completion"])[0], ["bash"])
    assert {"distill", "graphgen eval", "models ls", "completion"} <= leaf_paths()
