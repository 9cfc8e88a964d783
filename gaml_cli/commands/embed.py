"""gaml embed: self-supervised representations of graphs (GraphMAE; DiGGR, a reconstruction) and of
images (SimCLR, NCL; contrastive factor analysis, a reconstruction) and the probes that score them."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, QuietOpt, joined_signature, out_file, setup, value

app = typer.Typer(
    help="Self-supervised representations and their evaluation: DiGGR (a reconstruction: no code is public) "
         "and GraphMAE on graphs; contrastive factor analysis (CFA, a reconstruction: no code is public), "
         "SimCLR and NCL on images; linear/SVM/kNN probes, calibration, uncertainty.\n\n"
         "Example:\n\n\b\n"
         "    gaml graphgen data --name planted --out data/planted\n"
         "    gaml embed graphmae --graphs data/planted/graph.jsonl --out emb.safetensors\n"
         "    gaml embed probe --embeddings emb.safetensors\n"
         "    gaml dataset digits --out digits.safetensors\n"
         "    gaml embed cfa --data digits.safetensors --out cfa.safetensors\n"
         "    gaml embed probe --embeddings cfa.safetensors --uncertainty",
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


# ------------------------------------------------------------------------- images: cfa, simclr, ncl


class Likelihood(str, Enum):
    infonce = "infonce"
    spectral = "spectral"


class Similarity(str, Enum):
    cosine = "cosine"
    dot = "dot"


class Uncertainty(str, Enum):
    scaled = "scaled"
    entropy = "entropy"


class ReluGrad(str, Enum):
    gelu = "gelu"
    relu = "relu"


class ImageRepresentation(str, Enum):
    factors = "factors"
    encoder = "encoder"


class TrainSplit(str, Enum):
    train = "train"
    all = "all"


def _image_options(
    data: Annotated[str, typer.Option("--data", "-d", help="An images artifact (gaml dataset digits|shapes, gaml sample, ...); labels are not used for training.")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Model artifact to write (.safetensors, kind embeddings): the embeddings of every input row, uncertainty (CFA), the artifact's labels/attrs/split, the model.")],
    steps: Annotated[int, typer.Option(min=0, help="Optimizer steps (0: an untrained, randomly initialised encoder).")] = 1000,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per step (each seen in two augmented views; the other rows are the negatives).")] = 256,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="Adam weight decay.")] = 0.0,
    width: Annotated[int, typer.Option(min=1, help="CNN width (channels of the first stage; the encoder's output is 4x).")] = 32,
    dim: Annotated[int, typer.Option(min=1, help="Feature (factor) dimensions: the projector's output.")] = 64,
    temperature: Annotated[float, typer.Option(min=0.0, help="InfoNCE temperature tau (cosine similarity / tau).")] = 0.5,
    representation: Annotated[Optional[ImageRepresentation], typer.Option(help="What 'embeddings' holds: factors (the projector's output; CFA: the posterior means) or encoder (the CNN's pooled output). Default: encoder for simclr, factors for ncl and cfa.")] = None,
    crop_min: Annotated[Optional[float], typer.Option(help="Augmentation: smallest area share of the random resized crop (default by channels: 0.7 for 1, 0.5 for 3).")] = None,
    shift: Annotated[Optional[float], typer.Option(help="Augmentation: largest shift in pixels (default 1 for 1 channel, 3 for RGB).")] = None,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Augmentation: random horizontal flips (default off for 1 channel, on for RGB).")] = None,
    jitter: Annotated[Optional[float], typer.Option(help="Augmentation: colour jitter strength for RGB (brightness, contrast, saturation; default 0.4; 0 keeps colour).")] = None,
    noise: Annotated[Optional[float], typer.Option(help="Augmentation: std of Gaussian pixel noise (default 0.1 for 1 channel, 0.05 for RGB).")] = None,
    split: Annotated[TrainSplit, typer.Option(help="Rows that train: the artifact's training split (all rows when it has none), or all.")] = TrainSplit.train,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N steps next to OUT (OUT.ckpt/); 0: at the end and on Ctrl-C.")] = 200,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.ckpt/.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the weights, batches, augmentations and posterior draws.")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """(Signature holder: the options cfa, simclr and ncl share.)"""


def _cfa_options(
    nonneg: Annotated[bool, typer.Option("--nonneg", help="Non-negative CFA: gamma prior, Weibull posterior (sparse, non-negative factors).")] = False,
    kl_weight: Annotated[Optional[float], typer.Option(min=0.0, help="beta: weight of the KL term against the contrastive likelihood (1: the plain ELBO). Default 0.01, with --nonneg 0.001 (at 0.01 the Weibull posterior fell back to the prior and learnt nothing).")] = None,
    draws: Annotated[int, typer.Option(min=1, help="Monte Carlo draws of the posterior per view and step.")] = 1,
    likelihood: Annotated[Likelihood, typer.Option(help="The contrastive likelihood on the draws: infonce (NT-Xent) or spectral (HaoChen et al.'s co-occurrence factorisation loss).")] = Likelihood.infonce,
    similarity: Annotated[Optional[Similarity], typer.Option(help="The likelihood's similarity of two draws: dot (the inner product f(x)^T f(x') of the factorisation view; the prior then holds the scale) or cosine (SimCLR's). Default dot; with --nonneg cosine (non-negative factors did not learn under dot).")] = None,
    uncertainty: Annotated[Optional[Uncertainty], typer.Option(help="The uncertainty written per row: entropy (the posterior entropy of z) or scaled (the posterior entropy of z / ||E z||, all a cosine likelihood sees). Default: entropy with --similarity dot, scaled with cosine.")] = None,
    prior_std: Annotated[float, typer.Option(min=0.0, help="Gaussian CFA: std s0 of the N(0, s0^2) prior.")] = 1.0,
    sigma_init: Annotated[float, typer.Option(min=0.0, help="Gaussian CFA: the posterior std the network starts from.")] = 0.1,
    prior_shape: Annotated[float, typer.Option(min=0.0, help="--nonneg: shape a0 of the Gamma(a0, rate b0) prior.")] = 1.0,
    prior_rate: Annotated[float, typer.Option(min=0.0, help="--nonneg: rate b0 of the gamma prior.")] = 1.0,
    k_min: Annotated[float, typer.Option(min=0.0, help="--nonneg: lower clamp of the Weibull shape k (gaml's topic model: 0.1).")] = 0.1,
    k_max: Annotated[float, typer.Option(min=0.0, help="--nonneg: upper clamp of k.")] = 10.0,
    k_init: Annotated[float, typer.Option(min=0.0, help="--nonneg: the Weibull shape k the network starts from (a narrow posterior).")] = 3.0,
):
    """(Signature holder: the options only cfa adds.)"""


def _ncl_options(
    relu_grad: Annotated[ReluGrad, typer.Option(help="The ReLU's backward pass: gelu (PKU-ML/non_neg's rep_relu) or relu.")] = ReluGrad.gelu,
):
    """(Signature holder: the option only ncl adds.)"""


def _run_images(method: str, kw: dict) -> None:
    kw = _values(kw)
    from ..core import console
    from ..methods.cfa.train import ContrastiveOptions, train

    console.summary(train(ContrastiveOptions(method=method, **kw)), title=f"embed {method}")


def cfa(**kw):
    """Contrastive factor analysis (CFA) and its non-negative version (--nonneg). A RECONSTRUCTION
    from the paper (arXiv 2407.21740): its authors released no code; the choices it leaves open
    are options.

    Contrastive learning read as factor analysis of the augmentation co-occurrence matrix, made
    Bayesian: a prior on each image's factors z (Gaussian; --nonneg: gamma), an amortised posterior
    q(z|x) from a small CNN (Gaussian; --nonneg: Weibull), and the objective
    InfoNCE(draws of two augmented views) + kl-weight * KL(q || prior). Embeddings are posterior
    means; `uncertainty` is the posterior entropy of each row (with the cosine similarity, the
    --nonneg default, the entropy of z / ||E z||).

    Example:

    \b
        gaml dataset digits --out digits.safetensors
        gaml embed cfa --data digits.safetensors --out cfa.safetensors
        gaml embed cfa --data digits.safetensors --nonneg --out cnfa.safetensors
        gaml embed probe --embeddings cfa.safetensors --uncertainty --format json
    """
    _run_images("cfa", kw)


def simclr(**kw):
    """SimCLR (Chen et al. 2020): two augmented views of each image through one encoder and
    projector, NT-Xent (InfoNCE) with the other rows as negatives. CFA's baseline: the same
    encoder, augmentations and budget.

    Example:

    \b
        gaml embed simclr --data digits.safetensors --out simclr.safetensors
        gaml embed probe --embeddings simclr.safetensors
    """
    _run_images("simclr", kw)


def ncl(**kw):
    """Non-negative contrastive learning (NCL, PKU-ML/non_neg): SimCLR with a ReLU on the
    projector's output (forward ReLU, backward GELU by default), the closest public relative of
    non-negative CFA. Embeddings: the non-negative features (--representation encoder for the CNN's).

    Example:

    \b
        gaml embed ncl --data digits.safetensors --out ncl.safetensors --temperature 0.2
        gaml embed probe --embeddings ncl.safetensors --format json     # sparsity, active dims
    """
    _run_images("ncl", kw)


cfa.__signature__ = joined_signature(_image_options, _cfa_options, before="device")
simclr.__signature__ = joined_signature(_image_options, before="device")
ncl.__signature__ = joined_signature(_image_options, _ncl_options, before="device")
app.command("cfa")(cfa)
app.command("simclr")(simclr)
app.command("ncl")(ncl)


@app.command("transform")
def transform(
    model: Annotated[str, typer.Option("--model", "-m", help="An embeddings artifact that holds a model: gaml embed graphmae or diggr (graphs), cfa, simclr or ncl (images).")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Embeddings artifact to write (.safetensors).")],
    graphs: Annotated[Optional[str], typer.Option("--graphs", "-g", help="Graph models: graph JSONL to embed ('-' for stdin) or 'karate'.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Graph models, instead of --graphs: a PyG data set in --root (planetoid:NAME, tu:NAME, karate).")] = None,
    root: Annotated[Optional[str], typer.Option(help="With --dataset: the folder that holds NAME/raw/.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Image models: an images artifact to embed.")] = None,
    fit_images: Annotated[bool, typer.Option("--fit-images", help="Image models: convert images of another shape (channels averaged or repeated, area resize), e.g. shapes through a digits model for out-of-distribution checks.")] = False,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Embed new graphs or images with a trained model (the model's artifact says which). Graphs:
    the same node features and pooling as in training. Images: `embeddings` (posterior means or
    features, rows in input order), `uncertainty` (CFA: posterior entropy), the share of zero
    features for non-negative models, and the artifact's labels, attrs and split.

    Example:

    \b
        gaml embed transform --model emb.safetensors --graphs data/families/test.jsonl --out test-emb.safetensors
        gaml embed transform --model cfa.safetensors --data digits.safetensors --out cfa-emb.safetensors
    """
    setup(fmt, quiet)
    from ..core import console
    from ..core.errors import UsageError

    from ..methods.cfa.train import is_image_model

    if is_image_model(model):
        if data is None or graphs is not None or dataset is not None:
            raise UsageError(f"{model} is an image model: give --data IMAGES (not --graphs / --dataset)")
        from ..methods.cfa.train import TransformOptions as ImageTransform, transform as image_transform

        console.summary(image_transform(ImageTransform(model=model, data=data, out=out, fit=fit_images,
                                                       device=value(device))), title="embed transform")
        return
    if data is not None or fit_images:
        raise UsageError(f"{model} is a graph model: give --graphs GRAPHS or --dataset (not --data / --fit-images)")
    from ..methods.diggr.run import TransformOptions, transform as run_transform

    console.summary(run_transform(TransformOptions(model=model, graphs=graphs, out=out, device=value(device),
                                                                 dataset=dataset, root=root)),
                    title="embed transform")


@app.command("probe")
def probe(
    embeddings: Annotated[str, typer.Option("--embeddings", "-e", help="An embeddings artifact (gaml embed graphmae / transform).")],
    labels: Annotated[Optional[str], typer.Option(help="JSONL of labels in row order ({\"label\": ...} a line), or for images attr:NAME (an attribute of shapes: attr:shape); default: the labels the artifact holds.")] = None,
    protocol: Annotated[Optional[Protocol], typer.Option(help="linear (node level: logistic regression over --seeds random splits) or svm (graph level: SVC, C by grid search, 10-fold CV over --seeds seeds); default by the artifact's level.")] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Splits / seeds (default 20 linear, 5 svm: GraphMAE's).")] = None,
    train_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="linear: share of the rows that trains the probe (stratified).")] = 0.1,
    split: Annotated[Split, typer.Option(help="Graphs, linear: given (the data set's public split, e.g. Planetoid's, when the artifact holds one; else random) or random (--train-fraction, a new split per seed). Images: given (the artifact's train/test split) or random (stratified 80/20, seed 0).")] = Split.given,
    uncertainty: Annotated[bool, typer.Option("--uncertainty", help="Images: AUROC with which the rows' uncertainty (CFA's posterior entropy) flags the probe's wrong test rows.")] = False,
    ood: Annotated[Optional[str], typer.Option("--ood", help="Images: embeddings of out-of-distribution rows by the same model (gaml embed transform); adds the AUROC separating them from the test rows by uncertainty.")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Images: neighbours of the kNN probe (cosine distance).")] = 20,
    zero_tol: Annotated[float, typer.Option(min=0.0, help="Images: |x| at or below this counts as a zero feature (sparsity, active dimensions).")] = 1e-3,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Score embeddings (scikit-learn). Graphs, GraphMAE's protocols: a linear probe for nodes, an
    SVM for graphs; mean and std of test accuracy over seeds; NMI of a factor assignment when the
    artifact holds one. Images: a logistic regression on the artifact's train/test split (accuracy,
    expected calibration error), kNN accuracy, sparsity and active dimensions; with --uncertainty
    the AUROC with which the uncertainty flags the probe's errors and, with --ood, out-of-distribution rows.

    Example:

    \b
        gaml embed probe --embeddings emb.safetensors --format json
        gaml embed probe --embeddings cfa-emb.safetensors --uncertainty --ood cfa-shapes.safetensors
        gaml embed probe --embeddings shapes-emb.safetensors --labels attr:shape
    """
    setup(fmt, quiet)
    from ..core import console
    from ..embeddings.probe import ProbeOptions, probe as run_probe

    console.summary(run_probe(ProbeOptions(embeddings=embeddings, labels=labels, protocol=value(protocol), seeds=seeds,
                                           train_fraction=train_fraction, split=value(split), uncertainty=uncertainty,
                                           ood=ood, k=k, zero_tol=zero_tol)), title="embed probe")
