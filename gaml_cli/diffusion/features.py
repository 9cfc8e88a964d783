"""Small classifiers gaml trains on its own data sets: the feature space of its "FID".

A plain CNN (three conv stages, global average pooling, a 128-d feature) with one linear
head per target: `label` for digits, `shape`/`color`/`background` for shapes. The 128-d
pooled feature is what the Frechet distance is computed on (as FID uses Inception's 2048-d
pool features); the heads give conditional accuracy of generated samples.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..core import console


class FeatureNet(nn.Module):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        c = config["image_shape"][0]
        w = config.get("width", 32)
        d = config.get("feature_dim", 128)

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(8, cout), nn.SiLU())

        self.body = nn.Sequential(block(c, w, 1), block(w, 2 * w, 2), block(2 * w, d, 2))
        self.heads = nn.ModuleDict({k: nn.Linear(d, v) for k, v in config["heads"].items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}


def targets_of(art) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, list[str]]]:
    """Targets of an images artifact: labels (digits) or attrs columns (shapes)."""
    cfg = art.config
    if "labels" in art.tensors:
        classes = cfg.get("classes") or [str(i) for i in range(int(art["labels"].max()) + 1)]
        return {"label": art["labels"].astype(np.int64)}, {"label": len(classes)}, {"label": classes}
    if "attrs" in art.tensors:
        cols = cfg.get("attrs_columns", ["shape", "color", "background"])
        attrs = cfg["attributes"]
        return ({c: art["attrs"][:, i].astype(np.int64) for i, c in enumerate(cols)},
                {c: len(attrs[c]) for c in cols}, {c: list(attrs[c]) for c in cols})
    raise ValueError("the artifact has neither labels nor attrs to learn")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 1-pixel shifts (reflect padding) and a little Gaussian noise: features that do
    not hinge on exact pixel positions or perfectly clean images."""
    b, c, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
    x = xp[:, :, dy:dy + h, dx:dx + w]
    return x + 0.05 * torch.randn(x.shape, generator=gen)


def train_classifier(x: np.ndarray, y: dict[str, np.ndarray], heads: dict[str, int], *, epochs: int,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     x_val: np.ndarray | None = None, y_val: dict[str, np.ndarray] | None = None):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = FeatureNet({"image_shape": list(x.shape[1:]), "heads": heads, "width": 32, "feature_dim": 128})
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    xt = torch.from_numpy(x)
    yt = {k: torch.from_numpy(v) for k, v in y.items()}
    n = len(xt)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.perf_counter()
    model.train()
    with console.progress(steps, "classifier") as bar:
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for b in range(0, n, batch_size):
                idx = perm[b:b + batch_size]
                out = model(_augment(xt[idx], gen))
                loss = sum(F.cross_entropy(out[k], yt[k][idx]) for k in heads)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1, loss=float(loss.detach()))
    model.eval()
    report: dict[str, Any] = {"epochs": epochs, "train_seconds": round(time.perf_counter() - t0, 1), "train_images": n}
    if x_val is not None:
        report["val_accuracy"] = accuracy(model, x_val, y_val)
        report["val_images"] = len(x_val)
    return model, report


@torch.no_grad()
def predict(model: FeatureNet, x: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(features (N, D), {head: predicted class (N,)})."""
    feats, preds = [], {k: [] for k in model.heads}
    for b in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[b:b + batch_size], dtype=torch.float32)
        f = model.features(xb)
        feats.append(f.double().numpy())
        for k, h in model.heads.items():
            preds[k].append(h(f).argmax(1).numpy())
    return np.concatenate(feats), {k: np.concatenate(v) for k, v in preds.items()}


def accuracy(model: FeatureNet, x: np.ndarray, y: dict[str, np.ndarray]) -> dict[str, float]:
    _, pred = predict(model, x)
    return {k: float((pred[k] == y[k]).mean()) for k in y}


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FD between Gaussians fitted to two feature sets (Heusel et al. 2017, Eq. 6)."""
    return frechet_from_stats(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982); also FID's formula."""
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():  # singular products (fewer samples than features) are expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():  # nearly singular product: regularise as pytorch-fid does
            eps = 1e-6 * np.eye(len(s1))
            covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
