"""SiDA: Adversarial Score identity Distillation (Zhou et al., ICLR 2025, arXiv 2410.14919).

SiD plus an adversarial loss on real images, without a separate discriminator network: the
discriminator is the encoder of the fake score network f_psi. Its logits are the encoder's
last feature map (the UNet's mid block output here) averaged over channels, one logit per
position: D(x_t) = mean_channels Enc_psi(x_t; sigma, c). The losses are in loss.py
(`discriminator_loss`, `adversarial_generator_loss`); this module holds the real images
and the tap that reads the encoder's output during an ordinary f_psi call.

What the real images touch: only the discriminator's loss inside the fake-score update
(real x + sigma n, with the same sigma and n as the generator's sample beside it). The
generator's update never sees them; it gets the adversarial gradient through D(x_g + sigma n).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ...core.errors import UsageError

SHAPES_REAL_N = 4000  # shapes: the data set's training images (seed 0), as the teacher was trained


def encoder_module(teacher, module: nn.Module) -> nn.Module:
    """The last module of f_psi's encoder: the UNet's mid block (the bottleneck)."""
    core = teacher.core(module)
    core = getattr(core, "base_model", core)  # peft wraps the UNet with LoRA
    core = getattr(core, "model", core)
    if not hasattr(core, "mid_block"):
        raise UsageError("SiDA needs a UNet teacher with a mid block (gaml's teachers)")
    return core.mid_block


@contextmanager
def encoder_tap(teacher, module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the encoder output of every forward of `module` inside the block."""
    seen: list[torch.Tensor] = []
    handle = encoder_module(teacher, module).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        yield seen
    finally:
        handle.remove()


def discriminator_logits(encoder_out: torch.Tensor, n: int) -> torch.Tensor:
    """D = the encoder output averaged over channels, (n, 1, h, w), for the first n rows (the
    conditional rows when a guided call batched conditional and null rows together)."""
    return encoder_out[:n].float().mean(dim=1, keepdim=True)


def logits_and_output(teacher, module, x: torch.Tensor, sigma: torch.Tensor, c, call=None):
    """(denoised output, discriminator logits) from one forward of f_psi (or of `call`, a guided
    wrapper around it)."""
    with encoder_tap(teacher, module) as seen:
        y = (call or module)(x, sigma, c)
    return y, discriminator_logits(seen[0], len(x))


class RealImages:
    """Real images and their conditions for the discriminator: 'digits' (gaml's train split of
    scikit-learn's digits), 'shapes' (the shapes training images, seed 0) or an images
    artifact (labels -> classes, attrs -> captions, else unconditional)."""

    def __init__(self, spec: str, teacher, plan=None):
        if teacher.family != "edm":
            raise UsageError("--real-data (SiDA) works with gaml's pixel-space teachers, not Stable Diffusion")
        x, conds = self._load(spec, teacher)
        if tuple(x.shape[1:]) != tuple(teacher.x_shape):
            raise UsageError(f"--real-data {spec}: images are {tuple(x.shape[1:])}, the teacher makes {tuple(teacher.x_shape)}")
        if conds is None and teacher.cond_type != "none":
            raise UsageError(f"--real-data {spec}: the images carry no labels or captions for this "
                             f"{teacher.cond_type}-conditional teacher")
        if plan is not None and conds is not None:  # gaml unlearn: the discriminator sees only retained data
            keep = [i for i, c in enumerate(conds) if plan.is_retained(c)]
            x, conds = x[keep], [conds[i] for i in keep]
        if len(x) < 2:
            raise UsageError(f"--real-data {spec}: fewer than 2 usable images")
        self.spec, self.x, self.conds = spec, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), conds
        self.device = teacher.device

    @staticmethod
    def _load(spec: str, teacher) -> tuple[np.ndarray, list[Any] | None]:
        if spec == "digits":
            from ...datasets import digits

            d = digits.load()
            keep = d["split"] == 0
            return d["images"][keep], [int(v) for v in d["labels"][keep]]
        if spec == "shapes":
            from ...datasets import shapes

            t, records = shapes.generate(SHAPES_REAL_N, 0, size=teacher.x_shape[-1])
            keep = np.flatnonzero(t["split"] == 0)
            return t["images"][keep], [records[i]["caption"] for i in keep]
        from ...core.artifacts import load_artifact
        from ...core.images import check_finite_images

        art = load_artifact(spec, "images")
        x = art["images"]
        check_finite_images(x, spec)
        if "labels" in art.tensors and teacher.cond_type == "class":
            return x, [int(v) for v in art["labels"]]
        if "attrs" in art.tensors and teacher.cond_type == "text":
            from ...datasets.shapes import caption

            a = art.config.get("attributes") or {}
            cols = art.config.get("attrs_columns", ["shape", "color", "background"])
            try:
                return x, [caption(**{c: a[c][int(r[j])] for j, c in enumerate(cols)}) for r in art["attrs"]]
            except (KeyError, IndexError, TypeError):
                raise UsageError(f"--real-data {spec}: its attrs do not match its attribute lists") from None
        if art.config.get("prompts") and teacher.cond_type == "text":
            return x, list(art.config["prompts"])
        return x, None

    def draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[Any] | None]:
        idx = torch.randint(len(self.x), (n,), generator=gen)
        conds = [self.conds[i] for i in idx.tolist()] if self.conds is not None else None
        return self.x[idx].to(self.device), conds

    def describe(self) -> dict[str, Any]:
        return {"real_data": self.spec, "real_images": int(len(self.x))}
