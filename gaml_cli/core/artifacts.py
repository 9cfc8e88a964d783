"""Self-describing artifacts: safetensors with gaml metadata, JSONL streams, atomic writes.

A gaml safetensors artifact carries, in the safetensors `__metadata__` (string -> string):

    gaml.kind        what it is ("images", "teacher", ...); readers refuse other kinds
    gaml.version     the gaml version that wrote it
    gaml.format      integer schema version of the metadata layout (FORMAT_VERSION)
    gaml.config      JSON: everything needed to rebuild/interpret the tensors
    gaml.provenance  JSON: command line, seed, parent artifacts (path + sha256), time, versions

Every write goes to a temporary file in the target folder and is moved into place with
`os.replace`, so a crash or kill mid-write leaves the previous file untouched.

Nothing here imports torch: tensors may be numpy arrays or torch tensors on the way in;
on the way out the caller picks the framework.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import hashlib
import io
import json
import os
import struct
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from .. import __version__
from .errors import InputError, UsageError

FORMAT_VERSION = 1
TMP_MARK = ".gaml-tmp-"

# The command line being run, recorded in provenance (set by the entry point / recipe runner).
current_command: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "gaml_current_command", default=None
)


# --------------------------------------------------------------------------- atomic writes


def _ensure_parent(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        missing = [parent, *[p for p in parent.parents if not p.exists()]]
        parent.mkdir(parents=True, exist_ok=True)
        for d in reversed(missing):
            note_created_dir(d)
    elif not parent.is_dir():
        raise UsageError(f"cannot write {path}: {parent} is not a folder")


class OutputGroup:
    """All or nothing for the files one command writes: inside `output_group()`, atomic writes
    are staged (written and fsynced as temp files next to their targets) and moved into place
    together when the command succeeds; when it fails, every staged file is removed and folders
    the command created and left empty are removed too. Checkpoints bypass it (immediate=True):
    they must land while a run goes on."""

    def __init__(self):
        self.staged: list[tuple[Path, Path]] = []
        self.created_dirs: list[Path] = []

    def commit(self) -> None:
        for tmp, target in self.staged:
            os.replace(tmp, target)
        self.staged = []

    def abort(self) -> None:
        for tmp, _ in self.staged:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self.staged = []
        for d in reversed(self.created_dirs):
            try:
                d.rmdir()  # only if empty
            except OSError:
                pass


_group: contextvars.ContextVar[OutputGroup | None] = contextvars.ContextVar("gaml_output_group", default=None)


@contextmanager
def output_group() -> Iterator[OutputGroup]:
    """Stage the atomic writes of the block; commit them together at its end (see OutputGroup)."""
    group = OutputGroup()
    token = _group.set(group)
    try:
        yield group
    except BaseException:
        _group.reset(token)
        group.abort()
        raise
    _group.reset(token)
    try:
        group.commit()
    except OSError as exc:
        target = group.staged[0][1] if group.staged else Path(".")
        group.abort()
        from .paths import write_failed

        raise write_failed(target, exc) from None


def staged(path: str | os.PathLike) -> Path:
    """Where the content of `path` is now: its staged temp file while the command's output group
    has not committed it yet (so a command can hash or reread what it wrote), else `path`."""
    g = _group.get()
    if g is not None:
        target = Path(path)
        for tmp, t in reversed(g.staged):
            if t == target:
                return tmp
    return Path(path)


def has_staged() -> bool:
    """Whether the running command has written files that are not committed yet."""
    g = _group.get()
    return bool(g is not None and g.staged)


def note_created_dir(folder: Path) -> None:
    """Record a folder this command created, so that a failed command removes it if left empty."""
    g = _group.get()
    if g is not None:
        g.created_dirs.append(folder)


@contextmanager
def atomic_path(path: str | os.PathLike, immediate: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move it into place atomically.

    On any exception (including KeyboardInterrupt) the temporary file is removed and the
    previous content of `path`, if any, is left as it was.
    A failed write (a full disk, a read-only folder) is raised as one line naming `path` and
    the reason (paths.write_failed), not the temporary file or the exception class.
    """
    from .paths import write_failed

    target = Path(path)
    try:
        _ensure_parent(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{TMP_MARK}", dir=target.parent)
    except OSError as exc:
        raise write_failed(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise RuntimeError(f"nothing was written for {target}")
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; honour the umask
        group = None if immediate else _group.get()
        if group is not None:
            group.staged = [(t, g) for t, g in group.staged if g != target]  # a rewrite replaces
            group.staged.append((tmp_path, target))
        else:
            os.replace(tmp_path, target)
    except BaseException as exc:
        try:
            tmp_path.unlink()
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and _is_write_error(exc, tmp_path, target):
            raise write_failed(target, exc) from None
        os_error = _library_io_error(exc)
        if os_error is not None:
            raise write_failed(target, os_error) from None
        raise


def _library_io_error(exc: BaseException) -> OSError | None:
    """The OSError inside a library's own write error (safetensors reports a full disk as
    'SafetensorError: ... I/O error: No space left on device (os error 28)')."""
    import re

    if "SafetensorError" not in {c.__name__ for c in type(exc).__mro__}:
        return None
    m = re.search(r"os error (\d+)", str(exc))
    if not m:
        return None
    code = int(m.group(1))
    return OSError(code, os.strerror(code))


def _is_write_error(exc: OSError, tmp: Path, target: Path) -> bool:
    """An OSError of writing the file (no file name: a write or flush; or the temp/target's)."""
    name = getattr(exc, "filename", None)
    return name is None or os.fspath(name) in (str(tmp), str(target), str(target.parent))


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None, immediate: bool = False):
    """Open a temporary file for writing; it replaces `path` only when the block succeeds."""
    if "r" in mode or "a" in mode:
        raise ValueError("atomic_write is for writing whole files")
    with atomic_path(path, immediate=immediate) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding or "utf-8"}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(staged(path), "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- safetensors


@dataclass
class ArtifactInfo:
    """What a safetensors artifact says about itself (read without loading tensors)."""

    path: Path
    kind: str | None
    version: str | None
    config: dict[str, Any]
    provenance: dict[str, Any]
    tensors: dict[str, dict[str, Any]]  # name -> {"dtype": ..., "shape": [...]}
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def is_gaml(self) -> bool:
        return self.kind is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "version": self.version,
            "config": self.config,
            "provenance": self.provenance,
            "tensors": self.tensors,
        }


def read_header(path: str | os.PathLike) -> ArtifactInfo:
    """Parse and validate a safetensors header; raise InputError on anything malformed.

    Checks the 8-byte header length, the JSON header, and that the tensor data offsets
    account for the file's exact size (so a truncated download is caught here).
    """
    p = Path(path)
    if str(path) == "-":
        raise UsageError("safetensors artifacts are read from files, not stdin")
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a .safetensors file")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InputError(f"{p}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > size - 8 or n > 100_000_000:
            raise InputError(f"{p}: not a safetensors file (bad header length)")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{p}: not a safetensors file (unreadable header)") from None
    meta = header.pop("__metadata__", None) or {}
    tensors: dict[str, dict[str, Any]] = {}
    end = 0
    try:
        for name, spec in header.items():
            start, stop = spec["data_offsets"]
            end = max(end, int(stop))
            tensors[name] = {"dtype": spec["dtype"], "shape": list(spec["shape"])}
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{p}: not a safetensors file (malformed tensor table)") from None
    data_bytes = size - 8 - n
    if data_bytes < end:
        raise InputError(
            f"{p}: truncated safetensors file ({data_bytes} of {end} data bytes present)"
        )
    if not isinstance(meta, dict):
        raise InputError(f"{p}: malformed safetensors metadata")

    def _json(key: str) -> dict[str, Any]:
        if key not in meta:
            return {}
        try:
            value = json.loads(meta[key])
        except ValueError:
            raise InputError(f"{p}: corrupt gaml metadata ({key} is not JSON)") from None
        return value if isinstance(value, dict) else {}

    return ArtifactInfo(
        path=p,
        kind=meta.get("gaml.kind"),
        version=meta.get("gaml.version"),
        config=_json("gaml.config"),
        provenance=_json("gaml.provenance"),
        tensors=tensors,
        metadata=dict(meta),
    )


def expect_kind(info: ArtifactInfo, kinds: str | Iterable[str]) -> ArtifactInfo:
    wanted = [kinds] if isinstance(kinds, str) else list(kinds)
    if info.kind is None:
        raise InputError(
            f"{info.path}: a safetensors file but not a gaml artifact (no gaml.kind in its "
            f"metadata); expected a '{' or '.join(wanted)}' artifact"
        )
    if info.kind not in wanted:
        raise InputError(
            f"{info.path}: is an artifact of kind '{info.kind}', but this needs "
            + " or ".join(f"'{w}'" for w in wanted)
        )
    return info


def parent_record(path: str | os.PathLike) -> dict[str, Any]:
    """Provenance entry for an input artifact: path, sha256 and kind when readable."""
    p = Path(path)
    rec: dict[str, Any] = {"path": str(p), "sha256": file_sha256(p)}
    if p.suffix == ".safetensors":
        try:
            rec["kind"] = read_header(p).kind
        except InputError:
            pass
    return rec


def provenance(
    *,
    seed: int | None = None,
    parents: Iterable[str | os.PathLike | Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    argv = current_command.get()
    if argv is None:
        argv = ["gaml", *sys.argv[1:]] if sys.argv else ["gaml"]
    rec: dict[str, Any] = {
        "command": " ".join(_shell_quote(a) for a in argv),
        "argv": list(argv),
        "seed": seed,
        "parents": [dict(p) if isinstance(p, Mapping) else parent_record(p) for p in parents],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "gaml_version": __version__,
        "python": sys.version.split()[0],
    }
    if "torch" in sys.modules:
        rec["torch"] = sys.modules["torch"].__version__
    if extra:
        rec.update(extra)
    return rec


def _finite(data: Any) -> Any:
    from .console import finite

    return finite(data)


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch")


def save_artifact(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    *,
    kind: str,
    config: Mapping[str, Any] | None = None,
    seed: int | None = None,
    parents: Iterable[str | os.PathLike | Mapping[str, Any]] = (),
    prov_extra: Mapping[str, Any] | None = None,
    immediate: bool = False,
) -> Path:
    """Write tensors + gaml metadata atomically. Tensors: all numpy or all torch."""
    if not tensors:
        raise ValueError("an artifact needs at least one tensor")
    meta = {
        "gaml.kind": kind,
        "gaml.version": __version__,
        "gaml.format": str(FORMAT_VERSION),
        "gaml.config": json.dumps(_finite(dict(config or {})), sort_keys=True, allow_nan=False),
        "gaml.provenance": json.dumps(
            provenance(seed=seed, parents=parents, extra=prov_extra), sort_keys=True
        ),
    }
    values = list(tensors.values())
    with atomic_path(path, immediate=immediate) as tmp:
        if any(_is_torch(v) for v in values):
            from safetensors.torch import save_file

            clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
            save_file(clean, str(tmp), metadata=meta)
        else:
            import numpy as np
            from safetensors.numpy import save_file

            clean = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
            save_file(clean, str(tmp), metadata=meta)
    return Path(path)


@dataclass
class Artifact:
    info: ArtifactInfo
    tensors: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.info.config

    def __getitem__(self, key: str) -> Any:
        return self.tensors[key]


def load_artifact(
    path: str | os.PathLike,
    kind: str | Iterable[str] | None = None,
    *,
    framework: str = "numpy",
    device: str = "cpu",
    names: Iterable[str] | None = None,
) -> Artifact:
    """Validate the header (and kind), then load tensors as numpy arrays or torch tensors."""
    info = read_header(path)
    if kind is not None:
        expect_kind(info, kind)
    wanted = list(names) if names is not None else list(info.tensors)
    missing = [n for n in wanted if n not in info.tensors]
    if missing:
        raise InputError(f"{info.path}: missing tensor(s) {', '.join(missing)}")
    from safetensors import safe_open

    fw = "np" if framework == "numpy" else "pt"
    out: dict[str, Any] = {}
    try:
        with safe_open(str(info.path), framework=fw, device=device) as fh:
            for name in wanted:
                out[name] = fh.get_tensor(name)
    except InputError:
        raise
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{info.path}: cannot read tensors ({exc})") from None
    return Artifact(info=info, tensors=out)


# --------------------------------------------------------------------------- JSONL


def _display(path: str | os.PathLike) -> str:
    return "<stdin>" if str(path) == "-" else str(path)


def require_piped_stdin(what: str = "JSONL") -> None:
    """Refuse to read '-' from a terminal: a command would wait silently for input the user
    did not mean to type. Pipes and files are fine."""
    try:
        tty = sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        raise UsageError(f"reading {what} from stdin, but stdin is a terminal: give a file, or pipe the "
                         "records in (e.g. `gaml graphgen sample ... | gaml graphgen eval --ref test.jsonl`)")


def read_jsonl(
    path: str | os.PathLike | io.TextIOBase,
    validate: Callable[[dict[str, Any]], None] | None = None,
    name: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream JSON objects from a file, '-' (stdin) or an open text stream, one per line;
    blank lines are skipped.

    A line that is not a JSON object, or that `validate` rejects (by raising ValueError),
    raises InputError naming the file and the line number.
    """
    if hasattr(path, "readline"):
        fh, close = path, False
        name = name or "<stream>"
        yield from _iter_jsonl(fh, name, validate)
        return
    name = _display(path)
    if str(path) == "-":
        require_piped_stdin()
        fh: io.TextIOBase = sys.stdin
        close = False
    else:
        p = Path(path)
        if not p.exists():
            raise InputError(f"{p}: no such file")
        if p.is_dir():
            raise InputError(f"{p}: is a folder, expected a JSONL file")
        fh = open(p, "r", encoding="utf-8")
        close = True
    try:
        yield from _iter_jsonl(fh, name, validate)
    finally:
        if close:
            fh.close()


def _iter_jsonl(fh, name: str, validate) -> Iterator[dict[str, Any]]:
    lineno = 0
    while True:
        try:
            line = fh.readline()
        except UnicodeDecodeError:
            raise InputError(f"{name} line {lineno + 1}: not UTF-8 text") from None
        if not line:
            break
        lineno += 1
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{name} line {lineno}: malformed JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise InputError(
                f"{name} line {lineno}: expected a JSON object, got {type(rec).__name__}"
            )
        if validate is not None:
            try:
                validate(rec)
            except (ValueError, KeyError, TypeError) as exc:
                msg = exc.args[0] if exc.args else type(exc).__name__
                raise InputError(f"{name} line {lineno}: {msg}") from None
        yield rec


class JsonlWriter:
    """Write JSON objects one per line to a file (atomically) or '-' (stdout, streamed)."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self.count = 0
        self._cm = None
        self._fh = None

    def __enter__(self) -> "JsonlWriter":
        if str(self.path) == "-":
            self._fh = sys.stdout
        else:
            self._cm = atomic_write(self.path, "w")
            self._fh = self._cm.__enter__()
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        from .console import _json_default

        self._fh.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
        self.count += 1
        if self._cm is None:
            self._fh.flush()

    def __exit__(self, *exc) -> bool:
        if self._cm is not None:
            return bool(self._cm.__exit__(*exc))
        if self._fh is not None:
            self._fh.flush()
        return False


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    with JsonlWriter(path) as w:
        for rec in records:
            w.write(rec)
    return w.count
