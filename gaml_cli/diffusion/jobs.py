"""The diffusion core's jobs, each from one options object: `gaml train`, `gaml sample` and
`gaml eval fd|clip|fid|train-classifier` are thin wrappers around these functions, and Python
users call them directly:

    from gaml_cli.diffusion.jobs import SampleOptions, TrainOptions, sample, train
    train(TrainOptions(data="digits.safetensors", out="teacher.safetensors", steps=200))
    summary = sample(SampleOptions(model="teacher.safetensors", n=8, out="s.safetensors"))

Each options dataclass has the command's options under the same names (`class_` for --class),
with the same defaults; each job checks its options as the command does (UsageError/InputError
with the same messages), writes its artifacts and returns the summary the command prints.
The command line checks output paths (writable, not an input) before it calls the job; a
Python caller chooses its own paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- gaml train


@dataclass
class TrainOptions:
    """Every option of `gaml train`, by the same names."""

    data: str
    out: str
    steps: int = 4000
    batch_size: int = 128
    lr: float = 5e-4
    warmup: int = 200
    ema: float = 0.999
    p_uncond: float = 0.1
    cond: str = "auto"  # auto (captions > labels > none), class, text or none
    split: str = "train"  # train, test or all
    channels: str | None = None  # UNet channels per level, e.g. "48,96,96" (None: by image size)
    layers_per_block: int | None = None  # None: by image size
    guidance: float = 1.0  # default guidance stored for `gaml sample`
    checkpoint_every: int = 500
    checkpoint_dir: str | None = None  # None: OUT without .safetensors + '.ckpt'
    resume: bool = False
    resume_from: str | None = None
    save_precision: str = "fp32"  # fp32, fp16 or bf16
    seed: int = 0
    device: str = "auto"

    @property
    def ckpt_dir(self) -> Path:
        """The checkpoint folder: --checkpoint-dir, else OUT without .safetensors + '.ckpt'."""
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        stem = self.out[: -len(".safetensors")] if self.out.endswith(".safetensors") else self.out
        return Path(stem + ".ckpt")


def unet_from_options(channels: str | None, layers_per_block: int | None, image_shape) -> dict[str, Any]:
    """The UNet config: the default for the image size, changed by --channels/--layers-per-block."""
    from ..core.errors import UsageError
    from .models import default_unet, unet_config

    unet = default_unet(image_shape)
    if channels is None and layers_per_block is None:
        return unet
    try:
        ch = [int(c) for c in channels.split(",")] if channels else unet["block_out_channels"]
    except ValueError:
        raise UsageError(f"--channels {channels!r}: expected integers like 48,96,96") from None
    if any(c <= 0 or c % 8 for c in ch):
        raise UsageError("--channels must be positive multiples of 8 (GroupNorm uses 8 groups)")
    side = image_shape[-1]
    if side % (2 ** (len(ch) - 1)):
        raise UsageError(f"--channels: {len(ch)} levels need the image side ({side}) divisible by {2 ** (len(ch) - 1)}")
    return unet_config(ch, layers_per_block or unet["layers_per_block"])


def train(o: TrainOptions) -> dict[str, Any]:
    """Train a conditional EDM teacher on o.data and save its EMA weights to o.out; returns the
    summary (written path, steps, final loss, times, checkpoint folder)."""
    from dataclasses import asdict

    from ..core import runtime
    from ..core.errors import UsageError
    from .data import load_image_data
    from .io import SAVE_DTYPES, save_model
    from .train import TrainConfig, train_teacher

    if o.save_precision not in SAVE_DTYPES:
        raise UsageError(f"--save-precision must be one of {', '.join(SAVE_DTYPES)}")
    ckpt_dir = o.ckpt_dir
    dev = runtime.pick_device(o.device)
    d = load_image_data(o.data, split=o.split, cond=o.cond)
    if o.resume and o.resume_from:
        raise UsageError("give --resume or --resume-from, not both")
    if o.resume and not ckpt_dir.is_dir():
        raise UsageError(f"--resume: no checkpoint folder {ckpt_dir}")
    if o.resume_from:
        from ..core.artifacts import expect_kind, read_header

        expect_kind(read_header(o.resume_from), "checkpoint")
    unet = unet_from_options(o.channels, o.layers_per_block, d.info["image_shape"])
    tc = TrainConfig(steps=o.steps, batch_size=o.batch_size, lr=o.lr, warmup=o.warmup, ema=o.ema,
                     p_uncond=o.p_uncond, checkpoint_every=o.checkpoint_every, seed=o.seed, unet=unet)
    model, mcfg, report = train_teacher(d, tc, ckpt_dir, dev, resume=o.resume,
                                        resume_from=Path(o.resume_from) if o.resume_from else None)
    config = {"model": mcfg, "data": d.info, "train": {**asdict(tc), **report},
              "sampling": {"sampler": "heun", "steps": 18, "guidance": o.guidance}}
    path = save_model(o.out, model, kind="teacher", config=config, seed=o.seed, parents=[o.data],
                      dtype=o.save_precision)
    return {"out": str(path), **report, "checkpoints": str(ckpt_dir)}


# --------------------------------------------------------------------------- gaml sample


@dataclass
class SampleOptions:
    """Every option of `gaml sample`, by the same names (`class_` is --class)."""

    model: str
    out: str
    n: int = 64
    steps: int | None = None  # None: the model's stored default
    sampler: str | None = None  # heun or euler; None: the model's stored default
    guidance: float | None = None
    class_: int | None = None
    prompt: str | None = None
    prompts: str | None = None
    grid: str | None = None  # also write a PNG grid of the first 64 samples
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"


def sd_generator_config(path) -> dict[str, Any] | None:
    """The config of a Stable Diffusion one-step generator artifact (gaml distill), else None."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".safetensors"):
        return None
    from ..core.artifacts import read_header

    info = read_header(p)
    return info.config if info.kind == "generator" and "sd" in info.config else None


def write_samples(out, grid, images, tensors, out_cfg, source, seed, parents, timing=None) -> None:
    """The samples as an 'images' artifact (plus their labels/attrs/prompts) and an optional grid.
    timing (e.g. images_per_s) goes to the provenance, beside the creation time: the config stays
    the same for the same inputs."""
    import numpy as np

    from ..core.artifacts import save_artifact
    from ..core.images import IMAGE_KIND, save_grid

    arr = images.clamp(-1, 1).numpy().astype(np.float32)
    cfg = {**out_cfg, "shape": list(arr.shape[1:]), "value_range": [-1.0, 1.0], "source": source}
    save_artifact(out, {"images": arr, **tensors}, kind=IMAGE_KIND, config=cfg, seed=seed, parents=parents,
                  prov_extra=timing)
    if grid:
        save_grid(arr[:64], grid, nrow=8)


def sample(o: SampleOptions) -> dict[str, Any]:
    """Sample o.n images from a teacher, a one-step generator or a Stable Diffusion pipeline
    into o.out (and o.grid); returns the summary (images, sampler facts, speed)."""
    import time

    import numpy as np

    from ..core import console, hub, runtime
    from ..core.errors import UsageError
    from ..core.prompts import cycle, read_prompts
    from .io import run_artifact
    from .sample import SampleSpec
    from .sd import is_pipeline_folder, sd_align_config

    model, n, seed, class_ = o.model, o.n, o.seed, o.class_
    if sum(x is not None for x in (class_, o.prompt, o.prompts)) > 1:
        raise UsageError("give at most one of --class, --prompt, --prompts")
    dev = runtime.pick_device(o.device)
    path = run_artifact(hub.resolve(model, option="--model"))
    spec = SampleSpec(n=n, seed=seed, steps=o.steps, sampler=o.sampler, guidance=o.guidance, batch_size=o.batch_size)
    texts = [o.prompt] if o.prompt is not None else (read_prompts(o.prompts) if o.prompts is not None else None)

    sd_generator = sd_generator_config(path)
    sd_aligned = sd_align_config(path) if Path(path).is_dir() else None  # gaml align run of an SD pipeline
    if is_pipeline_folder(path) or sd_generator is not None or sd_aligned is not None:  # SD through the adapter
        from .sample import generate_sd, generate_sd_onestep
        from .sd import load_sd, load_sd_aligned, load_sd_generator

        if class_ is not None:
            raise UsageError("--class needs a class-conditional model; Stable Diffusion takes --prompt/--prompts")
        conds = cycle(texts or [""], n)
        if sd_generator is not None:
            comp = load_sd_generator(path, sd_generator, device=dev)
        elif sd_aligned is not None:
            comp = load_sd_aligned(path, sd_aligned, device=dev)
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
        kind = "generator" if sd_generator is not None else ("sd-align" if sd_aligned is not None else "sd-pipeline")
        parents = [path] if sd_generator is not None else [{"path": str(path), "kind": kind}]
    else:
        from .io import load_model
        from .sample import caption_attrs, default_conditions, generate

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
    write_samples(o.out, o.grid, images, tensors, out_cfg, {"model": str(path), "kind": kind, **facts, "seed": seed},
                  seed, parents, timing={"images_per_s": round(n / seconds, 2)})
    return {"out": o.out, "images": n, **facts, "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 2)}


# --------------------------------------------------------------------------- gaml eval fd


@dataclass
class FdOptions:
    """Every option of `gaml eval fd`, by the same names."""

    images: str
    ref: str
    classifier: str | None = None  # None: the shipped one for the data set
    seed: int = 0
    features: str | None = None  # comma-separated spaces (spaces.SPACES); None: all that apply


def fd(o: FdOptions) -> dict[str, Any]:
    """Frechet distance of o.images to the real images o.ref in a gaml classifier's feature
    space, with its real-vs-real floor and the conditional accuracy (the top-level keys, as
    before), plus FD and KID with their floors in every space of o.features ("spaces")."""
    from ..core.artifacts import load_artifact
    from ..core.images import check_finite_images
    from .eval import NAMED_REFS, feature_spaces, load_classifier, reference_data, score
    from .spaces import parse_spaces

    named = o.ref if o.ref in NAMED_REFS else None
    if named is None and o.features is not None:
        parse_spaces(o.features, True)  # a bad --features fails before any loading
    gen = load_artifact(o.images, "images")
    check_finite_images(gen["images"], o.images)
    clf, clf_path = load_classifier(o.classifier, o.ref, gen.config)
    ref_x, ref_targets, ref_name = reference_data(o.ref, clf)
    names = parse_spaces(o.features, named is not None or bool(ref_targets))
    fns, about = feature_spaces(names, clf, named, ref_x, ref_targets)
    result = score(clf, gen, ref_x, seed=o.seed, feature_fns=fns)
    for name, desc in about.items():
        result["spaces"][name]["about"] = desc
    result.update({"images": o.images, "ref": ref_name, "classifier": str(clf_path)})
    return result


@dataclass
class CompareOptions:
    """Every option of `gaml eval compare`, by the same names."""

    images: str
    against: str
    ref: str
    classifier: str | None = None
    seed: int = 0
    features: str | None = None


def compare(o: CompareOptions) -> dict[str, Any]:
    """`fd` of o.images and of o.against (same reference split, same spaces), the ratio of their
    FDs in each space, their speeds (images/s recorded by gaml sample) and one readable line."""
    from ..core.artifacts import read_header
    from ..core.errors import UsageError

    heads = [read_header(p) for p in (o.images, o.against)]  # what gaml sample recorded
    sizes = [(h.tensors.get("images") or {}).get("shape", [None])[0] for h in heads]
    if sizes[0] != sizes[1]:
        raise UsageError(f"--images has {sizes[0]} samples and --against {sizes[1]}: FDs compare only at one n "
                         "(sample both with the same -n)")
    a = fd(FdOptions(images=o.images, ref=o.ref, classifier=o.classifier, seed=o.seed, features=o.features))
    b = fd(FdOptions(images=o.against, ref=o.ref, classifier=o.classifier, seed=o.seed, features=o.features))
    speed = [h.provenance.get("images_per_s") for h in heads]
    nfe = [(h.config.get("source") or {}).get("nfe") for h in heads]
    ratios = {name: (s["fd"] / b["spaces"][name]["fd"] if b["spaces"][name]["fd"] > 0 else None)
              for name, s in a["spaces"].items()}
    speedup = speed[0] / speed[1] if all(speed) else None
    parts = []
    for name, s in a["spaces"].items():
        t = b["spaces"][name]
        r = ratios[name]
        kid = "" if s["kid"] is None else f", KID {s['kid']:.4f} vs {t['kid']:.4f} (+-{max(s['kid_se'], t['kid_se']):.4f})"
        parts.append(f"{name} FD {s['fd']:.3f} vs {t['fd']:.3f} ({r:.2f}x; floor {s['fd_floor']:.3f}){kid}")
    acc = ""
    if a.get("accuracy") is not None and b.get("accuracy") is not None:
        acc = f"; accuracy {a['accuracy']:.3f} vs {b['accuracy']:.3f}"
    nfes = f"{nfe[0]} NFE vs {nfe[1]} NFE" if all(nfe) else "images vs against"
    line = (f"{nfes}, n={a['n']}: " + " | ".join(parts) + acc
            + (f"; {speedup:.0f}x the images/s ({speed[0]:.0f} vs {speed[1]:.0f})" if speedup else ""))
    return {"line": line, "fd_vs": ratios, "speedup": speedup, "images_per_s": speed, "nfe": nfe,
            "images": a, "against": b}


def fd_lines(result: dict[str, Any]) -> dict[str, Any]:
    """The human table of `gaml eval fd`: the top-level keys, then one row per feature space."""
    out = {k: v for k, v in result.items() if k != "spaces"}
    for name, s in result.get("spaces", {}).items():
        kid = "" if s["kid"] is None else (f"; KID {s['kid']:.5f} +- {s['kid_se']:.5f} "
                                          f"(floor {s['kid_floor']:.5f} +- {s['kid_floor_se']:.5f})")
        out[f"{name} (n={s['n']})"] = f"FD {s['fd']:.4g} (floor {s['fd_floor']:.4g}){kid}"
    return out


# --------------------------------------------------------------------------- gaml eval clip


@dataclass
class ClipOptions:
    """Every option of `gaml eval clip`, by the same names."""

    images: str
    model: str = "clip-l14"
    prompts: str | None = None  # None: the prompts the artifact lists
    batch_size: int = 64
    device: str = "auto"


def clip(o: ClipOptions) -> dict[str, Any]:
    """CLIP score of o.images against their prompts (raw cosine and 100 * max(cos, 0))."""
    import numpy as np

    from ..core import runtime
    from ..core.artifacts import load_artifact
    from ..core.images import check_finite_images
    from ..core.prompts import image_prompts
    from .clip import ClipScorer

    art = load_artifact(o.images, "images")
    check_finite_images(art["images"], o.images)
    x = art["images"]
    texts = image_prompts(o.prompts, art.config.get("prompts"), len(x), o.images)
    dev = runtime.pick_device(o.device)
    scorer = ClipScorer(o.model, device=dev)
    cos = scorer.cosines(x, texts, batch_size=o.batch_size)
    return {"clip_score": float(cos.mean()), "clipscore_100": float((100 * np.maximum(cos, 0)).mean()),
            "std": float(cos.std()), "n": int(len(cos)), "model": str(scorer.path), "images": o.images}


# --------------------------------------------------------------------------- gaml eval fid


@dataclass
class FidOptions:
    """Every option of `gaml eval fid`, by the same names."""

    images: str
    ref: str  # images artifact, or FID statistics (.npz with mu, sigma)
    inception: str | None = None  # None: $GAML_FID_INCEPTION, then torch's hub cache
    save_ref_stats: str | None = None  # also write the reference's statistics to this .npz
    batch_size: int = 50
    device: str = "auto"


def fid(o: FidOptions) -> dict[str, Any]:
    """FID of o.images against o.ref (images or statistics) with the TF FID graph's Inception;
    with o.save_ref_stats also writes the reference's statistics."""
    import numpy as np

    from ..core import console, runtime
    from ..core.artifacts import atomic_path, load_artifact
    from ..core.errors import UsageError
    from ..core.images import check_finite_images
    from . import inception as inc
    from .features import frechet_from_stats

    images, ref, save_ref_stats = o.images, o.ref, o.save_ref_stats
    if save_ref_stats is not None and ref.endswith(".npz"):
        raise UsageError("--save-ref-stats needs --ref to be images, not statistics")
    gen = load_artifact(images, "images")["images"]
    check_finite_images(gen, images)
    ref_stats = inc.load_stats(ref) if ref.endswith(".npz") else None
    ref_x = None if ref_stats is not None else load_artifact(ref, "images")["images"]
    if ref_x is not None:
        check_finite_images(ref_x, ref)
    for name, arr in ((images, gen), (ref, ref_x)):
        if arr is not None and len(arr) < 2:
            raise UsageError(f"{name}: FID needs at least 2 images, got {len(arr)}")
    weights = inc.weights_path(o.inception)
    dev = runtime.pick_device(o.device)
    net = inc.load_inception(weights, device=dev)
    total = len(gen) + (len(ref_x) if ref_x is not None else 0)
    with console.progress(total, "inception") as bar:
        f_gen = inc.features(net, gen, batch_size=o.batch_size, device=dev, progress=bar.update)
        if ref_x is not None:
            f_ref = inc.features(net, ref_x, batch_size=o.batch_size, device=dev, progress=bar.update)
    mu1, s1 = inc.stats(f_gen)
    if ref_stats is not None:
        mu2, s2, n_ref = ref_stats
    else:
        (mu2, s2), n_ref = inc.stats(f_ref), len(f_ref)
        if save_ref_stats is not None:
            with atomic_path(save_ref_stats) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, mu=mu2, sigma=s2, n=np.int64(n_ref))
    if min(len(f_gen), n_ref or len(f_gen)) < inc.FEATURES:
        console.warn(f"fewer than {inc.FEATURES} images on a side: FID is biased upwards; compare only at equal n")
    return {"fid": frechet_from_stats(mu1, s1, mu2, s2), "n": int(len(f_gen)),
            "n_ref": n_ref, "images": images, "ref": ref, "inception": str(weights)}


# --------------------------------------------------------------------------- gaml eval train-classifier


@dataclass
class ClassifierOptions:
    """Every option of `gaml eval train-classifier`, by the same names."""

    data: str
    out: str
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


def train_classifier(o: ClassifierOptions) -> dict[str, Any]:
    """Train the small CNN whose features `gaml eval fd` uses on o.data's train split (accuracy
    on its test split) and save it to o.out; returns the summary."""
    from ..core.artifacts import load_artifact, save_artifact
    from ..core.errors import InputError
    from ..core.images import check_finite_images
    from . import features

    data, out = o.data, o.out
    art = load_artifact(data, "images")
    check_finite_images(art["images"], data)
    try:
        y, heads, names = features.targets_of(art)
    except ValueError as exc:
        raise InputError(f"{data}: {exc}") from None
    x = art["images"]
    split = art["split"] if "split" in art.tensors else None
    tr = split == 0 if split is not None else slice(None)
    te = split == 1 if split is not None else None
    model, report = features.train_classifier(
        x[tr], {k: v[tr] for k, v in y.items()}, heads, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr,
        seed=o.seed,
        x_val=x[te] if te is not None and te.any() else None,
        y_val={k: v[te] for k, v in y.items()} if te is not None and te.any() else None)
    config = {"model": model.config, "classes": names, "dataset": art.config.get("dataset"), "train": report}
    save_artifact(out, model.state_dict(), kind="classifier", config=config, seed=o.seed, parents=[data])
    return {"out": out, **report}
