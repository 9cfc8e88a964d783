"""Reading a text corpus: plain text (one document a line), JSONL ({"text": ..., "label": ...})
or one of the corpora that ship offline inside gensim's package (no download, ever).

Offline corpora (found in gensim's `test/test_data/`):

    newsgroups   gensim's `mini_newsgroup`: 200 20-newsgroups posts, 100 alt.atheism + 100
                 sci.space, with labels (a zlib-compressed pickle of a scikit-learn Bunch,
                 read with a whitelisting unpickler that builds only dicts, lists, strings
                 and numpy arrays); the mail headers are removed, as scikit-learn's
                 remove=('headers',) does, so the group name does not leak into the text.
    lee          gensim's `lee_background.cor`: 300 news articles (Lee et al. 2005), no labels.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import InputError

ALIASES = {
    "newsgroups": "gensim mini_newsgroup (200 posts of alt.atheism and sci.space)",
    "lee": "gensim lee_background.cor (300 news articles)",
}


@dataclass
class Documents:
    texts: list[str]
    labels: list[str] | None  # None: the corpus has no labels
    lines: list[int]  # 1-based line (record) number of each document in the source
    source: str


def _gensim_data() -> Path:
    try:
        import gensim  # noqa: F401
    except ImportError:
        raise InputError("the offline corpora ship with gensim, which is not installed",
                         hint="pip install gensim, or pip install 'gaml[topic]'") from None
    import gensim

    return Path(gensim.__file__).parent / "test" / "test_data"


def _strip_headers(post: str) -> str:
    _, blank, body = post.partition("\n\n")
    return body if blank else post


def _mini_newsgroup(path: Path) -> Documents:
    """gensim's mini_newsgroup: a protocol-0 pickle of a scikit-learn Bunch, zlib-compressed.
    Only the classes such a Bunch needs are allowed; anything else is refused."""
    import copyreg
    import io
    import pickle
    import zlib

    import numpy as np

    allowed = {
        ("copy_reg", "_reconstructor"): copyreg._reconstructor,
        ("sklearn.datasets.base", "Bunch"): dict,
        ("__builtin__", "dict"): dict,
        ("__builtin__", "object"): object,
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    class _Safe(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed:
                return allowed[(module, name)]
            raise pickle.UnpicklingError(f"refusing {module}.{name}")

    try:
        raw = zlib.decompress(path.read_bytes())
        bunch = _Safe(io.BytesIO(raw), encoding="latin1").load()
        data, target, names = bunch["data"], list(bunch["target"]), list(bunch["target_names"])
    except Exception as exc:  # a changed gensim file: say so in one line
        raise InputError(f"{path}: cannot read gensim's mini_newsgroup ({exc})") from None
    texts = [_strip_headers(str(t)) for t in data]
    labels = [str(names[int(t)]) for t in target]
    return Documents(texts, labels, list(range(1, len(texts) + 1)), f"newsgroups ({path})")


def _np_reconstruct():
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore
    del np
    return _reconstruct


def _plain(lines_iter, name: str) -> Documents:
    texts, lines = [], []
    for i, line in enumerate(lines_iter, 1):
        if line.strip():
            texts.append(line.rstrip("\n"))
            lines.append(i)
    return Documents(texts, None, lines, name)


def _jsonl(path: str, name: str) -> Documents:
    from ...core.artifacts import read_jsonl

    def check(rec):
        if "text" not in rec:
            raise ValueError("no 'text' field")
        if not isinstance(rec["text"], str):
            raise ValueError(f"'text' must be a string, got {type(rec['text']).__name__}")
        lab = rec.get("label")
        if lab is not None and (isinstance(lab, bool) or not isinstance(lab, (str, int))):
            raise ValueError(f"'label' must be a string or an integer, got {type(lab).__name__}")

    texts, labels, lines = [], [], []
    n = 0
    for rec in read_jsonl(path, validate=check, name=name):
        n += 1
        texts.append(rec["text"])
        labels.append(None if rec.get("label") is None else str(rec["label"]))
        lines.append(n)
    has = [l is not None for l in labels]
    if any(has) and not all(has):
        first = lines[has.index(False)]
        raise InputError(f"{name}: some records have a 'label' and some do not (record {first} has none)")
    return Documents(texts, labels if has and all(has) else None, lines, name)


def read_documents(corpus: str) -> Documents:
    """Documents from a file, '-' (stdin), or an offline alias (`newsgroups`, `lee`)."""
    import sys

    p = Path(corpus)
    if corpus in ALIASES and not p.exists():
        data = _gensim_data()
        if corpus == "newsgroups":
            docs = _mini_newsgroup(data / "mini_newsgroup")
        else:
            f = data / "lee_background.cor"
            with open(f, encoding="utf-8", errors="replace") as fh:
                docs = _plain(fh, f"lee ({f})")
    elif corpus == "-":
        from ...core.artifacts import require_piped_stdin

        require_piped_stdin("the corpus")
        text = sys.stdin.read()
        first = next((l for l in text.splitlines() if l.strip()), "")
        if first.lstrip().startswith("{"):
            import io

            docs = _jsonl(io.StringIO(text), "<stdin>")
        else:
            docs = _plain(text.splitlines(), "<stdin>")
    else:
        if not p.exists():
            raise InputError(f"{p}: no such file (corpora: a text file, a .jsonl file, or {', '.join(ALIASES)})")
        if p.is_dir():
            raise InputError(f"{p}: is a folder, expected a text or JSONL corpus")
        if p.suffix == ".safetensors":
            raise InputError(f"{p}: is a safetensors file; `topic vocab` reads raw text (one document a line) or JSONL")
        if p.suffix in (".jsonl", ".json", ".ndjson"):
            docs = _jsonl(str(p), str(p))
        else:
            try:
                with open(p, encoding="utf-8") as fh:
                    docs = _plain(fh, str(p))
            except UnicodeDecodeError:
                raise InputError(f"{p}: not UTF-8 text") from None
    if not docs.texts:
        raise InputError(f"{docs.source}: the corpus is empty (no documents)")
    return docs


_TOKEN = re.compile(r"[^\W\d_][^\W\d_']*[^\W\d_]|[^\W\d_]", re.UNICODE)


@functools.lru_cache(maxsize=8)
def token_regex(pattern: str | None) -> "re.Pattern[str]":
    """The compiled token pattern (None: the default, words of letters). As in scikit-learn's
    CountVectorizer(token_pattern=...), a pattern with one capturing group yields that group;
    a pattern that does not compile, or has more groups, is refused."""
    from ...core.errors import UsageError

    if pattern is None:
        return _TOKEN
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--token-pattern '{pattern}': not a regular expression ({exc})") from None
    if rx.groups > 1:
        raise UsageError(f"--token-pattern '{pattern}': more than one capturing group "
                         f"(use (?:...) for groups that are not the token)")
    return rx


def tokenize(text: str, min_len: int = 3, pattern: str | None = None) -> list[str]:
    """Lower-cased tokens of at least `min_len` characters: by default alphabetic words (inner
    apostrophes kept), else the matches of the regular expression `pattern`."""
    return [t for t in token_regex(pattern).findall(text.lower()) if len(t) >= min_len]
