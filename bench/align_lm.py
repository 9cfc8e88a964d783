"""Preference alignment of a small causal LM on two-digit sums, at equal extra budget: continued
SFT, DPO and ORPO (through TRL) and SAPO-DPO and SAPO-ORPO (gaml's loop), all from the same
starting model, each scored by the exact-match accuracy of its greedy answers on 500 held-out sums
(`gaml eval answers`: a measure no loss of gaml computes) and its wall-clock.

    python bench/align_lm.py [--steps 200] [--batch-size 32] [--methods sft,dpo,orpo,sapo-dpo,sapo-orpo]
                             [--start DIR] [--keep DIR] [--seed 0]

The starting model (unless --start): `gaml align init-lm` (Llama-style, 4 layers, hidden 128,
character tokenizer) trained by `gaml align sft` for 800 steps of 32 at lr 1e-3 (all weights).
DPO/ORPO pairs: the training prompts the starting model answers wrongly (greedy), chosen = the
right sum, rejected = its own wrong answer. SAPO sees the chosen side only (train.jsonl). One JSON
row per model on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import gaml, row  # noqa: E402

# per method: the command, its data option, and its own options. All: all weights trained, the
# same constant lr 1e-4, each loss's default beta (DPO 0.1; TRL's ORPO 0.1; SAPO's ORPO 0.05)
METHODS = {
    "sft": ("sft", "--data", []),
    "dpo": ("dpo", "--pairs", []),
    "orpo": ("orpo", "--pairs", []),
    "sapo-dpo": ("sapo", "--data", ["--loss", "dpo", "--segment-length", "8"]),
    "sapo-orpo": ("sapo", "--data", ["--loss", "orpo", "--segment-length", "8"]),
}
LR = "1e-4"


def generate(model: Path, prompts: Path, out: Path) -> float:
    t0 = time.perf_counter()
    with open(out, "w") as fh:
        res = subprocess.run([sys.executable, "-m", "gaml_cli", "align", "generate", "--model", str(model),
                              "--prompts", str(prompts), "--max-new-tokens", "5", "--device", "cpu", "-q"],
                             stdout=fh, stderr=subprocess.PIPE, text=True)
    if res.returncode:
        raise SystemExit(f"generate failed: {res.stderr}")
    return time.perf_counter() - t0


def accuracy(model: Path, data: Path, work: Path, name: str) -> float:
    comp = work / f"{name}.answers.jsonl"
    generate(model, data / "test.jsonl", comp)
    return gaml("eval", "answers", "--completions", comp, "--data", data / "test.jsonl")["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--start", default=None, help="starting model folder (default: train it)")
    ap.add_argument("--start-steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None)
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="gaml-align-lm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not (data / "test.jsonl").is_file():
        gaml("dataset", "arithmetic", "--out", data)
    start = Path(args.start) if args.start else work / "start"
    if not args.start and not (start / "config.json").is_file():
        t0 = time.perf_counter()
        gaml("align", "init-lm", "--out", work / "init", "--layers", 4, "--hidden", 128, "--seed", args.seed)
        s = gaml("align", "sft", "--model", work / "init", "--data", data / "train.jsonl", "--out", start,
                 "--steps", args.start_steps, "--batch-size", 32, "--lr", "1e-3", "--lora-rank", 0,
                 "--checkpoint-every", 0, "--seed", args.seed, "--device", "cpu")
        row(kind="start-train", steps=s["steps"], seconds=round(time.perf_counter() - t0, 1))
    acc0 = accuracy(start, data, work, "start")
    row(kind="model", method="start", accuracy=acc0, n=500)

    pairs = work / "pairs.jsonl"
    if not pairs.is_file():
        answers = work / "start.train-answers.jsonl"
        generate(start, data / "train.jsonl", answers)
        truth = {json.loads(l)["prompt"]: json.loads(l)["completion"] for l in (data / "train.jsonl").open()}
        n = 0
        with open(pairs, "w") as fh:
            for l in answers.open():
                r = json.loads(l)
                if r["completion"].strip() and r["completion"].strip() != truth[r["prompt"]]:
                    fh.write(json.dumps({"prompt": r["prompt"], "chosen": truth[r["prompt"]],
                                         "rejected": r["completion"].strip()}) + "\n")
                    n += 1
        row(kind="pairs", pairs=n, of=len(truth))

    for name in args.methods.split(","):
        cmd, opt, extra = METHODS[name]
        src = data / "train.jsonl" if opt == "--data" else pairs
        out = work / name
        t0 = time.perf_counter()
        s = gaml("align", cmd, "--model", start, opt, src, "--out", out, "--steps", args.steps,
                 "--batch-size", args.batch_size, "--lr", LR, "--lora-rank", 0, "--checkpoint-every", 0,
                 "--seed", args.seed, "--device", "cpu", *extra)
        seconds = time.perf_counter() - t0
        acc = accuracy(out, data, work, name)
        row(kind="model", method=name, accuracy=acc, delta=round(acc - acc0, 4), train_seconds=round(seconds, 1),
            steps=s["steps"], batch_size=args.batch_size, lr=float(LR), options=" ".join(map(str, extra)), n=500)


if __name__ == "__main__":
    main()
