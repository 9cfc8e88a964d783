"""Graphs -> the dense tensors GBD trains on, and the training-set profiles sampling draws from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ...core.errors import InputError
from ...graphs.io import Graph


@dataclass
class GraphTensors:
    A: torch.Tensor          # (G, N, N) 0/1 adjacency, nodes ordered by descending degree
    onehot: torch.Tensor     # (G, N, D) one-hot degree (node features, GBD's choice for generic graphs)
    node_mask: torch.Tensor  # (G, N) bool
    norm_deg: torch.Tensor   # (G, N) degree / the graph's largest degree (0 for padding)
    n: torch.Tensor          # (G,) node counts


def order_by_degree(g: Graph) -> np.ndarray:
    """Node order by descending degree (stable), GBD's canonical order."""
    return np.argsort(-g.degrees(), kind="stable")


def normalised_degrees(deg: np.ndarray) -> np.ndarray:
    top = deg.max() if len(deg) else 0
    return deg / top if top > 0 else np.zeros(len(deg))


def to_tensors(graphs: Sequence[Graph], max_nodes: int, max_degree: int) -> GraphTensors:
    G = len(graphs)
    A = np.zeros((G, max_nodes, max_nodes), dtype=np.float32)
    onehot = np.zeros((G, max_nodes, max_degree + 1), dtype=np.float32)
    mask = np.zeros((G, max_nodes), dtype=bool)
    nd = np.zeros((G, max_nodes), dtype=np.float32)
    n = np.zeros(G, dtype=np.int64)
    for i, g in enumerate(graphs):
        if g.num_nodes > max_nodes:
            raise InputError(f"graph {i} has {g.num_nodes} nodes; this model handles at most {max_nodes}")
        order = order_by_degree(g)
        a = g.adjacency()[np.ix_(order, order)]
        deg = a.sum(1).astype(np.int64)
        if deg.max(initial=0) > max_degree:
            raise InputError(f"graph {i} has a node of degree {deg.max()}; this model handles at most {max_degree}")
        k = g.num_nodes
        A[i, :k, :k] = a
        onehot[i, np.arange(k), deg] = 1.0
        mask[i, :k] = True
        nd[i, :k] = normalised_degrees(deg)
        n[i] = k
    return GraphTensors(torch.from_numpy(A), torch.from_numpy(onehot), torch.from_numpy(mask),
                        torch.from_numpy(nd), torch.from_numpy(n))


def marginals(t: GraphTensors) -> tuple[torch.Tensor, float]:
    """Share of nodes with each degree (p_X, per feature) and edge density over node pairs (p_E)."""
    m = t.node_mask
    p_x = t.onehot[m].mean(0)
    pair = (m.unsqueeze(2) & m.unsqueeze(1)) & ~torch.eye(m.shape[1], dtype=torch.bool).unsqueeze(0)
    p_e = float(t.A[pair].mean())
    return p_x, p_e
