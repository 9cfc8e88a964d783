"""The standard graph-generation benchmark sets, regenerated offline with networkx.

Sizes and splits follow GraphRNN (You et al. 2018) and GDSS (Jo et al. 2022): the list is
shuffled with the seed, the first 20% is the test set and the rest the training set.

- community-small: 100 graphs as GDSS's generator makes them: a size s drawn from 12..20, two
  communities of c = s // 2 nodes, each networkx's G(c, 0.7) drawn with the fixed seeds 0 and
  1 (so communities of one size are the same graph, as in GraphRNN/GDSS; this is what the
  published numbers were measured on), each cross pair a bridge with probability
  2 p_inter / c, p_inter 0.05, and one bridge added when none was drawn.
- grid: grid_2d_graph(m, n) for every m, n in 10..19 (100 graphs, 100-361 nodes).
- sbm: 200 graphs with 2-5 communities of 20-40 nodes, p_in 0.3, p_out 0.05 (SPECTRE's setting).
- ego-like: 200 one-hop ego networks of 4-18 nodes from a 3,000-node power-law clustered graph
  (Holme-Kim, m 2, triangle probability 0.7): an ego, its neighbours and the edges among them.
  Before 2026-12-05 the source graph used m 1, at which networkx's Holme-Kim never takes its
  triangle step: the source was a tree and every ego network a star (no edge between neighbours). A stand-in for Ego-small, whose source graph
  (CiteSeer) does not ship offline; not comparable with published Ego-small numbers.
"""

from __future__ import annotations

import numpy as np

from .io import Graph, from_networkx

NAMES = ("community-small", "grid", "sbm", "ego-like")
TEST_FRACTION = 0.2


def community_small(rng: np.random.Generator, count: int = 100, p: float = 0.7, p_inter: float = 0.05) -> list:
    import networkx as nx

    out = []
    for _ in range(count):
        c = int(rng.integers(12, 21)) // 2
        G = nx.disjoint_union(nx.gnp_random_graph(c, p, seed=0), nx.gnp_random_graph(c, p, seed=1))
        p_bridge = 2 * p_inter / c
        bridges = [(u, c + v) for u in range(c) for v in range(c) if rng.random() < p_bridge]
        if not bridges:
            bridges = [(0, c)]
        G.add_edges_from(bridges)
        out.append(G)
    return out


def grid(rng: np.random.Generator) -> list:
    import networkx as nx

    return [nx.convert_node_labels_to_integers(nx.grid_2d_graph(m, n)) for m in range(10, 20) for n in range(10, 20)]


def sbm(rng: np.random.Generator, count: int = 200, p_in: float = 0.3, p_out: float = 0.05) -> list:
    import networkx as nx

    out = []
    for _ in range(count):
        k = int(rng.integers(2, 6))
        sizes = [int(s) for s in rng.integers(20, 41, size=k)]
        probs = [[p_in if i == j else p_out for j in range(k)] for i in range(k)]
        out.append(nx.stochastic_block_model(sizes, probs, seed=int(rng.integers(2**31))))
    return out


def ego_like(rng: np.random.Generator, count: int = 200, source_nodes: int = 3000) -> list:
    import networkx as nx

    # m = 2: at m = 1 networkx adds no triangle edges (the graph is a tree, each ego a star)
    H = nx.powerlaw_cluster_graph(source_nodes, 2, 0.7, seed=int(rng.integers(2**31)))
    centres = rng.permutation(source_nodes)
    out = []
    for v in centres:
        ego = nx.ego_graph(H, int(v), radius=1)
        if 4 <= ego.number_of_nodes() <= 18:
            out.append(nx.convert_node_labels_to_integers(ego))
            if len(out) == count:
                break
    return out


def generate(name: str, seed: int = 0) -> tuple[list[Graph], list[Graph]]:
    """(train, test) graphs of a benchmark set."""
    rng = np.random.default_rng(seed)
    if name == "community-small":
        nx_graphs = community_small(rng)
    elif name == "grid":
        nx_graphs = grid(rng)
    elif name == "sbm":
        nx_graphs = sbm(rng)
    elif name == "ego-like":
        nx_graphs = ego_like(rng)
    else:
        raise ValueError(f"unknown data set {name!r}; one of {', '.join(NAMES)}")
    graphs = [from_networkx(G) for G in nx_graphs]
    order = rng.permutation(len(graphs))
    graphs = [graphs[i] for i in order]
    n_test = int(TEST_FRACTION * len(graphs))
    return graphs[n_test:], graphs[:n_test]
