"""Test session: offline, private HF cache, helpers to run the CLI in-process or as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# No test touches the network or the user's real caches.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GAML_OFFLINE"] = "1"
os.environ.pop("GAML_MODELS", None)
os.environ.pop("GAML_DEBUG", None)


@pytest.fixture(autouse=True)
def _private_hf_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GAML_MODELS", raising=False)
    yield home


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [l for l in self.err.splitlines() if l.strip()]


@pytest.fixture
def gaml(capsys, monkeypatch):
    """Run `gaml ARGS...` in-process through the real entry point (error mapping included)."""
    from gaml_cli.__main__ import main

    def run(*args: str, stdin: str | None = None) -> Result:
        if stdin is not None:
            import io

            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run


def run_process(*args: str, env: dict | None = None, input: str | None = None,
                timeout: float = 120, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """`python -m gaml_cli ARGS` in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "gaml_cli", *map(str, args)], capture_output=True,
                          text=True, env=full_env, input=input, timeout=timeout, cwd=cwd or ROOT)


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory) -> Path:
    from gaml_cli.__main__ import main

    out = tmp_path_factory.mktemp("data") / "digits.safetensors"
    assert main(["dataset", "digits", "--out", str(out), "-q"]) == 0
    return out
