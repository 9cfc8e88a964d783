"""gaml sample: images from any image generator gaml writes (teachers, one-step generators).

Thin: the job is gaml_cli.diffusion.jobs.sample.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, QuietOpt, check_out, out_file, setup, value


class Sampler(str, Enum):
    heun = "heun"
    euler = "euler"


def sample(
    model: Annotated[str, typer.Option("--model", "-m", help="A 'teacher' or 'generator' artifact, or a shipped alias (digits, shapes).")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Image artifact to write (.safetensors).")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=1_000_000, help="Number of samples.")] = 64,
    steps: Annotated[Optional[int], typer.Option(min=1, max=1000, help="Sampler steps (teachers; default from the model).")] = None,
    sampler: Annotated[Optional[Sampler], typer.Option(help="heun (2 steps - 1 evaluations) or euler (1 per step) [the model's stored default].")] = None,
    guidance: Annotated[Optional[float], typer.Option(min=0.0, help="Classifier-free guidance scale (1 = conditional model).")] = None,
    class_: Annotated[Optional[int], typer.Option("--class", min=0, help="Class label for every sample (class-conditional models).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Caption for every sample (text-conditional models).")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Captions, one a line (text) or JSONL with 'prompt'/'caption'; cycled over the samples.")] = None,
    grid: Annotated[Optional[str], typer.Option(callback=out_file(".png"), help="Also write a PNG grid of the first 64 samples.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per forward pass (does not change the samples).")] = 256,
    seed: Annotated[int, typer.Option(min=0, help="Base seed; sample i uses seed (seed, i).")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Sample images from a teacher (Heun/Euler, EDM schedule, guidance) or a one-step generator.

    Without --class/--prompt the conditions are balanced over classes (i mod K) or drawn at
    random from the model's caption attributes. The artifact stores the labels (or parsed
    caption attributes) so `gaml eval fd` can score conditional accuracy.

    Example:

    \b
        gaml sample --model digits -n 1000 --steps 18 --out samples.safetensors --grid samples.png
        gaml sample --model shapes --prompt "a red circle on a blue background" -n 16 --out red.safetensors
    """
    setup(fmt, quiet)
    from ..core import console
    from ..diffusion.jobs import SampleOptions, sample as run_sample

    check_out(out, ".safetensors", inputs={"--model": model, "--prompts": prompts})
    check_out(grid, ".png", "--grid", inputs={"--model": model, "--prompts": prompts, "--out": out})
    summary = run_sample(SampleOptions(model=model, out=out, n=n, steps=steps, sampler=value(sampler), guidance=guidance,
                                       class_=class_, prompt=prompt, prompts=prompts, grid=grid,
                                       batch_size=batch_size, seed=seed, device=value(device)))
    console.summary(summary, title="sample")
