"""A PNG of graphs in a grid (spring layout, drawn with Pillow): generated beside real ones."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from .io import Graph, to_networkx


def _draw(draw, g: Graph, box: tuple[int, int, int, int], colour: tuple[int, int, int], seed: int) -> None:
    import networkx as nx

    x0, y0, x1, y1 = box
    if g.num_nodes == 0:
        return
    pos = nx.spring_layout(to_networkx(g), seed=seed) if g.num_nodes > 1 else {0: np.zeros(2)}
    P = np.array([pos[i] for i in range(g.num_nodes)], dtype=float)
    P -= P.min(0)
    span = P.max(0)
    span[span == 0] = 1
    m = 10
    P = P / span * [x1 - x0 - 2 * m, y1 - y0 - 2 * m] + [x0 + m, y0 + m]
    for u, v in g.edges:
        draw.line([tuple(P[u]), tuple(P[v])], fill=(150, 150, 150), width=1)
    r = max(2, min(5, int(60 / math.sqrt(g.num_nodes + 1))))
    for x, y in P:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def save_plot(gen: Sequence[Graph], path: str | os.PathLike, ref: Sequence[Graph] | None = None,
              cols: int = 4, cell: int = 160) -> None:
    """Generated graphs (blue) on the left, real ones (green) on the right when given."""
    from PIL import Image, ImageDraw

    from ..core.artifacts import atomic_write

    panels = [("generated", gen, (40, 90, 200))] + ([("real", ref, (30, 150, 80))] if ref else [])
    rows = max(math.ceil(len(p[1]) / cols) for p in panels)
    head = 22
    width = len(panels) * cols * cell + (len(panels) - 1) * 20
    img = Image.new("RGB", (width, head + rows * cell), "white")
    draw = ImageDraw.Draw(img)
    for k, (title, graphs, colour) in enumerate(panels):
        ox = k * (cols * cell + 20)
        draw.text((ox + 6, 4), f"{title} ({len(graphs)})", fill=(0, 0, 0))
        for i, g in enumerate(graphs):
            r, c = divmod(i, cols)
            box = (ox + c * cell, head + r * cell, ox + (c + 1) * cell, head + (r + 1) * cell)
            draw.rectangle(box, outline=(225, 225, 225))
            _draw(draw, g, box, colour, seed=i)
    with atomic_write(path, "wb") as fh:
        img.save(fh, format="PNG")
