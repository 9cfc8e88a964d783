"""Image representations in one run: SimCLR, NCL, CFA and non-negative CFA (gaml's reconstructions
of arXiv 2407.21740) and a randomly initialised encoder (SimCLR's, --steps 0), all with the same
encoder, augmentations and step budget, each scored by `gaml embed probe` (scikit-learn: a logistic
regression on the artifact's train/test split, kNN, ECE; uncertainty AUROCs with roc_auc_score).

    python bench/embed_images.py [--sets digits,shapes] [--steps 1000] [--shapes-steps 500]
                                 [--shapes-n 2000] [--shapes-size 16] [--seed 0] [--keep DIR]

Sets: `digits` (`gaml dataset digits`: 1,438 training / 359 test images, 8x8) with labels 0-9;
`shapes` (`gaml dataset shapes -n N --size S`, 1 shape of 4 per image) with `--labels attr:shape`.
Out-of-distribution rows for CFA's uncertainty: the other set pushed through the model with
`gaml embed transform --fit-images` (channels averaged or repeated, area resize) and 500 images of
uniform noise. One JSON row per (set, method) on stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import gaml, row  # noqa: E402


def noise_images(path: Path, shape: list[int], n: int = 500, seed: int = 0) -> Path:
    from gaml_cli.core.artifacts import save_artifact

    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, *shape)).astype(np.float32)
    save_artifact(path, {"images": x}, kind="images", config={"dataset": "uniform-noise"}, seed=seed)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="digits,shapes")
    ap.add_argument("--steps", type=int, default=1000, help="digits: the commands' default")
    ap.add_argument("--shapes-steps", type=int, default=500)
    ap.add_argument("--shapes-n", type=int, default=2000)
    ap.add_argument("--shapes-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="simclr,ncl,cfa,cnfa,random", help="also: simclr-factors")
    ap.add_argument("--keep", default=None)
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="gaml-embed-images-"))
    work.mkdir(parents=True, exist_ok=True)
    data = {"digits": work / "digits.safetensors", "shapes": work / "shapes.safetensors"}
    gaml("dataset", "digits", "--out", data["digits"])
    gaml("dataset", "shapes", "-n", args.shapes_n, "--size", args.shapes_size, "--out", data["shapes"])
    noise = {"digits": noise_images(work / "noise-digits.safetensors", [1, 8, 8]),
             "shapes": noise_images(work / "noise-shapes.safetensors", [3, args.shapes_size, args.shapes_size])}
    for name in args.sets.split(","):
        other = "shapes" if name == "digits" else "digits"
        steps = args.steps if name == "digits" else args.shapes_steps
        labels = [] if name == "digits" else ["--labels", "attr:shape"]
        arms = {"simclr": ("simclr", ["--steps", steps]), "ncl": ("ncl", ["--steps", steps]),
                "cfa": ("cfa", ["--steps", steps]), "cnfa": ("cfa", ["--steps", steps, "--nonneg"]),
                "random": ("simclr", ["--steps", 0]),
                # SimCLR's projector output: the same place in the network as CFA's posterior means
                "simclr-factors": ("simclr", ["--steps", steps, "--representation", "factors"])}
        for arm in args.methods.split(","):
            cmd, extra = arms[arm]
            out = work / f"{name}-{arm}.safetensors"
            t0 = time.perf_counter()
            tr = gaml("embed", cmd, "--data", data[name], "--out", out, "--seed", args.seed, *extra)
            wall = round(time.perf_counter() - t0, 1)
            r = {"kind": "embed-images", "set": name, "method": arm, "steps": tr["steps"], "dim": tr["dim"],
                 "train_seconds": tr["train_seconds"], "wall_seconds": wall}
            if cmd == "cfa":
                ood = {}
                for oname, src in ((other, data[other]), ("noise", noise[name])):
                    o = work / f"{name}-{arm}-ood-{oname}.safetensors"
                    gaml("embed", "transform", "--model", out, "--data", src, "--out", o, "--fit-images")
                    pr = gaml("embed", "probe", "--embeddings", out, *labels, "--uncertainty", "--ood", o)
                    ood[oname] = pr["ood_auroc"]
                r.update({f"ood_auroc_{k}": v for k, v in ood.items()})
                r["uncertainty_auroc_errors"] = pr["uncertainty_auroc_errors"]
            else:
                pr = gaml("embed", "probe", "--embeddings", out, *labels)
            r.update({k: pr[k] for k in ("accuracy", "knn_accuracy", "ece", "sparsity", "active_dims", "test_rows")})
            row(**r)


if __name__ == "__main__":
    main()
