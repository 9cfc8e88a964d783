"""Teacher benchmark: FD and conditional accuracy of gaml's shipped teachers vs sampling budget.

For each teacher, at 1, 3, 10, 35 and 79 function evaluations (Heun for odd counts > 1,
Euler otherwise; Euler beside every Heun row as the first-order peer at equal cost), sample n images
with the default conditions (balanced labels / random captions), then score them with the
shipped feature classifier against the real data: fd, floor (real-vs-real at the same
sample size), ratio = fd / floor, accuracy, and throughput. The shapes teacher is also
swept over guidance at 35 evaluations. One JSON row per measurement:

    python bench/teachers.py                      # both shipped teachers
    python bench/teachers.py --model runs/teacher-digits/digits-teacher.safetensors --ref digits
    python bench/teachers.py --quick              # n=300, fewer rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def row(**kw):
    kw.setdefault("machine", f"{platform.machine()} {os.cpu_count()} cpu, torch threads {__import__('torch').get_num_threads()}")
    print(json.dumps(kw), flush=True)


def bench_teacher(model_path: str, ref: str, n: int, budgets, guidances, device: str):
    import torch

    from gaml_cli.core.artifacts import Artifact, ArtifactInfo
    from gaml_cli.core.console import state
    from gaml_cli.diffusion.edm import steps_for_nfe
    from gaml_cli.diffusion.eval import load_classifier, reference_images, score
    from gaml_cli.diffusion.io import load_model
    from gaml_cli.diffusion.sample import SampleSpec, caption_attrs, default_conditions, generate

    state.quiet = True
    dev = torch.device(device)
    net, info = load_model(model_path, device=dev)
    cfg = info.config
    clf, clf_path = load_classifier(None, ref, {"dataset": ref})
    ref_x, ref_name = reference_images(ref, clf)
    conds = default_conditions(net, cfg, n, seed=0)
    default_w = cfg.get("sampling", {}).get("guidance", 1.0)

    def run(sampler, steps, w):
        spec = SampleSpec(n=n, seed=0, steps=steps, sampler=sampler, guidance=w, batch_size=250)
        t = time.perf_counter()
        x, facts = generate(net, info.kind, cfg, spec, conds, dev)
        seconds = time.perf_counter() - t
        tensors = {"images": x.clamp(-1, 1).numpy()}
        acfg = {"attrs_columns": ["shape", "color", "background"]}
        if net.cond_type == "class":
            import numpy as np

            tensors["labels"] = np.asarray(conds)
        elif net.cond_type == "text":
            tensors["attrs"] = caption_attrs(conds, cfg["data"]["attributes"])
        art = Artifact(ArtifactInfo(Path("<memory>"), "images", None, acfg, {}, {}), tensors)
        s = score(clf, art, ref_x, seed=0)
        row(bench="teacher", model=Path(model_path).name, ref=ref_name, sampler=sampler, steps=steps,
            nfe=facts["nfe"], guidance=w, fd=round(s["fd"], 4), floor=round(s["floor"], 4),
            ratio=round(s["ratio"], 3), accuracy=round(s["accuracy"], 4) if s.get("accuracy") is not None else None,
            attribute_accuracy=s.get("attribute_accuracy"), n=s["n"], seconds=round(seconds, 2),
            images_per_s=round(n / seconds, 1))

    for target in budgets:
        sampler, steps = steps_for_nfe(target)
        run(sampler, steps, default_w)
        if sampler == "heun":
            run("euler", target, default_w)  # the first-order peer at the same cost
    for w in guidances:
        if w != default_w:
            run("heun", 18, w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="teacher artifact or alias (default: both shipped teachers)")
    ap.add_argument("--ref", choices=["digits", "shapes"], help="reference data set for --model")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    n = 300 if args.quick else args.n
    budgets = [1, 3, 35] if args.quick else [1, 3, 10, 35, 79]
    from gaml_cli.core import hub

    sweep = [] if args.quick else [1.0, 2.0, 3.0, 4.0]
    if args.model:
        ref = args.ref or (args.model if args.model in ("digits", "shapes") else None)
        if not ref:
            ap.error("--model needs --ref")
        jobs = [(str(hub.resolve(args.model, option="--model")), ref, sweep if ref == "shapes" else [])]
    else:
        jobs = [(str(hub.resolve("digits")), "digits", []),
                (str(hub.resolve("shapes")), "shapes", sweep)]
    for model, ref, guidances in jobs:
        bench_teacher(model, ref, n, budgets, guidances, args.device)


if __name__ == "__main__":
    main()
