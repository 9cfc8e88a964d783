"""Output paths checked before any work starts.

Every command that writes files calls `check_outputs` first, so that an output that would
overwrite one of its own inputs, or that cannot be written (a read-only folder, a full disk, a
file where a folder is needed), is refused in one line with exit code 2 before minutes or
hours of work, instead of failing at the end and losing the result:

    check_outputs({"--out": out, "--grid": grid}, inputs={"--data": data})

A write that still fails later (the disk filled up during the run) is reported by
`artifacts.atomic_path` as one line naming the user's path and the reason.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Mapping

from .errors import UsageError

PROBE_BYTES = 64 * 1024  # a full disk often still creates an empty file; writing data tells


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder (links and relative spellings resolved;
    a folder input also contains every path below it)."""
    if os.fspath(a) == "-" or os.fspath(b) == "-":
        return False
    ra, rb = _real(a), _real(b)
    if ra == rb:
        return True
    try:
        if ra.exists() and rb.exists() and os.path.samefile(ra, rb):
            return True
    except OSError:
        pass
    return False


def reason(exc: OSError) -> str:
    """The human reason of an OSError, without the exception class or a temp file's name."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc.args[-1] if exc.args else exc).lower()


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def probe_writable_dir(folder: str | os.PathLike, option: str, shown: str | None = None) -> None:
    """Refuse (UsageError) a folder that cannot be created or written: tries a real write of
    PROBE_BYTES in it (or in its nearest existing parent, which must be a folder), then removes it."""
    folder = Path(folder)
    shown = shown or str(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {shown}: is a file, not a folder")
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise UsageError(f"{option} {shown}: cannot be written ({base} is not a folder)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {shown}: cannot be written ({base}: permission denied)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gaml-probe-", dir=base)
    except OSError as exc:
        raise UsageError(f"{option} {shown}: cannot be written ({base}: {reason(exc)})") from None
    try:
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        except OSError as exc:
            raise UsageError(f"{option} {shown}: cannot be written ({base}: {reason(exc)})") from None
    finally:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def probe_writable_file(path: str | os.PathLike, option: str) -> None:
    """Refuse a file output whose folder cannot be written or that is an existing folder."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    probe_writable_dir(p.parent if str(p.parent) else Path("."), option, shown=str(path))


def check_outputs(outputs: Mapping[str, str | os.PathLike | None],
                  inputs: Mapping[str, str | os.PathLike | None] | None = None,
                  folders: Mapping[str, str | os.PathLike | None] | None = None) -> None:
    """Before any work: refuse an output equal to an input, two outputs on one path, and
    outputs that cannot be written.

    outputs: {option: file path}; folders: {option: folder path} (a run folder, checkpoints);
    inputs: {option: path}. None and '-' (stdout/stdin) are skipped."""
    inputs = {k: v for k, v in (inputs or {}).items() if v is not None and os.fspath(v) != "-"}
    files = {k: v for k, v in outputs.items() if v is not None and os.fspath(v) != "-"}
    dirs = {k: v for k, v in (folders or {}).items() if v is not None and os.fspath(v) != "-"}
    for opt, out in {**files, **dirs}.items():
        for iopt, inp in inputs.items():
            if same_path(out, inp):
                raise UsageError(f"{opt} {out} is also the input {iopt}: writing it would destroy the input; "
                                 f"pick another output path")
    seen: dict[Path, str] = {}
    for opt, out in files.items():
        r = _real(out)
        if r in seen:
            raise UsageError(f"{opt} {out} and {seen[r]} name the same file; give them different paths")
        seen[r] = opt
    for opt, out in files.items():
        probe_writable_file(out, opt)
    for opt, out in dirs.items():
        probe_writable_dir(out, opt)


def write_failed(target: str | os.PathLike, exc: OSError):
    """The one-line error for a write that failed after the work was done."""
    from .errors import RuntimeFailure

    why = reason(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the device"
    return RuntimeFailure(f"could not write {target}: {why}")


def check_run_folder(out: str, resume: bool, writes: str) -> Path:
    """A training run's output folder (`writes`: what it holds, for the message): refuse a file,
    `--resume` without checkpoints/, a finished or started run without `--resume`, and a place
    that cannot be written. Returns the folder."""
    folder = Path(out)
    if folder.suffix == ".safetensors" or (folder.exists() and not folder.is_dir()):
        raise UsageError(f"--out {out}: give a folder (the run writes {writes})")
    ckpt = folder / "checkpoints"
    if resume and not ckpt.is_dir():
        raise UsageError(f"--resume: {folder} has no checkpoints/ to resume from")
    if not resume and ckpt.is_dir() and any(ckpt.glob("step-*.safetensors")):
        raise UsageError(f"--out {out} already holds a run; add --resume to continue it or pick a new folder")
    probe_writable_dir(folder, "--out")
    return folder
