"""Shot boundaries by frame content: PySceneDetect's ContentDetector rule, on numpy frames.

For consecutive frames in HSV (OpenCV's 8-bit scale, frames.rgb_to_hsv8), the content value is
the mean over H, S and V of the mean absolute difference of the channel (PySceneDetect's
`ContentDetector` with its default weights 1, 1, 1 and no edge term), with one change: hue
differences are circular (PySceneDetect cuts when a colour drifts through red). A new shot starts at a
frame whose content value is at least `threshold` (27, PySceneDetect's default) when the
current shot is already `min_shot` frames long (PySceneDetect's `min_scene_len`, 15 by default
there; 8 here). Frames are compared at a small size (width <= 256, as PySceneDetect downscales).

It works on PyAV's decoded frames, so gaml needs neither OpenCV nor PySceneDetect; bench/
dataset.py runs PySceneDetect itself beside it when it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .frames import rgb_to_hsv8

THRESHOLD = 27.0
MIN_SHOT = 8
DETECT_WIDTH = 256


def content_value(prev_hsv: np.ndarray, hsv: np.ndarray) -> float:
    """Mean over the H, S, V channels of the mean absolute difference between two frames; the
    hue difference is taken around the circle (min(d, 180 - d)), so a colour drifting through
    red (hue 179 -> 0) is not a cut. PySceneDetect subtracts hue as a plain number there."""
    d = np.abs(hsv - prev_hsv).reshape(-1, 3)
    d[:, 0] = np.minimum(d[:, 0], 180.0 - d[:, 0])
    return float(d.mean(axis=0).mean())


@dataclass
class ContentDetector:
    """Feed frames in order with `push`; `cuts` are the first frames of every shot after the first."""

    threshold: float = THRESHOLD
    min_shot: int = MIN_SHOT
    cuts: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    _prev: np.ndarray | None = None
    _last_cut: int = 0
    _n: int = 0

    def push(self, rgb: np.ndarray) -> bool:
        """Add the next frame (H, W, 3) uint8; True when a new shot starts at it."""
        hsv = rgb_to_hsv8(rgb)
        i = self._n
        self._n += 1
        cut = False
        if self._prev is not None:
            v = content_value(self._prev, hsv)
            self.values.append(v)
            if v >= self.threshold and i - self._last_cut >= self.min_shot:
                self.cuts.append(i)
                self._last_cut = i
                cut = True
        else:
            self.values.append(0.0)
        self._prev = hsv
        return cut

    @property
    def frames(self) -> int:
        return self._n

    def shots(self) -> list[tuple[int, int]]:
        return shots_from_cuts(self.cuts, self._n)


def detect_cuts(frames, threshold: float = THRESHOLD, min_shot: int = MIN_SHOT) -> list[int]:
    """Cut frames of a sequence of frames (H, W, 3) uint8."""
    det = ContentDetector(threshold=threshold, min_shot=min_shot)
    for f in frames:
        det.push(f)
    return det.cuts


def shots_from_cuts(cuts: list[int], n_frames: int) -> list[tuple[int, int]]:
    """[(start, end)] inclusive frame ranges of the shots that `cuts` delimit."""
    starts = [0, *cuts]
    ends = [c - 1 for c in cuts] + [n_frames - 1]
    return [(s, e) for s, e in zip(starts, ends) if e >= s]


def match_cuts(found: list[int], truth: list[int], tolerance: int = 2) -> dict:
    """Precision and recall of detected cut frames against true ones: a found cut matches an
    unmatched true cut at most `tolerance` frames away (greedy, nearest first)."""
    pairs = sorted((abs(f - t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)
                   if abs(f - t) <= tolerance)
    used_f, used_t = set(), set()
    for _, i, j in pairs:
        if i not in used_f and j not in used_t:
            used_f.add(i)
            used_t.add(j)
    tp = len(used_f)
    precision = tp / len(found) if found else 1.0
    recall = tp / len(truth) if truth else 1.0
    return {"tp": tp, "found": len(found), "true": len(truth), "precision": precision, "recall": recall}
