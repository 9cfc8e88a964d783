"""The whole `gaml topic` jobs from one options object each: the commands are thin wrappers
around these functions, and Python users call them directly:

    from gaml_cli.methods.gbn.run import VocabOptions, FitOptions, TransformOptions, vocab, fit, transform
    vocab(VocabOptions(corpus="docs.txt", out="bow.safetensors"))
    fit(FitOptions(corpus="bow.safetensors", out="model.safetensors", layers="32,16,8", steps=500))
    transform(TransformOptions(model_path="model.safetensors", corpus="bow.safetensors", out="theta.safetensors"))

Each job validates its options (the same one-line UsageError / InputError messages as the
command line), writes its artifact and returns the summary the command prints. The field names
are the command functions' parameter names (--model is `model_path`, --vocab `vocab_from`);
choices (--link, --split) are plain strings. Checks of the output path itself (an output equal
to an input, an unwritable folder: gaml_cli.core.paths.check_outputs) are the caller's.

Lower-level pieces for Python use: `load_model` (a fitted model, its vocabulary and config),
`topic_layers` (show's topics per layer), `infer_theta` (transform's per-layer theta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

MODEL_KIND = "topic-model"
THETA_KIND = "topic-theta"


@dataclass
class VocabOptions:
    """`gaml topic vocab`: tokenise a corpus, build a vocabulary, write a bow artifact."""

    corpus: str  # text file, JSONL, '-' (stdin) or an offline corpus: newsgroups, lee
    out: str  # bow artifact to write (.safetensors)
    vocab_from: Optional[str] = None  # --vocab: reuse this bow artifact's vocabulary
    min_df: int = 2
    max_df: float = 0.5
    max_size: int = 5000
    min_len: int = 3
    token_pattern: Optional[str] = None
    stop_words: bool = True
    extra_stop: Optional[str] = None  # comma-separated
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class FitOptions:
    """`gaml topic fit`: fit a generalized (or --linear: classic) GBN to a bow artifact."""

    corpus: str  # bow artifact
    out: str  # topic model artifact to write (.safetensors)
    layers: Union[str, Sequence[int]] = "128,64,32"  # "128,64,32" or [128, 64, 32]
    linear: bool = False
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-3
    link: str = "gate"  # gate or residual
    prior_in: str = "input"  # input (gaml's) or shape (WHAI's): how q sees the upper layer's prior
    hidden: int = 256
    eta: float = 1.0
    init: str = "nmf"  # first-layer topics' start: nmf or corpus (train.FitConfig.init)
    split: str = "train"  # train or all
    checkpoint_every: int = 500
    checkpoint_dir: Optional[str] = None  # default: OUT without .safetensors + '.ckpt'
    resume: bool = False
    seed: int = 0


@dataclass
class ShowOptions:
    """`gaml topic show`: top words of each topic per layer and the links between layers."""

    model_path: str
    layer: Optional[int] = None  # only this layer (1 = the first, most specific)
    top: int = 10
    children: int = 3


@dataclass
class TransformOptions:
    """`gaml topic transform`: per-document posterior mean of theta at every layer."""

    model_path: str
    corpus: str  # bow artifact built with the model's vocabulary
    out: str = "-"  # FILE.jsonl, '-' (JSONL on stdout) or FILE.safetensors
    split: str = "all"  # all, train or test
    refine: int = 0
    seed: int = 0
    batch_size: int = 256


@dataclass
class PerplexityOptions:
    """`gaml topic perplexity`: document-completion perplexity on held-out documents."""

    model_path: str
    corpus: str
    split: str = "test"  # test or all (or train)
    observed: float = 0.8
    refine: int = 200
    seed: int = 0
    batch_size: int = 256


# ---------------------------------------------------------------------------------------------
# shared pieces


def _threads() -> None:
    """Honour OMP_NUM_THREADS in torch (the runs are reproducible per thread count)."""
    import os

    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def _finite(options: dict) -> None:
    """Refuse inf/nan in a float option (a range check lets inf through when it has no maximum)."""
    from ...core.errors import UsageError

    for name, number in options.items():
        if number is not None and not math.isfinite(number):
            raise UsageError(f"{name} {number:g}: must be a finite number")


def load_model(path: str):
    """A fitted topic model artifact: (GBN in eval mode, vocabulary, artifact config)."""
    from ...core.artifacts import load_artifact
    from ...core.errors import InputError
    from .model import GBN
    from .vocab import decode_vocab

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
    from .vocab import check_same_vocab, load_bow

    bow = load_bow(corpus)
    check_same_vocab(bow, cfg["vocab_sha256"], cfg["model"]["vocab_size"], model_path)
    return bow


def _rows(bow, split: str):
    from ...core.errors import InputError

    rows = bow.rows(split)
    if len(rows) == 0:
        hint = "build the corpus with --test-fraction > 0, or pass --split all" if split == "test" else None
        raise InputError(f"{bow.path}: no {split} documents", hint=hint)
    return rows


# ---------------------------------------------------------------------------------------------
# vocab


def vocab(o: VocabOptions) -> dict:
    """Build the bag-of-words artifact o.out from o.corpus; returns the summary."""
    from ...core import console
    from ...core.artifacts import save_artifact
    from ...core.errors import InputError
    from . import corpus as C
    from . import vocab as Vb

    corpus, vocab_from, seed = o.corpus, o.vocab_from, o.seed
    min_df, max_df, min_len, token_pattern = o.min_df, o.max_df, o.min_len, o.token_pattern
    _finite({"--max-df": max_df, "--test-fraction": o.test_fraction})
    if vocab_from is None:
        C.token_regex(token_pattern)  # a bad pattern: one line before the corpus is read
    docs = C.read_documents(corpus)
    split = Vb.split_documents(len(docs.texts), docs.labels, o.test_fraction, seed)
    stops = Vb.stop_words([w.strip() for w in o.extra_stop.split(",")] if o.extra_stop else None,
                          use_default=o.stop_words)
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
        words = Vb.build_vocabulary(toks, split == 0, min_df=min_df, max_df=max_df, max_size=o.max_size)
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
    options = {"min_df": min_df, "max_df": max_df, "max_size": o.max_size, "min_len": min_len,
               "test_fraction": o.test_fraction, "seed": seed, "stop_words_list": sorted(stops),
               "token_pattern": token_pattern}
    config = {"vocab_size": len(words), "vocab_sha256": Vb.vocab_sha(words), "n_docs": int(len(tensors["doc_ids"])),
              "label_names": label_names, "source": docs.source, "dropped_empty": len(empty), "options": options,
              "vocab_from": vocab_from}
    parents = [p for p in (corpus, vocab_from) if p and p not in C.ALIASES and p != "-"]
    path = save_artifact(o.out, tensors, kind=Vb.KIND, config=config, seed=seed, parents=parents)
    sp = tensors["split"]
    return {"out": str(path), "kind": Vb.KIND, "documents": int(len(sp)), "train": int((sp == 0).sum()),
            "test": int((sp == 1).sum()), "vocab_size": len(words), "words": int(tensors["counts"].sum()),
            "labels": label_names, "dropped_empty": len(empty), "source": docs.source}


# ---------------------------------------------------------------------------------------------
# fit


def parse_layers(text: str) -> list[int]:
    """--layers "128,64,32" -> [128, 64, 32]: positive, widest (layer 1) first, never growing."""
    from ...core.errors import UsageError

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


def checkpoint_folder(o: FitOptions) -> Path:
    """o.checkpoint_dir, or OUT without .safetensors + '.ckpt'."""
    if o.checkpoint_dir:
        return Path(o.checkpoint_dir)
    base = o.out[: -len(".safetensors")] if o.out.endswith(".safetensors") else o.out
    return Path(base + ".ckpt")


def fit(o: FitOptions) -> dict:
    """Fit the topic model on o.corpus and write it to o.out; returns the summary."""
    from ...core.errors import UsageError

    _finite({"--lr": o.lr, "--eta": o.eta})
    if not o.lr > 0:
        raise UsageError(f"--lr {o.lr:g}: must be > 0 (Adam's learning rate)")
    ks = parse_layers(o.layers if isinstance(o.layers, str) else ",".join(map(str, o.layers)))
    if o.split not in ("train", "all"):
        raise UsageError(f"--split must be train or all, not {o.split!r}")
    if o.link not in ("gate", "residual"):
        raise UsageError(f"--link must be gate or residual, not {o.link!r}")
    if o.init not in ("corpus", "nmf"):
        raise UsageError(f"--init must be corpus or nmf, not {o.init!r}")
    if o.prior_in not in ("input", "shape"):
        raise UsageError(f"--prior-in must be input or shape, not {o.prior_in!r}")
    _threads()
    from dataclasses import asdict

    import torch

    from ...core.artifacts import save_artifact
    from .train import FitConfig, fit as fit_gbn
    from .vocab import check_trainable, encode_vocab, load_bow

    bow = load_bow(o.corpus)
    rows = bow.rows(o.split)
    check_trainable(bow, rows, o.split)
    ckpt_dir = checkpoint_folder(o)
    if o.resume and not ckpt_dir.is_dir():
        raise UsageError(f"--resume: no checkpoint folder {ckpt_dir}")
    fc = FitConfig(layers=tuple(ks), linear=o.linear, link=o.link, prior_in=o.prior_in, hidden=o.hidden, steps=o.steps,
                   batch_size=o.batch_size, lr=o.lr, eta=o.eta, init=o.init, checkpoint_every=o.checkpoint_every,
                   seed=o.seed)
    model, report = fit_gbn(bow, rows, fc, ckpt_dir, resume=o.resume)
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tensors["vocab_utf8"] = torch.from_numpy(encode_vocab(bow.vocab))
    config = {"model": model.config, "vocab_sha256": bow.config["vocab_sha256"], "vocab_size": bow.vocab_size,
              "fit": {**asdict(fc), "split": o.split}, "report": report, "label_names": bow.label_names}
    path = save_artifact(o.out, tensors, kind=MODEL_KIND, config=config, seed=o.seed, parents=[o.corpus])
    return {"out": str(path), "model": "linear GBN" if o.linear else "generalized GBN", "layers": ks,
            **{k: v for k, v in report.items() if k != "history_tail"}, "checkpoints": str(ckpt_dir)}


# ---------------------------------------------------------------------------------------------
# show


def topic_words(model) -> list:
    """Per layer: topics' word weights (layer l's topics projected to words through Phi_1...Phi_l),
    each a topics x words array."""
    import torch

    out = []
    with torch.no_grad():
        proj = None
        for l in range(model.L):
            phi = model.phi(l)
            proj = phi if proj is None else proj @ phi
            out.append(proj.T.numpy())  # topics x words
    return out


def topic_layers(model, vocab: list[str], top: int = 10, children: int = 3) -> list[list[dict]]:
    """Every layer's topics, first layer first: {"id", "words", "weights"} (words by weight) and,
    above layer 1, "children": [[id, weight], ...], the strongest entries of its column of Phi_l."""
    import numpy as np
    import torch

    words = topic_words(model)
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
    return layers_out


def show(o: ShowOptions) -> dict:
    """The topics of o.model_path: {"model": "linear GBN" | "generalized GBN", "topics_per_layer",
    "layers": the chosen layers (o.layer, or all of them first layer first) as topic_layers gives}."""
    from ...core.errors import UsageError

    model, vocab, cfg = load_model(o.model_path)
    if o.layer is not None and o.layer > model.L:
        raise UsageError(f"--layer {o.layer}: the model has {model.L} layer(s)")
    layers_out = topic_layers(model, vocab, o.top, o.children)
    chosen = [o.layer - 1] if o.layer is not None else list(range(model.L))
    return {"model": "linear GBN" if model.linear else "generalized GBN", "topics_per_layer": model.Ks,
            "layers": [layers_out[l] for l in chosen]}


# ---------------------------------------------------------------------------------------------
# transform


def infer_theta(model, bow, rows, refine: int = 0, seed: int = 0, batch_size: int = 256):
    """Posterior mean of theta at every layer for the documents `rows` of `bow`: a list of
    (documents x K_l) arrays, layer 1 first; the same for any batch_size."""
    import numpy as np
    import torch

    from ...core import console

    thetas = [[] for _ in range(model.L)]
    with console.progress(len(rows), "transform") as bar:
        for a in range(0, len(rows), batch_size):
            x = torch.from_numpy(bow.dense(rows[a:a + batch_size]))
            for l, t in enumerate(model.transform(x, refine_steps=refine, seed=seed, offset=a)):
                thetas[l].append(t.numpy())
            bar.update(len(x))
    return [np.concatenate(t) for t in thetas]


def transform(o: TransformOptions) -> dict:
    """Write the per-layer theta of o.corpus's documents to o.out (JSONL, '-' or .safetensors);
    returns the summary."""
    _threads()
    import numpy as np

    from ...core.artifacts import JsonlWriter, save_artifact
    from .metrics import sparsity

    model, vocab, cfg = load_model(o.model_path)
    bow = _bow_for_model(o.corpus, cfg, o.model_path)
    rows = _rows(bow, o.split)
    thetas = infer_theta(model, bow, rows, o.refine, o.seed, o.batch_size)
    names = bow.label_names or []
    if o.out.endswith(".safetensors"):
        tensors = {f"theta_{l + 1}": thetas[l].astype(np.float32) for l in range(model.L)}
        tensors.update({"doc_ids": bow.doc_ids[rows], "labels": bow.labels[rows], "split": bow.split[rows]})
        save_artifact(o.out, tensors, kind=THETA_KIND, config={"layers": model.Ks, "label_names": bow.label_names,
                                                               "refine_steps": o.refine},
                      seed=o.seed, parents=[o.model_path, o.corpus])
    else:
        with JsonlWriter(o.out) as w:
            for i, r in enumerate(rows):
                lab = int(bow.labels[r])
                w.write({"doc": int(bow.doc_ids[r]), "label": names[lab] if 0 <= lab < len(names) else None,
                         "split": "test" if bow.split[r] else "train",
                         "theta": [[round(float(v), 6) for v in thetas[l][i]] for l in range(model.L)]})
    return {"out": o.out, "documents": int(len(rows)), "layers": model.Ks, "sparsity_layer1": sparsity(thetas[0])}


# ---------------------------------------------------------------------------------------------
# perplexity


def perplexity(o: PerplexityOptions) -> dict:
    """Document-completion perplexity of o.model_path on o.corpus's o.split documents; returns the summary."""
    _finite({"--observed": o.observed})
    _threads()
    import numpy as np
    import torch

    from ...core import console
    from . import metrics as M

    model, vocab, cfg = load_model(o.model_path)
    bow = _bow_for_model(o.corpus, cfg, o.model_path)
    rows = _rows(bow, o.split)
    # chunk by chunk: the split draws from one stream in document order and each document's
    # Monte Carlo draws are its own (GBN.infer), so batch_size changes memory, not the result
    rng = np.random.default_rng(o.seed)
    loglik, words = 0.0, 0.0
    with console.progress(len(rows), "perplexity") as bar:
        for a in range(0, len(rows), o.batch_size):
            obs, held = M.completion_split(bow.dense(rows[a:a + o.batch_size]), o.observed, rng=rng)
            probs = model.word_probs(torch.from_numpy(obs), refine_steps=o.refine, seed=o.seed, offset=a).numpy()
            loglik += M.heldout_loglik(probs, held)
            words += float(held.sum())
            bar.update(len(obs))
    ppl = M.perplexity_from(loglik, words)
    return {"perplexity": ppl, "documents": int(len(rows)), "heldout_words": int(words),
            "observed": o.observed, "split": o.split, "refine_steps": o.refine, "model": o.model_path,
            "corpus": o.corpus}
