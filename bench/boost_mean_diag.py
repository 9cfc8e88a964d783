"""Where DBT's RMSE goes on Boston: the RMSE of DBT's mean model f(x) against the mean and median
of its draws, with CARD's NLL, QICE and PICP, per split of bench/boost.py's card-uci protocol
(split k: seed k, 90/10, 1,000 draws), for DBTRegressor's defaults and variants given as
FIELD=VALUE (DBTConfig fields). One JSON line per (split, variant).

    python bench/boost_mean_diag.py 3 num_leaves=8 min_child_samples=100
    python bench/boost_mean_diag.py 3 noise_samples=30 --no-default
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from gaml_cli.methods.dbt import data as ds  # noqa: E402
from gaml_cli.methods.dbt.metrics import regression_report  # noqa: E402
from gaml_cli.methods.dbt.model import DBTRegressor  # noqa: E402


def main() -> None:
    df = ds.load("boston")
    variants = {} if "--no-default" in sys.argv else {"default": {}}
    sys.argv = [a for a in sys.argv if a != "--no-default"]
    for spec in sys.argv[2:]:
        k, v = spec.split("=")
        variants[spec] = {k: type(getattr(DBTRegressor().config, k))(v)}
    for k in range(int(sys.argv[1])):
        tr, te = ds.split(df, 0.1, k)
        Xtr, ytr = tr.drop(columns=["medv"]), tr["medv"].to_numpy(float)
        Xte, yte = te.drop(columns=["medv"]), te["medv"].to_numpy(float)
        for name, kw in variants.items():
            t0 = time.time()
            m = DBTRegressor(seed=k, **kw).fit(Xtr, ytr)
            f = m._f(m.schema.encode(Xte)[0])[:, 0] * m.y_std + m.y_mean
            s = m.sample(Xte, 1000, seed=k)
            rep = regression_report(s, yte)
            print(json.dumps({"split": k, "variant": name, "rmse_f": round(float(np.sqrt(np.mean((f - yte) ** 2))), 4),
                  "rmse_mean": round(rep["rmse"], 4), "rmse_median": round(float(np.sqrt(np.mean((np.median(s, 1) - yte) ** 2))), 4),
                  "nll_card": round(rep["nll_card"], 4), "qice": round(rep["qice"], 4), "picp": round(rep["picp"], 4),
                  "s": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
