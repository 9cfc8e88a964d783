"""scikit-learn's 8x8 handwritten digits (1,797 images, ships with scikit-learn).

Pixel values 0..16 map linearly to [-1, 1] (x / 8 - 1), images are (N, 1, 8, 8) float32.
The split is stratified by label and fixed by the seed.
"""

from __future__ import annotations

import numpy as np

CLASSES = [str(i) for i in range(10)]


def load(test_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 8.0 - 1.0)[:, None, :, :]
    labels = d.target.astype(np.int64)
    split = np.zeros(len(labels), dtype=np.uint8)  # 0 train, 1 test
    rng = np.random.default_rng(seed)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * len(idx)))
        split[idx[:n_test]] = 1
    return {"images": images, "labels": labels, "split": split}


def config(test_fraction: float, seed: int) -> dict:
    return {
        "dataset": "digits",
        "source": "sklearn.datasets.load_digits",
        "shape": [1, 8, 8],
        "value_range": [-1.0, 1.0],
        "pixel_map": "x / 8 - 1 (raw 0..16)",
        "classes": CLASSES,
        "split_names": ["train", "test"],
        "test_fraction": test_fraction,
        "split_seed": seed,
    }
