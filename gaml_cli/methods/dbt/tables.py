"""Tables in, feature matrices out: CSV, Parquet or JSONL; categoricals and missing values.

Features are handed to LightGBM as float64 columns: numeric columns as they are (NaN =
missing, which LightGBM routes natively), categorical columns (strings, booleans,
pandas categories) as integer codes of the levels seen at fit time, declared to LightGBM as
categorical. A level not seen at fit time becomes missing (NaN) and is counted, so the
caller can warn; LightGBM sends missing categorical values down the "other" branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import InputError, UsageError

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
            ".jsonl": "jsonl", ".ndjson": "jsonl"}


def read_table(path: str):
    """A pandas DataFrame from a .csv/.tsv, .parquet or .jsonl file; InputError on anything unreadable."""
    import pandas as pd

    p = Path(path)
    kind = SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise UsageError(f"{path}: unknown table type {p.suffix or '(no suffix)'!r}; use .csv, .tsv, .parquet or .jsonl")
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, expected a table file")
    try:
        if kind == "csv":
            df = pd.read_csv(p)
        elif kind == "tsv":
            df = pd.read_csv(p, sep="\t")
        elif kind == "parquet":
            df = pd.read_parquet(p)
        else:
            df = _read_jsonl(p)
    except InputError:
        raise
    except ImportError as exc:
        raise UsageError(f"{path}: reading {kind} needs {exc.name} (pip install 'gaml[boost]')") from None
    except Exception as exc:  # pandas/pyarrow parser errors of all kinds
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read as {kind} ({first})") from None
    if len(df) == 0:
        raise InputError(f"{path}: the table has no rows")
    df.columns = [str(c) for c in df.columns]
    return df


def _read_jsonl(p: Path):
    import pandas as pd

    from ...core.artifacts import read_jsonl

    rows = list(read_jsonl(p))  # malformed lines are reported with their number
    return pd.DataFrame.from_records(rows)


def row_locator(path: str, n_rows: int):
    """A function naming data row i (0-based, the table's order) where a person finds it in the
    file: "line N" for CSV/TSV (the header is line 1, blank lines skipped as pandas skips them,
    a quoted cell over several lines counted) and JSONL (blank lines counted, as the JSONL
    reader numbers lines); "row N of M" counted from 1 for Parquet, which has no lines. The
    file is scanned only when a message needs a line."""
    kind = SUFFIXES.get(Path(path).suffix.lower())
    cache: list[list[int]] = []

    def where(i: int) -> str:
        if kind == "parquet" or kind is None:
            return f"row {i + 1} of {n_rows}"
        if not cache:
            try:
                cache.append(_data_lines(Path(path), kind))
            except (OSError, ValueError):
                cache.append([])
        lines = cache[0]
        return f"line {lines[i]}" if i < len(lines) else f"row {i + 1} of {n_rows}"

    return where


def _data_lines(p: Path, kind: str) -> list[int]:
    """The (first) line number of every data row of a CSV/TSV or JSONL file."""
    out: list[int] = []
    with open(p, newline="", encoding="utf-8", errors="replace") as fh:
        if kind == "jsonl":
            return [n for n, line in enumerate(fh, 1) if line.strip()]
        import csv

        reader = csv.reader(fh, delimiter="\t" if kind == "tsv" else ",")
        prev, header = 0, False
        for rec in reader:
            start, prev = prev + 1, reader.line_num
            if not rec:  # a blank line
                continue
            if not header:
                header = True
                continue
            out.append(start)
    return out


def check_numeric_columns(X, where) -> None:
    """Refuse a column of numbers with a few cells that are not (a typo such as '0.0x3'): pandas
    reads it as text, and it would silently become a categorical feature of as many levels as
    distinct values. `where(i)` names data row i. A column mostly of text stays categorical."""
    import pandas as pd

    for c in X.columns:
        col = X[c]
        if col.dtype != object and not pd.api.types.is_string_dtype(col.dtype):
            continue
        present = col.notna().to_numpy()
        if any(isinstance(v, (bool, np.bool_)) for v in col[present].tolist()):
            continue
        try:
            bad = present & pd.to_numeric(col, errors="coerce").isna().to_numpy()
        except (TypeError, ValueError):  # lists or objects in JSONL cells: not a column of numbers
            continue
        n_bad, n_num = int(bad.sum()), int(present.sum() - bad.sum())
        if 0 < n_bad <= n_num:
            i = int(np.flatnonzero(bad)[0])
            raise UsageError(f"feature column {str(c)!r} holds numbers but {where(i)} holds {col.iloc[i]!r} "
                             f"({n_bad} of {n_bad + n_num} cells are not numbers); correct it, empty the cell "
                             f"(a missing value), or --drop {c}")


def split_target(df, target: str):
    """(features DataFrame, target Series); UsageError when the column is missing."""
    if target not in df.columns:
        cols = ", ".join(list(df.columns)[:12]) + (" ..." if len(df.columns) > 12 else "")
        raise UsageError(f"the table has no target column {target!r} (columns: {cols})")
    return df.drop(columns=[target]), df[target]


def numeric_target(y, target: str, where=None) -> np.ndarray:
    """A float target for regression; UsageError naming the first non-numeric value (where(i):
    the place of row i in the file, see row_locator; default "row i", 0-based)."""
    import pandas as pd

    vals = pd.to_numeric(y, errors="coerce")
    bad = vals.isna() & y.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UsageError(f"target column {target!r} is not numeric ({where(i) if where else f'row {i}'}: {y.iloc[i]!r}); "
                         "for class labels use --task classify")
    return vals.to_numpy(dtype=np.float64)


def _is_categorical(series) -> bool:
    import pandas as pd

    return (isinstance(series.dtype, pd.CategoricalDtype) or series.dtype == object
            or pd.api.types.is_string_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype))


@dataclass
class Schema:
    """The feature columns seen at fit time and the levels of each categorical one."""

    columns: list[str]
    categorical: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def infer(cls, X) -> "Schema":
        import pandas as pd

        if not isinstance(X, pd.DataFrame):
            X = np.asarray(X)
            return cls(columns=[f"x{i}" for i in range(X.shape[1])])
        cats = {}
        for c in X.columns:
            if _is_categorical(X[c]):
                levels = sorted({str(v) for v in X[c].dropna().tolist()})
                cats[str(c)] = levels
        return cls(columns=[str(c) for c in X.columns], categorical=cats)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c in self.categorical]

    def encode(self, X, where=None) -> tuple[np.ndarray, dict[str, int]]:
        """float64 (n, d) matrix for LightGBM and {column: number of unseen levels}; where(i)
        names row i in a message (see row_locator; default "row i", 0-based)."""
        import pandas as pd

        if not isinstance(X, pd.DataFrame):
            arr = np.asarray(X, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != len(self.columns):
                raise UsageError(f"expected {len(self.columns)} feature columns, got {arr.shape[-1] if arr.ndim else 0}")
            return arr, {}
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise UsageError(f"the table lacks feature column(s) the model was fitted on: {', '.join(missing[:8])}")
        out = np.empty((len(X), len(self.columns)), dtype=np.float64)
        unseen: dict[str, int] = {}
        for j, c in enumerate(self.columns):
            col = X[c]
            if c in self.categorical:
                index = {lvl: k for k, lvl in enumerate(self.categorical[c])}
                codes = np.full(len(col), np.nan)
                n_unseen = 0
                for i, v in enumerate(col.tolist()):
                    if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
                        continue
                    k = index.get(str(v))
                    if k is None:
                        n_unseen += 1
                    else:
                        codes[i] = k
                if n_unseen:
                    unseen[c] = n_unseen
                out[:, j] = codes
            else:
                vals = pd.to_numeric(col, errors="coerce")
                bad = vals.isna() & col.notna()
                if bad.any():
                    i = int(np.flatnonzero(bad.to_numpy())[0])
                    raise UsageError(f"feature column {c!r} was numeric at fit time but "
                                     f"{where(i) if where else f'row {i}'} holds {col.iloc[i]!r}")
                out[:, j] = vals.to_numpy(dtype=np.float64)
        return out, unseen

    def to_dict(self) -> dict:
        return {"columns": self.columns, "categorical": self.categorical}

    @classmethod
    def from_dict(cls, d: dict) -> "Schema":
        return cls(columns=list(d["columns"]), categorical={k: list(v) for k, v in d.get("categorical", {}).items()})


def write_table(df, path: str) -> None:
    """Write a DataFrame as .csv/.tsv/.parquet/.jsonl (by suffix), atomically."""
    from ...core.artifacts import atomic_path

    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise UsageError(f"{path}: unknown table type; use .csv, .tsv, .parquet or .jsonl")
    with atomic_path(path) as tmp:
        if kind == "csv":
            df.to_csv(tmp, index=False)
        elif kind == "tsv":
            df.to_csv(tmp, index=False, sep="\t")
        elif kind == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True)
