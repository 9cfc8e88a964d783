"""Resolve a model alias or path to local weights: local path, shipped asset, HF cache, hub.

Real weights load for real: an alias resolves to a hub id at a revision and goes through
huggingface_hub's cache (HF_HOME / HF_HUB_CACHE). With no network (HF_HUB_OFFLINE=1 or
GAML_OFFLINE=1) and no local copy, the user gets one line naming the alias, what was looked
for and where, and how to provide it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, ModelNotFoundError
from .registry import ASSETS_DIR, DOWNLOAD_PATTERNS, REQUIRED_FILES, ModelEntry, lookup, get


def offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return (os.environ.get("HF_HUB_OFFLINE", "").lower() in truthy
            or os.environ.get("GAML_OFFLINE", "").lower() in truthy)


def hub_cache_dir() -> Path:
    """The HF hub cache, honouring HF_HUB_CACHE and HF_HOME at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


@dataclass
class Location:
    alias: str | None
    source: str  # "path" | "asset" | "hub"
    present: bool
    path: Path | None  # where it loads from when present
    looked_in: list[str] = field(default_factory=list)
    hub_id: str | None = None
    revision: str | None = None
    kind: str | None = None
    missing_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "alias": self.alias,
            "kind": self.kind,
            "source": self.source,
            "hub_id": self.hub_id,
            "revision": self.revision,
            "present": self.present,
            "path": str(self.path) if self.path else None,
            "looked_in": self.looked_in,
            "missing_files": self.missing_files,
        }


def _missing(kind: str, folder: Path) -> list[str]:
    return [f for f in REQUIRED_FILES.get(kind, ()) if not (folder / f).exists()]


def _cached_snapshot(hub_id: str, revision: str | None) -> Path | None:
    """The local snapshot folder for hub_id@revision in the HF cache, without network."""
    cache = hub_cache_dir()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, revision=revision, cache_dir=cache,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    except Exception:  # other hub-library errors mean "not usable locally"
        return None


def locate(entry: ModelEntry) -> Location:
    """Where an alias would load from, and whether it is there now (never downloads)."""
    if entry.source == "asset":
        p = ASSETS_DIR / entry.asset
        return Location(entry.alias, "asset", p.exists(), p if p.exists() else None,
                        [str(p)], kind=entry.kind)
    if entry.source == "path":
        p = Path(entry.path)
        missing = _missing(entry.kind, p) if p.is_dir() else []
        ok = p.exists() and not missing
        return Location(entry.alias, "path", ok, p if ok else None, [str(p)], kind=entry.kind,
                        missing_files=missing)
    cache = hub_cache_dir()
    repo_dir = cache / ("models--" + entry.hub_id.replace("/", "--"))
    snap = _cached_snapshot(entry.hub_id, entry.revision)
    missing = _missing(entry.kind, snap) if snap else []
    ok = snap is not None and not missing
    return Location(entry.alias, "hub", ok, snap if ok else None, [str(repo_dir)],
                    hub_id=entry.hub_id, revision=entry.revision, kind=entry.kind,
                    missing_files=missing)


def _looks_like_path(name: str) -> bool:
    return (os.sep in name and not _looks_like_hub_id(name)) or name.startswith((".", "~", "/")) \
        or name.endswith((".safetensors", ".json"))


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def entry_for(name: str) -> ModelEntry:
    """A registry entry for an alias, or an ad-hoc hub entry for 'org/name'."""
    entry = lookup(name)
    if entry is not None:
        return entry
    if _looks_like_hub_id(name) and not Path(name).exists():
        return ModelEntry(alias=name, kind="unknown", description="hub repository",
                          hub_id=name, revision="main", origin="argument")
    return get(name)  # raises the "unknown alias" error


def how_to_provide(entry: ModelEntry, option: str = "--teacher") -> str:
    if entry.source == "hub":
        return (f"pass a local folder ({option} /path/to/{entry.alias}), set HF_HOME to a cache "
                f"that has {entry.hub_id}, or run 'gaml models download {entry.alias}' "
                f"with network access")
    if entry.source == "asset":
        return "reinstall gaml (the file ships with the package)"
    return f"fix the path in {entry.origin}"


def resolve(name: str, *, option: str = "--teacher", download: bool = False) -> Path:
    """Local path for an alias, hub id or path. Raises ModelNotFoundError with one clear line."""
    p = Path(name).expanduser()
    if p.exists():
        return p
    if _looks_like_path(name):
        raise ModelNotFoundError(f"{name}: no such file or folder")
    entry = entry_for(name)
    loc = locate(entry)
    if loc.present:
        return loc.path
    if entry.source == "hub" and download and not offline():
        return download_entry(entry)
    why = "network access is off" if offline() else "it is not downloaded"
    if loc.missing_files:
        what = f"an incomplete copy at {loc.looked_in[0]} (missing {', '.join(loc.missing_files)})"
        raise ModelNotFoundError(f"model {entry.alias!r}: found {what}",
                                 how_to_provide(entry, option))
    looked = f"{entry.hub_id}@{entry.revision} in {loc.looked_in[0]}" if entry.source == "hub" \
        else loc.looked_in[0]
    raise ModelNotFoundError(f"model {entry.alias!r} not found locally: looked for {looked} "
                             f"and {why}", how_to_provide(entry, option))


def download_entry(entry: ModelEntry) -> Path:
    """Download a hub model into the HF cache (configs, tokenizers, safetensors only)."""
    if entry.source != "hub":
        raise InputError(f"model {entry.alias!r} is a {entry.source}, nothing to download")
    if offline():
        raise ModelNotFoundError(
            f"cannot download model {entry.alias!r} ({entry.hub_id}@{entry.revision}): network "
            f"access is off (HF_HUB_OFFLINE/GAML_OFFLINE)",
            f"set HF_HOME to a cache that has it (looked in {hub_cache_dir()}) or pass a local folder",
        )
    from huggingface_hub import snapshot_download

    patterns = list(DOWNLOAD_PATTERNS.get(entry.kind, ())) or None
    try:
        path = snapshot_download(entry.hub_id, revision=entry.revision,
                                 cache_dir=hub_cache_dir(), allow_patterns=patterns)
    except Exception as exc:  # network, auth, gated repo: one line either way
        raise ModelNotFoundError(
            f"cannot download model {entry.alias!r} ({entry.hub_id}@{entry.revision}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "check network access and `hf auth login` for gated models",
        ) from None
    return Path(path)
