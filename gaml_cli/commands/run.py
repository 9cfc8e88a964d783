"""gaml run: execute a recipe (a list of gaml steps with named outputs)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import FormatOpt, QuietOpt, setup


def run(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="Recipe YAML file.")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides: seed=3, vars.out=runs/x, steps.NAME.args.KEY=V.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved gaml commands (stdout, one per line) and stop.")] = False,
    dry_run_n: Annotated[bool, typer.Option("-n", hidden=True, help="Old spelling of --dry-run (-n is a count in every other command).")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip a step whose declared outputs all exist (resume a pipeline).")] = False,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this step (repeatable).")] = None,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Run the gaml steps of RECIPE in order; later steps use earlier steps' outputs.

    A recipe has `vars` (overridable with key=value) and `steps`, each with `name`,
    `command`, `args` and named `outputs`; `${vars.X}`, `${STEP.OUTPUT}` and
    `${outputs.X}` are substituted. The whole recipe is checked (unknown options, bad
    values, dangling references) before the first step runs.

    Example:

    \b
        gaml run recipes/quickstart.yaml
        gaml run recipes/quickstart.yaml seed=1 vars.out=runs/seed1 --dry-run
    """
    setup(fmt, quiet)
    if dry_run_n:
        from ..core import console as _console

        _console.warn("-n is the old spelling of --dry-run here (elsewhere -n is a count); use --dry-run")
        dry_run = True
    from ..core import console
    from ..core.recipes import execute, plan

    root = ctx.find_root().command  # the command tree, passed down: core imports no command
    rec = plan(root, recipe, overrides or [], only=only)
    if dry_run:
        if console.state.format == "json":
            console.print_json([{"name": s.name, "argv": ["gaml", *s.argv], "outputs": s.outputs}
                                for s in rec.steps])
        else:
            import shlex

            for s in rec.steps:
                typer.echo(" ".join(shlex.quote(a) for a in ["gaml", *s.argv]))
        return
    result = execute(root, rec, skip_existing=skip_existing)
    if console.state.format == "json":
        console.print_json(result)
    elif not console.state.quiet:
        lines = [f"recipe {recipe}: {len(result['steps'])} step(s) in {result['seconds']:.1f}s"
                 + (f", skipped {', '.join(result['skipped'])}" if result["skipped"] else "")]
        for s in result["steps"]:
            outs = ", ".join(f"{k}={v}" for k, v in s["outputs"].items())
            lines.append(f"  {s['name']:<16} {s['seconds']:>7.1f}s  {outs}")
        console.err().print("\n".join(lines), markup=False)
