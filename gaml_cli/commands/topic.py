"""gaml topic: deep topic models, the generalized gamma belief network (and the linear GBN).

Thin: options, output-path checks and printing here; the jobs in methods/gbn/run.py.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import FormatOpt, QuietOpt, Split, check_out, out_file, setup, value

app = typer.Typer(
    help="Deep topic models: the generalized gamma belief network (arXiv 2408.03388), with the "
         "classic GBN/WHAI as --linear; topics per layer, document representations, perplexity.\n\nExample:\n\n\b\n    gaml topic vocab --corpus newsgroups --out bow.safetensors\n    gaml topic fit --corpus bow.safetensors --layers 128,64,32 --out topics.safetensors\n    gaml topic show --model topics.safetensors",
    no_args_is_help=True,
)


class Link(str, Enum):
    gate = "gate"
    residual = "residual"


class TopicInit(str, Enum):
    corpus = "corpus"
    nmf = "nmf"


class PriorIn(str, Enum):
    input = "input"
    shape = "shape"


class FitSplit(str, Enum):
    train = "train"
    all = "all"


class HeldOut(str, Enum):
    test = "test"
    all = "all"
    train = "train"


@app.command("vocab")
def vocab(
    corpus: Annotated[str, typer.Option("--corpus", "-c", help="Text (one document a line), JSONL ({\"text\": ..., \"label\": ...}), '-' for stdin, or an offline corpus: newsgroups, lee.")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Bag-of-words artifact to write (.safetensors).")],
    vocab_from: Annotated[Optional[str], typer.Option("--vocab", help="Reuse the vocabulary of this bow artifact (e.g. to encode held-out documents for a model).")] = None,
    min_df: Annotated[int, typer.Option(min=1, help="Keep words in at least this many training documents.")] = 2,
    max_df: Annotated[float, typer.Option(min=0.0, help="Drop words in more than this share of training documents (> 1: a count).")] = 0.5,
    max_size: Annotated[int, typer.Option(min=1, help="At most this many words (the most frequent).")] = 5000,
    min_len: Annotated[int, typer.Option(min=1, help="Shortest token kept (characters).")] = 3,
    token_pattern: Annotated[Optional[str], typer.Option("--token-pattern", metavar="<regex>", help="What a token is, as scikit-learn's token_pattern (matched on lower-cased text; one capturing group: that group): '[a-z0-9]+' keeps ids with digits (brca1, covid19), '\\S+' takes whitespace-separated tokens of a pre-tokenised corpus. Default: words of letters. Recorded in the artifact, so --vocab reuses it.")] = None,
    stop_words: Annotated[bool, typer.Option("--stop-words/--no-stop-words", help="Drop scikit-learn's English stop words.")] = True,
    extra_stop: Annotated[Optional[str], typer.Option(help="More stop words, comma-separated.")] = None,
    test_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of documents held out as test (stratified by label).")] = 0.2,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the train/test split.")] = 0,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Tokenise a corpus, build a vocabulary and write a sparse bag-of-words artifact.

    Tokens are lower-cased words of --min-len letters or more (or what --token-pattern
    matches: '[a-z0-9]+' for gene names and product codes, '\\S+' for a corpus that is
    already tokenised, one space between tokens), minus stop words. The
    vocabulary is chosen on the training documents only (document frequency between
    --min-df and --max-df, the --max-size most frequent), so held-out perplexity is honest.
    Documents left with no vocabulary word are dropped (a warning names them).

    Example:

    \b
        gaml topic vocab --corpus newsgroups --out data/ng-bow.safetensors
        gaml topic vocab --corpus docs.jsonl --max-size 10000 --out bow.safetensors
        gaml topic vocab --corpus new.txt --vocab bow.safetensors --test-fraction 0 --out new-bow.safetensors
        gaml topic vocab --corpus genes.txt --token-pattern '[a-z0-9]+' --min-len 2 --out bow.safetensors
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core import console
    from ..methods.gbn.run import VocabOptions, vocab as run_vocab

    check_out(out, ".safetensors", inputs={"--corpus": corpus if Path(corpus).exists() else None, "--vocab": vocab_from})
    summary = run_vocab(VocabOptions(
        corpus=corpus, out=out, vocab_from=vocab_from, min_df=min_df, max_df=max_df, max_size=max_size,
        min_len=min_len, token_pattern=token_pattern, stop_words=stop_words, extra_stop=extra_stop,
        test_fraction=test_fraction, seed=seed))
    console.summary(summary, title="bow")


@app.command("fit")
def fit(
    corpus: Annotated[str, typer.Option("--corpus", "-c", help="Bag-of-words artifact (gaml topic vocab).")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Topic model artifact to write (.safetensors).")],
    layers: Annotated[str, typer.Option(help="Topics per layer, first (widest) layer first; no layer wider than the one before.")] = "128,64,32",
    linear: Annotated[bool, typer.Option("--linear", help="Classic GBN/WHAI linear links (the baseline) instead of the generalized non-linear ones.")] = False,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(min=1, help="Documents per step (all of them when the corpus is smaller).")] = 256,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate (> 0).")] = 3e-3,
    link: Annotated[Link, typer.Option(help="Form of the non-linear link: gate (linear term times a learned gate in (0, 2)) or residual (linear term plus a non-negative MLP).")] = "gate",
    hidden: Annotated[int, typer.Option(min=1, help="Width of the inference network and of the non-linear links.")] = 256,
    eta: Annotated[float, typer.Option(min=1.0, help="Dirichlet prior on the topics (MAP; 1 = flat, > 1 smooths).")] = 1.0,
    split: Annotated[FitSplit, typer.Option(help="Documents to train on: train or all.")] = "train",
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N steps (0: only on Ctrl-C).")] = 500,
    checkpoint_dir: Annotated[Optional[str], typer.Option(help="Checkpoint folder (default: OUT without .safetensors + '.ckpt').")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    init: Annotated[TopicInit, typer.Option(help="Start of the first-layer topics: nmf (the best of 5 Poisson non-negative factorisations of the training counts, 100 EM rounds each: on synthetic GBN corpora it recovers the true topics as well as LDA does) or corpus (the corpus's word frequencies under noise, the start before 2026-12-05: topics that start alike stay merged).")] = "nmf",
    prior_in: Annotated[PriorIn, typer.Option("--prior-in", help="How the inference network brings in the upper layer's prior: input (gaml's: ln(1 + the prior's gamma shape) is an input of the layer's Weibull heads) or shape (WHAI's: the prior's gamma shape is added to the Weibull shape the heads give).")] = "input",
    seed: Annotated[int, typer.Option(min=0, help="Seed of initialisation, minibatches and Weibull draws.")] = 0,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Fit a generalized gamma belief network (or --linear: the classic GBN) to a corpus.

    Gamma latents per layer, Poisson word counts, non-linear links between layers, trained
    jointly with the upward-downward Weibull inference network on the ELBO (closed-form
    Weibull-gamma KL). Ctrl-C or SIGTERM saves a checkpoint and exits 130; --resume goes on
    and, with the same --steps, ends bit for bit where the uninterrupted run would (the
    learning rate decays over --steps, so a larger --steps on resume stretches the schedule).

    Example:

    \b
        gaml topic vocab --corpus newsgroups --out bow.safetensors
        gaml topic fit --corpus bow.safetensors --layers 32,16,8 --out model.safetensors
        gaml topic fit --corpus bow.safetensors --layers 32,16,8 --linear --out gbn.safetensors
        gaml topic fit --corpus bow.safetensors --layers 32,16,8 --linear --prior-in shape --out whai.safetensors
    """
    setup(fmt, quiet)
    from ..core import console
    from ..methods.gbn.run import FitOptions, fit as run_fit

    link, split, init, prior_in = value(link), value(split), value(init), value(prior_in)
    check_out(out, ".safetensors", inputs={"--corpus": corpus})
    summary = run_fit(FitOptions(
        corpus=corpus, out=out, layers=layers, linear=linear, steps=steps, batch_size=batch_size, lr=lr, link=link,
        hidden=hidden, eta=eta, split=split, checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir,
        resume=resume, seed=seed, init=init, prior_in=prior_in))
    console.summary(summary, title="topic model")


@app.command("show")
def show(
    model_path: Annotated[str, typer.Option("--model", "-m", help="Topic model artifact (gaml topic fit).")],
    layer: Annotated[Optional[int], typer.Option(min=1, help="Only this layer (1 = the first, most specific).")] = None,
    top: Annotated[int, typer.Option(min=1, help="Words per topic.")] = 10,
    children: Annotated[int, typer.Option(min=0, help="Links shown per topic in the tree (strongest first).")] = 3,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Top words of each topic per layer and the links between layers.

    Human format: a text tree on stdout, top layer first, each topic with its strongest
    children in the layer below. --format json prints {"layers": [[{"id", "words",
    "weights", "children"}, ...], ...]}, first layer first, words by weight; a layer-l topic's
    words are its column of Phi_1 ... Phi_l, its children [[id, weight], ...] its column of Phi_l.

    Example:

    \b
        gaml topic show --model model.safetensors --top 8
        gaml topic show --model model.safetensors --layer 2 --format json | jq '.layers[0][0].words'
    """
    setup(fmt, quiet)
    from ..core import console
    from ..methods.gbn.run import ShowOptions, show as run_show

    shown_topics = run_show(ShowOptions(model_path=model_path, layer=layer, top=top, children=children))
    layers_out = shown_topics["layers"]
    if console.state.format == "json":
        console.print_json({"layers": layers_out})
        return
    import sys

    lines = []
    if layer is not None:
        lines.append(f"layer {layer} ({len(layers_out[0])} topics)")
        for t in layers_out[0]:
            lines.append(f"  [{layer}.{t['id']}] " + " ".join(t["words"]))
    else:
        n_layers = len(layers_out)
        top_l = n_layers - 1
        lines.append(f"{shown_topics['model']}: layers {shown_topics['topics_per_layer']} (layer 1 = most specific)")
        shown: set[tuple[int, int]] = set()

        def walk(l: int, j: int, depth: int) -> None:
            t = layers_out[l][j]
            lines.append("  " * depth + f"[{l + 1}.{j}] " + " ".join(t["words"]))
            shown.add((l, j))
            if l > 0 and children > 0:
                for c, w in t["children"][:children]:
                    walk(l - 1, c, depth + 1)

        for j in range(len(layers_out[top_l])):
            walk(top_l, j, 0)
        missing = [j for j in range(len(layers_out[0])) if (0, j) not in shown]
        if missing and n_layers > 1:
            lines.append(f"layer-1 topics not among the strongest links above: {len(missing)}")
            for j in missing:
                lines.append(f"  [1.{j}] " + " ".join(layers_out[0][j]["words"]))
    sys.stdout.write("\n".join(lines) + "\n")


@app.command("transform")
def transform(
    model_path: Annotated[str, typer.Option("--model", "-m", help="Topic model artifact (gaml topic fit).")],
    corpus: Annotated[str, typer.Option("--corpus", "-c", help="Bag-of-words artifact built with the model's vocabulary.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Where to write: FILE.jsonl, '-' (JSONL on stdout) or FILE.safetensors.")] = "-",
    split: Annotated[Split, typer.Option(help="Documents: all, train or test.")] = "all",
    refine: Annotated[int, typer.Option(min=0, help="Per-document refinement steps of the Weibull posterior after the inference network (0: the network's answer).")] = 0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the refinement's Monte Carlo draws.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Documents encoded at a time (memory); the result does not depend on it.")] = 256,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Per-document representations: the posterior mean of theta at every layer.

    JSONL: one record per document {"doc": line/record number, "label", "split", "theta":
    [[layer 1 ...], [layer 2 ...], ...]}. safetensors (kind topic-theta): tensors theta_1 ...
    theta_L, doc_ids, labels, split.

    Example:

    \b
        gaml topic transform --model model.safetensors --corpus bow.safetensors | head -n 2
        gaml topic transform --model model.safetensors --corpus bow.safetensors --out theta.safetensors
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core.errors import UsageError

    split = value(split)
    if out != "-" and Path(out).suffix not in (".jsonl", ".safetensors"):
        raise UsageError(f"--out {out}: expected '-', a .jsonl or a .safetensors file name")
    if out != "-" and Path(out).is_dir():
        raise UsageError(f"--out {out} is a folder")
    check_out(out, Path(out).suffix, inputs={"--model": model_path, "--corpus": corpus}, stdout_ok=True)
    from ..core import console
    from ..methods.gbn.run import TransformOptions, transform as run_transform

    summary = run_transform(TransformOptions(model_path=model_path, corpus=corpus, out=out, split=split, refine=refine,
                                             seed=seed, batch_size=batch_size))
    console.summary(summary, title="transform", stdout_busy=(out == "-"))


@app.command("perplexity")
def perplexity(
    model_path: Annotated[str, typer.Option("--model", "-m", help="Topic model artifact (gaml topic fit).")],
    corpus: Annotated[str, typer.Option("--corpus", "-c", help="Bag-of-words artifact built with the model's vocabulary.")],
    split: Annotated[HeldOut, typer.Option(help="Held-out documents: test (the corpus's held-out split) or all (a corpus of held-out documents).")] = "test",
    observed: Annotated[float, typer.Option(min=0.05, max=0.95, help="Share of each document's words shown to the model; the rest are predicted.")] = 0.8,
    refine: Annotated[int, typer.Option(min=0, help="Per-document refinement steps of the Weibull posterior on the observed words.")] = 200,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the observed/held-out word split.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Documents scored at a time (memory); the result does not depend on it.")] = 256,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Document-completion perplexity on held-out documents.

    Each document's words are split at random into an observed share (--observed) and the
    rest; the topic proportions are inferred from the observed words only, and the rest are
    predicted with Phi_1 theta_1: perplexity = exp(-sum ln p(held-out word) / #held-out words).
    bench/topic.py scores scikit-learn's and gensim's LDA on the very same split. Documents
    are read and scored --batch-size at a time, so a large corpus is never densified whole;
    the result is the same for any --batch-size.

    Example:

    \b
        gaml topic perplexity --model model.safetensors --corpus bow.safetensors --format json
    """
    setup(fmt, quiet)
    from ..core import console
    from ..methods.gbn.run import PerplexityOptions, perplexity as run_perplexity

    split = value(split)
    summary = run_perplexity(PerplexityOptions(model_path=model_path, corpus=corpus, split=split, observed=observed,
                                               refine=refine, seed=seed, batch_size=batch_size))
    console.summary(summary, title="perplexity")
