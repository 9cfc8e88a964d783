"""Vocabulary and the sparse bag-of-words artifact (kind "bow"), reusable across runs.

A bow artifact holds the counts in CSR form (`indptr`, `indices`, `counts`), per document
`labels` (-1: none), `split` (0 train, 1 test) and `doc_ids` (the document's line/record
number in the source), and the vocabulary itself as UTF-8 bytes (`vocab_utf8`, words joined
by newlines). Its config records the vocabulary's size and sha256, so a model and a corpus
built with different vocabularies are told apart before any work is done.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.errors import InputError, UsageError
from .corpus import Documents, tokenize

KIND = "bow"


def vocab_sha(words: list[str]) -> str:
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


def encode_vocab(words: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8).copy()


def decode_vocab(arr) -> list[str]:
    return bytes(np.asarray(arr, dtype=np.uint8)).decode("utf-8").split("\n")


def stop_words(extra: list[str] | None = None, use_default: bool = True) -> frozenset[str]:
    words: set[str] = set()
    if use_default:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        words |= set(ENGLISH_STOP_WORDS)
    return frozenset(words | {w.lower() for w in (extra or [])})


def split_documents(n: int, labels: list[str] | None, test_fraction: float, seed: int) -> np.ndarray:
    """0 train / 1 test per document; stratified by label when there are labels."""
    split = np.zeros(n, dtype=np.uint8)
    if test_fraction <= 0 or n < 2:
        return split
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(np.array(labels) == g) for g in sorted(set(labels))]
    for idx in groups:
        m = int(round(test_fraction * len(idx)))
        m = min(m, len(idx) - 1) if len(idx) > 1 else 0
        split[rng.permutation(idx)[:m]] = 1
    return split


def build_vocabulary(token_docs: list[list[str]], train: np.ndarray, *, min_df: int, max_df: float,
                     max_size: int) -> list[str]:
    """Words kept: document frequency (on the training documents) in [min_df, max_df * #docs],
    the max_size most frequent by total count, ties broken alphabetically."""
    df: Counter[str] = Counter()
    tf: Counter[str] = Counter()
    n_train = 0
    for toks, is_train in zip(token_docs, train):
        if not is_train:
            continue
        n_train += 1
        tf.update(toks)
        df.update(set(toks))
    hi = max_df * n_train if max_df <= 1.0 else max_df
    kept = [w for w, d in df.items() if d >= min_df and d <= hi]
    kept.sort(key=lambda w: (-tf[w], w))
    return sorted(kept[:max_size])


@dataclass
class Bow:
    """The bag-of-words corpus in memory (CSR) with its vocabulary."""

    indptr: np.ndarray
    indices: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    doc_ids: np.ndarray
    vocab: list[str]
    label_names: list[str] | None
    config: dict[str, Any]
    path: str = ""

    @property
    def n_docs(self) -> int:
        return len(self.indptr) - 1

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def dense(self, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(self.n_docs) if rows is None else np.asarray(rows)
        out = np.zeros((len(rows), self.vocab_size), dtype=np.float32)
        for i, r in enumerate(rows):
            a, b = self.indptr[r], self.indptr[r + 1]
            out[i, self.indices[a:b]] = self.counts[a:b]
        return out

    def rows(self, which: str) -> np.ndarray:
        if which == "all":
            return np.arange(self.n_docs)
        code = {"train": 0, "test": 1}[which]
        return np.flatnonzero(self.split == code)

    def lengths(self) -> np.ndarray:
        return np.add.reduceat(self.counts, self.indptr[:-1]) if len(self.counts) else np.zeros(self.n_docs)


def why_no_vocabulary(raw_docs: list[list[str]], stops: frozenset[str], train: np.ndarray, *, min_df: int,
                      max_df: float) -> dict[str, int]:
    """What the filters did to the training documents' tokens, for the message when no word
    is left: tokens seen, distinct words, and how many distinct words each filter dropped."""
    df: Counter[str] = Counter()
    tokens = n_train = 0
    for toks, is_train in zip(raw_docs, train):
        if is_train:
            n_train += 1
            tokens += len(toks)
            df.update(set(toks))
    stop = sum(1 for w in df if w in stops)
    hi = max_df * n_train if max_df <= 1.0 else max_df
    rest = [d for w, d in df.items() if w not in stops]
    low = sum(1 for d in rest if d < min_df)
    return {"documents": n_train, "tokens": tokens, "distinct": len(df), "stop_words": stop, "min_df": low,
            "max_df": sum(1 for d in rest if d >= min_df and d > hi)}


def to_bow(docs: Documents, vocab: list[str], stops: frozenset[str], min_len: int, split: np.ndarray,
           label_names: list[str] | None, pattern: str | None = None) -> tuple[dict[str, np.ndarray], list[int]]:
    """Count in-vocabulary words per document; documents with none are dropped (their line
    numbers are returned so the caller can say which)."""
    index = {w: i for i, w in enumerate(vocab)}
    indptr, indices, counts, labels, keep_split, doc_ids, empty = [0], [], [], [], [], [], []
    lab_index = {n: i for i, n in enumerate(label_names or [])}
    for d, text in enumerate(docs.texts):
        c = Counter(index[t] for t in tokenize(text, min_len, pattern) if t not in stops and t in index)
        if not c:
            empty.append(docs.lines[d])
            continue
        ids = sorted(c)
        indices.extend(ids)
        counts.extend(c[i] for i in ids)
        indptr.append(len(indices))
        labels.append(lab_index[docs.labels[d]] if docs.labels is not None and docs.labels[d] in lab_index else -1)
        keep_split.append(split[d])
        doc_ids.append(docs.lines[d])
    tensors = {
        "indptr": np.asarray(indptr, dtype=np.int64),
        "indices": np.asarray(indices, dtype=np.int32),
        "counts": np.asarray(counts, dtype=np.float32),
        "labels": np.asarray(labels, dtype=np.int64),
        "split": np.asarray(keep_split, dtype=np.uint8),
        "doc_ids": np.asarray(doc_ids, dtype=np.int64),
        "vocab_utf8": encode_vocab(vocab),
    }
    return tensors, empty


def load_bow(path: str) -> Bow:
    from pathlib import Path

    from ...core.artifacts import load_artifact

    if str(path) != "-" and Path(path).suffix not in (".safetensors",) and Path(path).exists():
        raise InputError(f"{path}: expected a bag-of-words artifact (.safetensors); build one with "
                         f"`gaml topic vocab --corpus {path} --out bow.safetensors`")
    art = load_artifact(path, KIND)
    t, cfg = art.tensors, art.config
    try:
        vocab = decode_vocab(t["vocab_utf8"])
        bow = Bow(indptr=t["indptr"].astype(np.int64), indices=t["indices"].astype(np.int64),
                  counts=t["counts"].astype(np.float32), labels=t["labels"].astype(np.int64),
                  split=t["split"].astype(np.uint8), doc_ids=t["doc_ids"].astype(np.int64), vocab=vocab,
                  label_names=cfg.get("label_names"), config=cfg, path=str(path))
    except KeyError as exc:
        raise InputError(f"{path}: bow artifact lacks tensor {exc}") from None
    n = bow.n_docs
    ok = (n >= 0 and len(bow.labels) == n and len(bow.split) == n and len(bow.doc_ids) == n
          and len(bow.indices) == len(bow.counts) and (n == 0 or bow.indptr[-1] == len(bow.indices))
          and np.all(np.diff(bow.indptr) >= 0)
          and (len(bow.indices) == 0 or (bow.indices.min() >= 0 and bow.indices.max() < len(vocab)))
          and vocab_sha(vocab) == cfg.get("vocab_sha256"))
    if not ok:
        raise InputError(f"{path}: corrupt bow artifact (its tensors and vocabulary do not agree)")
    return bow


def check_trainable(bow: Bow, rows: np.ndarray, what: str) -> None:
    """Refuse, before any training, a corpus that cannot be trained on."""
    if bow.vocab_size == 0 or bow.vocab == [""]:
        raise InputError(f"{bow.path}: the vocabulary is empty")
    if len(rows) == 0:
        raise InputError(f"{bow.path}: no {what} documents (the corpus is empty)")
    lens = bow.lengths()[rows]
    if np.any(lens <= 0):
        bad = int(bow.doc_ids[rows[np.flatnonzero(lens <= 0)[0]]])
        raise InputError(f"{bow.path}: document {bad} has no in-vocabulary words")


def check_same_vocab(bow: Bow, vocab_sha256: str, vocab_size: int, model_path: str) -> None:
    if bow.config.get("vocab_sha256") != vocab_sha256:
        raise UsageError(
            f"{bow.path} was built with another vocabulary ({bow.vocab_size} words) than {model_path} "
            f"({vocab_size} words); rebuild the corpus with `gaml topic vocab --corpus FILE --vocab "
            f"<the model's bow artifact>`")
