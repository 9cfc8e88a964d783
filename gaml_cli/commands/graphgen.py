"""gaml graphgen: graph generation by Graph Beta Diffusion (GBD) and the standard MMD evaluation."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, QuietOpt, check_folder_out, check_out, out_file, setup

app = typer.Typer(
    help="Graph generation by Graph Beta Diffusion (GBD): benchmark data, train, sample, MMD evaluation, plots.\n\nExample:\n\n\b\n    gaml graphgen data --name community-small --out data/comm\n    gaml graphgen train --data data/comm/train.jsonl --out gbd.safetensors\n    gaml graphgen sample --model gbd.safetensors -n 256 | gaml graphgen eval --ref data/comm/test.jsonl",
    no_args_is_help=True,
)


class DataName(str, Enum):
    community_small = "community-small"
    grid = "grid"
    sbm = "sbm"
    ego_like = "ego-like"
    planted = "planted"
    families = "families"


class Kernel(str, Enum):
    emd = "emd"
    tv = "tv"


class LRSchedule(str, Enum):
    constant = "constant"
    cosine = "cosine"


class KlubForm(str, Enum):
    modulated = "modulated"
    fixed = "fixed"


class NodeLoss(str, Enum):
    per_feature = "per-feature"
    per_node = "per-node"


def _numbers(text: str, option: str, count: int | None = None) -> list[float]:
    from ..core.errors import UsageError

    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected comma-separated numbers") from None
    if count is not None and len(vals) != count:
        raise UsageError(f"{option} {text!r}: expected {count} numbers")
    return vals


@app.command("data")
def data(
    name: Annotated[DataName, typer.Option("--name", help="Benchmark set: community-small, grid, sbm or ego-like; for gaml embed: planted (one planted-partition graph with block-correlated features and node labels: graph.jsonl) or families (graphs of four families, labelled by family).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder to write train.jsonl and test.jsonl into.")],
    seed: Annotated[int, typer.Option(min=0, help="Seed of the generator and of the shuffle before the split.")] = 0,
    separation: Annotated[float, typer.Option(min=0.0, help="planted only: scale of the blocks' feature centres against the unit noise (1: the features alone nearly separate the blocks; 0.3: they barely do, the edges must).")] = 1.0,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Regenerate a standard graph-generation benchmark set offline (networkx).

    The list is shuffled with the seed; the first 20% is test.jsonl, the rest train.jsonl
    (GraphRNN / GDSS split). community-small: 100 graphs of 12-20 nodes, two G(c, 0.7)
    communities joined by sparse bridges (GDSS's generator); grid: 100 2D grids of 100-361
    nodes; sbm: 200 stochastic block models of 2-5 blocks; ego-like: 200 one-hop ego networks
    (4-18 nodes) of a synthetic power-law clustered graph, a stand-in for Ego-small.

    For representation learning (gaml embed): planted writes graph.jsonl, one 400-node graph of
    4 planted blocks (edges 0.08 inside, 0.005 across) whose 16 node features are the block's
    Gaussian centre plus noise, with `node_labels`; families writes train/test.jsonl of 240
    graphs (two-community, grid, SBM, ego), `label` the family.

    Example:

    \b
        gaml graphgen data --name community-small --seed 0 --out data/comm
        head -c 300 data/comm/train.jsonl
        gaml graphgen data --name planted --separation 0.3 --out data/planted-hard
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core import console
    from ..core.errors import UsageError
    from ..graphs import datasets, embedsets
    from ..graphs.io import write_graphs
    from ..graphs.mmd import summary_stats

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    if folder.suffix in (".jsonl", ".json"):
        raise UsageError(f"--out {out}: give a folder (train.jsonl and test.jsonl are written into it)")
    check_folder_out(out)
    import math

    if not math.isfinite(separation):
        raise UsageError(f"--separation {separation}: expected a finite number")
    if separation != 1.0 and name.value != "planted":
        raise UsageError("--separation applies to --name planted only")
    if name.value in embedsets.EMBED_NAMES:
        return _embed_data(name.value, folder, seed, separation)
    train, test = datasets.generate(name.value, seed)
    write_graphs(folder / "train.jsonl", train)
    write_graphs(folder / "test.jsonl", test)
    tr, te = summary_stats(train), summary_stats(test)
    console.summary({"name": name.value, "seed": seed, "train": str(folder / "train.jsonl"), "test": str(folder / "test.jsonl"),
                     "train_graphs": tr["graphs"], "test_graphs": te["graphs"],
                     "mean_nodes": round(tr["mean_nodes"], 2), "mean_edges": round(tr["mean_edges"], 2),
                     "max_nodes": max(g.num_nodes for g in train + test)}, title="graphgen data")


def _embed_data(name: str, folder, seed: int, separation: float = 1.0) -> None:
    """graphgen data for the gaml embed sets: planted -> graph.jsonl; families -> train/test.jsonl."""
    from ..core import console
    from ..graphs import embedsets
    from ..graphs.io import write_graphs

    if name == "planted":
        g = embedsets.planted(seed, separation=separation)
        write_graphs(folder / "graph.jsonl", [g])
        console.summary({"name": name, "seed": seed, "separation": separation, "graph": str(folder / "graph.jsonl"), "nodes": g.num_nodes,
                         "edges": g.num_edges, "blocks": g.extra["planted"]["k"],
                         "features": g.extra["planted"]["dim"]}, title="graphgen data")
        return
    train, test = embedsets.families(seed)
    write_graphs(folder / "train.jsonl", train)
    write_graphs(folder / "test.jsonl", test)
    console.summary({"name": name, "seed": seed, "train": str(folder / "train.jsonl"), "test": str(folder / "test.jsonl"),
                     "train_graphs": len(train), "test_graphs": len(test), "families": list(embedsets.FAMILIES)},
                    title="graphgen data")


@app.command("train")
def train(
    data: Annotated[str, typer.Option("--data", "-d", help="Training graphs, JSONL one graph a line ('-' for stdin).")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="GBD model artifact to write (.safetensors).")],
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps (6,500: 14.7 minutes on 2 idle CPU cores for community-small with --workers 2, the benchmark of 2026-12-03 evening; 17.0-19.1 minutes with one call a step that day).")] = 6500,
    batch_size: Annotated[int, typer.Option(min=1, help="Graphs per step.")] = 32,
    size_groups: Annotated[int, typer.Option(min=1, help="K > 1: size-grouped batches: K batches at a time are drawn together, sorted by node count and cut apart, so each is padded only to its own largest graph (every graph comes up as often as with uniform batches; at most graphs / --batch-size). On community-small 2 makes a step 10-15% cheaper at the same quality. 1: uniform batches.")] = 2,
    workers: Annotated[int, typer.Option(min=1, help="CPU: cut each batch into this many parts, run at once on their own threads, each with its share of the cores: the same loss and gradients up to rounding (1e-6 on a trained network and real batches), 13-20% faster with 2 on 2 cores than one call a step (1) in runs of 2026-12-03. Training is chaotic in rounding: a run at another thread count drifts as far from the one-call run as a run with parts does, so which seeds come out well is not a property of either. Ignored on a GPU.")] = 2,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate (GBD's 2e-4 is for GPU-length runs; 1e-3 reaches the same quality in about 3x fewer steps).")] = 1e-3,
    lr_schedule: Annotated[LRSchedule, typer.Option(help="Learning rate over the run: constant, or cosine (a half cosine from --lr to 0 at the last step).")] = "constant",
    ema: Annotated[float, typer.Option(min=0.0, max=1.0, help="EMA decay of the saved weights, capped by (1 + k) / (10 + k) at step k (so 0.999 applies only after step 8,990).")] = 0.999,
    ema_std: Annotated[float, typer.Option(min=0.0, max=0.28, help="If > 0: EDM2's power-function EMA instead of --ema, an average of all iterates whose profile has this relative width (EDM2 uses 0.05-0.15).")] = 0.0,
    eta: Annotated[str, typer.Option(help="Concentrations for nodes of high (>0.8), middle and low (<=0.4) normalised degree; edges take their higher-degree end's.")] = "1000,30,10",
    lambda_e: Annotated[float, typer.Option("--lambda-e", min=0.0, help="Weight of the edge KLUB against the node KLUB.")] = 5.0,
    extra_features: Annotated[bool, typer.Option("--extra-features/--no-extra-features", help="Feed the denoiser structural features of the current noisy graph (degree, triangles, Laplacian eigenvectors and eigenvalues), as DiGress does (GBD's community-small setting has none; on by default in gaml, --no-extra-features for the plain model).")] = True,
    degree_input: Annotated[bool, typer.Option("--degree-input/--no-degree-input", help="Feed the denoiser the degree profile that sets the concentrations (each node's degree over the graph's largest; at sampling, the profile drawn from the training set); on by default in gaml, --no-degree-input for GBD's plain inputs.")] = True,
    rw_features: Annotated[bool, typer.Option("--rw-features/--no-rw-features", help="Feed the denoiser random-walk probabilities of the current noisy graph (RRWP: P^k per node pair and return probabilities per node, k = 1..4).")] = False,
    t_focus: Annotated[str, typer.Option(help="SHARE,LO,HI: the share of each batch whose training time t is drawn from U(LO, HI) rather than U(0, 1). The default spends 90% of the draws above t = 0.55, where the noisy graph no longer gives the answer away (below t = 0.45 the loss is ~0); 0,0,1 draws t ~ U(0, 1) as GBD does.")] = "0.9,0.55,1.0",
    klub: Annotated[KlubForm, typer.Option(help="Where the loss's KLUB is evaluated: 'modulated', at each node's and edge's own concentration (the forward process's, --eta); 'fixed', at one concentration 10,000 with 0.01 added to every gamma shape, as GBD's released code does. The forward draws and the network's inputs keep --eta either way.")] = "modulated",
    node_loss: Annotated[NodeLoss, typer.Option(help="How the node KLUB is averaged: 'per-feature', over nodes x degree features; 'per-node', summed over a node's degree features and averaged over nodes, as GBD's released code does (a node term D times stronger next to the edge term).")] = "per-feature",
    layers: Annotated[int, typer.Option(min=1, help="Graph-transformer layers.")] = 6,
    hidden: Annotated[str, typer.Option(help="Node, edge and global widths dx,de,dy (dx divisible by --heads).")] = "64,32,64",
    heads: Annotated[int, typer.Option(min=1, help="Attention heads.")] = 8,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N steps (0: only at the end and on Ctrl-C).")] = 500,
    checkpoint_dir: Annotated[Optional[str], typer.Option(help="Checkpoint folder (default: OUT without .safetensors + '.ckpt').")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of initialisation, batches and noise.")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Train a Graph Beta Diffusion model on graphs (JSONL).

    Beta diffusion on the adjacency and on one-hot degree node features, in logit space with
    preconditioned inputs; KLUB loss (0.99 sampling + 0.01 marginal), concentration modulation
    by normalised degree (--eta), a DiGress-style graph transformer, AdamW, gradient clipping
    1, EMA. Ctrl-C or SIGTERM saves a checkpoint; --resume goes on from it.

    Example:

    \b
        gaml graphgen data --name community-small --out data/comm
        gaml graphgen train --data data/comm/train.jsonl --out gbd.safetensors
        gaml graphgen sample --model gbd.safetensors -n 256 | gaml graphgen eval --ref data/comm/test.jsonl
    """
    setup(fmt, quiet)
    from dataclasses import asdict
    from pathlib import Path

    from ..core import console, runtime
    from ..core.errors import UsageError
    from ..graphs.io import read_graphs
    from ..methods.gbd.sample import save_model
    from ..methods.gbd.train import TrainConfig, model_overrides, train as train_gbd

    check_out(out, ".safetensors", inputs={"--data": data})
    etas = _numbers(eta, "--eta", 3)
    if any(e <= 0 for e in etas):
        raise UsageError("--eta: concentrations must be positive")
    focus = tuple(_numbers(t_focus, "--t-focus", 3))
    if not (0 <= focus[0] <= 1 and 0 <= focus[1] < focus[2] <= 1):
        raise UsageError(f"--t-focus {t_focus}: SHARE must be in [0, 1] and 0 <= LO < HI <= 1")
    widths = _numbers(hidden, "--hidden", 3)
    dims = [int(v) for v in widths]
    if dims != widths or any(d <= 0 for d in dims) or dims[0] % heads:
        raise UsageError(f"--hidden {hidden}: widths must be positive integers and dx divisible by --heads {heads}")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else Path(out[: -len(".safetensors")] + ".ckpt")
    if resume and not ckpt_dir.is_dir():
        raise UsageError(f"--resume: no checkpoint folder {ckpt_dir}")
    check_folder_out(str(ckpt_dir), "--checkpoint-dir", inputs={"--data": data})
    graphs = read_graphs(data)
    dev = runtime.pick_device(device.value if hasattr(device, "value") else device)
    runtime.keep_freed_memory()  # fewer page faults a step (runtime.py); the same results
    tc = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, lr_schedule=getattr(lr_schedule, "value", lr_schedule),
                     ema=ema, ema_std=ema_std, checkpoint_every=checkpoint_every, seed=seed,
                     size_groups=size_groups, workers=workers)
    net, cfg, profiles, report = train_gbd(graphs, tc, ckpt_dir, dev, resume=resume,
                                           cfg_overrides=model_overrides(layers, dims, heads, etas, lambda_e,
                                                                         extra_features, degree_input,
                                                                         rw_features, focus,
                                                                         getattr(klub, "value", klub),
                                                                         getattr(node_loss, "value", node_loss)))
    parents = [] if data == "-" else [data]
    path = save_model(out, net, cfg, profiles, {"train": {**asdict(tc), **report}, "sampling": {"steps": 1000}},
                      seed=seed, parents=parents)
    console.summary({"out": str(path), **report, "checkpoints": str(ckpt_dir)}, title="graphgen train")


@app.command("sample")
def sample(
    model: Annotated[str, typer.Option("--model", "-m", help="A GBD model artifact (gaml graphgen train).")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=1_000_000, help="Number of graphs.")] = 64,
    steps: Annotated[int, typer.Option(min=1, help="Reverse diffusion steps (GBD: 1000).")] = 1000,
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".jsonl", stdout=True), help="JSONL to write ('-' = stdout).")] = "-",
    seed: Annotated[int, typer.Option(min=0, help="Base seed; graph i uses a seed derived from (seed, i).")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Graphs denoised together (does not change the results).")] = 128,
    workers: Annotated[int, typer.Option(min=1, help="CPU: denoise this many batches at once on their own threads, the cores shared out among them (does not change the results). Ignored on a GPU.")] = 2,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Sample graphs from a GBD model with the beta-diffusion reverse sampler (JSONL to stdout).

    Each graph takes the node count and normalised degree profile of a random training graph
    (they set the concentrations, as in GBD), then runs --steps reverse steps; the edges are
    the final prediction cut at 0.5. Per-graph seeds: graph i is the same whatever -n and
    --batch-size and --workers are.

    Example:

    \b
        gaml graphgen sample --model gbd.safetensors -n 256 > samples.jsonl
        gaml graphgen sample --model gbd.safetensors -n 16 --steps 200 | gaml graphgen plot - --out g.png
    """
    setup(fmt, quiet)
    import time

    from ..core import console, runtime
    from ..core.artifacts import JsonlWriter
    from ..methods.gbd.sample import load_model, sample as sample_gbd

    check_out(out, ".jsonl", inputs={"--model": model}, stdout_ok=True)
    dev = runtime.pick_device(device.value if hasattr(device, "value") else device)
    net, cfg, prof, _ = load_model(model, dev)
    t0 = time.perf_counter()
    nodes = edges = 0
    with console.progress(n, "graphgen sample") as bar, JsonlWriter(out) as w:
        for g in sample_gbd(net, cfg, prof, n, seed, steps, batch_size, dev, progress=lambda k: bar.update(k),
                            workers=workers):
            w.write(g.to_record())
            nodes += g.num_nodes
            edges += g.num_edges
    secs = time.perf_counter() - t0
    console.summary({"out": out, "graphs": n, "steps": steps, "mean_nodes": round(nodes / n, 2),
                     "mean_edges": round(edges / n, 2), "seconds": round(secs, 2),
                     "seconds_per_graph": round(secs / n, 4), "device": str(dev)},
                    title="graphgen sample", stdout_busy=out == "-")


@app.command("eval")
def eval_(
    samples: Annotated[str, typer.Argument(help="Generated graphs, JSONL ('-' = stdin).")] = "-",
    ref: Annotated[str, typer.Option("--ref", help="Reference graphs (the test set), JSONL.")] = ...,
    train: Annotated[Optional[str], typer.Option("--train", help="Training graphs, to report the share of novel samples.")] = None,
    kernel: Annotated[Kernel, typer.Option(help="emd: Gaussian-EMD for degree/clustering, Gaussian for orbits (GraphRNN/GDSS); tv: Gaussian-TV for all three (GBD's tables).")] = Kernel.emd,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """MMD of degree, clustering and 4-node orbit statistics between generated and reference graphs.

    The GraphRNN / GDSS protocol: per-graph degree histograms, clustering-coefficient
    histograms (100 bins) and ORCA orbit counts, compared with a Gaussian kernel on the earth
    mover's (or total variation) distance; MMD^2, biased estimator, as those papers report.
    Also the share of connected, unique and (with --train) novel samples.

    Example:

    \b
        gaml graphgen eval samples.jsonl --ref data/comm/test.jsonl --train data/comm/train.jsonl
        gaml graphgen sample --model gbd.safetensors -n 256 | gaml graphgen eval --ref data/comm/test.jsonl -f json
        # {"degree": ..., "clustering": ..., "orbit": ..., "kernel": "emd", ...}
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.errors import UsageError
    from ..graphs import mmd
    from ..graphs.io import read_graphs

    if samples == "-" and ref == "-":
        raise UsageError("samples and --ref cannot both be stdin")
    gen = read_graphs(samples)
    ref_graphs = read_graphs(ref)
    train_graphs = read_graphs(train) if train else None
    scores = mmd.mmd_all(ref_graphs, gen, kernel.value)
    result = {**{k: round(v, 6) for k, v in scores.items()}, "kernel": kernel.value,
              **{k: round(v, 4) for k, v in mmd.validity(gen, train_graphs).items()},
              "n": len(gen), "n_ref": len(ref_graphs)}
    console.summary(result, title="graphgen eval (MMD)")


@app.command("plot")
def plot(
    samples: Annotated[str, typer.Argument(help="Graphs to draw, JSONL ('-' = stdin).")] = "-",
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".png"), help="PNG to write.")] = ...,
    ref: Annotated[Optional[str], typer.Option("--ref", help="Real graphs to draw beside them.")] = None,
    count: Annotated[int, typer.Option(min=1, max=256, help="How many graphs of each set.")] = 16,
    cols: Annotated[int, typer.Option(min=1, max=32, help="Columns per panel.")] = 4,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Draw a grid of graphs (spring layout) as a PNG, generated beside real ones.

    Example:

    \b
        gaml graphgen plot samples.jsonl --ref data/comm/test.jsonl --out grid.png
    """
    setup(fmt, quiet)
    from ..core import console
    from ..graphs.io import read_graphs
    from ..graphs.plot import save_plot

    check_out(out, ".png", inputs={"SAMPLES": samples, "--ref": ref})
    gen = read_graphs(samples)[:count]
    real = read_graphs(ref)[:count] if ref else None
    save_plot(gen, out, real, cols=cols)
    console.summary({"out": out, "graphs": len(gen), "ref_graphs": len(real) if real else 0}, title="graphgen plot")
