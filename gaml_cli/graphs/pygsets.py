"""PyG's benchmark data sets read from a local folder, by PyG's own loaders, never downloaded
(gaml runs offline; a folder that lacks the files is refused in one line before PyG is called,
so nothing is written).

Specs (`gaml embed --dataset SPEC --root DIR`):

- `planetoid:NAME` (Cora, CiteSeer, PubMed): `torch_geometric.datasets.Planetoid(DIR, NAME)`,
  which reads `DIR/NAME/raw/ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}` (the files of
  Kipf & Welling's repository, as PyG downloads them; note that these are Python pickles and PyG
  unpickles them: load only files you trust). One graph, node level; labels `y`; the public split
  (20 labelled nodes a class, 500 validation, 1,000 test) as `split` (0 train, 1 validation,
  2 test, -1 none).
- `tu:NAME` (MUTAG, PROTEINS, IMDB-BINARY, ...): `torch_geometric.datasets.TUDataset(DIR, NAME)`,
  which reads `DIR/NAME/raw/NAME_{A,graph_indicator,graph_labels,...}.txt` (the TU Dortmund
  collection's files). Graph level; labels the graph labels; node features the one-hot node
  labels (and attributes) where the set has them, else none (the encoder then uses degrees).
- `karate`: PyG's built-in Karate Club (no folder): one graph of 34 nodes, 4 communities.

PyG writes its processed copy under `DIR/NAME/processed/` on first use (its own behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError, UsageError

PLANETOID = ("Cora", "CiteSeer", "PubMed")
FAMILIES = ("planetoid", "tu", "karate")
HOW = ("on a machine with internet: python -c \"from torch_geometric.datasets import {cls}; {cls}('DIR', '{name}')\" "
       "then copy DIR here")


@dataclass
class PygSet:
    data: list  # torch_geometric.data.Data
    level: str  # node | graph
    labels: np.ndarray | None
    split: np.ndarray | None  # node level: 0 train, 1 validation, 2 test, -1 none
    source: str  # the spec


def parse(spec: str) -> tuple[str, str]:
    """('planetoid' | 'tu' | 'karate', canonical name) of a spec."""
    family, _, name = spec.partition(":")
    family = family.strip().lower()
    if family == "karate":
        if name:
            raise UsageError(f"--dataset {spec!r}: karate takes no name (PyG's built-in Karate Club)")
        return "karate", "KarateClub"
    if family not in FAMILIES or not name.strip():
        raise UsageError(f"--dataset {spec!r}: expected planetoid:NAME ({', '.join(PLANETOID)}), tu:NAME (e.g. MUTAG) "
                         f"or karate")
    name = name.strip()
    if family == "planetoid":
        canon = {n.lower(): n for n in PLANETOID}.get(name.lower())
        if canon is None:
            raise UsageError(f"--dataset {spec!r}: Planetoid has {', '.join(PLANETOID)}")
        return family, canon
    if "/" in name or name.startswith("."):
        raise UsageError(f"--dataset {spec!r}: not a TU data set name")
    return family, name


def required_files(family: str, name: str, root: Path) -> list[Path]:
    if family == "planetoid":
        raw = root / name / "raw"
        return [raw / f"ind.{name.lower()}.{part}" for part in ("x", "tx", "allx", "y", "ty", "ally", "graph",
                                                               "test.index")]
    raw = root / name / "raw"
    return [raw / f"{name}_{part}.txt" for part in ("A", "graph_indicator", "graph_labels")]


def load(spec: str, root: str | None) -> PygSet:
    """Load a spec (module docstring) from `root`."""
    family, name = parse(spec)
    if family == "karate":
        from torch_geometric.datasets import KarateClub

        d = KarateClub()[0]
        return PygSet([d.clone()], "node", d.y.numpy().astype(np.int64), None, "karate")
    if not root:
        raise UsageError(f"--dataset {spec}: give --root DIR, the folder that holds {name}/raw/")
    rootp = Path(root)
    missing = [p for p in required_files(family, name, rootp) if not p.is_file()]
    if missing:
        cls = "Planetoid" if family == "planetoid" else "TUDataset"
        raise InputError(f"--dataset {spec}: {missing[0]} is missing ({len(missing)} of PyG's {cls} files absent "
                         f"under {rootp / name / 'raw'}; gaml does not download)",
                         hint=HOW.format(cls=cls, name=name))
    try:
        if family == "planetoid":
            from torch_geometric.datasets import Planetoid

            ds = Planetoid(str(rootp), name)
        else:
            from torch_geometric.datasets import TUDataset

            ds = TUDataset(str(rootp), name)
    except Exception as exc:  # PyG's parsers raise anything on a corrupt file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--dataset {spec}: PyG could not read the files under {rootp / name} ({msg})") from None
    if family == "planetoid":
        d = ds[0]
        split = np.full(int(d.num_nodes), -1, dtype=np.int64)
        split[d.train_mask.numpy()] = 0
        split[d.val_mask.numpy()] = 1
        split[d.test_mask.numpy()] = 2
        return PygSet([d.clone()], "node", d.y.numpy().astype(np.int64), split, f"planetoid:{name}")
    data = [ds[i] for i in range(len(ds))]
    for d in data:
        if getattr(d, "x", None) is not None and d.x.shape[1] == 0:
            d.x = None
    labels = None
    if all(getattr(d, "y", None) is not None for d in data):
        labels = np.asarray([int(d.y.view(-1)[0]) for d in data], dtype=np.int64)
    return PygSet(data, "graph", labels, None, f"tu:{name}")
