"""A diffusers-loadable export of gaml's own image models (teachers and one-step generators).

gaml stores a denoiser as one safetensors artifact whose config holds gaml's short UNet
description, not the full `UNet2DModel` config diffusers needs. `export_diffusers` writes a
folder that plain diffusers (and plain torch) can use without gaml:

    DIR/unet/                  UNet2DModel.save_pretrained: config.json + diffusion_pytorch_model.safetensors
    DIR/text_encoder/          text-conditional models: config.json (vocab, sizes) + model.safetensors
    DIR/gaml_edm.json          the EDM preconditioning, conditioning, sampling defaults / sigma_init
    DIR/README.md              a plain-diffusers snippet that rebuilds gaml's D(x; sigma, c)

The raw UNet F is wrapped by EDM's preconditioning (edm.EDMPrecond, Karras et al. 2022
Table 1) with gaml's timestep scaling (models.C_NOISE_SCALE):

    D(x; sigma, c) = c_skip x + c_out F(c_in x, C_NOISE_SCALE * c_noise, class_labels=emb(c))

The folder is written next to DIR under a temporary name and renamed into place, so an
interrupted export never leaves half a folder at DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..core import hub, registry
from ..core.artifacts import expect_kind, file_sha256, read_header
from ..core.errors import InputError, RuntimeFailure, UsageError
from ..core.paths import check_outputs, same_path
from .io import IMAGE_MODEL_KINDS, RUN_GENERATOR, load_model, run_artifact
from .models import C_NOISE_SCALE, CLS, PAD, UNK
from .sample import SampleSpec
from .sd import ALIGN_CONFIG, is_pipeline_folder

EXPORT_FORMAT = "gaml-edm-export/1"
META_FILE = "gaml_edm.json"
UNET_DIR = "unet"
TEXT_DIR = "text_encoder"
TEXT_WEIGHTS = "model.safetensors"
TMP_MARK = ".gaml-tmp-"
CHECK_TOLERANCE = 1e-4  # the export's own check: exported UNet under the formulas vs gaml's D

SD_ALREADY = ("is Stable Diffusion: its unet/ folder is already in diffusers format "
              "(UNet2DConditionModel.from_pretrained(FOLDER + '/unet')); gaml export is for gaml's own "
              "teachers and one-step generators")


# --------------------------------------------------------------------------- what to export


def resolve_source(model: str, option: str = "--model") -> Path:
    """The teacher/generator artifact behind an alias, a path or a distill/unlearn run folder;
    InputError (exit 2) for anything else, Stable Diffusion included."""
    if not Path(model).expanduser().exists():
        entry = registry.lookup(model)
        if entry is not None and entry.kind.endswith("pipeline"):
            raise InputError(f"{option} {model} {SD_ALREADY}")
        if entry is not None and entry.kind not in IMAGE_MODEL_KINDS:
            raise InputError(f"{option} {model}: is a '{entry.kind}', not a gaml teacher or one-step generator")
    path = run_artifact(hub.resolve(model, option=option))
    if is_pipeline_folder(path):
        raise InputError(f"{option} {model} {SD_ALREADY}")
    if path.is_dir() and (path / META_FILE).is_file():
        raise InputError(f"{option} {model}: is already a gaml export ({META_FILE}); load its unet/ with "
                         f"UNet2DModel.from_pretrained")
    if path.is_dir() and (path / ALIGN_CONFIG).is_file():
        raise InputError(f"{option} {model}: a gaml align run of a Stable Diffusion pipeline, already in diffusers "
                         f"format: pipe.load_lora_weights(RUN) (or UNet2DConditionModel.from_pretrained(RUN + "
                         f"'/unet') after --lora-rank 0); nothing to export")
    if path.is_dir():
        raise InputError(f"{option} {model}: a folder without {RUN_GENERATOR}; give a gaml teacher or "
                         f"generator artifact (.safetensors) or a gaml distill/unlearn run folder")
    info = read_header(path)
    if info.kind == "generator" and "sd" in info.config:
        raise InputError(f"{option} {model}: a one-step generator distilled from Stable Diffusion; its run "
                         f"folder's unet/ is already in diffusers format (UNet2DConditionModel.from_pretrained"
                         f"(RUN + '/unet')), nothing to export")
    expect_kind(info, IMAGE_MODEL_KINDS)
    return path


def check_target(out_dir: str | os.PathLike, source: Path, force: bool, option: str = "--diffusers") -> Path:
    """Refuse an output folder that cannot be right before any work: a file, a non-empty folder
    without --force, a folder holding the input, one that cannot be written."""
    out = Path(out_dir).expanduser()
    if str(out_dir) in ("", "-"):
        raise UsageError(f"{option}: give a folder to write")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out_dir}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(f"{option} {out_dir}: folder exists and is not empty; add --force to replace it")
        real_src, real_out = Path(os.path.realpath(source)), Path(os.path.realpath(out))
        if real_out == real_src or real_out in real_src.parents:
            raise UsageError(f"{option} {out_dir} holds the input {source}: replacing it would destroy the input; "
                             f"pick another folder")
    if same_path(out, source):
        raise UsageError(f"{option} {out_dir} is also the input --model: pick another folder")
    check_outputs({}, None, folders={option: out})
    return out


# --------------------------------------------------------------------------- the files


def describe(net, info, source: Path) -> dict[str, Any]:
    """gaml_edm.json: everything needed to use the raw UNet as gaml's denoiser."""
    cfg = info.config
    c, h, w = (int(v) for v in cfg["model"]["image_shape"])
    sigma_data = float(net.precond.sigma_data)
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "exported_by": f"gaml {__version__}",
        "source": {"path": str(source), "kind": info.kind, "sha256": file_sha256(source),
                   "gaml_version": info.version, "dataset": (cfg.get("data") or {}).get("dataset")},
        "kind": info.kind,
        "unet": {"folder": UNET_DIR, "class": "diffusers.UNet2DModel", "dtype": "float32"},
        "image_shape": [c, h, w],
        "value_range": [-1.0, 1.0],
        "preconditioning": {
            "name": "EDM (Karras et al. 2022, arXiv 2206.00364, Table 1)",
            "sigma_data": sigma_data,
            "c_skip": "sigma_data**2 / (sigma**2 + sigma_data**2)",
            "c_out": "sigma * sigma_data / sqrt(sigma**2 + sigma_data**2)",
            "c_in": "1 / sqrt(sigma**2 + sigma_data**2)",
            "c_noise": "log(sigma) / 4",
            "c_noise_scale": C_NOISE_SCALE,
            "timestep": "c_noise_scale * c_noise  (the float timestep passed to the UNet)",
            "denoiser": "D(x; sigma, c) = c_skip * x + c_out * unet(c_in * x, c_noise_scale * c_noise, "
                        "class_labels=emb(c)).sample",
            "sigma": "per-sample noise level, a float tensor of shape [B]; x is (B, C, H, W), data in [-1, 1]",
        },
        "conditioning": _conditioning(net, cfg),
    }
    if info.kind == "generator":
        sigma_init = float(cfg["generator"]["sigma_init"])
        meta["generator"] = {
            "sigma_init": sigma_init,
            "sample": "x = D(sigma_init * z; sigma_init, c), z ~ N(0, I) of shape (B, C, H, W): one UNet call",
            "guidance": "none at sampling time (any guidance is distilled into the weights)",
        }
        method = (cfg.get("distill") or {}).get("method")
        if method:
            meta["generator"]["method"] = method
        forget = (cfg.get("distill") or {}).get("forget")
        if forget:
            meta["generator"]["forget"] = forget
    else:
        s = cfg.get("sampling") or {}
        spec = SampleSpec(n=1)
        meta["sampling"] = {
            "sampler": s.get("sampler", "heun"), "steps": int(s.get("steps", 18)),
            "guidance": float(s.get("guidance", 1.0)),
            "sigma_min": spec.sigma_min, "sigma_max": spec.sigma_max, "rho": spec.rho,
            "schedule": "sigma_i = (sigma_max**(1/rho) + i/(N-1) * (sigma_min**(1/rho) - sigma_max**(1/rho)))**rho, "
                        "i = 0..N-1, then sigma_N = 0 (EDM Eq. 5); x_0 = sigma_0 * z",
            "sampler_doc": "heun: EDM Algorithm 1 (deterministic); euler: x += (s_next - s) * (x - D(x; s)) / s",
            "guidance_formula": "D_w(x; c) = D(x; null) + w * (D(x; c) - D(x; null))",
        }
    return meta


def _conditioning(net, cfg: dict[str, Any]) -> dict[str, Any]:
    data = cfg.get("data") or {}
    if net.cond_type == "class":
        k = int(net.num_classes)
        out = {"type": "class", "num_classes": k, "null_label": k,
               "class_labels": "a long tensor [B] of class ids 0..num_classes-1; null_label (= num_classes) is "
                               "the unconditional label used for classifier-free guidance"}
        if data.get("classes"):
            out["class_names"] = list(data["classes"])
        return out
    if net.cond_type == "text":
        out = {"type": "text", "text_encoder": TEXT_DIR,
               "class_labels": "the text encoder's output vector (float [B, out_dim]) for each caption; the "
                               "UNet adds it to its time embedding (class_embed_type 'identity')",
               "null_caption": "",
               "encoder_note": "gaml's own small word-level transformer (not CLIP): rebuild it in plain torch "
                               "from text_encoder/config.json and load text_encoder/model.safetensors (README.md)"}
        if data.get("caption_template"):
            out["caption_template"] = data["caption_template"]
        if data.get("attributes"):
            out["attributes"] = data["attributes"]
        return out
    return {"type": "none", "class_labels": "None (unconditional)"}


def text_encoder_config(net) -> dict[str, Any]:
    t = net.text
    layer = t.encoder.layers[0]
    return {
        "architecture": "gaml TextEncoder (word-level transformer; gaml_cli/diffusion/models.py)",
        "vocab": list(t.vocab),
        "pad_id": PAD, "cls_id": CLS, "unk_id": UNK,
        "max_len": int(t.max_len),
        "dim": int(t.tok.embedding_dim),
        "layers": len(t.encoder.layers),
        "heads": int(layer.self_attn.num_heads),
        "ffn_dim": int(layer.linear1.out_features),
        "activation": "relu", "dropout": 0.0, "norm_first": True,
        "layer_norm_eps": float(layer.norm1.eps),
        "pool": t.pool,
        "out_dim": int(t.proj.out_features),
        "tokenize": "words = re.findall('[a-z0-9]+', text.lower()); ids = [cls_id] + [vocab.index(w) if w in "
                    "vocab else unk_id for w in words][:max_len - 1], right-padded with pad_id to max_len",
        "forward": "h = tok(ids) + pos(arange(max_len)); h = norm(encoder(h, src_key_padding_mask=(ids == pad_id))); "
                   "pooled = h[:, 0] if pool == 'cls' else the mean of h over the non-pad tokens; out = proj(pooled)",
        "modules": "tok = Embedding(len(vocab), dim); pos = Embedding(max_len, dim); encoder = TransformerEncoder("
                   "TransformerEncoderLayer(dim, heads, ffn_dim, dropout=0, batch_first=True, norm_first=True), "
                   "layers, enable_nested_tensor=False); norm = LayerNorm(dim); proj = Linear(dim, out_dim)",
    }


def readme(meta: dict[str, Any], name: str, where: str) -> str:
    """The folder's README: what it is and a plain-diffusers snippet for D(x; sigma, c)."""
    cond = meta["conditioning"]
    c, h, w = meta["image_shape"]
    ctype = cond["type"]
    what = "one-step generator" if meta["kind"] == "generator" else "EDM teacher (multi-step denoiser)"
    lines = [
        f"# {name}: a gaml {what}, exported for diffusers",
        "",
        f"Exported by {meta['exported_by']} from `{Path(meta['source']['path']).name}` "
        f"(sha256 {meta['source']['sha256'][:16]}...). Images are {c}x{h}x{w} in [-1, 1].",
        "",
        "- `unet/`: a plain `diffusers.UNet2DModel` (float32), the raw network F.",
        "- `gaml_edm.json`: the EDM preconditioning that turns F into gaml's denoiser D(x; sigma, c), the "
        "conditioning, " + ("the generator's sigma_init." if meta["kind"] == "generator" else "gaml's sampling defaults."),
    ]
    if ctype == "text":
        lines.append("- `text_encoder/`: gaml's own caption encoder (config.json with the vocabulary and sizes, "
                     "model.safetensors), rebuilt below in plain torch.")
    if ctype == "class":
        cond_line = (f"Conditioning: class labels 0..{cond['num_classes'] - 1}; label {cond['null_label']} is the "
                     f"null (unconditional) label.")
    elif ctype == "text":
        cond_line = ("Conditioning: a caption, encoded by `text_encoder/` into a vector that is passed as "
                     "`class_labels`; the empty caption \"\" is the null condition.")
    else:
        cond_line = "Conditioning: none (pass `class_labels=None`)."
    lines += ["", cond_line, "", "## gaml's denoiser in plain diffusers", "", "```python",
              "import json, torch",
              "from diffusers import UNet2DModel",
              "",
              f"DIR = {where!r}  # this folder",
        'unet = UNet2DModel.from_pretrained(f"{DIR}/unet").eval()',
        'pre = json.load(open(f"{DIR}/gaml_edm.json"))["preconditioning"]',
        'sd, scale = pre["sigma_data"], pre["c_noise_scale"]',
        "",
        "@torch.no_grad()",
        "def D(x, sigma, emb):  # x (B, C, H, W); sigma float [B]; emb: " +
        {"class": "long class ids [B]", "text": "text_encoder(tokenize(captions))", "none": "None"}[ctype],
        "    s = sigma.reshape(-1, 1, 1, 1)",
        "    c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()",
        "    c_in, c_noise = 1 / (s**2 + sd**2).sqrt(), sigma.log() / 4",
        "    return c_skip * x + c_out * unet(c_in * x, scale * c_noise, class_labels=emb).sample",
        "```",
        "",
    ]
    if ctype == "text":
        lines += ["The caption encoder in plain torch (`emb = text_encoder(tokenize(captions))`):", "",
                  "```python", *_text_snippet(), "```", ""]
    example = {"class": "torch.arange(n) % " + str(cond.get("num_classes", 1)),
               "text": 'text_encoder(tokenize(["' + _example_caption(cond) + '"] * n))',
               "none": "None"}[ctype]
    if meta["kind"] == "generator":
        sigma_init = meta["generator"]["sigma_init"]
        lines += [f"One-step sampling (sigma_init = {sigma_init}, `gaml_edm.json` `generator.sigma_init`):", "",
                  "```python",
                  f"n, sigma_init = 16, {sigma_init}",
                  f"emb = {example}",
                  f"x = D(sigma_init * torch.randn(n, {c}, {h}, {w}), torch.full((n,), sigma_init), emb)",
                  "```", ""]
    else:
        s = meta["sampling"]
        lines += [f"Sampling: gaml's default is {s['sampler']} with {s['steps']} steps on EDM's schedule "
                  f"(sigma_max {s['sigma_max']}, sigma_min {s['sigma_min']}, rho {s['rho']}), guidance "
                  f"{s['guidance']}; formulas in `gaml_edm.json` `sampling`. A plain Euler sampler at "
                  f"guidance 1 (for w != 1 use `guidance_formula` there):", "",
                  "```python",
                  "n = 16",
                  f"emb = {example}",
                  "N, rho, smin, smax = 18, 7.0, 0.002, 80.0",
                  "t = (smax**(1/rho) + torch.arange(N) / (N - 1) * (smin**(1/rho) - smax**(1/rho)))**rho",
                  "sigmas = torch.cat([t, torch.zeros(1)])",
                  f"x = sigmas[0] * torch.randn(n, {c}, {h}, {w})",
                  "for s, s_next in zip(sigmas[:-1], sigmas[1:]):",
                  "    x = x + (s_next - s) * (x - D(x, s.repeat(n), emb)) / s",
                  "```", ""]
    lines += ["`gaml_edm.json` states the same formulas and numbers; `unet/config.json` is diffusers' own.", ""]
    return "\n".join(lines)


def _example_caption(cond: dict[str, Any]) -> str:
    attrs = cond.get("attributes") or {}
    tpl = cond.get("caption_template")
    if tpl and all(attrs.get(k) for k in ("color", "shape", "background")):
        return tpl.format(color=attrs["color"][0], shape=attrs["shape"][0], background=attrs["background"][-1])
    return "a caption"


def _text_snippet() -> list[str]:
    return [
        "import re",
        "from torch import nn",
        "from safetensors.torch import load_file",
        "",
        'tc = json.load(open(f"{DIR}/text_encoder/config.json"))',
        "",
        "class TextEncoder(nn.Module):  # gaml's caption encoder, plain torch",
        "    def __init__(self, c):",
        "        super().__init__()",
        '        self.tok, self.pos = nn.Embedding(len(c["vocab"]), c["dim"]), nn.Embedding(c["max_len"], c["dim"])',
        '        layer = nn.TransformerEncoderLayer(c["dim"], c["heads"], c["ffn_dim"], dropout=0.0,',
        '                                           layer_norm_eps=c["layer_norm_eps"], batch_first=True, norm_first=True)',
        '        self.encoder = nn.TransformerEncoder(layer, c["layers"], enable_nested_tensor=False)',
        '        self.norm, self.proj = nn.LayerNorm(c["dim"]), nn.Linear(c["dim"], c["out_dim"])',
        "",
        "    def forward(self, ids):",
        '        pad = ids == tc["pad_id"]',
        "        h = self.norm(self.encoder(self.tok(ids) + self.pos.weight[: ids.shape[1]], src_key_padding_mask=pad))",
        '        if tc["pool"] == "cls":',
        "            return self.proj(h[:, 0])",
        "        keep = (~pad).unsqueeze(-1).float()",
        "        return self.proj((h * keep).sum(1) / keep.sum(1).clamp(min=1))",
        "",
        "def tokenize(texts):",
        '    ids = torch.full((len(texts), tc["max_len"]), tc["pad_id"])',
        "    for i, t in enumerate(texts):",
        '        w = [tc["vocab"].index(x) if x in tc["vocab"] else tc["unk_id"] for x in re.findall("[a-z0-9]+", t.lower())]',
        '        toks = [tc["cls_id"]] + w[: tc["max_len"] - 1]',
        "        ids[i, : len(toks)] = torch.tensor(toks)",
        "    return ids",
        "",
        "text_encoder = TextEncoder(tc).eval()",
        'text_encoder.load_state_dict(load_file(f"{DIR}/text_encoder/model.safetensors"))',
    ]


# --------------------------------------------------------------------------- writing


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_folder(net, meta: dict[str, Any], tmp: Path) -> list[str]:
    from safetensors.torch import save_file

    net.unet.save_pretrained(tmp / UNET_DIR, safe_serialization=True)
    files = [f"{UNET_DIR}/{p.name}" for p in sorted((tmp / UNET_DIR).iterdir())]
    if net.cond_type == "text":
        (tmp / TEXT_DIR).mkdir()
        tcfg = text_encoder_config(net)
        _write_json(tmp / TEXT_DIR / "config.json", tcfg)
        weights = {k: v.detach().float().contiguous().cpu() for k, v in net.text.state_dict().items()}
        save_file(weights, str(tmp / TEXT_DIR / TEXT_WEIGHTS), metadata={"format": "pt"})
        files += [f"{TEXT_DIR}/config.json", f"{TEXT_DIR}/{TEXT_WEIGHTS}"]
    _write_json(tmp / META_FILE, meta)
    files.append(META_FILE)
    return files


@torch.no_grad()
def check_export(net, folder: Path, meta: dict[str, Any], n: int = 4, seed: int = 0) -> float:
    """Max |D_gaml - D_export| on random x, sigma, conditions: the exported UNet reloaded by
    diffusers under the formulas of gaml_edm.json (gaml's own text embeddings for text models)."""
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(folder / UNET_DIR).eval()
    g = torch.Generator().manual_seed(seed)
    c, h, w = meta["image_shape"]
    x = torch.randn(n, c, h, w, generator=g) * 2
    sigma = (torch.randn(n, generator=g) * 1.5 - 0.5).exp()
    if net.cond_type == "class":
        cond = torch.arange(n) % (net.num_classes + 1)
        emb = cond
    elif net.cond_type == "text":
        cond = net.encode_condition(["", *(_example_caption(meta["conditioning"]) for _ in range(n - 1))], n)
        emb = net.text(cond)
    else:
        cond = emb = None
    pre = meta["preconditioning"]
    sd, scale = pre["sigma_data"], pre["c_noise_scale"]
    s = sigma.reshape(-1, 1, 1, 1)
    d_export = sd**2 / (s**2 + sd**2) * x + s * sd / (s**2 + sd**2).sqrt() * unet(
        x / (s**2 + sd**2).sqrt(), scale * sigma.log() / 4, class_labels=emb).sample
    return float((net(x, sigma, cond) - d_export).abs().max())


def export_diffusers(model: str, out_dir: str | os.PathLike, *, force: bool = False,
                     option: str = "--model", out_option: str = "--diffusers") -> dict[str, Any]:
    """Export a gaml teacher / one-step generator (alias, artifact or run folder) to out_dir.

    Returns a summary (out, kind, conditioning, files, the self-check's max abs difference)."""
    source = resolve_source(model, option)
    out = check_target(out_dir, source, force, out_option)
    net, info = load_model(source)
    meta = describe(net, info, source)
    parent = out.parent if str(out.parent) else Path(".")
    created = [p for p in (parent, *parent.parents) if not p.exists()]  # removed again if the export fails
    parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP_MARK}", dir=parent))
    except BaseException:
        _remove_empty(created)
        raise
    old: Path | None = None
    try:
        files = _write_folder(net, meta, tmp)
        diff = check_export(net, tmp, meta)
        if not diff < CHECK_TOLERANCE:
            raise RuntimeFailure(f"the exported UNet does not reproduce gaml's denoiser "
                                 f"(max abs difference {diff:.3g}); nothing was written to {out_dir}")
        (tmp / "README.md").write_text(readme(meta, out.name or "export", str(out_dir)), encoding="utf-8")
        files.append("README.md")
        _fsync_tree(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.gaml-old-", dir=parent))
            os.rmdir(old)
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        if old is not None and old.exists() and not out.exists():
            old.rename(out)  # put the previous folder back
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return {"out": str(out_dir), "model": str(source), "kind": info.kind, "conditioning": net.cond_type,
            "image_shape": meta["image_shape"], "files": sorted(files), "check_max_abs_diff": diff}


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this export created (deepest first) when it failed, if still empty."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            pass


def _fsync_tree(folder: Path) -> None:
    """fsync every file and give files and folders the umask's modes (temp files are 0600)."""
    mask = _umask()
    for root, dirs, names in os.walk(folder):
        for name in names:
            with open(Path(root) / name, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(Path(root) / name, 0o666 & ~mask)
        for name in dirs:
            os.chmod(Path(root) / name, 0o777 & ~mask)
    os.chmod(folder, 0o777 & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["export_diffusers", "resolve_source", "check_target", "describe", "readme", "check_export"]
