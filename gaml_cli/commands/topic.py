"""gaml topic: deep topic models, the generalized gamma belief network (and the linear GBN)."""

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

MODEL_KIND = "topic-model"
THETA_KIND = "topic-theta"


class Link(str, Enum):
    gate = "gate"
    residual = "residual"


class FitSplit(str, Enum):
    train = "train"
    all = "all"


class HeldOut(str, Enum):
    test = "test"
    all = "all"
    train = "train"


def _threads() -> None:
    import os

    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def _load_model(path: str):
    import torch

    from ..core.artifacts import load_artifact
    from ..core.errors import InputError
    from ..methods.gbn.model import GBN
    from ..methods.gbn.vocab import decode_vocab

    art = load_artifact(path, MODEL_KIND, framework="pt")
    cfg = art.config
    try:
        model = GBN(cfg["model"])
        state = {k: v for k, v in art.tensors.items() if k != "vocab_utf8"}
        model.load_state_dict(state)
        vocab = decode_vocab(art.tensors["vocab_utf8"].numpy())
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: corrupt topic model ({type(exc).__name__})") from None
    model.eval()
    return model, vocab, cfg


def _bow_for_model(corpus: str, cfg: dict, model_path: str):
    from ..methods.gbn.vocab import check_same_vocab, load_bow

    bow = load_bow(corpus)
    check_same_vocab(bow, cfg["vocab_sha256"], cfg["model"]["vocab_size"], model_path)
    return bow


def _rows(bow, split: str):
    from ..core.errors import InputError

    rows = bow.rows(split)
    if len(rows) == 0:
        hint = "build the corpus with --test-fraction > 0, or pass --split all" if split == "test" else None
        raise InputError(f"{bow.path}: no {split} documents", hint=hint)
    return rows


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
    from ..core import console
    from ..core.artifacts import save_artifact
    from ..core.errors import InputError
    from ..methods.gbn import corpus as C
    from ..methods.gbn import vocab as Vb

    from pathlib import Path

    check_out(out, ".safetensors", inputs={"--corpus": corpus if Path(corpus).exists() else None, "--vocab": vocab_from})
    _finite({"--max-df": max_df, "--test-fraction": test_fraction})
    if vocab_from is None:
        C.token_regex(token_pattern)  # a bad pattern: one line before the corpus is read
    docs = C.read_documents(corpus)
    split = Vb.split_documents(len(docs.texts), docs.labels, test_fraction, seed)
    stops = Vb.stop_words([w.strip() for w in extra_stop.split(",")] if extra_stop else None, use_default=stop_words)
    if vocab_from is not None:
        ref = Vb.load_bow(vocab_from)
        words = ref.vocab
        label_names = ref.label_names
        opts = dict(ref.config.get("options", {}))
        stops = frozenset(opts.get("stop_words_list", sorted(stops)))
        min_len = int(opts.get("min_len", min_len))
        if token_pattern is not None and token_pattern != opts.get("token_pattern"):
            from rich.markup import escape

            ref_pattern = opts.get("token_pattern")
            used = f"--token-pattern '{ref_pattern}'" if ref_pattern else "the default tokens (words of letters)"
            console.warn(escape(f"--token-pattern '{token_pattern}' ignored: {vocab_from} was built with {used}, "
                                "which is used"))
        token_pattern = opts.get("token_pattern")
    else:
        raw = [C.tokenize(text, min_len, token_pattern) for text in docs.texts]
        toks = [[t for t in d if t not in stops] for d in raw]
        words = Vb.build_vocabulary(toks, split == 0, min_df=min_df, max_df=max_df, max_size=max_size)
        if not words:
            w = Vb.why_no_vocabulary(raw, stops, split == 0, min_df=min_df, max_df=max_df)
            what = (f"characters matching --token-pattern '{token_pattern}'" if token_pattern is not None
                    else "letters")
            hint = None
            if w["tokens"] == 0 and token_pattern is None:
                hint = ("tokens are words of letters; for ids with digits such as brca1 pass --token-pattern "
                        "'[a-z0-9]+', for a pre-tokenised corpus --token-pattern '\\S+'")
            raise InputError(f"{docs.source}: no word passes the vocabulary filters in {w['documents']} training "
                             f"documents: {w['tokens']} tokens ({w['distinct']} distinct) of --min-len {min_len}+ "
                             f"{what} seen; dropped {w['stop_words']} as stop words, "
                             f"{w['min_df']} by --min-df {min_df}, {w['max_df']} by --max-df {max_df:g}", hint=hint)
        label_names = sorted(set(docs.labels)) if docs.labels is not None else None
    if docs.labels is not None and label_names is not None:
        unknown = sorted(set(docs.labels) - set(label_names))
        if unknown:
            console.warn(f"labels not in the reference vocabulary's label set are stored as -1: {unknown[:5]}")
    tensors, empty = Vb.to_bow(docs, words, stops, min_len, split, label_names, token_pattern)
    if len(tensors["doc_ids"]) == 0:
        raise InputError(f"{docs.source}: no document has a word in the vocabulary ({len(words)} words)")
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        console.warn(f"{len(empty)} document(s) with no in-vocabulary words were dropped (line/record {shown})")
    options = {"min_df": min_df, "max_df": max_df, "max_size": max_size, "min_len": min_len,
               "test_fraction": test_fraction, "seed": seed, "stop_words_list": sorted(stops),
               "token_pattern": token_pattern}
    config = {"vocab_size": len(words), "vocab_sha256": Vb.vocab_sha(words), "n_docs": int(len(tensors["doc_ids"])),
              "label_names": label_names, "source": docs.source, "dropped_empty": len(empty), "options": options,
              "vocab_from": vocab_from}
    parents = [p for p in (corpus, vocab_from) if p and p not in C.ALIASES and p != "-"]
    path = save_artifact(out, tensors, kind=Vb.KIND, config=config, seed=seed, parents=parents)
    sp = tensors["split"]
    console.summary({"out": str(path), "kind": Vb.KIND, "documents": int(len(sp)), "train": int((sp == 0).sum()),
                     "test": int((sp == 1).sum()), "vocab_size": len(words), "words": int(tensors["counts"].sum()),
                     "labels": label_names, "dropped_empty": len(empty), "source": docs.source}, title="bow")


def _parse_layers(text: str) -> list[int]:
    from ..core.errors import UsageError

    try:
        layers = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--layers {text!r}: expected topic counts like 128,64,32") from None
    if not layers or any(k < 1 for k in layers):
        raise UsageError(f"--layers {text!r}: expected positive topic counts like 128,64,32")
    if any(b > a for a, b in zip(layers, layers[1:])):
        raise UsageError(f"--layers {text}: the number of topics must not grow from one layer to the next; give the "
                         f"widest first (layer 1, the most specific), e.g. {','.join(map(str, sorted(layers, reverse=True)))}")
    return layers


def _finite(options: dict) -> None:
    """Refuse inf/nan in a float option (a range check lets inf through when it has no maximum)."""
    import math

    from ..core.errors import UsageError

    for name, number in options.items():
        if number is not None and not math.isfinite(number):
            raise UsageError(f"{name} {number:g}: must be a finite number")


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
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core.errors import UsageError

    link, split = value(link), value(split)
    check_out(out, ".safetensors", inputs={"--corpus": corpus})
    _finite({"--lr": lr, "--eta": eta})
    if not lr > 0:
        raise UsageError(f"--lr {lr:g}: must be > 0 (Adam's learning rate)")
    ks = _parse_layers(layers)
    if split not in ("train", "all"):
        raise UsageError(f"--split must be train or all, not {split!r}")
    if link not in ("gate", "residual"):
        raise UsageError(f"--link must be gate or residual, not {link!r}")
    _threads()
    from ..core import console
    from ..core.artifacts import save_artifact
    from ..methods.gbn.train import FitConfig, fit as fit_gbn
    from ..methods.gbn.vocab import check_trainable, encode_vocab, load_bow

    bow = load_bow(corpus)
    rows = bow.rows(split)
    check_trainable(bow, rows, split)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else Path(out[: -len(".safetensors")] + ".ckpt")
    if resume and not ckpt_dir.is_dir():
        raise UsageError(f"--resume: no checkpoint folder {ckpt_dir}")
    fc = FitConfig(layers=tuple(ks), linear=linear, link=link, hidden=hidden, steps=steps, batch_size=batch_size, lr=lr,
                   eta=eta, checkpoint_every=checkpoint_every, seed=seed)
    model, report = fit_gbn(bow, rows, fc, ckpt_dir, resume=resume)
    from dataclasses import asdict

    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    import torch

    tensors["vocab_utf8"] = torch.from_numpy(encode_vocab(bow.vocab))
    config = {"model": model.config, "vocab_sha256": bow.config["vocab_sha256"], "vocab_size": bow.vocab_size,
              "fit": {**asdict(fc), "split": split}, "report": report, "label_names": bow.label_names}
    path = save_artifact(out, tensors, kind=MODEL_KIND, config=config, seed=seed, parents=[corpus])
    console.summary({"out": str(path), "model": "linear GBN" if linear else "generalized GBN", "layers": ks,
                     **{k: v for k, v in report.items() if k != "history_tail"}, "checkpoints": str(ckpt_dir)},
                    title="topic model")


def _topic_words(model, vocab, top: int):
    """Per layer: topics' word weights (layer l's topics projected to words through Phi_1...Phi_l)."""
    import torch

    out = []
    with torch.no_grad():
        proj = None
        for l in range(model.L):
            phi = model.phi(l)
            proj = phi if proj is None else proj @ phi
            out.append(proj.T.numpy())  # topics x words
    return out


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
    import numpy as np

    from ..core import console
    from ..core.errors import UsageError

    model, vocab, cfg = _load_model(model_path)
    if layer is not None and layer > model.L:
        raise UsageError(f"--layer {layer}: the model has {model.L} layer(s)")
    words = _topic_words(model, vocab, top)
    import torch

    with torch.no_grad():
        links = [None] + [model.phi(l).numpy() for l in range(1, model.L)]
    layers_out = []
    for l in range(model.L):
        topics = []
        for j, row in enumerate(words[l]):
            order = np.argsort(-row, kind="stable")[:top]
            entry = {"id": j, "words": [vocab[i] for i in order], "weights": [round(float(row[i]), 6) for i in order]}
            if links[l] is not None:
                col = links[l][:, j]
                kids = np.argsort(-col, kind="stable")[:max(children, 1)]
                entry["children"] = [[int(c), round(float(col[c]), 4)] for c in kids]
            topics.append(entry)
        layers_out.append(topics)
    chosen = [layer - 1] if layer is not None else list(range(model.L))
    if console.state.format == "json":
        console.print_json({"layers": [layers_out[l] for l in chosen]})
        return
    import sys

    lines = []
    if layer is not None:
        lines.append(f"layer {layer} ({len(layers_out[layer - 1])} topics)")
        for t in layers_out[layer - 1]:
            lines.append(f"  [{layer}.{t['id']}] " + " ".join(t["words"]))
    else:
        top_l = model.L - 1
        lines.append(f"{'linear GBN' if model.linear else 'generalized GBN'}: layers {model.Ks} (layer 1 = most specific)")
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
        if missing and model.L > 1:
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
    _threads()
    import numpy as np
    import torch

    from ..core import console
    from ..core.artifacts import JsonlWriter, save_artifact

    model, vocab, cfg = _load_model(model_path)
    bow = _bow_for_model(corpus, cfg, model_path)
    rows = _rows(bow, split)
    thetas = [[] for _ in range(model.L)]
    with console.progress(len(rows), "transform") as bar:
        for a in range(0, len(rows), batch_size):
            x = torch.from_numpy(bow.dense(rows[a:a + batch_size]))
            for l, t in enumerate(model.transform(x, refine_steps=refine, seed=seed, offset=a)):
                thetas[l].append(t.numpy())
            bar.update(len(x))
    thetas = [np.concatenate(t) for t in thetas]
    names = bow.label_names or []
    if out.endswith(".safetensors"):
        tensors = {f"theta_{l + 1}": thetas[l].astype(np.float32) for l in range(model.L)}
        tensors.update({"doc_ids": bow.doc_ids[rows], "labels": bow.labels[rows], "split": bow.split[rows]})
        save_artifact(out, tensors, kind=THETA_KIND, config={"layers": model.Ks, "label_names": bow.label_names,
                                                             "refine_steps": refine},
                      seed=seed, parents=[model_path, corpus])
    else:
        with JsonlWriter(out) as w:
            for i, r in enumerate(rows):
                lab = int(bow.labels[r])
                w.write({"doc": int(bow.doc_ids[r]), "label": names[lab] if 0 <= lab < len(names) else None,
                         "split": "test" if bow.split[r] else "train",
                         "theta": [[round(float(v), 6) for v in thetas[l][i]] for l in range(model.L)]})
    from ..methods.gbn.metrics import sparsity

    console.summary({"out": out, "documents": int(len(rows)), "layers": model.Ks,
                     "sparsity_layer1": sparsity(thetas[0])}, title="transform", stdout_busy=(out == "-"))


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

    split = value(split)
    _finite({"--observed": observed})
    _threads()
    import numpy as np
    import torch

    from ..core import console
    from ..methods.gbn import metrics as M

    model, vocab, cfg = _load_model(model_path)
    bow = _bow_for_model(corpus, cfg, model_path)
    rows = _rows(bow, split)
    # chunk by chunk: the split draws from one stream in document order and each document's
    # Monte Carlo draws are its own (GBN.infer), so --batch-size changes memory, not the result
    rng = np.random.default_rng(seed)
    loglik, words = 0.0, 0.0
    with console.progress(len(rows), "perplexity") as bar:
        for a in range(0, len(rows), batch_size):
            obs, held = M.completion_split(bow.dense(rows[a:a + batch_size]), observed, rng=rng)
            probs = model.word_probs(torch.from_numpy(obs), refine_steps=refine, seed=seed, offset=a).numpy()
            loglik += M.heldout_loglik(probs, held)
            words += float(held.sum())
            bar.update(len(obs))
    ppl = M.perplexity_from(loglik, words)
    console.summary({"perplexity": ppl, "documents": int(len(rows)), "heldout_words": int(words),
                     "observed": observed, "split": split, "refine_steps": refine, "model": model_path,
                     "corpus": corpus}, title="perplexity")
