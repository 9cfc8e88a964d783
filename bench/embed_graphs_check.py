"""Issue 28's must-hold scored by code outside gaml: embeddings artifacts read with safetensors
alone, labels read from the graph file itself (`node_labels` of its one line), scikit-learn only:
a logistic regression and a 5-nearest-neighbour classifier on standardised embeddings over 20
stratified 10% / 90% splits (StratifiedShuffleSplit), and the NMI of `assignment` when present.

    python bench/embed_graphs.py --seed 1 --keep runs/embed-graphs
    python bench/embed_graphs_check.py runs/embed-graphs/planted/graph.jsonl \
        runs/embed-graphs/planted-{diggr,graphmae,untrained}.safetensors
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

with open(sys.argv[1]) as f:
    y = np.asarray(json.loads(f.readline())["node_labels"])
for path in sys.argv[2:]:
    t = load_file(path)
    x = t["embeddings"].astype(np.float64)
    lin, knn = [], []
    for tr, te in StratifiedShuffleSplit(20, train_size=0.1, random_state=0).split(x, y):
        sc = StandardScaler().fit(x[tr])
        a, b = sc.transform(x[tr]), sc.transform(x[te])
        lin.append((LogisticRegression(max_iter=5000).fit(a, y[tr]).predict(b) == y[te]).mean())
        knn.append((KNeighborsClassifier(5).fit(a, y[tr]).predict(b) == y[te]).mean())
    row = {"artifact": path, "linear": round(float(np.mean(lin)), 4), "linear_std": round(float(np.std(lin)), 4),
           "knn5": round(float(np.mean(knn)), 4)}
    if "assignment" in t:
        row["nmi"] = round(float(normalized_mutual_info_score(y, t["assignment"])), 4)
    print(json.dumps(row))
