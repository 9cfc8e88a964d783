"""`gaml embed diggr` and `gaml embed transform` (for DiGGR and GraphMAE models).

DiGGR shares GraphMAE's input handling, training loop and artifact (methods/graphmae/run.py);
its artifact adds, at node level, `factors` (each node's posterior mean strengths E[z], N x K)
and `assignment` (each node's dominant factor), which `gaml embed probe` scores by NMI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.errors import UsageError
from ..graphmae import run as G

EDGE_SPLITS = ("edge", "node")
FACTOR_ENCODERS = ("shared", "separate")
REPRESENTATIONS = ("concat", "graph")


@dataclass
class DiGGROptions(G.GraphMAEOptions):
    """The options of `gaml embed diggr`: GraphMAE's and DiGGR's own."""

    factors: int = 4
    prior_shape: float = 1.0
    prior_rate: float = 1.0
    edge_split: str = "edge"
    factor_encoder: str = "shared"
    factor_weight: float = 1.0
    latent_weight: float = 1.0
    latent_layers: int = 1
    latent_lr: float = 1e-2
    representation: str = "concat"


def model_config(o: DiGGROptions, gs: G.GraphSet) -> dict[str, Any]:
    return {**G.model_config(o, gs), "factors": o.factors, "prior_shape": o.prior_shape, "prior_rate": o.prior_rate,
            "edge_split": o.edge_split, "factor_encoder": o.factor_encoder, "factor_weight": o.factor_weight,
            "latent_weight": o.latent_weight, "latent_layers": o.latent_layers, "representation": o.representation}


def check_options(o: DiGGROptions) -> None:
    G.check_options(o)
    if not math.isfinite(o.latent_lr) or o.latent_lr <= 0:
        raise UsageError("--latent-lr must be a finite number > 0")
    for name in ("prior_shape", "prior_rate", "factor_weight", "latent_weight"):
        v = getattr(o, name)
        if not math.isfinite(v) or v < 0 or (name.startswith("prior") and v == 0):
            raise UsageError(f"--{name.replace('_', '-')} {v}: expected a finite number "
                             f"{'> 0' if name.startswith('prior') else '>= 0'}")
    if o.factors < 2:
        raise UsageError("--factors must be at least 2")
    for name, allowed in (("edge_split", EDGE_SPLITS), ("factor_encoder", FACTOR_ENCODERS),
                          ("representation", REPRESENTATIONS)):
        if getattr(o, name) not in allowed:
            raise UsageError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}")


def _step(model, d, gen):
    ei = d.edge_index
    edges = ei[:, ei[0] < ei[1]]
    batch = getattr(d, "batch", None)
    num_graphs = int(d.num_graphs) if batch is not None else 1
    return model.loss(d.x, ei, edges, batch, num_graphs, gen)


@torch.no_grad()
def _outputs(model, gs: G.GraphSet, pooling: str, dev) -> dict[str, np.ndarray]:
    from torch_geometric.loader import DataLoader
    from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

    model.eval()
    if gs.level == "node":
        d = gs.data[0].to(dev)
        h, s, a = model.embed(d.x, d.edge_index)
        return {"embeddings": h.cpu().numpy(), "factors": s.cpu().numpy().astype(np.float32),
                "assignment": a.cpu().numpy().astype(np.int64)}
    pool = {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}[pooling]
    rows, facs = [], []
    for b in DataLoader(gs.data, batch_size=64, shuffle=False):
        b = b.to(dev)
        h, s, _ = model.embed(b.x, b.edge_index)
        rows.append(pool(h, b.batch).cpu())
        facs.append(global_mean_pool(s, b.batch).cpu())
    f = torch.cat(facs)
    # graph level: a graph's factors are its nodes' mean strengths, its assignment the largest
    return {"embeddings": torch.cat(rows).numpy(), "factors": f.numpy().astype(np.float32),
            "assignment": f.argmax(1).numpy().astype(np.int64)}


def _groups(model, o) -> list[dict]:
    """The factor model (its encoder, the Weibull heads, g) at o.latent_lr; the autoencoders at o.lr."""
    latent = {id(p) for p in model.latent_parameters()}
    return [{"params": [p for p in model.parameters() if id(p) in latent], "lr": o.latent_lr},
            {"params": [p for p in model.parameters() if id(p) not in latent]}]


def diggr_method() -> G.Method:
    from .model import DiGGR

    return G.Method("diggr", DiGGR, _step, _outputs, _groups)


def train(o: DiGGROptions) -> dict[str, Any]:
    """Train DiGGR on o.graphs; write o.out; return the summary."""
    check_options(o)
    G.input_of(o.graphs, o.dataset)
    gs = G.load_graphs(o.graphs, o.level, max_degree=o.max_degree, dataset=o.dataset, root=o.root)
    return G.fit(o, gs, model_config(o, gs), diggr_method(), extra_config={"reconstruction": True})


# ------------------------------------------------------------------------- gaml embed transform


@dataclass
class TransformOptions:
    """The options of `gaml embed transform`, by the same names."""

    model: str
    graphs: str | None
    out: str
    device: str = "auto"
    dataset: str | None = None  # a PyG data set (graphs/pygsets.py) instead of --graphs
    root: str | None = None


def transform(o: TransformOptions) -> dict[str, Any]:
    """Embed o.graphs with the GraphMAE or DiGGR model in o.model; write an embeddings artifact
    (no model inside)."""
    from ...core import runtime
    from ...core.artifacts import save_artifact
    from ...core.paths import check_outputs

    G.input_of(o.graphs, o.dataset)
    check_outputs({"--out": o.out}, inputs={"--model": o.model, **G.input_files(o.graphs)})
    dev = runtime.pick_device(o.device)
    model, method, cfg = G.load_model(o.model, {"graphmae": G.graphmae_method(), "diggr": diggr_method()}, dev)
    gs = G.load_graphs(o.graphs, cfg["level"], features=cfg["features"], dataset=o.dataset, root=o.root)
    tensors: dict[str, Any] = {k: np.asarray(v) for k, v in method.outputs(model, gs, cfg.get("pooling", "mean"),
                                                                          dev).items()}
    tensors["embeddings"] = tensors["embeddings"].astype(np.float32)
    if gs.labels is not None:
        tensors["labels"] = gs.labels
    if gs.split is not None:
        tensors["split"] = gs.split
    config = {"method": method.name, "level": gs.level, "pooling": cfg.get("pooling", "mean"), "transform_of": o.model,
              "source": gs.source}
    parents = [p for p in (o.model, o.graphs) if p is not None and Path(p).is_file()]
    save_artifact(o.out, tensors, kind=G.KIND, config=config, parents=parents)
    emb = tensors["embeddings"]
    return {"out": o.out, "method": method.name, "level": gs.level, "rows": int(emb.shape[0]), "dim": int(emb.shape[1])}
