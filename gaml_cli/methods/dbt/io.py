"""The .dbt container and the fit checkpoint: plain text and JSON, no pickle.

A `.dbt` file is a zip archive (deflate) holding

    gaml.json                 {"gaml.kind": "dbt", "gaml.format": 1, "gaml.version": ...,
                               "task": "regress" | "classify", "config": {...DBTConfig...},
                               "schema": {"columns": [...], "categorical": {col: [levels]}},
                               "extra": {"y_mean", "y_std"} or {"classes": [...]},
                               "members": {name: sha256 of its bytes}, "provenance": {...}}
    mean_model.txt            the mean model f(x), LightGBM's text format
    trees/t00001_k0.txt ...   the weak learner of timestep t for output coordinate k

Every member is LightGBM's own `model_to_string()` text, so any LightGBM can read a tree
on its own (`lightgbm.Booster(model_file=...)` after unzipping). On load the kind, the
format version, the member list and every member's sha256 are checked: a foreign, truncated
or edited file is refused with one line (exit 2).

The checkpoint of `gaml boost fit` is a folder `<out>.ckpt/` with the same member files,
each written atomically as it is made, and `meta.json` recording the options and a hash of
the training data; `--resume` reuses the members whose options and data match.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

from ... import __version__
from ...core.artifacts import atomic_path, atomic_write
from ...core.errors import InputError, UsageError

KIND = "dbt"
FORMAT = 1


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save(path: str, state: dict, provenance: dict | None = None) -> Path:
    texts = state["texts"]
    header = {"gaml.kind": KIND, "gaml.format": FORMAT, "gaml.version": __version__, "task": state["task"],
              "config": state["config"], "schema": state["schema"], "extra": state["extra"],
              "members": {name: _sha(texts[name]) for name in sorted(texts)}, "provenance": provenance or {}}
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr("gaml.json", json.dumps(header, indent=1, sort_keys=True))
            for name in sorted(texts):
                zf.writestr(name, texts[name])
    return Path(path)


def read_header(path: str) -> dict:
    """gaml.json of a .dbt file, after checking it is one."""
    p = Path(path)
    if str(path) == "-":
        raise UsageError("a .dbt model is read from a file, not stdin")
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a .dbt model file")
    if not zipfile.is_zipfile(p):
        raise InputError(f"{p}: not a gaml .dbt model (not a zip container; truncated or another kind of file)")
    try:
        with zipfile.ZipFile(p) as zf:
            raw = zf.read("gaml.json")
        header = json.loads(raw.decode("utf-8"))
    except KeyError:
        raise InputError(f"{p}: not a gaml .dbt model (no gaml.json inside)") from None
    except (zipfile.BadZipFile, ValueError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(f"{p}: corrupt .dbt model ({exc})") from None
    if not isinstance(header, dict) or header.get("gaml.kind") != KIND:
        kind = header.get("gaml.kind") if isinstance(header, dict) else None
        raise InputError(f"{p}: is a gaml artifact of kind {kind!r}, but this needs a '{KIND}' model")
    if int(header.get("gaml.format", 0)) > FORMAT:
        raise InputError(f"{p}: .dbt format {header.get('gaml.format')} is newer than this gaml reads ({FORMAT}); upgrade gaml")
    return header


def load_state(path: str) -> dict:
    header = read_header(path)
    p = Path(path)
    texts: dict[str, str] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            for name, digest in header["members"].items():
                data = zf.read(name).decode("utf-8")
                if _sha(data) != digest:
                    raise InputError(f"{p}: corrupt .dbt model ({name} does not match its checksum)")
                texts[name] = data
    except InputError:
        raise
    except KeyError as exc:
        raise InputError(f"{p}: corrupt .dbt model (member {exc.args[0]} missing)") from None
    except (zipfile.BadZipFile, ValueError, UnicodeDecodeError, OSError, EOFError, TypeError, AttributeError) as exc:
        raise InputError(f"{p}: corrupt .dbt model ({exc})") from None
    return {"task": header.get("task"), "config": header["config"], "schema": header["schema"],
            "extra": header.get("extra", {}), "texts": texts, "header": header}


# --------------------------------------------------------------------------- checkpoint


def data_fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        import numpy as np

        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class DirStore:
    """The checkpoint folder: each finished member as an atomically written text file."""

    def __init__(self, folder: str | Path, meta: dict, resume: bool):
        self.folder = Path(folder)
        self.meta = meta
        self.reused = 0
        meta_path = self.folder / "meta.json"
        if resume and self.folder.exists():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                raise InputError(f"{self.folder}: not a gaml boost checkpoint (meta.json missing or unreadable)") from None
            if old != meta:
                diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                raise UsageError(f"{self.folder} was made with other options or data ({', '.join(diff)}); "
                                 "rerun without --resume to start over")
        else:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            with atomic_write(meta_path, "w", immediate=True) as fh:  # checkpoints land at once
                json.dump(meta, fh, sort_keys=True)

    def get(self, name: str) -> str | None:
        p = self.folder / name
        if not p.exists():
            return None
        self.reused += 1
        return p.read_text(encoding="utf-8")

    def put(self, name: str, text: str) -> None:
        with atomic_write(self.folder / name, "w", immediate=True) as fh:
            fh.write(text)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
