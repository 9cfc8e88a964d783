"""Offline data sets for graph representation learning (`gaml embed`), made by gaml itself.

- planted: ONE planted-partition graph (node level): k blocks of equal size, an edge inside a
  block with probability p_in and across blocks with p_out; each node's features are its block's
  mean vector (k random Gaussian centres in `dim` dimensions, scaled by `separation`) plus
  standard Gaussian noise, so features and structure both carry the block; `node_labels` is the
  block of each node.
- families: graphs from gaml's generation sets, one label per family (graph level): 60 graphs
  each of community-small-like two-community graphs, 2D grids (3-8 by 3-8), stochastic block
  models (2-4 blocks of 6-12 nodes) and ego-like networks (the hub's one-hop neighbourhood in a
  40-80-node Holme-Kim power-law clustered graph, m 2, so neighbours share edges; before
  2026-12-05 m was 1, at which networkx adds no triangles and every ego network was a star);
  shuffled with the seed, the first 20% is the test split. Node features: none (encoders use
  degree features).
"""

from __future__ import annotations

import numpy as np

from .io import Graph, from_networkx

EMBED_NAMES = ("planted", "families")
FAMILIES = ("community", "grid", "sbm", "ego")


def planted(seed: int = 0, n: int = 400, k: int = 4, p_in: float = 0.08, p_out: float = 0.005, dim: int = 16,
            separation: float = 1.0) -> Graph:
    """One planted-partition graph with block-correlated features and labels (module docstring)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), -(-n // k))[:n]
    labels = labels[rng.permutation(n)]
    same = labels[:, None] == labels[None, :]
    draw = rng.random((n, n)) < np.where(same, p_in, p_out)
    iu = np.triu_indices(n, 1)
    keep = draw[iu]
    edges = np.stack([iu[0][keep], iu[1][keep]], 1).astype(np.int64)
    centres = rng.normal(size=(k, dim)) * separation
    x = centres[labels] + rng.normal(size=(n, dim))
    return Graph(n, edges, None, np.round(x, 5).tolist(), None,
                 {"node_labels": labels.astype(int).tolist(), "name": "planted",
                  "planted": {"k": k, "p_in": p_in, "p_out": p_out, "dim": dim, "separation": separation,
                              "seed": seed}})


def families(seed: int = 0, per_family: int = 60) -> tuple[list[Graph], list[Graph]]:
    """(train, test) graphs of the four families, `label` the family's index in FAMILIES."""
    import networkx as nx

    rng = np.random.default_rng(seed)
    out: list[Graph] = []
    for _ in range(per_family):
        c = int(rng.integers(5, 10))
        G = nx.disjoint_union(nx.gnp_random_graph(c, 0.7, seed=int(rng.integers(2**31))),
                              nx.gnp_random_graph(c, 0.7, seed=int(rng.integers(2**31))))
        G.add_edge(0, c)
        out.append(from_networkx(G, 0))
        out.append(from_networkx(nx.convert_node_labels_to_integers(
            nx.grid_2d_graph(int(rng.integers(3, 9)), int(rng.integers(3, 9)))), 1))
        b = int(rng.integers(2, 5))
        sizes = [int(s) for s in rng.integers(6, 13, size=b)]
        probs = [[0.5 if i == j else 0.05 for j in range(b)] for i in range(b)]
        out.append(from_networkx(nx.stochastic_block_model(sizes, probs, seed=int(rng.integers(2**31))), 2))
        H = nx.powerlaw_cluster_graph(int(rng.integers(40, 80)), 2, 0.7, seed=int(rng.integers(2**31)))
        v = max(H.degree, key=lambda t: t[1])[0]
        out.append(from_networkx(nx.convert_node_labels_to_integers(nx.ego_graph(H, v, radius=1)), 3))
    order = rng.permutation(len(out))
    out = [out[i] for i in order]
    n_test = len(out) // 5
    return out[n_test:], out[:n_test]
