"""Null-model baselines fitted to a training set: Erdos-Renyi and a stochastic block model.

Both draw the node count of a random training graph. Erdos-Renyi uses the training set's edge
density. The SBM finds communities in every training graph (greedy modularity, networkx),
pools the within- and between-community edge densities, and draws the block sizes of a random
training graph's partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .io import Graph, from_networkx, to_networkx


@dataclass
class ErdosRenyi:
    sizes: list[int]
    p: float

    @classmethod
    def fit(cls, graphs: Sequence[Graph]) -> "ErdosRenyi":
        pairs = sum(g.num_nodes * (g.num_nodes - 1) / 2 for g in graphs)
        return cls([g.num_nodes for g in graphs], sum(g.num_edges for g in graphs) / max(pairs, 1))

    def sample(self, n: int, seed: int = 0) -> list[Graph]:
        import networkx as nx

        rng = np.random.default_rng(seed)
        return [from_networkx(nx.gnp_random_graph(int(rng.choice(self.sizes)), self.p, seed=int(rng.integers(2**31))))
                for _ in range(n)]


@dataclass
class BlockModel:
    partitions: list[list[int]]
    p_in: float
    p_out: float

    @classmethod
    def fit(cls, graphs: Sequence[Graph]) -> "BlockModel":
        from networkx.algorithms.community import greedy_modularity_communities

        parts, e_in, n_in, e_out, n_out = [], 0, 0, 0, 0
        for g in graphs:
            G = to_networkx(g)
            comms = [sorted(c) for c in greedy_modularity_communities(G)] if g.num_edges else [list(range(g.num_nodes))]
            block = np.empty(g.num_nodes, dtype=int)
            for k, c in enumerate(comms):
                block[c] = k
            sizes = [len(c) for c in comms]
            parts.append(sizes)
            n_in += sum(s * (s - 1) / 2 for s in sizes)
            n_out += g.num_nodes * (g.num_nodes - 1) / 2 - sum(s * (s - 1) / 2 for s in sizes)
            same = block[g.edges[:, 0]] == block[g.edges[:, 1]] if g.num_edges else np.zeros(0, bool)
            e_in += int(same.sum())
            e_out += int((~same).sum())
        return cls(parts, e_in / max(n_in, 1), e_out / max(n_out, 1))

    def sample(self, n: int, seed: int = 0) -> list[Graph]:
        import networkx as nx

        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            sizes = self.partitions[int(rng.integers(len(self.partitions)))]
            k = len(sizes)
            probs = [[self.p_in if i == j else self.p_out for j in range(k)] for i in range(k)]
            out.append(from_networkx(nx.stochastic_block_model(sizes, probs, seed=int(rng.integers(2**31)))))
        return out
