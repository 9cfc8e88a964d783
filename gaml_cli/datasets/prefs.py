"""Offline preference data from a caption model and an oracle: `gaml dataset prefs` and
`gaml eval reward`, each one function taking one options object:

    from gaml_cli.datasets.prefs import PrefsOptions, RewardOptions, prefs, reward
    prefs(PrefsOptions(out="prefs-size", oracle="size", n=1000))
    print(reward(RewardOptions(images="s.safetensors", oracle="size")))

A pair is two samples of one caption from the model with different seeds; the oracle
(gaml_cli.datasets.oracles) scores both, and the higher is "chosen". The folder holds
images/NNNNN-a.png and images/NNNNN-b.png (RGB, at the model's resolution) and prefs.jsonl,
one pair a line:

    {"prompt": "a red circle on a blue background", "chosen": "images/00000-b.png",
     "rejected": "images/00000-a.png", "label": 1, "oracle": "size",
     "chosen_score": 0.21, "rejected_score": 0.14}

label 1: chosen is preferred; label 0.5: the scores tie exactly (then a is listed as chosen),
as Pick-a-Pic marks ties. Image a of pair i is sample 2i of the run, b is sample 2i + 1, each
from its own noise seed (seed, 2i) and (seed, 2i + 1), so pair i does not depend on --n or on
the batch size. Without --captions, caption i is drawn from the model's attributes as
`gaml sample` draws them (the shapes data set's captions: shape, colour, another background).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PAIRS = 1000
JSONL_NAME = "prefs.jsonl"
IMAGES_DIR = "images"
QUANTILES = (("q05", 0.05), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("q95", 0.95))


# --------------------------------------------------------------------------- gaml dataset prefs


@dataclass
class PrefsOptions:
    """Every option of `gaml dataset prefs`, by the same names."""

    out: str  # a new or empty folder
    oracle: str = "size"
    model: str = "shapes"
    n: int | None = None  # pairs; None: DEFAULT_PAIRS, or one per --captions line
    captions: str | None = None  # text (one a line) or JSONL with 'prompt'/'caption'; '-' = stdin
    steps: int | None = None  # None: the model's default
    guidance: float | None = None  # None: the model's default
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"


def _check_empty_folder(out: str) -> None:
    from ..core.errors import UsageError

    p = Path(out)
    if p.is_dir() and any(p.iterdir()):
        raise UsageError(f"--out {out}: the folder is not empty; give a new or empty folder "
                         "(old images would mix with the new pairs)")


def _load_caption_model(name: str, dev):
    """(network, its artifact info) of a gaml text-conditional teacher or generator."""
    from ..core import hub
    from ..core.errors import UsageError
    from ..diffusion.io import load_model, run_artifact
    from ..diffusion.jobs import sd_generator_config
    from ..diffusion.sd import is_pipeline_folder

    path = run_artifact(hub.resolve(name, option="--model"))
    if is_pipeline_folder(path) or sd_generator_config(path) is not None:
        raise UsageError(f"--model {name}: Stable Diffusion is not supported here yet; the oracles measure "
                         "gaml's synthetic shapes (give a shapes model, e.g. --model shapes)")
    net, info = load_model(path, device=dev)
    if net.cond_type != "text":
        raise UsageError(f"--model {name} is {net.cond_type}-conditional; preference pairs need a caption "
                         "model (e.g. --model shapes)")
    return net, info, path


def _captions(o: PrefsOptions, net, cfg) -> list[str]:
    from ..core.errors import UsageError
    from ..core.prompts import cycle, read_prompts
    from ..diffusion.sample import default_conditions

    if o.n is not None and o.n < 1:
        raise UsageError("--n: must be at least 1")
    if o.captions is not None:
        texts = read_prompts(o.captions)
        return cycle(texts, o.n or len(texts))
    return default_conditions(net, cfg, o.n or DEFAULT_PAIRS, o.seed)


def _write_png(path: Path, pixels) -> None:
    from PIL import Image

    from ..core.artifacts import atomic_write

    with atomic_write(path, "wb") as fh:
        Image.fromarray(pixels).save(fh, format="PNG")


def prefs(o: PrefsOptions) -> dict[str, Any]:
    """Sample two images per caption, score both with o.oracle and write the pairs to o.out
    (images/ + prefs.jsonl); returns the summary (pairs, ties, mean margin, seconds)."""
    import time

    import numpy as np

    from ..core import console, runtime
    from ..core.artifacts import write_jsonl
    from ..core.errors import UsageError
    from ..core.images import check_finite_images, to_uint8
    from ..diffusion.sample import SampleSpec, generate
    from . import oracles

    if o.oracle not in oracles.ORACLES:
        raise UsageError(f"--oracle {o.oracle!r}: one of {', '.join(oracles.ORACLES)}")
    if o.guidance is not None and not np.isfinite(o.guidance):
        raise UsageError(f"--guidance: {o.guidance!r} is not a finite number")
    _check_empty_folder(o.out)
    dev = runtime.pick_device(o.device)
    net, info, path = _load_caption_model(o.model, dev)
    caps = _captions(o, net, info.config)
    n = len(caps)
    conds = [c for c in caps for _ in (0, 1)]  # sample 2i is a, 2i + 1 is b
    spec = SampleSpec(n=2 * n, seed=o.seed, steps=o.steps, guidance=o.guidance, batch_size=o.batch_size)
    t0 = time.perf_counter()
    with console.progress(2 * n, "prefs") as bar:
        images, facts = generate(net, info.kind, info.config, spec, conds, dev, progress=bar)
    x = images.clamp(-1, 1).numpy().astype(np.float32)
    check_finite_images(x, f"--model {o.model}")
    s = oracles.score(o.oracle, x)
    s_a, s_b = s[0::2], s[1::2]
    pixels = to_uint8(x)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    out = Path(o.out)
    width = max(5, len(str(n - 1)))
    records = []
    for i, caption in enumerate(caps):
        name_a = f"{IMAGES_DIR}/{i:0{width}d}-a.png"
        name_b = f"{IMAGES_DIR}/{i:0{width}d}-b.png"
        _write_png(out / name_a, pixels[2 * i])
        _write_png(out / name_b, pixels[2 * i + 1])
        a, b = float(s_a[i]), float(s_b[i])
        b_wins = b > a
        records.append({
            "prompt": caption,
            "chosen": name_b if b_wins else name_a,
            "rejected": name_a if b_wins else name_b,
            "label": 0.5 if a == b else 1,
            "oracle": o.oracle,
            "chosen_score": max(a, b),
            "rejected_score": min(a, b),
        })
    write_jsonl(out / JSONL_NAME, records)
    seconds = time.perf_counter() - t0
    margin = np.abs(s_a - s_b)
    return {
        "out": str(out),
        "prefs": str(out / JSONL_NAME),
        "pairs": n,
        "ties": int((s_a == s_b).sum()),
        "oracle": o.oracle,
        "mean_margin": float(margin.mean()),  # mean chosen-minus-rejected score
        "mean_chosen": float(np.maximum(s_a, s_b).mean()),
        "mean_rejected": float(np.minimum(s_a, s_b).mean()),
        "model": str(path),
        "image_shape": list(x.shape[1:]),
        **facts,
        "seed": o.seed,
        "seconds": round(seconds, 2),
    }


# --------------------------------------------------------------------------- gaml eval reward


@dataclass
class RewardOptions:
    """Every option of `gaml eval reward`, by the same names."""

    images: str
    oracle: str | None = None  # None: "size" unless a reward model is given
    model: str | None = None  # a CLIP-format reward model (pickscore, a hub id or a local folder)
    prompts: str | None = None  # for --model: None = the prompts the artifact lists
    batch_size: int = 64
    device: str = "auto"


def reward(o: RewardOptions) -> dict[str, Any]:
    """Mean, spread and quantiles of an oracle, or of a reward model's score, over an 'images'
    artifact (e.g. gaml sample's)."""
    from ..core.artifacts import load_artifact
    from ..core.errors import InputError, UsageError
    from ..core.images import check_finite_images
    from . import oracles

    if o.oracle is not None and o.model is not None:
        raise UsageError("give --oracle (gaml's shapes oracles) or --model (a reward model), not both")
    oracle = o.oracle or ("size" if o.model is None else None)
    if oracle is not None and oracle not in oracles.ORACLES:
        raise UsageError(f"--oracle {oracle!r}: one of {', '.join(oracles.ORACLES)}")
    art = load_artifact(o.images, "images", names=["images"])
    x = art["images"]
    if x.ndim != 4 or len(x) == 0:
        raise InputError(f"{o.images}: expected images (N, C, H, W) with N >= 1, got shape {list(x.shape)}")
    check_finite_images(x, o.images)
    if oracle is None:
        return _model_reward(o, art, x)
    m = oracles.measure(x)
    s = oracles.from_measure(oracle, m)
    return {"oracle": oracle, **_spread(s), "no_shape": int((~m["found"]).sum()), "images": o.images}


def _spread(s) -> dict[str, Any]:
    import numpy as np

    q = np.quantile(s, [v for _, v in QUANTILES])
    return {"mean": float(s.mean()), "std": float(s.std()), "min": float(s.min()),
            **{k: float(v) for (k, _), v in zip(QUANTILES, q)}, "max": float(s.max()), "n": int(len(s))}


def _model_reward(o: RewardOptions, art, x) -> dict[str, Any]:
    """PickScore's score: exp(logit_scale) * cos(image, prompt) of a CLIP-format reward model
    (PickScore v1 through transformers; any CLIPModel folder scores the same way)."""
    from ..core import runtime
    from ..core.prompts import image_prompts
    from ..diffusion.clip import ClipScorer

    texts = image_prompts(o.prompts, art.config.get("prompts"), len(x), o.images)
    scorer = ClipScorer(o.model, device=runtime.pick_device(o.device))
    cos = scorer.cosines(x, texts, batch_size=o.batch_size)
    return {"reward_model": str(scorer.path), **_spread(scorer.logit_scale * cos),
            "cosine_mean": float(cos.mean()), "logit_scale": scorer.logit_scale, "images": o.images}
