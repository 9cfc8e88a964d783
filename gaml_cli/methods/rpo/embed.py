"""The embeddings behind Diffusion-RPO's weights w_ij = softmax_j(-(1 - cos(e_i, e_j)) / tau).

The paper (arXiv 2406.06382) weights pairs by the CLIP similarity of their prompts and images
("multi-modal re-weighting factors"); it gives no code and leaves open which CLIP, which image
of a pair and how the two modalities combine. gaml's choices, each a value of `--embeddings`:

- model: the caption vectors the aligned model itself conditions on (its own text encoder:
  gaml's TextEncoder, or SD's CLIP text encoder averaged over tokens). No extra model.
- clip-text: CLIP's projected text embedding of each pair's prompt.
- clip-image: CLIP's projected image embedding of each pair's CHOSEN image (the image the
  pair pulls the model toward; the rejected image is not embedded).
- clip: both, joined so that cos(e_i, e_j) is the mean of the text and image cosines
  (loss.combine_similarity).

CLIP comes from `--clip-model` (alias clip-l14 = openai/clip-vit-large-patch14, a hub id or a
local transformers folder); the embeddings are computed once before training.
"""

from __future__ import annotations

import torch

from ...core.errors import UsageError
from . import loss as L

EMBEDDINGS = ("model", "clip-text", "clip-image", "clip")


def pair_embeddings(kind: str, prompts: list[str], chosen: torch.Tensor, clip_model: str,
                    device="cpu") -> torch.Tensor | None:
    """One row per pair for RPO's weights (None for `model`: the trainer takes the model's own).
    chosen: the pairs' chosen images in pixels, (N, C, H, W) in [-1, 1]."""
    if kind not in EMBEDDINGS:
        raise UsageError(f"--embeddings must be one of {', '.join(EMBEDDINGS)}")
    if kind == "model":
        return None
    from ...core import console
    from ...diffusion.clip import ClipScorer

    clip = ClipScorer(clip_model, device=device)
    console.log(f"RPO weights from CLIP ({clip.path}): {kind} embeddings of {len(prompts)} pairs")
    parts = []
    if kind in ("clip-text", "clip"):
        parts.append(clip.text_embeds(prompts))
    if kind in ("clip-image", "clip"):
        parts.append(clip.image_embeds(chosen))
    return L.combine_similarity(*parts)
