"""gaml embed: self-supervised representations of graphs (GraphMAE; DiGGR, a reconstruction) and
the probes that score them."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, QuietOpt, joined_signature, out_file, setup, value

app = typer.Typer(
    help="Self-supervised representations and their evaluation: DiGGR (a reconstruction: no code is public) "
         "and GraphMAE on graphs, linear/SVM probes.\n\n"
         "Example:\n\n\b\n"
         "    gaml graphgen data --name planted --out data/planted\n"
         "    gaml embed graphmae --graphs data/planted/graph.jsonl --out emb.safetensors\n"
         "    gaml embed probe --embeddings emb.safetensors",
    no_args_is_help=True,
)


class Level(str, Enum):
    auto = "auto"
    node = "node"
    graph = "graph"


class Pooling(str, Enum):
    mean = "mean"
    sum = "sum"
    max = "max"


class Protocol(str, Enum):
    linear = "linear"
    svm = "svm"


class Split(str, Enum):
    given = "given"
    random = "random"


class EdgeSplit(str, Enum):
    edge = "edge"
    node = "node"


class FactorEncoder(str, Enum):
    shared = "shared"
    separate = "separate"


class Representation(str, Enum):
    concat = "concat"
    graph = "graph"


def _options(
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Embeddings artifact to write (.safetensors): embeddings (rows in input order), labels when the input has them, the model.")],
    graphs: Annotated[Optional[str], typer.Option("--graphs", "-g", help="Graph JSONL (one line with node_features: node level; many lines: graph level; '-' for stdin) or 'karate' (PyG's Karate Club).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Instead of --graphs: a PyG data set in a local folder (--root), read by PyG's own loaders, never downloaded: planetoid:Cora|CiteSeer|PubMed (node level, public split), tu:NAME e.g. tu:MUTAG (graph level), or karate.")] = None,
    root: Annotated[Optional[str], typer.Option(help="With --dataset: the folder that holds NAME/raw/ (PyG's layout).")] = None,
    level: Annotated[Level, typer.Option(help="node or graph level; auto: node for one graph, graph for several.")] = Level.auto,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps (node level: full-graph steps; graph level: batches).")] = 300,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate (GraphMAE's Cora setting).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="Adam weight decay (GraphMAE's Cora setting).")] = 2e-4,
    hidden: Annotated[int, typer.Option(min=1, help="Embedding width (GAT: heads x width per head).")] = 256,
    heads: Annotated[int, typer.Option(min=1, help="GAT attention heads (node level).")] = 4,
    layers: Annotated[int, typer.Option(min=1, help="Encoder layers.")] = 2,
    mask_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of nodes masked at each step.")] = 0.5,
    replace_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of the masked nodes that take another node's features instead of the [MASK] token.")] = 0.05,
    alpha: Annotated[float, typer.Option(min=1.0, help="Exponent of the scaled cosine error (GraphMAE: 1-3 by data set).")] = 2.0,
    pooling: Annotated[Pooling, typer.Option(help="Graph level: how node embeddings become one per graph.")] = Pooling.mean,
    batch_size: Annotated[int, typer.Option(min=1, help="Graph level: graphs per step.")] = 32,
    max_degree: Annotated[int, typer.Option(min=1, help="Graphs without node features: one-hot degree, capped here.")] = 64,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N steps next to OUT (OUT.ckpt/); 0: at the end and on Ctrl-C.")] = 100,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.ckpt/.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the weights, masks and batches.")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """(Signature holder: the options graphmae and diggr share.)"""


def _diggr_options(
    factors: Annotated[int, typer.Option(min=2, help="K, the number of latent factors (factor subgraphs).")] = 4,
    prior_shape: Annotated[float, typer.Option(min=0.0, help="Shape a0 of the gamma prior on the node-factor strengths.")] = 1.0,
    prior_rate: Annotated[float, typer.Option(min=0.0, help="Rate b0 of the gamma prior.")] = 1.0,
    edge_split: Annotated[EdgeSplit, typer.Option(help="edge: each edge goes to argmax_k g_k z_uk z_vk; node: to its ends' common factor (edges across factors dropped from the factor subgraphs).")] = EdgeSplit.edge,
    factor_encoder: Annotated[FactorEncoder, typer.Option(help="One encoder shared by the factor subgraphs, or one per factor.")] = FactorEncoder.shared,
    factor_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the factor subgraphs' reconstruction error.")] = 1.0,
    latent_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the factor model's negative ELBO (per node).")] = 1.0,
    latent_layers: Annotated[int, typer.Option(min=1, help="Layers of the factor model's (Weibull) encoder.")] = 1,
    latent_lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate of the factor model (encoder, Weibull heads, g); the autoencoders use --lr. 10x --lr: the factor model is slow to split the nodes at GraphMAE's rate.")] = 1e-2,
    representation: Annotated[Representation, typer.Option(help="concat: whole-graph embedding joined with the node's own factor's; graph: the whole-graph one alone.")] = Representation.concat,
):
    """(Signature holder: the options only diggr adds.)"""


def _values(kw: dict) -> dict:
    setup(kw.pop("fmt"), kw.pop("quiet"))
    return {k: value(v) for k, v in kw.items()}


def graphmae(**kw):
    """GraphMAE (Hou et al. 2022): a masked graph autoencoder. A share of the nodes get a [MASK]
    token (a few: another node's features) instead of their features, a GAT (nodes) or GIN
    (graphs) encoder embeds the graph, the masked rows are zeroed again and a one-layer decoder
    reconstructs their features under the scaled cosine error.

    Example:

    \b
        gaml graphgen data --name planted --out data/planted
        gaml embed graphmae --graphs data/planted/graph.jsonl --out emb.safetensors
        gaml embed probe --embeddings emb.safetensors --format json
        gaml embed graphmae --graphs karate --out karate.safetensors --steps 200
        gaml embed graphmae --dataset tu:MUTAG --root ~/pyg-data --out mutag.safetensors   # files already there
    """
    kw = _values(kw)
    from ..core import console
    from ..methods.graphmae.run import GraphMAEOptions, train

    console.summary(train(GraphMAEOptions(**kw)), title="embed graphmae")


def diggr(**kw):
    """DiGGR: disentangled generative graph representations. A RECONSTRUCTION from the paper
    (arXiv 2408.13471): its authors released no code; the choices it leaves open are options.

    A latent factor model of the graph (gamma node-factor strengths z, Bernoulli-Poisson edges
    p(A_uv = 1) = 1 - exp(-sum_k g_k z_uk z_vk), a Weibull variational encoder with the closed-form
    Weibull-gamma KL) splits the graph into K factor subgraphs; GraphMAE's masked autoencoder
    reconstructs the features of the whole graph and of each factor subgraph; all train jointly.
    The artifact adds each node's factor strengths (`factors`) and dominant factor (`assignment`).

    Example:

    \b
        gaml graphgen data --name planted --out data/planted
        gaml embed diggr --graphs data/planted/graph.jsonl --factors 4 --out diggr.safetensors
        gaml embed probe --embeddings diggr.safetensors --format json     # accuracy and NMI
    """
    kw = _values(kw)
    from ..core import console
    from ..methods.diggr.run import DiGGROptions, train

    console.summary(train(DiGGROptions(**kw)), title="embed diggr")


graphmae.__signature__ = joined_signature(_options, before="device")
diggr.__signature__ = joined_signature(_options, _diggr_options, before="device")
app.command("graphmae")(graphmae)
app.command("diggr")(diggr)


@app.command("transform")
def transform(
    model: Annotated[str, typer.Option("--model", "-m", help="An embeddings artifact written by gaml embed graphmae or diggr (it holds the model).")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Embeddings artifact to write (.safetensors).")],
    graphs: Annotated[Optional[str], typer.Option("--graphs", "-g", help="Graph JSONL to embed ('-' for stdin) or 'karate'.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Instead of --graphs: a PyG data set in --root (planetoid:NAME, tu:NAME, karate).")] = None,
    root: Annotated[Optional[str], typer.Option(help="With --dataset: the folder that holds NAME/raw/.")] = None,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Embed new graphs with a trained model (the same node features and pooling as in training).

    Example:

    \b
        gaml embed transform --model emb.safetensors --graphs data/families/test.jsonl --out test-emb.safetensors
    """
    setup(fmt, quiet)
    from ..core import console
    from ..methods.diggr.run import TransformOptions, transform as run_transform

    console.summary(run_transform(TransformOptions(model=model, graphs=graphs, out=out, device=value(device),
                                                                 dataset=dataset, root=root)),
                    title="embed transform")


@app.command("probe")
def probe(
    embeddings: Annotated[str, typer.Option("--embeddings", "-e", help="An embeddings artifact (gaml embed graphmae / transform).")],
    labels: Annotated[Optional[str], typer.Option(help="JSONL of labels in row order ({\"label\": ...} or a bare value a line); default: the labels the artifact holds.")] = None,
    protocol: Annotated[Optional[Protocol], typer.Option(help="linear (node level: logistic regression over --seeds random splits) or svm (graph level: SVC, C by grid search, 10-fold CV over --seeds seeds); default by the artifact's level.")] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Splits / seeds (default 20 linear, 5 svm: GraphMAE's).")] = None,
    train_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="linear: share of the rows that trains the probe (stratified).")] = 0.1,
    split: Annotated[Split, typer.Option(help="linear: given (the data set's public split, e.g. Planetoid's, when the artifact holds one; else random) or random (--train-fraction, a new split per seed).")] = Split.given,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Score embeddings with GraphMAE's protocols (scikit-learn): a linear probe for nodes, an SVM
    for graphs; mean and std of test accuracy over seeds; NMI of a factor assignment when the
    artifact holds one.

    Example:

    \b
        gaml embed probe --embeddings emb.safetensors --format json
    """
    setup(fmt, quiet)
    from ..core import console
    from ..embeddings.probe import ProbeOptions, probe as run_probe

    console.summary(run_probe(ProbeOptions(embeddings=embeddings, labels=labels, protocol=value(protocol), seeds=seeds,
                                           train_fraction=train_fraction, split=value(split))),
                    title="embed probe")
