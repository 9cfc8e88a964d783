"""CFA development runs (bench/results/cfa-development.md): train one model through the Python API on
digits and score it with scikit-learn directly (logistic regression on the artifact split, AUROC of
the uncertainty against the probe's errors).

    gaml dataset digits --out /tmp/cfa/digits.safetensors
    python bench/cfa_dev.py '{"method": "cfa", "steps": 1000, "tag": "c1000"}'   # ContrastiveOptions fields
"""
import os
import json
import sys
DIGITS = os.environ.get("CFA_DIGITS", "/tmp/cfa/digits.safetensors")
from gaml_cli.methods.cfa.train import ContrastiveOptions, train
from gaml_cli.core.artifacts import load_artifact
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import roc_auc_score
kw = json.loads(sys.argv[1])
out = f"/tmp/cfa/m-{kw.get('tag','x')}.safetensors"
import shutil
for p in (out,):
    if os.path.exists(p): os.remove(p)
shutil.rmtree(out.replace('.safetensors','.ckpt'), ignore_errors=True)
tag = kw.pop('tag', 'x')
s = train(ContrastiveOptions(data=DIGITS, out=out, device="cpu", checkpoint_every=0, **kw))
a = load_artifact(out)
x, y, sp = a["embeddings"], a["labels"], a["split"]
tr, te = sp == 0, sp == 1
sc = StandardScaler().fit(x[tr])
clf = LogisticRegression(max_iter=3000).fit(sc.transform(x[tr]), y[tr])
pred = clf.predict(sc.transform(x[te]))
acc = (pred == y[te]).mean()
res = {"tag": tag, "acc": round(float(acc),4), "secs": s["train_seconds"], "loss": s["loss"], **{k: s.get(k) for k in ("contrast","kl","zero_share")}}
if "uncertainty" in a.tensors:
    u = a["uncertainty"][te]
    res["auroc_err"] = round(float(roc_auc_score(pred != y[te], u)), 4)
print(json.dumps(res))
