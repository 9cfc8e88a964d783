"""How well a model forgot: `gaml eval forget` on gaml's digits and shapes models.

For each forgotten condition A (a class, or an attribute value) the model draws n samples asked
for A; the shipped classifier says how many it still recognises as A (forgotten_recognised,
SFD's "forgotten-class accuracy", lower is better) and how many as the override B (into_rate).
On the retained conditions (balanced classes; random captions without a forgotten value) it
reports conditional accuracy and the Frechet distance to the real images of those conditions,
with the real-vs-real floor at the same size.

The whole job from one options object (`gaml eval forget` is a thin wrapper around it):

    from gaml_cli.methods.sfd.evaluate import ForgetEvalOptions, evaluate_forgetting
    summary = evaluate_forgetting(ForgetEvalOptions(model="runs/sfd-digits"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import UsageError
from ...datasets.shapes import caption
from .plan import ATTRIBUTE_KEYS


def _samples(net, kind, cfg, conds, n_seed: int, spec_kw: dict, device) -> np.ndarray:
    from ...diffusion.sample import SampleSpec, generate

    spec = SampleSpec(n=len(conds), seed=n_seed, **spec_kw)
    x, facts = generate(net, kind, cfg, spec, conds, device)
    return x.clamp(-1, 1).numpy(), facts


def _captions(attrs: dict[str, list[str]], n: int, seed: int, fixed: tuple[str, str] | None,
              avoid: list[tuple[str, str]]) -> list[str]:
    """n random template captions; with `fixed` = (key, value) that value, else none of `avoid`."""
    rng = np.random.default_rng([seed, 17])
    out = []
    while len(out) < n:
        c = {k: attrs[k][rng.integers(len(attrs[k]))] for k in ATTRIBUTE_KEYS}
        if fixed is not None:
            c[fixed[0]] = fixed[1]
        if c["color"] == c["background"]:
            continue
        if fixed is None and any(c[k] == v for k, v in avoid):
            continue
        out.append(caption(c["shape"], c["color"], c["background"]))
    return out


def evaluate(model_path: Path, pairs: list[tuple[Any, Any]], n: int, seed: int, spec_kw: dict,
             device, progress=None) -> dict[str, Any]:
    from ...diffusion.eval import fd_with_floor, load_classifier, reference_data
    from ...diffusion.features import predict
    from ...diffusion.io import load_model
    from ...diffusion.sample import caption_attrs

    net, info = load_model(model_path, device=device)
    cfg = info.config
    dataset = (cfg.get("data") or {}).get("dataset")
    if dataset not in ("digits", "shapes"):
        raise UsageError(f"{model_path}: gaml eval forget scores models of digits or shapes "
                         "(it needs the shipped classifier of the data)")
    clf, _ = load_classifier(None, dataset, {"dataset": dataset})
    ref_x, ref_targets, _ = reference_data(dataset, clf)
    out: dict[str, Any] = {"pairs": []}
    if net.cond_type == "class":
        ref_y = ref_targets["labels"]
        k = net.num_classes
        forgotten = sorted({int(a) for a, _ in pairs})
        retained = [c for c in range(k) if c not in forgotten]
        rec_total = into_total = 0
        for i, (a, b) in enumerate(pairs):
            x, facts = _samples(net, info.kind, cfg, [int(a)] * n, seed + 1 + i, spec_kw, device)
            _, pred = predict(clf, x)
            rec, into = float((pred["label"] == int(a)).mean()), float((pred["label"] == int(b)).mean()) if b is not None else None
            out["pairs"].append({"forget": int(a), "into": None if b is None else int(b), "recognised": rec, "into_rate": into})
            rec_total += rec
            into_total += into or 0.0
        conds = [retained[i % len(retained)] for i in range(n)]
        xr, facts = _samples(net, info.kind, cfg, conds, seed, spec_kw, device)
        f_r, pred_r = predict(clf, xr)
        acc = float((pred_r["label"] == np.asarray(conds)).mean())
        ref_keep = ref_x[np.isin(ref_y, retained)]
    else:
        attrs = cfg["data"]["attributes"]
        pairs = [(tuple(a), tuple(b) if b is not None else None) for a, b in pairs]
        rec_total = into_total = 0
        for i, (a, b) in enumerate(pairs):
            caps = _captions(attrs, n, seed + 1 + i, a, [])
            x, facts = _samples(net, info.kind, cfg, caps, seed + 1 + i, spec_kw, device)
            _, pred = predict(clf, x)
            head = pred[a[0]]
            rec = float((head == attrs[a[0]].index(a[1])).mean())
            into = float((head == attrs[b[0]].index(b[1])).mean()) if b is not None else None
            out["pairs"].append({"forget": f"{a[0]}={a[1]}", "into": None if b is None else f"{b[0]}={b[1]}",
                                 "recognised": rec, "into_rate": into})
            rec_total += rec
            into_total += into or 0.0
        avoid = [a for a, _ in pairs]
        caps = _captions(attrs, n, seed, None, avoid)
        xr, facts = _samples(net, info.kind, cfg, caps, seed, spec_kw, device)
        f_r, pred_r = predict(clf, xr)
        want = caption_attrs(caps, attrs)
        ok = np.ones(len(caps), dtype=bool)
        for j, key in enumerate(("shape", "color", "background")):
            ok &= pred_r[key] == want[:, j]
        acc = float(ok.mean())
        ra = ref_targets["attrs"]  # columns shape, color, background
        col = {"shape": 0, "color": 1, "background": 2}
        keep = np.ones(len(ra), dtype=bool)
        for key, val in avoid:
            keep &= ra[:, col[key]] != attrs[key].index(val)
        ref_keep = ref_x[keep]
    if min(len(f_r), len(ref_keep) // 2) < 2:
        raise UsageError("too few retained samples or reference images for an FD; raise -n")
    fd_r = fd_with_floor(clf, f_r, ref_keep, seed)
    has_into = all(p["into_rate"] is not None for p in out["pairs"])
    out.update({
        "forgotten_recognised": rec_total / len(pairs),
        "into_rate": into_total / len(pairs) if has_into else None,
        "retained_accuracy": acc,
        "retained_fd": fd_r["fd"],
        "retained_floor": fd_r["floor"],
        "n": n,
        "n_fd": fd_r["n"],
        "nfe": facts.get("nfe"),
    })
    return out


def evaluate_sd(path: Path, gen_cfg: dict | None, pairs: list[tuple[str, str]], prompts: list[str], n: int,
                seed: int, clip: str, spec_kw: dict, device) -> dict[str, Any]:
    """Stable Diffusion models (a gaml unlearn/distill SD run, or a pipeline): CLIP as the concept judge.

    For each forgotten concept, n prompts of the list carry it (`concept_prompts`: the prompt
    itself when it names the concept, else "PROMPT, CONCEPT"); a sample counts as recognised when
    CLIP puts it nearer that forget prompt than its override prompt (into_rate: the reverse).
    retained_clip: mean CLIP cosine of samples of the prompts that name no forgotten concept,
    each against its own prompt. No reference images, so no retained FD or accuracy."""
    from ...core.prompts import cycle
    from ...diffusion.clip import ClipScorer
    from ...diffusion.sample import SampleSpec, generate_sd, generate_sd_onestep
    from ...diffusion.sd import load_sd, load_sd_generator
    from .plan import _mentions, concept_prompts

    scorer = ClipScorer(clip, device=device)  # fail on missing CLIP weights before sampling anything
    if gen_cfg is not None:
        comp = load_sd_generator(path, gen_cfg, device=device)
        sigma_init = float(gen_cfg["generator"]["sigma_init"])

        def draw(texts, s):
            return generate_sd_onestep(comp, sigma_init, SampleSpec(n=len(texts), seed=s, batch_size=16), texts, device)
    else:
        comp = load_sd(str(path), device=device, option="--model")

        def draw(texts, s):
            return generate_sd(comp, SampleSpec(n=len(texts), seed=s, batch_size=16, **spec_kw), texts, device)

    out: dict[str, Any] = {"pairs": []}
    rec_total = into_total = 0.0
    facts: dict[str, Any] = {}
    for i, (concept, into) in enumerate(pairs):
        both = [concept_prompts(p, concept, into) for p in cycle(prompts, n)]
        f_prompts, s_prompts = [b[0] for b in both], [b[1] for b in both]
        x, facts = draw(f_prompts, seed + 1 + i)
        x = x.clamp(-1, 1).numpy()
        cos_f, cos_s = scorer.cosines(x, f_prompts), scorer.cosines(x, s_prompts)
        rec, into_rate = float((cos_f > cos_s).mean()), float((cos_s > cos_f).mean())
        out["pairs"].append({"forget": concept, "into": into, "recognised": rec, "into_rate": into_rate})
        rec_total += rec
        into_total += into_rate
    kept = [p for p in prompts if not any(_mentions(p, c) for c, _ in pairs)]
    retained_clip = None
    if kept:
        texts = cycle(kept, n)
        x, facts = draw(texts, seed)
        retained_clip = float(scorer.cosines(x.clamp(-1, 1).numpy(), texts).mean())
    out.update({"forgotten_recognised": rec_total / len(pairs), "into_rate": into_total / len(pairs),
                "retained_accuracy": None, "retained_fd": None, "retained_clip": retained_clip,
                "judge": f"CLIP {scorer.path}", "n": n, "nfe": facts.get("nfe")})
    return out


def forget_pairs(cfg: dict, forget: list[str] | None, into: list[str] | None, sd: bool, where: str) -> list:
    """The pairs to score: --forget/--into as given, else the ones the run recorded; classes and
    attribute values checked against the model (UsageError on any mismatch)."""
    from .plan import _attr, _class

    recorded = ((cfg.get("distill") or {}).get("forget") or {}).get("pairs")
    into = list(into or [])
    if into and len(into) != len(forget or []):
        raise UsageError("--into needs --forget" if not forget else
                         f"give one --into for each --forget, or none ({len(forget)} --forget, {len(into)} --into)")
    if forget:
        raw = [(f, into[i] if into else ("" if sd else None)) for i, f in enumerate(forget)]
    elif recorded:
        raw = [(a, b) for a, b in recorded]
    else:
        raise UsageError(f"{where} records no forgotten conditions; give --forget (and --into)")
    if sd:
        return [(str(a), str(b)) for a, b in raw]
    mcond = cfg["model"].get("cond") or {}
    attrs = (cfg.get("data") or {}).get("attributes")
    if mcond.get("type") not in ("class", "text"):
        raise UsageError(f"{where}: an unconditional model has no condition to forget")
    pairs = []
    for a, b in raw:
        if isinstance(a, (list, tuple)) or (isinstance(a, str) and "=" in a) or attrs:
            if not attrs:
                raise UsageError(f"--forget {a}: attribute values need a caption model of shapes")
            fa = tuple(a) if isinstance(a, (list, tuple)) else _attr(a, attrs)
            fb = None if b is None else (tuple(b) if isinstance(b, (list, tuple)) else _attr(b, attrs))
            if fb is not None and fb[0] != fa[0]:
                raise UsageError(f"--forget {a} --into {b}: both sides must name the same attribute")
            pairs.append((fa, fb))
        else:
            k = int(mcond["num_classes"])
            pairs.append((_class(a, k), None if b is None else _class(b, k)))
    return pairs


@dataclass
class ForgetEvalOptions:
    """Every option of `gaml eval forget`, by the same names."""

    model: str  # a gaml unlearn / distill run folder, a generator or teacher artifact, or an alias
    forget: list[str] | None = None  # forgotten conditions (0, color=red); None: the run's recorded pairs
    into: list[str] | None = None  # the override of each forget (for into_rate)
    n: int = 1000
    steps: int | None = None  # sampler steps for teachers (None: the model's)
    guidance: float | None = None  # guidance for teachers (None: the model's)
    prompts: str | None = None  # Stable Diffusion: the prompts the concepts are put into
    clip: str = "clip-l14"  # Stable Diffusion: the CLIP model that judges the concepts
    seed: int = 0
    device: str = "auto"


def evaluate_forgetting(o: ForgetEvalOptions) -> dict[str, Any]:
    """How well o.model forgot: `evaluate` for gaml's digits/shapes models, `evaluate_sd` (CLIP
    as the judge, needs o.prompts) for Stable Diffusion runs and pipelines; returns the summary."""
    from ...core import hub, runtime
    from ...core.artifacts import expect_kind, read_header
    from ...diffusion.io import IMAGE_MODEL_KINDS, run_artifact
    from ...diffusion.sd import is_pipeline_folder

    path = run_artifact(hub.resolve(o.model, option="--model"))
    pipeline = path.is_dir() and is_pipeline_folder(path)
    if path.is_dir() and not pipeline:
        raise UsageError(f"--model {o.model}: a folder that is neither a run (generator.safetensors) nor an SD pipeline")
    cfg = {} if pipeline else expect_kind(read_header(path), IMAGE_MODEL_KINDS).config
    sd = pipeline or "sd" in cfg
    if sd and o.prompts is None:
        raise UsageError("a Stable Diffusion model needs --prompts (the prompts the concepts are put into)")
    pairs = forget_pairs(cfg, o.forget, o.into, sd, str(path))
    dev = runtime.pick_device(o.device)
    sample_kw = {"steps": o.steps, "guidance": o.guidance}
    if sd:
        from ...core.prompts import read_prompts

        res = evaluate_sd(path, None if pipeline else cfg, pairs, read_prompts(o.prompts), o.n, o.seed, o.clip,
                          sample_kw, dev)
    else:
        res = evaluate(path, pairs, o.n, o.seed, sample_kw, dev)
    res.update({"model": str(path)})
    return res
