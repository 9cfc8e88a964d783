"""The must-hold of issue 29 scored by code outside gaml: scikit-learn on embeddings artifacts read with
safetensors alone (a logistic regression on standardised embeddings, train split -> test split;
roc_auc_score of the uncertainty against its wrong test rows; the zero share of non-negative rows).

    python bench/embed_images.py --sets digits --keep runs/embed-images
    python bench/embed_images_check.py runs/embed-images/digits-{simclr,cfa,cnfa}.safetensors
"""
import json
import sys
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
for path in sys.argv[1:]:
    t = load_file(path)
    x, y, sp = t["embeddings"], t["labels"], t["split"]
    tr, te = sp == 0, sp == 1
    sc = StandardScaler().fit(x[tr])
    clf = LogisticRegression(max_iter=5000).fit(sc.transform(x[tr]), y[tr])
    wrong = clf.predict(sc.transform(x[te])) != y[te]
    row = {"artifact": path, "accuracy": round(float(1 - wrong.mean()), 4), "errors": int(wrong.sum())}
    if "uncertainty" in t:
        row["uncertainty_auroc_errors"] = round(float(roc_auc_score(wrong, t["uncertainty"][te])), 4)
    if (x >= 0).all():
        row["nonnegative"] = True
        row["zero_share_1e-3"] = round(float((x <= 1e-3).mean()), 4)
    print(json.dumps(row))
