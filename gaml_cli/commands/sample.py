"""gaml sample: images from any image generator gaml writes (teachers, one-step generators)."""

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
    import time

    import numpy as np

    from ..core import console, hub, runtime
    from ..core.errors import UsageError
    from ..core.prompts import cycle, read_prompts
    from ..diffusion.sample import SampleSpec
    from ..diffusion.sd import is_pipeline_folder

    check_out(out, ".safetensors", inputs={"--model": model, "--prompts": prompts})
    check_out(grid, ".png", "--grid", inputs={"--model": model, "--prompts": prompts, "--out": out})
    if sum(x is not None for x in (class_, prompt, prompts)) > 1:
        raise UsageError("give at most one of --class, --prompt, --prompts")
    dev = runtime.pick_device(device.value if hasattr(device, "value") else device)
    from ..diffusion.io import run_artifact

    path = run_artifact(hub.resolve(model, option="--model"))
    spec = SampleSpec(n=n, seed=seed, steps=steps, sampler=value(sampler), guidance=guidance, batch_size=batch_size)
    texts = [prompt] if prompt is not None else (read_prompts(prompts) if prompts is not None else None)

    sd_generator = _sd_generator_config(path)
    if is_pipeline_folder(path) or sd_generator is not None:  # Stable Diffusion through gaml's adapter
        from ..diffusion.sample import generate_sd, generate_sd_onestep
        from ..diffusion.sd import load_sd, load_sd_generator

        if class_ is not None:
            raise UsageError("--class needs a class-conditional model; Stable Diffusion takes --prompt/--prompts")
        conds = cycle(texts or [""], n)
        if sd_generator is not None:
            comp = load_sd_generator(path, sd_generator, device=dev)
        else:
            comp = load_sd(str(path), device=dev, option="--model")
        t0 = time.perf_counter()
        with console.progress(n, "sample") as bar:
            if sd_generator is not None:
                images, facts = generate_sd_onestep(comp, float(sd_generator["generator"]["sigma_init"]), spec,
                                                    conds, dev, progress=bar)
            else:
                images, facts = generate_sd(comp, spec, conds, dev, progress=bar)
        tensors = {}
        out_cfg = {"dataset": None, "prompts": conds}
        kind = "generator" if sd_generator is not None else "sd-pipeline"
        parents = [path] if sd_generator is not None else [{"path": str(path), "kind": "sd-pipeline"}]
    else:
        from ..diffusion.io import load_model
        from ..diffusion.sample import caption_attrs, default_conditions, generate

        net, info = load_model(path, device=dev)
        cfg = info.config
        if net.cond_type != "class" and class_ is not None:
            raise UsageError(f"--class needs a class-conditional model; {model} is {net.cond_type}-conditional")
        if net.cond_type != "text" and texts is not None:
            raise UsageError(f"--prompt/--prompts need a text-conditional model; {model} is {net.cond_type}-conditional")
        if class_ is not None:
            if class_ >= net.num_classes:
                raise UsageError(f"--class {class_}: the model has classes 0..{net.num_classes - 1}")
            conds = [class_] * n
        elif texts is not None:
            conds = cycle(texts, n)
        else:
            conds = default_conditions(net, cfg, n, seed)
        t0 = time.perf_counter()
        with console.progress(n, "sample") as bar:
            images, facts = generate(net, info.kind, cfg, spec, conds, dev, progress=bar)
        data_info = cfg.get("data", {})
        tensors, out_cfg = {}, {"dataset": data_info.get("dataset")}
        if net.cond_type == "class":
            tensors["labels"] = np.asarray(conds, dtype=np.int64)
            out_cfg["classes"] = data_info.get("classes")
        elif net.cond_type == "text":
            attrs = data_info.get("attributes")
            tensors["attrs"] = caption_attrs(conds, attrs)
            out_cfg.update(attributes=attrs, attrs_columns=["shape", "color", "background"], prompts=conds)
        kind, parents = info.kind, [path]
    seconds = time.perf_counter() - t0
    _write_samples(out, grid, images, tensors, out_cfg, {"model": str(path), "kind": kind, **facts, "seed": seed},
                   seed, parents)
    console.summary({"out": out, "images": n, **facts, "seconds": round(seconds, 2),
                     "images_per_s": round(n / seconds, 2)}, title="sample")


def _sd_generator_config(path):
    """The config of a Stable Diffusion one-step generator artifact (gaml distill), else None."""
    from pathlib import Path

    p = Path(path)
    if not (p.is_file() and p.suffix == ".safetensors"):
        return None
    from ..core.artifacts import read_header

    info = read_header(p)
    return info.config if info.kind == "generator" and "sd" in info.config else None


def _write_samples(out, grid, images, tensors, out_cfg, source, seed, parents) -> None:
    """The samples as an 'images' artifact (plus their labels/attrs/prompts) and an optional grid."""
    import numpy as np

    from ..core.artifacts import save_artifact
    from ..core.images import IMAGE_KIND, save_grid

    arr = images.clamp(-1, 1).numpy().astype(np.float32)
    cfg = {**out_cfg, "shape": list(arr.shape[1:]), "value_range": [-1.0, 1.0], "source": source}
    save_artifact(out, {"images": arr, **tensors}, kind=IMAGE_KIND, config=cfg, seed=seed, parents=parents)
    if grid:
        save_grid(arr[:64], grid, nrow=8)
