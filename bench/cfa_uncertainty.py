"""CFA development: candidate uncertainties of a trained model on digits (bench/results/cfa-development.md),
each scored by the AUROC with which it flags the wrong test rows of a scikit-learn logistic probe.

    python bench/cfa_uncertainty.py /tmp/cfa/m-c1000.safetensors
"""
import os
import sys

import torch
from gaml_cli.methods.cfa.train import load_model, load_images
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import roc_auc_score
m, cfg = load_model(sys.argv[1])
im = load_images(os.environ.get("CFA_DIGITS", "/tmp/cfa/digits.safetensors"))
x = torch.from_numpy(im.x); y = im.tensors["labels"]; sp = im.tensors["split"]
with torch.no_grad():
    h = m.encoder(x); p1, p2 = m.posterior(h)
    mean = m.mean(p1, p2)
tr, te = sp == 0, sp == 1
def probe(f):
    f = f.numpy() if hasattr(f, "numpy") else f
    sc = StandardScaler().fit(f[tr]); clf = LogisticRegression(max_iter=3000).fit(sc.transform(f[tr]), y[tr])
    pr = clf.predict_proba(sc.transform(f[te])); return clf.classes_[pr.argmax(1)], pr
pred, pr = probe(mean)
wrong = pred != y[te]
print("acc mean", 1 - wrong.mean(), "acc enc", (probe(h)[0] == y[te]).mean())
D = mean.shape[1]
if not m.nonneg:
    mu, ls = p1, p2
    cands = {"entropy": ls.sum(1), "rel_entropy": ls.sum(1) - D * torch.log(mu.norm(dim=1)),
             "neg_mu_norm": -mu.norm(dim=1), "snr_inv": (torch.exp(2*ls).sum(1) / mu.pow(2).sum(1)),
             "enc_norm_neg": -h.norm(dim=1)}
else:
    k, lam = p1, p2
    from gaml_cli.methods.cfa.loss import weibull_entropy
    cands = {"entropy": weibull_entropy(k, lam), "neg_logk": -torch.log(k).sum(1),
             "rel_entropy": weibull_entropy(k, lam) - D*torch.log(mean.norm(dim=1)), "neg_mean_norm": -mean.norm(dim=1)}
cands["probe_maxprob_neg"] = torch.from_numpy(-pr.max(1)).float()
for n, v in cands.items():
    v = v.numpy() if hasattr(v, "numpy") else v
    vv = v[te] if len(v) == len(y) else v
    print(n, round(roc_auc_score(wrong, vv), 3))
