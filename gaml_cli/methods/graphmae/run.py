"""`gaml embed graphmae` and `gaml embed transform` (GraphMAE models) from options objects.

Input: gaml's graph JSONL (one line with node features: node level; many lines: graph level;
`level` overrides) or `karate` (PyG's built-in Karate Club, node level, its 4 communities as
labels). Nodes without features get a one-hot of their degree (capped at `max_degree`, as
GraphMAE does for graph data sets without attributes); the cap is kept in the artifact so that
`transform` builds the same features.

Output: one safetensors artifact (kind "embeddings") holding `embeddings` (rows in input order:
nodes, or graphs), `labels` when the input has them (`node_labels` of the graph line, or each
graph's `label`), the model's weights under `model.` and the config; `--model EMB` of
`gaml embed transform` reads it back.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core import console
from ...core.errors import InputError, UsageError
from ...embeddings.probe import encode_labels

KIND = "embeddings"
LEVELS = ("auto", "node", "graph")
POOLINGS = ("mean", "sum", "max")


@dataclass
class GraphMAEOptions:
    """The options of `gaml embed graphmae`, by the same names."""

    graphs: str | None  # JSONL path, '-' or 'karate'; None with `dataset`
    out: str
    level: str = "auto"
    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 2e-4
    hidden: int = 256
    heads: int = 4
    layers: int = 2
    mask_rate: float = 0.5
    replace_rate: float = 0.05
    alpha: float = 2.0
    pooling: str = "mean"
    batch_size: int = 32
    max_degree: int = 64
    checkpoint_every: int = 100
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    dataset: str | None = None  # a PyG data set: planetoid:NAME | tu:NAME | karate (graphs/pygsets.py)
    root: str | None = None  # the folder that holds it


@dataclass
class GraphSet:
    """Graphs as PyG Data objects, with what the artifact records of them."""

    data: list  # torch_geometric.data.Data, x filled
    level: str
    labels: np.ndarray | None
    source: str
    features: dict[str, Any]  # how x was made: {"kind": "given", "dim"} or {"kind": "degree", "max_degree"}
    split: np.ndarray | None = None  # node level, a data set's given split: 0 train, 1 validation, 2 test, -1 none


def _degree_onehot(edge_index: torch.Tensor, n: int, cap: int) -> torch.Tensor:
    deg = torch.zeros(n, dtype=torch.long)
    if edge_index.numel():
        deg.scatter_add_(0, edge_index[0], torch.ones(edge_index.shape[1], dtype=torch.long))
    return torch.nn.functional.one_hot(deg.clamp(max=cap), cap + 1).float()


def input_of(graphs: str | None, dataset: str | None) -> str:
    """The one input of --graphs / --dataset (exactly one must be given)."""
    if (graphs is None) == (dataset is None):
        raise UsageError("give the input as --graphs FILE or --dataset SPEC (one of them)")
    return graphs if graphs is not None else dataset


def input_files(graphs: str | None) -> dict[str, str]:
    """The input files check_outputs must not overwrite."""
    return {"--graphs": graphs} if graphs not in (None, "karate") else {}


def load_graphs(source: str | None, level: str = "auto", features: dict[str, Any] | None = None,
                max_degree: int = 64, dataset: str | None = None, root: str | None = None) -> GraphSet:
    """Read the input (module docstring; `dataset`/`root`: a PyG data set, graphs/pygsets.py) and
    give every graph its node features."""
    from ...graphs.io import read_graphs, to_pyg

    if level not in LEVELS:
        raise UsageError(f"--level must be one of {', '.join(LEVELS)}")
    labels, split = None, None
    if source == "karate" and dataset is None:
        dataset = "karate"
    if dataset is not None:
        from ...graphs import pygsets

        ps = pygsets.load(dataset, root)
        data, labels, split, source = ps.data, ps.labels, ps.split, ps.source
        lvl = ps.level if level == "auto" else level
        if lvl == "node" and len(data) != 1:
            raise UsageError(f"--dataset {dataset}: node level takes one graph; it holds {len(data)} (use --level graph)")
        if lvl != ps.level:
            labels, split = None, None
        graphs_given_x = [getattr(d, "x", None) is not None for d in data]
    else:
        graphs = read_graphs(source)
        lvl = level if level != "auto" else ("node" if len(graphs) == 1 else "graph")
        data = [to_pyg(g) for g in graphs]
        graphs_given_x = [g.node_features is not None for g in graphs]
        if lvl == "node":
            if len(graphs) != 1:
                raise InputError(f"{source}: node level takes one graph; it holds {len(graphs)} (use --level graph)")
            nl = graphs[0].extra.get("node_labels")
            if nl is not None:
                if not isinstance(nl, list) or len(nl) != graphs[0].num_nodes:
                    raise InputError(f"{source}: 'node_labels' must list one label per node ({graphs[0].num_nodes})")
                labels = encode_labels(nl)
        elif all(g.label is not None for g in graphs):
            labels = encode_labels([g.label for g in graphs])
    if features is None:
        if all(graphs_given_x):
            dims = {int(d.x.shape[1]) if d.x.ndim == 2 else -1 for d in data}
            if len(dims) != 1 or -1 in dims:
                raise InputError(f"{source}: node features must have one width in every graph (found {sorted(dims)})")
            features = {"kind": "given", "dim": dims.pop()}
        else:
            if any(graphs_given_x) and not all(graphs_given_x):
                raise InputError(f"{source}: some graphs have node_features and some do not")
            features = {"kind": "degree", "max_degree": int(max_degree), "dim": int(max_degree) + 1}
    for d in data:
        if features["kind"] == "degree":
            d.x = _degree_onehot(d.edge_index, int(d.num_nodes), features["max_degree"])
        elif getattr(d, "x", None) is None or d.x.shape[1] != features["dim"]:
            raise InputError(f"{source}: the model takes {features['dim']} node features per node")
        if not torch.isfinite(d.x).all():
            raise InputError(f"{source}: node features hold NaN or infinite values")
    return GraphSet(data, lvl, labels, source, features, split)


def model_config(o: GraphMAEOptions, gs: GraphSet) -> dict[str, Any]:
    return {"encoder": "gat" if gs.level == "node" else "gin", "in_dim": gs.features["dim"], "hidden": o.hidden,
            "heads": o.heads, "layers": o.layers, "mask_rate": o.mask_rate, "replace_rate": o.replace_rate,
            "alpha": o.alpha}


def check_options(o: GraphMAEOptions) -> None:
    for name in ("lr", "weight_decay", "mask_rate", "replace_rate", "alpha"):
        if not math.isfinite(getattr(o, name)):
            raise UsageError(f"--{name.replace('_', '-')}: expected a finite number")
    if not 0 < o.mask_rate < 1:
        raise UsageError("--mask-rate must be in (0, 1)")
    if not 0 <= o.replace_rate < 1:
        raise UsageError("--replace-rate must be in [0, 1)")
    if o.pooling not in POOLINGS:
        raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}")
    if o.hidden < o.heads:
        raise UsageError("--hidden must be at least --heads")


@torch.no_grad()
def embed(model, gs: GraphSet, pooling: str, device, batch_size: int = 256) -> np.ndarray:
    """Rows in input order: node embeddings (node level) or pooled graph embeddings."""
    from torch_geometric.loader import DataLoader
    from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

    model.eval()
    if gs.level == "node":
        d = gs.data[0].to(device)
        return model.embed(d.x, d.edge_index).cpu().numpy()
    pool = {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}[pooling]
    out = []
    for b in DataLoader(gs.data, batch_size=batch_size, shuffle=False):
        b = b.to(device)
        out.append(pool(model.embed(b.x, b.edge_index), b.batch).cpu())
    return torch.cat(out).numpy()


@dataclass
class Method:
    """What the shared training loop (`fit`) needs of a method: its name, its network from a
    config, one step's loss on a (batched) graph, and the tensors it writes (embeddings first)."""

    name: str
    build: Any  # config -> nn.Module
    step: Any  # (model, data, gen) -> (loss tensor, stats dict)
    outputs: Any  # (model, GraphSet, pooling, device) -> dict of numpy arrays, "embeddings" first
    groups: Any = None  # (model, options) -> Adam parameter groups; None: one group at o.lr


def graphmae_method() -> Method:
    from .model import GraphMAE

    def outputs(model, gs, pooling, dev):
        return {"embeddings": embed(model, gs, pooling, dev)}

    return Method("graphmae", GraphMAE, lambda m, d, gen: (m.loss(d.x, d.edge_index, gen), {}), outputs)


def train(o: GraphMAEOptions) -> dict[str, Any]:
    """Train GraphMAE on o.graphs; write o.out (embeddings + model); return the summary."""
    check_options(o)
    input_of(o.graphs, o.dataset)
    gs = load_graphs(o.graphs, o.level, max_degree=o.max_degree, dataset=o.dataset, root=o.root)
    return fit(o, gs, model_config(o, gs), graphmae_method())


def fit(o, gs: GraphSet, cfg: dict[str, Any], method: Method, extra_config: dict | None = None) -> dict[str, Any]:
    """The training loop shared by GraphMAE and DiGGR: full-graph steps (node level) or random
    batches of o.batch_size graphs (graph level), Adam, checkpoints every o.checkpoint_every steps
    in OUT.ckpt/ (and on Ctrl-C / SIGTERM), --resume; then the outputs, the labels and the model
    in one embeddings artifact at o.out."""
    from torch_geometric.loader import DataLoader

    from ...core import runtime
    from ...core.artifacts import save_artifact
    from ...core.checkpoint import CheckpointDir, StepLoop
    from ...core.paths import check_outputs

    out = Path(o.out)
    ckpt_dir = out.with_suffix("").with_name(out.stem + ".ckpt")
    if not o.resume:
        check_outputs({"--out": o.out}, inputs=input_files(o.graphs))
    dev = runtime.pick_device(o.device)
    torch.manual_seed(o.seed)
    model = method.build(cfg).to(dev)
    groups = method.groups(model, o) if method.groups is not None else [{"params": list(model.parameters())}]
    opt = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    gen = torch.Generator().manual_seed(o.seed)
    ckpt = CheckpointDir(ckpt_dir, keep=2)
    identity = {"method": method.name, "model": cfg, "level": gs.level, "seed": o.seed, "batch_size": o.batch_size,
                "inputs": len(gs.data), "features": gs.features}
    start, state = ckpt.resume_or_start(o.resume, identity)
    seconds = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        seconds = float(state.get("seconds", 0.0))
        console.log(f"resumed from {ckpt.latest()} at step {start}")
    t0 = time.perf_counter()

    def save_ckpt(step: int) -> None:
        ckpt.save(step, {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                         "seconds": seconds + time.perf_counter() - t0}, config={"identity": identity}, seed=o.seed)

    graphs = [d.to(dev) for d in gs.data] if gs.level == "node" else gs.data
    order = torch.Generator().manual_seed(o.seed + 1)
    loss_v, stats = float("nan"), {}
    loop = StepLoop(start, o.steps, save_ckpt, ckpt, every=o.checkpoint_every)
    console.log(f"{method.name} ({cfg['encoder']} encoder, {gs.level} level): {len(gs.data)} graph(s), "
                f"{sum(int(d.num_nodes) for d in gs.data)} nodes, {gs.features['dim']} features, {o.steps} steps on {dev}")
    with loop, console.progress(o.steps, method.name, completed=start) as bar:
        for step in loop:
            model.train()
            if gs.level == "node":
                d = graphs[0]
            else:
                idx = torch.randint(len(graphs), (min(o.batch_size, len(graphs)),), generator=order)
                d = next(iter(DataLoader([graphs[i] for i in idx], batch_size=len(idx)))).to(dev)
            loss, stats = method.step(model, d, gen)
            runtime.require_finite(step, loss=loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = float(loss.detach())
            bar.update(1, loss=loss_v)
    seconds += time.perf_counter() - t0
    tensors: dict[str, Any] = {k: np.asarray(v) for k, v in method.outputs(model, gs, o.pooling, dev).items()}
    tensors["embeddings"] = tensors["embeddings"].astype(np.float32)
    if gs.labels is not None:
        tensors["labels"] = gs.labels
    if gs.split is not None:
        tensors["split"] = gs.split
    tensors.update({f"model.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    config = {"method": method.name, "level": gs.level, "pooling": o.pooling, "model": cfg, "features": gs.features,
              **(extra_config or {}),
              "train": {**asdict(o), "steps_done": max(start, loop.done), "seconds": round(seconds, 1),
                        "loss": loss_v, **stats}, "source": gs.source}
    save_artifact(out, tensors, kind=KIND, config=config, seed=o.seed,
                  parents=[o.graphs] if o.graphs is not None and Path(o.graphs).is_file() else [])
    emb = tensors["embeddings"]
    return {"out": str(out), "level": gs.level, "rows": int(emb.shape[0]), "dim": int(emb.shape[1]),
            "steps": max(start, loop.done), "loss": loss_v, **stats, "train_seconds": round(seconds, 1),
            "labels": gs.labels is not None, "checkpoints": str(ckpt_dir)}


def load_model(path: str, methods: dict[str, Method], device="cpu"):
    """(model, its Method, artifact config) from an embeddings artifact that holds a model of one
    of `methods` (by name)."""
    from ...core.artifacts import load_artifact

    art = load_artifact(path, KIND)
    cfg = art.config
    method = methods.get(cfg.get("method"))
    if method is None or "model" not in cfg:
        raise InputError(f"{path}: embeddings without a model gaml embed can load (method {cfg.get('method')!r}; "
                         f"one of {', '.join(methods)})")
    model = method.build(cfg["model"])
    state = {k[len("model."):]: torch.from_numpy(np.asarray(v)) for k, v in art.tensors.items()
             if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: the model's weights do not match its config ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), method, cfg
