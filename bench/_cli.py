"""Shared by the benchmarks: run a gaml command in a fresh process, print a JSON row."""

from __future__ import annotations

import json
import subprocess
import sys


def gaml(*args) -> dict:
    """`python -m gaml_cli ARGS -f json -q` -> its JSON summary; exits with the command and its stderr on failure."""
    cmd = [sys.executable, "-m", "gaml_cli", *map(str, args), "-f", "json", "-q"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr}")
    return json.loads(res.stdout)


def row(**kw) -> None:
    print(json.dumps(kw), flush=True)
