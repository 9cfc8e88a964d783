"""The FID Inception network (pool3, 2048 features) and FID for real RGB images.

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to Inception-v3
pool3 features of two image sets:

    FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).

The numbers papers report (SiD-LSG's COCO FIDs among them) come from the TensorFlow graph
`inception-2015-12-05`, which differs from torchvision's Inception-v3 in three places: the
average pools of the A, C and first E blocks do not count zero padding, and the last E
block pools by max, not average. This module builds that network in plain torch, with the
parameter names of the widely used PyTorch port of those weights
(`pt_inception-2015-12-05-6726825d.pth`, released with pytorch-fid), so that file loads
as it is. Input convention follows that port: RGB in [0, 1], resized bilinearly to 299x299,
then mapped to [-1, 1].

No weights are downloaded at run time: the file is found through --inception PATH, the
environment variable GAML_FID_INCEPTION, or torch's hub cache
(`$TORCH_HOME/hub/checkpoints/`, where pytorch-fid and torchmetrics users already have it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import InputError, ModelNotFoundError

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
FEATURES = 2048


class Conv(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in the TF graph), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x):
    # TF's SAME average pooling divides by the number of real pixels under the window.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):  # 35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = Conv(cin, 64, 1)
        self.branch5x5_1 = Conv(cin, 48, 1)
        self.branch5x5_2 = Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(cin, pool, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([a, b, c, d], 1)


class BlockB(nn.Module):  # 35 -> 17 grid reduction
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):  # 17x17 with factorised 7x7 convolutions
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = Conv(cin, 192, 1)
        self.branch7x7_1 = Conv(cin, c7, 1)
        self.branch7x7_2 = Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = Conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = Conv(cin, c7, 1)
        self.branch7x7dbl_2 = Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = Conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = Conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = Conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for i in range(1, 6):
            c = getattr(self, f"branch7x7dbl_{i}")(c)
        d = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([a, b, c, d], 1)


class BlockD(nn.Module):  # 17 -> 8 grid reduction
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = Conv(cin, 192, 1)
        self.branch3x3_2 = Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = x
        for i in range(1, 5):
            b = getattr(self, f"branch7x7x3_{i}")(b)
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):  # 8x8 with expanded filter banks; the TF graph's last one max-pools
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = Conv(cin, 320, 1)
        self.branch3x3_1 = Conv(cin, 384, 1)
        self.branch3x3_2a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Conv(cin, 448, 1)
        self.branch3x3dbl_2 = Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_no_pad(x)
        return torch.cat([a, b, c, self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """Inception-v3 as in the TF FID graph; forward returns the 2048 pool3 features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # the TF graph's logits; in the weight file, unused for FID

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) RGB in [0, 1] -> (N, 2048) pool3 features."""
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


def weights_path(explicit: str | None = None) -> Path:
    """The FID Inception weight file: --inception, GAML_FID_INCEPTION, or torch's hub cache."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"--inception {explicit}: no such file")
        return p
    env = os.environ.get("GAML_FID_INCEPTION")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"GAML_FID_INCEPTION={env}: no such file")
        return p
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    p = cache / WEIGHTS_NAME
    if p.is_file():
        return p
    raise ModelNotFoundError(
        f"FID Inception weights not found: looked for {p} (gaml downloads nothing at run time)",
        f"download {WEIGHTS_URL} into {cache}, or pass --inception PATH / set GAML_FID_INCEPTION")


def load_inception(path: Path, device="cpu") -> FIDInception:
    """Build the network and load a pytorch-fid-format state dict (weights only, no pickled code)."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, pickled code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable FID Inception weight file ({first[:160]})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict of the FID Inception network")
    net = FIDInception()
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise InputError(f"{path}: not the FID Inception network's weights ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected tensors; {what})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise InputError(f"{path}: tensor {k} has shape {tuple(v.shape)}, the FID Inception network needs "
                             f"{tuple(own[k].shape)}")
    net.load_state_dict(state, strict=False)
    return net.to(device).eval()


def to_unit_rgb(images: np.ndarray) -> torch.Tensor:
    """gaml image arrays ((N, C, H, W) float in [-1, 1], or uint8 in [0, 255]) -> RGB in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InputError(f"FID needs images shaped (N, 1 or 3, H, W), got {tuple(x.shape)}")
    x = x.float() / 255 if x.dtype == torch.uint8 else ((x.float() + 1) / 2).clamp(0, 1)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


@torch.no_grad()
def features(net: FIDInception, images: np.ndarray, *, batch_size: int = 50, device="cpu",
             progress=None) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch_size):
        x = to_unit_rgb(images[i:i + batch_size]).to(device)
        out.append(net(x).double().cpu().numpy())
        if progress is not None:
            progress(len(x))
    return np.concatenate(out) if out else np.zeros((0, FEATURES))


def stats(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return f.mean(axis=0), np.cov(f, rowvar=False)


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Reference statistics in pytorch-fid's .npz format (mu, sigma)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
            n = int(z["n"]) if "n" in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not FID statistics (an .npz with 'mu' and 'sigma'): "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if mu.shape != (FEATURES,) or sigma.shape != (FEATURES, FEATURES):
        raise InputError(f"{path}: FID statistics must have mu ({FEATURES},) and sigma ({FEATURES}, {FEATURES}); "
                         f"got {mu.shape} and {sigma.shape}")
    return mu, sigma, n
