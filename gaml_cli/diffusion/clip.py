"""CLIP score of generated images against their prompts, through transformers' CLIPModel.

clip_score = mean over samples of cos(E_img(x_i), E_txt(p_i)) (the raw cosine that the
SiD-LSG paper reports, e.g. 0.302 at LSG 1.5 with ViT-g/14), and clipscore_100 =
mean of 100 * max(cos, 0) (Hessel et al. 2021's CLIPScore, torchmetrics' convention).
Preprocessing is CLIP's own, done in torch: resize the short side to the model's image
size (bicubic, antialiased), centre crop, normalise with the processor's mean/std.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..core.errors import InputError

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def _features(out) -> torch.Tensor:
    """get_*_features' projected embeddings: a tensor (transformers 4) or an output whose
    pooler_output holds them (transformers 5)."""
    t = out if isinstance(out, torch.Tensor) else out.pooler_output
    return t.float().cpu()


class ClipScorer:
    def __init__(self, name: str, device="cpu", tokenizer: str | None = None):
        """name: alias, hub id or local transformers folder. tokenizer: where the tokenizer and
        preprocessing come from when the model's folder has none (PickScore: clip-h14); None:
        the registry's TOKENIZER_FROM for the alias, else the model's own folder."""
        from ..core import hub
        from ..core.registry import TOKENIZER_FROM

        path = Path(hub.resolve(name, option="--model"))
        tok_path = path
        if not (path / "tokenizer_config.json").is_file() and (tokenizer or name in TOKENIZER_FROM):
            tok_path = Path(hub.resolve(tokenizer or TOKENIZER_FROM[name], option="--model"))
        try:
            from transformers import CLIPModel, CLIPTokenizer
            from .sd import _quiet_libraries

            _quiet_libraries()
            self.model = CLIPModel.from_pretrained(path, use_safetensors=True, local_files_only=True).to(device).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(tok_path, local_files_only=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: cannot load a CLIP model ({first})") from None
        self.path = path
        self.device = device
        self.size = int(self.model.config.vision_config.image_size)
        mean, std = OPENAI_MEAN, OPENAI_STD
        pre = tok_path / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> CLIP pixel values."""
        x = (images.float().to(self.device) + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        x = x[:, :, top:top + self.size, left:left + self.size]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_embeds(self, images, batch_size: int = 64) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] -> CLIP's projected image embeddings (N, D), fp32 on CPU."""
        out = []
        for b in range(0, len(images), batch_size):
            px = self.preprocess(torch.as_tensor(images[b:b + batch_size]))
            out.append(_features(self.model.get_image_features(pixel_values=px)))
        return torch.cat(out)

    @torch.no_grad()
    def text_embeds(self, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Prompts -> CLIP's projected text embeddings (N, D), fp32 on CPU."""
        out = []
        for b in range(0, len(prompts), batch_size):
            tok = self.tokenizer(list(prompts[b:b + batch_size]), padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt").to(self.device)
            out.append(_features(self.model.get_text_features(input_ids=tok.input_ids,
                                                              attention_mask=tok.attention_mask)))
        return torch.cat(out)

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale): the factor CLIP's logits (and PickScore's score) put on the cosine."""
        return float(self.model.logit_scale.detach().exp())

    @torch.no_grad()
    def cosines(self, images: np.ndarray, prompts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for b in range(0, len(images), batch_size):
            px = self.preprocess(torch.as_tensor(images[b:b + batch_size]))
            tok = self.tokenizer(list(prompts[b:b + batch_size]), padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt").to(self.device)
            o = self.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask, pixel_values=px)
            img = F.normalize(o.image_embeds.float(), dim=-1)
            txt = F.normalize(o.text_embeds.float(), dim=-1)
            out.append((img * txt).sum(-1).cpu().numpy())
        return np.concatenate(out)
