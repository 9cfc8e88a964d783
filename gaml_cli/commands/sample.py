"""gaml sample: images from any image generator gaml writes (teachers, one-step generators)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, QuietOpt, setup


def sample(
    model: Annotated[str, typer.Option("--model", "-m", help="A 'teacher' or 'generator' artifact, or a shipped alias (digits, shapes).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Image artifact to write (.safetensors).")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=1_000_000, help="Number of samples.")] = 64,
    steps: Annotated[Optional[int], typer.Option(min=1, max=1000, help="Sampler steps (teachers; default from the model).")] = None,
    sampler: Annotated[Optional[str], typer.Option(help="heun (2 steps - 1 evaluations) or euler (1 per step).")] = None,
    guidance: Annotated[Optional[float], typer.Option(min=0.0, help="Classifier-free guidance scale (1 = conditional model).")] = None,
    class_: Annotated[Optional[int], typer.Option("--class", min=0, help="Class label for every sample (class-conditional models).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Caption for every sample (text-conditional models).")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Captions, one a line (text) or JSONL with 'prompt'/'caption'; cycled over the samples.")] = None,
    grid: Annotated[Optional[str], typer.Option(help="Also write a PNG grid of the first 64 samples.")] = None,
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
        gaml sample --model shapes-teacher.safetensors --prompt "a red circle on a blue background" -n 16 --out red.safetensors
    """
    setup(fmt, quiet)
    import time

    import numpy as np

    from ..core import console, runtime
    from ..core.artifacts import read_jsonl, save_artifact
    from ..core.errors import InputError, UsageError
    from ..core.images import IMAGE_KIND, save_grid
    from ..diffusion.io import load_model
    from ..diffusion.sample import SampleSpec, caption_attrs, default_conditions, generate

    if not out.endswith(".safetensors"):
        raise UsageError(f"--out {out}: expected a file name ending in .safetensors")
    if sum(x is not None for x in (class_, prompt, prompts)) > 1:
        raise UsageError("give at most one of --class, --prompt, --prompts")
    dev = runtime.pick_device(device.value if hasattr(device, "value") else device)
    path = _resolve_model(model)
    from ..diffusion.sd import is_pipeline_folder

    if is_pipeline_folder(path):
        return _sample_sd(path, out, n, steps, sampler, guidance, class_, prompt, prompts, grid, batch_size, seed, dev)
    net, info = load_model(path, device=dev)
    cfg = info.config
    if net.cond_type != "class" and class_ is not None:
        raise UsageError(f"--class needs a class-conditional model; {model} is {net.cond_type}-conditional")
    if net.cond_type != "text" and (prompt is not None or prompts is not None):
        raise UsageError(f"--prompt/--prompts need a text-conditional model; {model} is {net.cond_type}-conditional")
    if class_ is not None:
        if class_ >= net.num_classes:
            raise UsageError(f"--class {class_}: the model has classes 0..{net.num_classes - 1}")
        conds = [class_] * n
    elif prompt is not None:
        conds = [prompt] * n
    elif prompts is not None:
        texts = _read_prompts(prompts)
        conds = [texts[i % len(texts)] for i in range(n)]
    else:
        conds = default_conditions(net, cfg, n, seed)
    spec = SampleSpec(n=n, seed=seed, steps=steps, sampler=sampler, guidance=guidance, batch_size=batch_size)
    t0 = time.perf_counter()
    with console.progress(n, "sample") as bar:
        images, facts = generate(net, info.kind, cfg, spec, conds, dev, progress=bar)
    seconds = time.perf_counter() - t0
    tensors = {"images": images.clamp(-1, 1).numpy().astype(np.float32)}
    data_info = cfg.get("data", {})
    out_cfg = {"dataset": data_info.get("dataset"), "shape": list(images.shape[1:]), "value_range": [-1.0, 1.0],
               "source": {"model": str(path), "kind": info.kind, **facts, "seed": seed}}
    if net.cond_type == "class":
        tensors["labels"] = np.asarray(conds, dtype=np.int64)
        out_cfg["classes"] = data_info.get("classes")
    elif net.cond_type == "text":
        attrs = data_info.get("attributes")
        tensors["attrs"] = caption_attrs(conds, attrs)
        out_cfg["attributes"] = attrs
        out_cfg["attrs_columns"] = ["shape", "color", "background"]
        out_cfg["prompts"] = conds
    save_artifact(out, tensors, kind=IMAGE_KIND, config=out_cfg, seed=seed, parents=[path])
    if grid:
        save_grid(tensors["images"][:64], grid, nrow=8)
    console.summary({"out": out, "images": n, **facts, "seconds": round(seconds, 2),
                     "images_per_s": round(n / seconds, 1)}, title="sample")


def _sample_sd(path, out, n, steps, sampler, guidance, class_, prompt, prompts, grid, batch_size, seed, dev):
    """Stable Diffusion (a diffusers pipeline folder) through gaml's denoiser adapter."""
    import time

    import numpy as np

    from ..core import console
    from ..core.artifacts import save_artifact
    from ..core.errors import UsageError
    from ..core.images import IMAGE_KIND, save_grid
    from ..diffusion.sample import SampleSpec, generate_sd
    from ..diffusion.sd import load_sd

    if class_ is not None:
        raise UsageError("--class needs a class-conditional model; Stable Diffusion takes --prompt/--prompts")
    texts = [prompt] if prompt is not None else (_read_prompts(prompts) if prompts is not None else [""])
    conds = [texts[i % len(texts)] for i in range(n)]
    comp = load_sd(str(path), device=dev, option="--model")
    spec = SampleSpec(n=n, seed=seed, steps=steps, sampler=sampler, guidance=guidance, batch_size=batch_size)
    t0 = time.perf_counter()
    with console.progress(n, "sample") as bar:
        images, facts = generate_sd(comp, spec, conds, dev, progress=bar)
    seconds = time.perf_counter() - t0
    arr = images.numpy().astype(np.float32)
    cfg = {"dataset": None, "shape": list(arr.shape[1:]), "value_range": [-1.0, 1.0], "prompts": conds,
           "source": {"model": str(path), "kind": "sd-pipeline", **facts, "seed": seed}}
    save_artifact(out, {"images": arr}, kind=IMAGE_KIND, config=cfg, seed=seed,
                  parents=[{"path": str(path), "kind": "sd-pipeline"}])
    if grid:
        save_grid(arr[:64], grid, nrow=8)
    console.summary({"out": out, "images": n, **facts, "seconds": round(seconds, 2),
                     "images_per_s": round(n / seconds, 2)}, title="sample")


def _resolve_model(name: str):
    from pathlib import Path

    from ..core import hub

    return hub.resolve(name, option="--model")


def _read_prompts(path: str) -> list[str]:
    """Prompts from a text file (one a line), a JSONL file ('prompt' or 'caption' key), or
    '-' (stdin, either format: JSONL when the first line starts with '{')."""
    import io
    import sys
    from pathlib import Path

    from ..core.artifacts import read_jsonl
    from ..core.errors import InputError

    def check(rec):
        if not isinstance(rec.get("prompt", rec.get("caption")), str):
            raise ValueError("needs a 'prompt' (or 'caption') string")

    if path == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: no such file")
        try:
            text, name = p.read_text(encoding="utf-8"), path
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None
    first = next((l.strip() for l in text.splitlines() if l.strip()), "")
    if path.endswith((".jsonl", ".ndjson")) or first.startswith("{"):
        texts = [r.get("prompt", r.get("caption")) for r in read_jsonl(io.StringIO(text), validate=check, name=name)]
    else:
        texts = [l.strip() for l in text.splitlines() if l.strip()]
    if not texts:
        raise InputError(f"{name}: no prompts")
    return texts
