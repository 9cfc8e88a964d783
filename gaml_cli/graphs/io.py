"""Graph artifacts: JSONL, one graph a line, streamed through files or stdin/stdout.

Schema of a record (documented in the README; `kind` is optional on input):

    {"kind": "graph", "num_nodes": n, "edges": [[u, v], ...],
     "node_features": [[...], ...] (optional, n rows), "edge_features": [[...], ...] (optional,
     one row per edge), "label": ... (optional, any JSON value)}

Graphs are simple and undirected: nodes are 0..n-1, each edge is stored once as [u, v] with
u < v (an edge given twice, in either order, is kept once), self-loops are refused unless the
reader is told otherwise. Nothing here imports torch; `to_pyg`/`from_pyg` import
torch-geometric only when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from ..core.artifacts import JsonlWriter, read_jsonl
from ..core.errors import InputError

KIND = "graph"


@dataclass
class Graph:
    num_nodes: int
    edges: np.ndarray  # (m, 2) int64, u < v, sorted, unique
    label: Any = None
    node_features: list | None = None
    edge_features: list | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_edges(self) -> int:
        return int(len(self.edges))

    def adjacency(self, size: int | None = None) -> np.ndarray:
        """Dense symmetric 0/1 adjacency (float32), padded with zeros to `size` nodes."""
        n = self.num_nodes if size is None else size
        a = np.zeros((n, n), dtype=np.float32)
        if len(self.edges):
            a[self.edges[:, 0], self.edges[:, 1]] = 1.0
            a[self.edges[:, 1], self.edges[:, 0]] = 1.0
        return a

    def degrees(self) -> np.ndarray:
        deg = np.zeros(self.num_nodes, dtype=np.int64)
        if len(self.edges):
            np.add.at(deg, self.edges[:, 0], 1)
            np.add.at(deg, self.edges[:, 1], 1)
        return deg

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"kind": KIND, "num_nodes": int(self.num_nodes),
                               "edges": self.edges.astype(int).tolist()}
        if self.node_features is not None:
            rec["node_features"] = self.node_features
        if self.edge_features is not None:
            rec["edge_features"] = self.edge_features
        if self.label is not None:
            rec["label"] = self.label
        rec.update(self.extra)
        return rec


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"{what} must be an integer, got {v!r}")
    return int(v)


def graph_from_record(rec: dict[str, Any], allow_self_loops: bool = False) -> Graph:
    """Validate one JSON record and build a Graph; ValueError says what is wrong."""
    kind = rec.get("kind", KIND)
    if kind != KIND:
        raise ValueError(f"kind is {kind!r}, expected {KIND!r}")
    if "num_nodes" not in rec:
        raise ValueError("missing 'num_nodes'")
    n = _int(rec["num_nodes"], "num_nodes")
    if n < 0:
        raise ValueError(f"num_nodes must be >= 0, got {n}")
    raw = rec.get("edges", [])
    if not isinstance(raw, list):
        raise ValueError("'edges' must be a list of [u, v] pairs")
    pairs = []
    for i, e in enumerate(raw):
        if not isinstance(e, (list, tuple)) or len(e) != 2:
            raise ValueError(f"edge {i} is {e!r}, expected [u, v]")
        u, v = _int(e[0], f"edge {i} endpoint"), _int(e[1], f"edge {i} endpoint")
        if not (0 <= u < n and 0 <= v < n):
            raise ValueError(f"edge {i} [{u}, {v}] names a node out of range 0..{n - 1}" if n else
                             f"edge {i} [{u}, {v}] in a graph with no nodes")
        if u == v and not allow_self_loops:
            raise ValueError(f"edge {i} [{u}, {v}] is a self-loop (not allowed in simple graphs)")
        pairs.append((min(u, v), max(u, v)))
    edges = np.array(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2)
    nf = rec.get("node_features")
    if nf is not None and (not isinstance(nf, list) or len(nf) != n):
        raise ValueError(f"'node_features' must be a list of {n} rows")
    ef = rec.get("edge_features")
    if ef is not None:
        if not isinstance(ef, list) or len(ef) != len(raw):
            raise ValueError(f"'edge_features' must be a list of {len(raw)} rows (one per edge)")
        if len(edges) != len(raw):
            raise ValueError("'edge_features' given with duplicate edges")
    known = {"kind", "num_nodes", "edges", "node_features", "edge_features", "label"}
    extra = {k: v for k, v in rec.items() if k not in known}
    return Graph(n, edges, rec.get("label"), nf, ef, extra)


def iter_graphs(path: str | os.PathLike, allow_self_loops: bool = False) -> Iterator[Graph]:
    """Stream graphs from a JSONL file or '-' (stdin); a bad line raises InputError naming it."""
    holder: list[Graph] = []

    def validate(rec: dict[str, Any]) -> None:
        holder.append(graph_from_record(rec, allow_self_loops))

    for _ in read_jsonl(path, validate=validate):
        yield holder.pop()


def read_graphs(path: str | os.PathLike, allow_self_loops: bool = False, min_graphs: int = 1) -> list[Graph]:
    graphs = list(iter_graphs(path, allow_self_loops))
    if len(graphs) < min_graphs:
        name = "<stdin>" if str(path) == "-" else str(path)
        raise InputError(f"{name}: holds {len(graphs)} graph(s); at least {min_graphs} needed")
    return graphs


def write_graphs(path: str | os.PathLike, graphs: Iterable[Graph]) -> int:
    with JsonlWriter(path) as w:
        for g in graphs:
            w.write(g.to_record())
    return w.count


def from_adjacency(adj: np.ndarray, label: Any = None) -> Graph:
    """A Graph from a dense (n, n) adjacency; the upper triangle (> 0.5) decides."""
    a = np.asarray(adj)
    iu = np.triu_indices(a.shape[0], k=1)
    keep = a[iu] > 0.5
    edges = np.stack([iu[0][keep], iu[1][keep]], axis=1).astype(np.int64)
    return Graph(int(a.shape[0]), edges, label)


# --------------------------------------------------------------------------- converters


def to_networkx(g: Graph):
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from(range(g.num_nodes))
    G.add_edges_from(g.edges.tolist())
    if g.label is not None:
        G.graph["label"] = g.label
    return G


def from_networkx(G, label: Any = None) -> Graph:
    """Nodes are relabelled 0..n-1 in G's node order; self-loops are dropped."""
    index = {v: i for i, v in enumerate(G.nodes())}
    pairs = {(min(index[u], index[v]), max(index[u], index[v])) for u, v in G.edges() if u != v}
    edges = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return Graph(len(index), edges, label if label is not None else G.graph.get("label"))


def to_pyg(g: Graph):
    """torch_geometric.data.Data with both directions of each edge (PyG's convention)."""
    import torch
    from torch_geometric.data import Data

    e = torch.from_numpy(g.edges.T.copy()) if len(g.edges) else torch.zeros(2, 0, dtype=torch.long)
    edge_index = torch.cat([e, e.flip(0)], dim=1)
    kw: dict[str, Any] = {"edge_index": edge_index, "num_nodes": g.num_nodes}
    if g.node_features is not None:
        kw["x"] = torch.tensor(g.node_features, dtype=torch.float32)
    if g.label is not None and isinstance(g.label, (int, float)):
        kw["y"] = torch.tensor([g.label])
    return Data(**kw)


def from_pyg(data) -> Graph:
    ei = data.edge_index.detach().cpu().numpy()
    n = int(data.num_nodes)
    pairs = {(min(int(u), int(v)), max(int(u), int(v))) for u, v in ei.T if u != v}
    edges = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    nf = data.x.detach().cpu().tolist() if getattr(data, "x", None) is not None else None
    y = getattr(data, "y", None)
    label = y.view(-1)[0].item() if y is not None and y.numel() == 1 else None
    return Graph(n, edges, label, nf)
