"""A write killed half-way leaves the previous artifact intact (SIGKILL and SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gaml_cli.core import artifacts as A

WRITER = textwrap.dedent(
    """
    import sys, time
    from gaml_cli.core.artifacts import atomic_write
    with atomic_write(sys.argv[1]) as fh:
        for i in range(10_000):
            fh.write(b"x" * 4096)
            fh.flush()
            if i == 10:
                print("writing", flush=True)
            time.sleep(0.01)
    """
)


def _start(target):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_writer_leaves_previous_artifact(tmp_path, sig):
    target = tmp_path / "model.safetensors"
    A.save_artifact(target, {"w": np.arange(10, dtype=np.float32)}, kind="thing")
    before = A.file_sha256(target)
    proc = _start(target)
    temps = [p for p in tmp_path.iterdir() if A.TMP_MARK in p.name]
    assert temps, "the writer should be writing to a temp file next to the target"
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert A.file_sha256(target) == before
    np.testing.assert_array_equal(A.load_artifact(target, "thing")["w"], np.arange(10, dtype=np.float32))


def test_sigterm_through_cli_cleans_temp_files(tmp_path):
    """The entry point turns SIGTERM into an interrupt, so atomic writers remove their temp file."""
    script = textwrap.dedent(
        """
        import sys, time
        from gaml_cli.__main__ import main, _on_sigterm
        import signal
        signal.signal(signal.SIGTERM, _on_sigterm)
        from gaml_cli.core.artifacts import atomic_write
        try:
            with atomic_write(sys.argv[1]) as fh:
                print("writing", flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    target = tmp_path / "out.bin"
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert list(tmp_path.iterdir()) == []
