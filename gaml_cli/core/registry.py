"""Model aliases as plain data (no torch, no network).

An alias names where a model's weights come from: a Hugging Face hub repository at a
revision, or a file gaml ships in `gaml_cli/assets/`. `gaml models ls` lists them and
`gaml models where ALIAS` says where one would load from. Users add their own aliases in a
YAML file named by the environment variable GAML_MODELS:

    my-sd:
      kind: sd-pipeline
      hub_id: my-org/my-finetuned-sd15     # or: path: /data/models/my-sd
      revision: main
      description: our fine-tune
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

# Files a local copy of each kind must have to count as present.
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "sd-pipeline": ("model_index.json", "unet/config.json", "vae/config.json",
                    "text_encoder/config.json", "tokenizer/tokenizer_config.json"),
    "sdxl-pipeline": ("model_index.json", "unet/config.json", "vae/config.json",
                      "text_encoder/config.json", "text_encoder_2/config.json"),
    "clip": ("config.json", "tokenizer_config.json"),
    "clip-reward": ("config.json",),
}

# What `gaml models download` fetches for each kind: configs, tokenizers and safetensors
# weights only (never pickles); fp32 weights plus the fp16 variant where one exists.
DOWNLOAD_PATTERNS: dict[str, tuple[str, ...]] = {
    "sd-pipeline": ("model_index.json", "*/config.json", "scheduler/*.json", "tokenizer/*",
                    "feature_extractor/*.json", "unet/*.safetensors", "vae/*.safetensors",
                    "text_encoder/*.safetensors"),
    "sdxl-pipeline": ("model_index.json", "*/config.json", "scheduler/*.json", "tokenizer/*",
                      "tokenizer_2/*", "unet/*.safetensors", "vae/*.safetensors",
                      "text_encoder/*.safetensors", "text_encoder_2/*.safetensors"),
    "clip": ("config.json", "*.safetensors", "tokenizer*", "vocab.json", "merges.txt",
             "special_tokens_map.json", "preprocessor_config.json"),
    "clip-reward": ("config.json", "*.safetensors", "tokenizer*", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "preprocessor_config.json"),
}


@dataclass(frozen=True)
class ModelEntry:
    alias: str
    kind: str
    description: str
    hub_id: str | None = None
    revision: str | None = None
    asset: str | None = None  # file (or model folder) name under gaml_cli/assets/
    path: str | None = None  # a user alias may point at a local file or folder
    origin: str = "builtin"

    @property
    def source(self) -> str:
        if self.asset:
            return "asset"
        if self.path:
            return "path"
        return "hub"

    def to_dict(self) -> dict:
        d = {"alias": self.alias, "kind": self.kind, "source": self.source,
             "description": self.description, "origin": self.origin}
        for key in ("hub_id", "revision", "asset", "path"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d


# Hub revisions: "main" is what the hub serves today; pin a commit hash in your own
# GAML_MODELS file when you need byte-for-byte reproducibility.
BUILTIN: tuple[ModelEntry, ...] = (
    ModelEntry(
        alias="sd15",
        kind="sd-pipeline",
        hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision="main",
        description="Stable Diffusion 1.5 (512 px, epsilon prediction): SiD-LSG/SFD/RPO teacher",
    ),
    ModelEntry(
        alias="sd21",
        kind="sd-pipeline",
        hub_id="stabilityai/stable-diffusion-2-1",
        revision="main",
        description="Stable Diffusion 2.1 (768 px, v-prediction)",
    ),
    ModelEntry(
        alias="sdxl",
        kind="sdxl-pipeline",
        hub_id="stabilityai/stable-diffusion-xl-base-1.0",
        revision="main",
        description="Stable Diffusion XL base 1.0 (1024 px)",
    ),
    ModelEntry(
        alias="clip-l14",
        kind="clip",
        hub_id="openai/clip-vit-large-patch14",
        revision="main",
        description="OpenAI CLIP ViT-L/14 (transformers format) for gaml eval clip",
    ),
    ModelEntry(
        alias="clip-h14",
        kind="clip",
        hub_id="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        revision="main",
        description="LAION CLIP ViT-H/14 (transformers format): PickScore's tokenizer and preprocessing",
    ),
    ModelEntry(
        alias="pickscore",
        kind="clip-reward",
        hub_id="yuvalkirstain/PickScore_v1",
        revision="main",
        description="PickScore v1 (CLIP-H fine-tuned on Pick-a-Pic) for gaml eval reward --model; tokenizer from clip-h14",
    ),
)

# Reward models whose repository holds no tokenizer: where theirs comes from.
TOKENIZER_FROM: dict[str, str] = {"pickscore": "clip-h14"}

# gaml's own models (trained by gaml, shipped in gaml_cli/assets/ with a model card).
# An entry is listed only when its file is really in the package.
SHIPPED: tuple[ModelEntry, ...] = (
    ModelEntry(alias="digits", kind="teacher", asset="digits-teacher.safetensors",
               description="gaml's class-conditional EDM teacher on 8x8 digits (recipes/teacher-digits.yaml)"),
    ModelEntry(alias="shapes", kind="teacher", asset="shapes-teacher.safetensors",
               description="gaml's caption-conditional EDM teacher on 16x16 shapes (recipes/teacher-shapes.yaml)"),
    ModelEntry(alias="digits-classifier", kind="classifier", asset="digits-classifier.safetensors",
               description="feature net + label head for gaml eval fd on digits (recipes/classifiers.yaml)"),
    ModelEntry(alias="shapes-classifier", kind="classifier", asset="shapes-classifier.safetensors",
               description="feature net + shape/colour/background heads for gaml eval fd on shapes (recipes/classifiers.yaml)"),
    ModelEntry(alias="arith-lm", kind="causal-lm", asset="arith-lm",
               description="gaml's small Llama-style LM for two-digit sums, a transformers folder (recipes/align-arithmetic.yaml)"),
)


def _user_entries() -> list[ModelEntry]:
    path = os.environ.get("GAML_MODELS")
    if not path:
        return []
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"GAML_MODELS={path}: no such file")
    import yaml

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"GAML_MODELS={path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise InputError(f"GAML_MODELS={path}: expected a mapping of alias -> entry")
    out = []
    for alias, spec in data.items():
        if not isinstance(spec, dict):
            raise InputError(f"GAML_MODELS={path}: entry {alias!r} must be a mapping")
        unknown = set(spec) - {"kind", "hub_id", "revision", "path", "description"}
        if unknown:
            raise InputError(f"GAML_MODELS={path}: entry {alias!r} has unknown keys {sorted(unknown)}")
        if bool(spec.get("hub_id")) == bool(spec.get("path")):
            raise InputError(f"GAML_MODELS={path}: entry {alias!r} needs exactly one of hub_id, path")
        path_value = spec.get("path")
        if path_value is not None:
            path_value = str((p.parent / Path(path_value).expanduser()).resolve())
        out.append(
            ModelEntry(
                alias=str(alias),
                kind=str(spec.get("kind", "unknown")),
                description=str(spec.get("description", "")),
                hub_id=spec.get("hub_id"),
                revision=spec.get("revision", "main" if spec.get("hub_id") else None),
                path=path_value,
                origin=str(p),
            )
        )
    return out


def entries() -> list[ModelEntry]:
    """All aliases: built-in hub models, shipped assets present on disk, user aliases."""
    shipped = [e for e in SHIPPED if (ASSETS_DIR / e.asset).exists()]
    by_alias: dict[str, ModelEntry] = {}
    for e in (*BUILTIN, *shipped, *_user_entries()):
        by_alias[e.alias] = e  # user entries may override built-ins deliberately
    return list(by_alias.values())


def get(alias: str) -> ModelEntry:
    for e in entries():
        if e.alias == alias:
            return e
    known = ", ".join(e.alias for e in entries())
    raise InputError(f"unknown model alias {alias!r} (known: {known}; or give a local path)")


def lookup(alias: str) -> ModelEntry | None:
    for e in entries():
        if e.alias == alias:
            return e
    return None
