"""Benchmark of `gaml unlearn` (Score Forgetting Distillation): one JSON row per line on stdout.

In one run, on one teacher and one forget pair (default: the shipped digits teacher, 0 -> 1),
every model scored by `gaml eval forget` (n samples asked for the forgotten condition; n on the
retained ones) with its wall-clock:
  - the teacher at 35 function evaluations (Heun, 18 steps): it still draws the condition;
  - plain SiD, `gaml distill` at its defaults: one step, forgets nothing;
  - SFD, `gaml unlearn --forget A --into B` at its defaults: one step;
  - the baseline users would otherwise try, at the same budget in images (iterations x batch):
    fine-tune the teacher so that its denoiser for the forgotten condition gives the frozen
    teacher's answer for the override (ESD-style erasing with a replacement target, as in
    Concept Ablation), with a preservation term on retained conditions; x_t from the teacher's
    own 35-NFE samples (data-free, like SFD); sampled at 35 NFE;
  - the paper's numbers as rows marked "reference" (CIFAR-10; not measured here).

    python bench/unlearn.py                               # digits 0 -> 1 (about 25 min on 2 cores)
    python bench/unlearn.py --teacher shapes --forget color=red --into color=blue --lsg 1.5 --steps 400 --full-fd
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _cli import gaml, row  # bench/ is on sys.path when a bench runs as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REFERENCE = [
    {"what": "SFD one-step, CIFAR-10 forget 'airplane' (paper, Table 1)", "forgotten_recognised": 0.0036,
     "retained_fid": 5.32},
    {"what": "ESD on SD1.5 nudity (UnlearnDiffAtk, as cited)", "fid": 18.18},
    {"what": "UCE on SD1.5 nudity (UnlearnDiffAtk, as cited)", "fid": 17.10},
    {"what": "SalUn on SD1.5 nudity (UnlearnDiffAtk, as cited)", "fid": 33.62},
]


def forget_row(model, args, name: str, seconds: float | None, teacher_like: bool) -> None:
    extra = ["--forget", args.forget, "--into", args.into]
    if teacher_like:
        extra += ["--steps", 18] + (["--guidance", args.lsg] if args.lsg else [])
    t0 = time.perf_counter()
    e = gaml("eval", "forget", "--model", model, "-n", args.n, "--seed", args.seed, *extra)
    row(bench="unlearn", teacher=args.teacher, forget=args.forget, into=args.into, model=name, nfe=e["nfe"],
        forgotten_recognised=round(e["forgotten_recognised"], 4), into_rate=round(e["into_rate"], 4),
        retained_accuracy=round(e["retained_accuracy"], 4), retained_fd=round(e["retained_fd"], 4),
        retained_floor=round(e["retained_floor"], 4), n=e["n"], train_seconds=seconds,
        eval_seconds=round(time.perf_counter() - t0, 1))


def full_fd_row(model, args, name: str, tmp: Path, teacher_like: bool) -> None:
    """--full-fd: the model on the whole condition distribution (gaml sample + gaml eval fd), as
    bench/distill.py scores it, so plain SiD's row is also a distillation measurement."""
    ref = "shapes" if args.teacher == "shapes" else "digits"
    extra = (["--steps", 18] + (["--guidance", args.lsg] if args.lsg else [])) if teacher_like else []
    out = tmp / f"full-{abs(hash(name))}.safetensors"
    s = gaml("sample", "--model", model, "-n", args.n, "--seed", args.seed, "--out", out, "--batch-size", 500, *extra)
    e = gaml("eval", "fd", "--images", out, "--ref", ref)
    row(bench="unlearn", teacher=args.teacher, model=name, scope="all conditions", nfe=s["nfe"],
        fd=round(e["fd"], 4), floor=round(e["floor"], 4), accuracy=e.get("accuracy"),
        attribute_accuracy=e.get("attribute_accuracy"), n=e["n"], images_per_s=s["images_per_s"])


def finetune_baseline(args, out: Path) -> float:
    """ESD-style replacement fine-tuning of the teacher (see the module docstring); returns seconds."""
    import copy

    import torch

    from gaml_cli.core import hub
    from gaml_cli.diffusion.edm import cfg_denoiser
    from gaml_cli.diffusion.io import save_model
    from gaml_cli.diffusion.sample import SampleSpec, generate
    from gaml_cli.methods.sid.model import load_teacher
    from gaml_cli.methods.sfd.plan import build_plan

    torch.manual_seed(args.seed)
    dev = torch.device("cpu")
    t0 = time.perf_counter()
    t = load_teacher(str(hub.resolve(args.teacher)), dev, None)
    plan = build_plan(t, [args.forget], [args.into], None, 1.0, 0.5)
    gen = torch.Generator().manual_seed(args.seed)
    # a pool of the teacher's own samples (35 NFE) for the retained and the forgotten conditions
    pool = args.pool
    kept = plan.draw_retained(t, pool, gen)
    fgt, over = plan.draw_forget(t, pool, gen)
    g = args.lsg or 1.0
    spec = SampleSpec(n=pool, seed=args.seed, steps=18, guidance=g, batch_size=250)
    x_keep, _ = generate(t.net, "teacher", t.config, spec, kept, dev)
    x_fgt, _ = generate(t.net, "teacher", t.config, spec, fgt, dev)
    model = t.trainable_copy()
    opt = torch.optim.Adam(model.parameters(), lr=args.ft_lr)
    b = args.batch_size // 2
    null = t.null(b)
    for step in range(args.steps):
        i = torch.randint(pool, (b,), generator=gen)
        j = torch.randint(pool, (b,), generator=gen)
        x0 = torch.cat([x_keep[i], x_fgt[j]])
        c_model = t.encode([kept[k] for k in i.tolist()] + [fgt[k] for k in j.tolist()], 2 * b)
        c_target = t.encode([kept[k] for k in i.tolist()] + [over[k] for k in j.tolist()], 2 * b)
        sigma = t.fake_sigma(2 * b, gen, argparse.Namespace(p_mean=-1.2, p_std=1.2))
        x_t = x0 + sigma.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=gen)
        with torch.no_grad():
            target = cfg_denoiser(t.net, torch.cat([null, null]), 1.0)(x_t, sigma, c_target)
        w = t.fake_weight(sigma).view(-1, 1, 1, 1)
        per = (w * (model(x_t, sigma, c_model) - target) ** 2).flatten(1).sum(1)
        loss = per[:b].mean() + per[b:].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    save_model(out, copy.deepcopy(model).eval(), kind="teacher", config=t.config, seed=args.seed, parents=[t.path])
    return round(seconds, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="digits")
    ap.add_argument("--forget", default="0")
    ap.add_argument("--into", default="1")
    ap.add_argument("--lsg", type=float, default=None, help="guidance of SiD/SFD and of the 35-NFE samplers")
    ap.add_argument("--steps", type=int, default=800, help="iterations of SiD, SFD and the fine-tuning baseline")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=1000, help="teacher samples per side for the baseline")
    ap.add_argument("--ft-lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of models to skip: teacher,sid,sfd,finetune")
    ap.add_argument("--full-fd", action="store_true", help="also score each model on all conditions (gaml eval fd)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    for r in REFERENCE:
        row(bench="unlearn", kind="reference", **r)
    lsg = ["--lsg", args.lsg] if args.lsg else []
    common = ["--steps", args.steps, "--batch-size", args.batch_size, "--seed", args.seed, *lsg]
    with tempfile.TemporaryDirectory(prefix="gaml-bench-unlearn-") as tmp:
        tmp = Path(tmp)
        if "teacher" not in skip:
            forget_row(args.teacher, args, "teacher, Heun 18 steps", None, True)
            if args.full_fd:
                full_fd_row(args.teacher, args, "teacher, Heun 18 steps", tmp, True)
        if "sfd" not in skip:
            t0 = time.perf_counter()
            gaml("unlearn", "--teacher", args.teacher, "--forget", args.forget, "--into", args.into,
                 "--out", tmp / "sfd", *common)
            forget_row(tmp / "sfd", args, "SFD one-step (gaml unlearn)", round(time.perf_counter() - t0, 1), False)
            if args.full_fd:
                full_fd_row(tmp / "sfd", args, "SFD one-step (gaml unlearn)", tmp, False)
        if "sid" not in skip:
            t0 = time.perf_counter()
            gaml("distill", "--teacher", args.teacher, "--out", tmp / "sid", *common)
            forget_row(tmp / "sid", args, "plain SiD one-step (gaml distill)", round(time.perf_counter() - t0, 1), False)
            if args.full_fd:
                full_fd_row(tmp / "sid", args, "plain SiD one-step (gaml distill)", tmp, False)
        if "finetune" not in skip:
            secs = finetune_baseline(args, tmp / "ft.safetensors")
            forget_row(tmp / "ft.safetensors", args, "fine-tuned teacher, ESD-style replacement (peer), Heun 18",
                       secs, True)


if __name__ == "__main__":
    main()
