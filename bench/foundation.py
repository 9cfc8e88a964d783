"""Foundation benchmark: CLI start-up, artifact and JSONL throughput, data generation.

Prints one JSON row per measurement, each next to the peer a user would otherwise use,
measured in the same run:

    python bench/foundation.py            # all rows
    python bench/foundation.py --quick    # fewer repeats

Rows: `gaml --help` vs `hf --help` (huggingface_hub's CLI, also typer-based) start-up;
`save_artifact` (metadata + provenance + fsync + atomic rename) vs a bare
`safetensors.numpy.save_file`; `load_artifact` (header validation) vs bare `load_file`;
`read_jsonl` (line-numbered validation) vs a bare `json.loads` loop; shapes generation rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def row(**kw):
    kw.setdefault("machine", f"{platform.machine()} {os.cpu_count()} cpu")
    print(json.dumps(kw), flush=True)


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def startup(repeats):
    def run(cmd):
        return lambda: subprocess.run(cmd, capture_output=True, check=True)

    gaml_s = timed(run([sys.executable, "-m", "gaml_cli", "--help"]), repeats)
    gaml_group_s = timed(run([sys.executable, "-m", "gaml_cli", "dataset", "shapes", "--help"]), repeats)
    python_s = timed(run([sys.executable, "-c", "pass"]), repeats)
    hf = shutil.which("hf")
    hf_s = timed(run([hf, "--help"]), repeats) if hf else None
    row(bench="startup", what="gaml --help", seconds=round(gaml_s, 3), target_s=0.5,
        peer="hf --help", peer_seconds=round(hf_s, 3) if hf_s else None,
        python_baseline_s=round(python_s, 3), gaml_subcommand_help_s=round(gaml_group_s, 3))


def artifacts(repeats, mb):
    from safetensors.numpy import load_file, save_file

    from gaml_cli.core.artifacts import load_artifact, save_artifact

    x = np.random.default_rng(0).standard_normal((mb * 1024 * 1024 // 4,), dtype=np.float32)
    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / "a.safetensors", Path(d) / "b.safetensors"
        save_s = timed(lambda: save_artifact(a, {"x": x}, kind="bench", config={"n": len(x)}), repeats)
        bare_s = timed(lambda: save_file({"x": x}, str(b)), repeats)
        load_s = timed(lambda: load_artifact(a, "bench"), repeats)
        bare_load_s = timed(lambda: load_file(str(b)), repeats)
    row(bench="artifact-save", megabytes=mb, seconds=round(save_s, 4), mb_per_s=round(mb / save_s, 1),
        peer="safetensors.numpy.save_file (no metadata, not atomic)", peer_seconds=round(bare_s, 4),
        peer_mb_per_s=round(mb / bare_s, 1))
    row(bench="artifact-load", megabytes=mb, seconds=round(load_s, 4), mb_per_s=round(mb / load_s, 1),
        peer="safetensors.numpy.load_file (no validation)", peer_seconds=round(bare_load_s, 4),
        peer_mb_per_s=round(mb / bare_load_s, 1))


def jsonl(repeats, n):
    from gaml_cli.core.artifacts import read_jsonl, write_jsonl

    recs = [{"index": i, "caption": f"a red circle on a blue background {i}", "x": i * 0.5} for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.jsonl"
        write_jsonl(p, recs)
        ours = timed(lambda: sum(1 for _ in read_jsonl(p)), repeats)

        def bare():
            with open(p) as fh:
                return [json.loads(l) for l in fh]

        peer = timed(bare, repeats)
    row(bench="jsonl-read", records=n, seconds=round(ours, 4), records_per_s=int(n / ours),
        peer="json.loads loop (no line numbers, no validation)", peer_seconds=round(peer, 4),
        peer_records_per_s=int(n / peer))


def shapes(n):
    from gaml_cli.datasets import shapes as S

    t = time.perf_counter()
    S.generate(n, seed=0)
    s = time.perf_counter() - t
    row(bench="dataset-shapes", images=n, size=32, seconds=round(s, 3), images_per_s=int(n / s))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    r = 3 if args.quick else 7
    startup(r)
    artifacts(r, 64 if args.quick else 256)
    jsonl(r, 20_000 if args.quick else 100_000)
    shapes(1000 if args.quick else 10_000)


if __name__ == "__main__":
    main()
