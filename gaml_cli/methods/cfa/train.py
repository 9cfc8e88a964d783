"""`gaml embed cfa | simclr | ncl` and `gaml embed transform` for image models, from options objects.

Input: a gaml `images` artifact (`gaml dataset digits|shapes`, `gaml sample`, ...). Training uses
the rows of `split` (default: the artifact's training split; all rows when it has none); labels
are never used for training. Output: one safetensors artifact (kind "embeddings", level "image"):
`embeddings` of every input row in input order, `uncertainty` (CFA: the posterior entropy), the
artifact's `labels`, `attrs` and `split` when it has them, the model under `model.` and the config;
`gaml embed transform` reads the model back.

The training loop is explicit (graphmae's shared `fit` is built around PyG graph batches): Adam,
random batches of `batch_size` rows, two augmented views per row (augment.py, seeded per sample),
checkpoints every `checkpoint_every` steps in OUT.ckpt/ and on Ctrl-C / SIGTERM (core's StepLoop),
`resume` continues the same run bit for bit.

CFA is a RECONSTRUCTION of arXiv 2407.21740 (no public code); see loss.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core import console
from ...core.errors import InputError, UsageError
from .augment import AugmentConfig, augment, preset_for, view_seeds
from .loss import cfa_objective, info_nce
from .model import METHODS, ContrastiveNet

KIND = "embeddings"
LIKELIHOODS = ("infonce", "spectral")
REPRESENTATIONS = ("factors", "encoder")
COPY_TENSORS = ("labels", "attrs", "split")
KL_WEIGHT, KL_WEIGHT_NONNEG = 0.01, 0.001  # the defaults (bench/results/cfa-development.md)
COPY_CONFIG = ("dataset", "classes", "attributes", "attrs_columns", "split_names")


@dataclass
class ContrastiveOptions:
    """The options of `gaml embed cfa | simclr | ncl`, by the same names (None: the data set's preset
    or the method's default)."""

    data: str
    out: str
    method: str = "cfa"  # cfa | simclr | ncl
    nonneg: bool = False
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    width: int = 32
    dim: int = 64
    temperature: float = 0.5
    likelihood: str = "infonce"
    similarity: str | None = None  # None: dot (Gaussian), cosine (non-negative)
    uncertainty: str | None = None  # None: entropy with the dot similarity, scaled with cosine
    kl_weight: float | None = None  # None: 0.01 (Gaussian), 0.001 (non-negative)
    draws: int = 1
    prior_std: float = 1.0
    prior_shape: float = 1.0
    prior_rate: float = 1.0
    k_min: float = 0.1
    k_init: float = 3.0
    sigma_init: float = 0.1
    k_max: float = 10.0
    relu_grad: str = "gelu"
    representation: str | None = None  # None: encoder for simclr, factors for ncl and cfa
    crop_min: float | None = None
    shift: float | None = None
    flip: bool | None = None
    jitter: float | None = None
    noise: float | None = None
    split: str = "train"
    checkpoint_every: int = 200
    resume: bool = False
    seed: int = 0
    device: str = "auto"


@dataclass
class Images:
    x: np.ndarray  # (N, C, H, W) float32 in [-1, 1], every row of the artifact
    tensors: dict[str, np.ndarray]  # labels / attrs / split, when present
    config: dict[str, Any]  # the data set's description (classes, attributes, ...)
    path: str


def load_images(path: str) -> Images:
    """Every row of an images artifact and what the probe needs of it; refuses anything else."""
    from ...core.artifacts import load_artifact, read_header

    info = read_header(path)
    if info.kind != "images" or "images" not in info.tensors:
        what = f"kind '{info.kind}'" if info.kind else "no gaml kind"
        raise InputError(f"{path}: holds no images ({what}); give an images artifact "
                         "(gaml dataset digits|shapes, gaml sample)")
    art = load_artifact(path, "images")
    x = np.asarray(art["images"], dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise InputError(f"{path}: 'images' must be a non-empty (N, C, H, W) tensor, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise InputError(f"{path}: the images hold NaN or infinite values")
    tensors = {k: np.asarray(art[k]) for k in COPY_TENSORS if k in art.tensors and len(art[k]) == len(x)}
    config = {k: art.config[k] for k in COPY_CONFIG if k in art.config}
    return Images(x, tensors, config, path)


def augment_config(o: ContrastiveOptions, channels: int) -> AugmentConfig:
    a = preset_for(channels)
    for k in ("crop_min", "shift", "flip", "jitter", "noise"):
        if getattr(o, k) is not None:
            setattr(a, k, getattr(o, k))
    return a


def check_options(o: ContrastiveOptions) -> None:
    if o.method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}")
    for name in ("lr", "weight_decay", "temperature", "kl_weight", "prior_std", "prior_shape", "prior_rate",
                 "k_min", "k_init", "sigma_init", "k_max", "crop_min", "shift", "jitter", "noise"):
        v = getattr(o, name)
        if v is not None and not math.isfinite(v):
            raise UsageError(f"--{name.replace('_', '-')}: {v!r} is not a finite number")
    checks = [
        (o.steps >= 0, "--steps must be at least 0"),
        (o.batch_size >= 2, "--batch-size must be at least 2 (a contrastive loss needs negatives)"),
        (o.lr > 0, "--lr must be > 0"), (o.weight_decay >= 0, "--weight-decay must be >= 0"),
        (o.width >= 1, "--width must be at least 1"), (o.dim >= 1, "--dim must be at least 1"),
        (o.temperature > 0, "--temperature must be > 0"),
        (o.kl_weight is None or o.kl_weight >= 0, "--kl-weight must be >= 0"),
        (o.draws >= 1, "--draws must be at least 1"), (o.prior_std > 0, "--prior-std must be > 0"),
        (o.prior_shape > 0, "--prior-shape must be > 0"), (o.prior_rate > 0, "--prior-rate must be > 0"),
        (0 < o.k_min < o.k_max, "--k-min and --k-max: need 0 < k-min < k-max"),
        (o.k_min <= o.k_init <= o.k_max, "--k-init must lie in [--k-min, --k-max]"),
        (o.sigma_init > 0, "--sigma-init must be > 0"),
        (o.crop_min is None or 0 < o.crop_min <= 1, "--crop-min must be in (0, 1]"),
        (o.shift is None or o.shift >= 0, "--shift must be >= 0"),
        (o.jitter is None or 0 <= o.jitter < 1, "--jitter must be in [0, 1)"),
        (o.noise is None or o.noise >= 0, "--noise must be >= 0"),
        (o.likelihood in LIKELIHOODS, f"--likelihood must be one of {', '.join(LIKELIHOODS)}"),
        (o.relu_grad in ("gelu", "relu"), "--relu-grad must be gelu or relu"),
        (o.similarity in (None, "cosine", "dot"), "--similarity must be cosine or dot"),
        (o.uncertainty in (None, "scaled", "entropy"), "--uncertainty must be scaled or entropy"),
        (o.representation in (None, *REPRESENTATIONS), f"--representation must be one of {', '.join(REPRESENTATIONS)}"),
        (o.split in ("train", "all"), "--split must be train or all"),
        (o.checkpoint_every >= 0, "--checkpoint-every must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)


def model_config(o: ContrastiveOptions, channels: int) -> dict[str, Any]:
    rep = o.representation or ("encoder" if o.method == "simclr" else "factors")
    cfg: dict[str, Any] = {"method": o.method, "channels": channels, "width": o.width, "dim": o.dim,
                           "representation": rep}
    if o.method == "cfa":
        similarity = o.similarity or ("cosine" if o.nonneg else "dot")
        uncertainty = o.uncertainty or ("scaled" if similarity == "cosine" else "entropy")
        cfg.update(nonneg=o.nonneg, likelihood=o.likelihood, similarity=similarity, uncertainty=uncertainty,
                   temperature=o.temperature, draws=o.draws,
                   kl_weight=o.kl_weight if o.kl_weight is not None else (KL_WEIGHT_NONNEG if o.nonneg else KL_WEIGHT))
        cfg.update({"prior_shape": o.prior_shape, "prior_rate": o.prior_rate, "k_min": o.k_min, "k_max": o.k_max,
                    "k_init": o.k_init} if o.nonneg else {"prior_std": o.prior_std, "sigma_init": o.sigma_init})
    else:
        cfg.update(temperature=o.temperature)
        if o.method == "ncl":
            cfg["relu_grad"] = o.relu_grad
    return cfg


def step_loss(model: ContrastiveNet, x1: torch.Tensor, x2: torch.Tensor,
              gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss on the two views (the same encoder for both)."""
    cfg = model.config
    if model.method != "cfa":
        z1, z2 = model.features(x1), model.features(x2)
        return info_nce(z1, z2, cfg["temperature"]), {}
    h = model.encoder(torch.cat([x1, x2]))
    p1, p2 = model.posterior(h)
    n = x1.shape[0]
    draws1, draws2 = [], []
    for _ in range(int(cfg.get("draws", 1))):
        z = model.draw(p1, p2, gen)
        draws1.append(z[:n])
        draws2.append(z[n:])
    kl = model.kl(p1, p2)
    return cfa_objective(draws1, draws2, kl[:n], kl[n:], cfg["temperature"], cfg["kl_weight"],
                         cfg.get("likelihood", "infonce"), cfg.get("similarity", "cosine"))


def _views(x: torch.Tensor, idx: torch.Tensor, seed: int, step: int, aug: AugmentConfig):
    return (augment(x, view_seeds(seed, step, idx, 0), aug), augment(x, view_seeds(seed, step, idx, 1), aug))


@torch.no_grad()
def outputs(model: ContrastiveNet, x: np.ndarray, device, batch_size: int = 512) -> dict[str, np.ndarray]:
    """`embeddings` (and `uncertainty` for CFA) of every row, in input order."""
    model.eval()
    rows: dict[str, list] = {}
    for b in range(0, len(x), batch_size):
        out = model.embed(torch.from_numpy(x[b:b + batch_size]).to(device))
        for k, v in out.items():
            rows.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v).astype(np.float32) for k, v in rows.items()}


def summarise(tensors: dict[str, np.ndarray], nonneg: bool, zero_tol: float = 1e-3) -> dict[str, Any]:
    emb = tensors["embeddings"]
    out: dict[str, Any] = {"rows": int(emb.shape[0]), "dim": int(emb.shape[1])}
    if "uncertainty" in tensors:
        out["uncertainty_mean"] = round(float(tensors["uncertainty"].mean()), 4)
    if nonneg:
        out["nonnegative"] = bool((emb >= 0).all())
        out["zero_share"] = round(float((np.abs(emb) <= zero_tol).mean()), 4)
    return out


def train(o: ContrastiveOptions) -> dict[str, Any]:
    """Train SimCLR, NCL or (non-negative) CFA on o.data; write o.out; return the summary."""
    from ...core import runtime
    from ...core.artifacts import save_artifact
    from ...core.checkpoint import CheckpointDir, StepLoop
    from ...core.paths import check_outputs

    check_options(o)
    if o.method != "cfa" and o.nonneg:
        raise UsageError("--nonneg is CFA's (NCL is the non-negative SimCLR)")
    out = Path(o.out)
    ckpt_dir = out.with_name(out.stem + ".ckpt")
    if not o.resume:
        check_outputs({"--out": o.out}, inputs={"--data": o.data})
    imgs = load_images(o.data)
    rows = np.arange(len(imgs.x))
    if o.split == "train" and "split" in imgs.tensors:
        rows = np.flatnonzero(imgs.tensors["split"] == 0)
    if len(rows) < 2:
        raise InputError(f"{o.data}: {len(rows)} training image(s); a contrastive loss needs at least 2")
    channels = int(imgs.x.shape[1])
    aug = augment_config(o, channels)
    cfg = model_config(o, channels)
    dev = runtime.pick_device(o.device)
    torch.manual_seed(o.seed)
    model = ContrastiveNet(cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    gen = torch.Generator().manual_seed(o.seed)  # the posterior draws
    order = torch.Generator().manual_seed(o.seed + 1)  # the batches
    ckpt = CheckpointDir(ckpt_dir, keep=2)
    identity = {"model": cfg, "augment": aug.to_dict(), "seed": o.seed, "batch_size": o.batch_size, "lr": o.lr,
                "weight_decay": o.weight_decay, "rows": len(rows), "image_shape": list(imgs.x.shape[1:])}
    start, state = ckpt.resume_or_start(o.resume, identity)
    seconds = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        order.set_state(state["order"])
        seconds = float(state.get("seconds", 0.0))
        console.log(f"resumed from {ckpt.latest()} at step {start}")
    t0 = time.perf_counter()

    def save_ckpt(step: int) -> None:
        ckpt.save(step, {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                         "order": order.get_state(), "seconds": seconds + time.perf_counter() - t0},
                  config={"identity": identity}, seed=o.seed)

    x_train = torch.from_numpy(imgs.x[rows])
    bs = min(o.batch_size, len(rows))
    loss_v, stats = float("nan"), {}
    name = o.method + (" --nonneg" if o.nonneg else "")
    console.log(f"{name}: {len(rows)} training images {list(imgs.x.shape[1:])}, batch {bs}, {o.steps} steps on {dev}"
                + (" (a reconstruction of CFA: no public code)" if o.method == "cfa" else ""))
    loop = StepLoop(start, o.steps, save_ckpt, ckpt, every=o.checkpoint_every)
    with loop, console.progress(o.steps, o.method, completed=start) as bar:
        for step in loop:
            model.train()
            idx = torch.randperm(len(rows), generator=order)[:bs]
            x1, x2 = _views(x_train[idx], torch.from_numpy(rows)[idx], o.seed, step, aug)
            loss, stats = step_loss(model, x1.to(dev), x2.to(dev), gen)
            runtime.require_finite(step, loss=loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = float(loss.detach())
            bar.update(1, loss=loss_v)
    seconds += time.perf_counter() - t0
    tensors = outputs(model, imgs.x, dev)
    summary = summarise(tensors, o.method == "cfa" and o.nonneg)
    tensors.update(imgs.tensors)
    tensors.update({f"model.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    done = max(start, loop.done)
    config = {"method": o.method, "level": "image", "model": cfg, "augment": aug.to_dict(),
              "image_shape": list(imgs.x.shape[1:]), **imgs.config, "reconstruction": o.method == "cfa",
              "train": {**asdict(o), "steps_done": done, "seconds": round(seconds, 1), "loss": loss_v, **stats,
                        "train_rows": int(len(rows))}, "source": o.data, **summary}
    save_artifact(out, tensors, kind=KIND, config=config, seed=o.seed, parents=[o.data])
    return {"out": str(out), "method": name, **summary, "steps": done, "loss": loss_v, **stats,
            "train_seconds": round(seconds, 1), "train_rows": int(len(rows)),
            "labels": "labels" in imgs.tensors or "attrs" in imgs.tensors, "checkpoints": str(ckpt_dir)}


# ------------------------------------------------------------------------- gaml embed transform


def is_image_model(path: str) -> bool:
    """Whether an embeddings artifact holds one of this package's image models."""
    from ...core.artifacts import read_header

    info = read_header(path)
    return info.kind == KIND and info.config.get("level") == "image" and info.config.get("method") in METHODS


def load_model(path: str, device="cpu") -> tuple[ContrastiveNet, dict[str, Any]]:
    from ...core.artifacts import load_artifact

    art = load_artifact(path, KIND)
    cfg = art.config
    if cfg.get("level") != "image" or cfg.get("method") not in METHODS or "model" not in cfg:
        raise InputError(f"{path}: not an image model of gaml embed cfa|simclr|ncl")
    model = ContrastiveNet(cfg["model"])
    state = {k[len("model."):]: torch.from_numpy(np.asarray(v)) for k, v in art.tensors.items()
             if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: the model's weights do not match its config ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), cfg


def fit_images(x: np.ndarray, shape: list[int]) -> np.ndarray:
    """Images of another shape made to fit a model: channels averaged (to 1) or repeated (to 3),
    then resized by area (antialiased bilinear). For out-of-distribution checks (shapes through a
    digits model)."""
    from torch.nn import functional as F

    t = torch.from_numpy(x)
    c = shape[0]
    if t.shape[1] != c:
        t = t.mean(1, keepdim=True)
        if c != 1:
            t = t.expand(-1, c, -1, -1)
    if list(t.shape[2:]) != list(shape[1:]):
        t = F.interpolate(t, size=tuple(shape[1:]), mode="bilinear", antialias=True, align_corners=False)
    return t.clamp(-1, 1).contiguous().numpy().astype(np.float32)


@dataclass
class TransformOptions:
    model: str
    data: str
    out: str
    fit: bool = False
    device: str = "auto"


def transform(o: TransformOptions) -> dict[str, Any]:
    """Embed the images of o.data with the model in o.model: `embeddings` (posterior means or
    features, rows in input order), `uncertainty` (CFA), the artifact's labels/attrs/split."""
    from ...core import runtime
    from ...core.artifacts import save_artifact
    from ...core.paths import check_outputs

    check_outputs({"--out": o.out}, inputs={"--model": o.model, "--data": o.data})
    dev = runtime.pick_device(o.device)
    model, cfg = load_model(o.model, dev)
    imgs = load_images(o.data)
    shape = cfg["image_shape"]
    x = imgs.x
    if list(x.shape[1:]) != list(shape):
        if not o.fit:
            raise InputError(f"{o.data}: images of shape {list(x.shape[1:])}, the model takes {shape} "
                             "(--fit-images converts them)")
        x = fit_images(x, shape)
    tensors = outputs(model, x, dev)
    nonneg = bool(cfg["model"].get("nonneg")) and cfg["method"] == "cfa"
    summary = summarise(tensors, nonneg or cfg["method"] == "ncl")
    tensors.update(imgs.tensors)
    config = {"method": cfg["method"], "level": "image", "model_summary": cfg["model"], "transform_of": o.model,
              "image_shape": list(shape), **imgs.config, "source": o.data, "fitted": list(imgs.x.shape[1:]) != list(shape), **summary}
    save_artifact(o.out, tensors, kind=KIND, config=config, parents=[o.model, o.data])
    return {"out": o.out, "method": cfg["method"] + (" --nonneg" if nonneg else ""), **summary}
