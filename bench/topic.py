"""Deep topic models, one run: generalized GBN vs linear GBN (gaml topic, through the CLI) vs
scikit-learn LDA, gensim LDA and ProdLDA (bench/prodlda.py) at the same number of first-layer topics.

Metrics, all on the same corpus, vocabulary and train/test split (gaml topic vocab):
  perplexity  document completion on the test documents: 80% of each document's words
              observed, the other 20% predicted (the same seeded split for every method)
  npmi        mean NPMI coherence of each first-layer topic's top 10 words (document
              co-occurrence over all documents of the corpus)
  accuracy    logistic regression on first-layer topic proportions, train -> test split
              (where the corpus has labels)
  sparsity    share of first-layer document-topic proportions below 1e-3
  fit_s       wall-clock fitting time (other jobs may share the CPU: compare with care)
--synthetic adds the recovery check on four corpora drawn from known two-layer GBNs (sizes,
vocabularies, topic counts and seeds in SYNTHETIC): the generalized GBN at `gaml topic fit`'s
defaults with --init corpus and --init nmf against scikit-learn's LDA at its defaults (three
seeds); matched cosine and top-10-word overlap of the first-layer topics, each under a
one-to-one (Hungarian) matching. --fit-args passes more options to the generalized GBN's fit.

    OMP_NUM_THREADS=1 python bench/topic.py --corpus newsgroups --layers 32,16,8 --synthetic --out runs/bench-topic
    OMP_NUM_THREADS=1 python bench/topic.py --only-synthetic --synthetic-sets 0,3 --out runs/bench-topic
    OMP_NUM_THREADS=1 python bench/topic.py --seed 1 --skip linear,gensim,prodlda --fit-args "--init nmf"
    OMP_NUM_THREADS=1 python bench/topic.py --prior-in shape --skip sklearn,gensim,prodlda   # WHAI's inference form

Prints one JSON row per method.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from _cli import gaml, row  # noqa: E402


def lda_metrics(name, topic_word, theta_fn, bow, x_all, obs, held, fit_s, seed):
    from gaml_cli.methods.gbn import metrics as M

    tw = topic_word / topic_word.sum(1, keepdims=True)
    p = theta_fn(obs)
    p = p / p.sum(1, keepdims=True)
    ppl = M.perplexity(p @ tw, held)
    theta = theta_fn(x_all)
    return metrics_row(name, ppl, tw, theta, bow, x_all, fit_s, seed)


def metrics_row(name, ppl, topic_word, theta, bow, x_all, fit_s, seed, **extra):
    from gaml_cli.methods.gbn import metrics as M

    tr, te = bow.split == 0, bow.split == 1
    acc = None
    if bow.label_names:
        acc = M.probe_accuracy(theta[tr], bow.labels[tr], theta[te], bow.labels[te], seed)
    return {"method": name, "topics": int(topic_word.shape[0]), "perplexity": round(ppl, 1),
            "npmi": round(M.npmi(M.top_words(topic_word, 10), x_all), 4),
            "accuracy": None if acc is None else round(acc, 4), "sparsity": round(M.sparsity(theta), 4),
            "fit_s": round(fit_s, 1), **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="newsgroups", help="newsgroups, lee, a text/JSONL file")
    ap.add_argument("--layers", default="32,16,8", help="GBN layers; the first is the LDA peers' topic count")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--refine", type=int, default=200)
    ap.add_argument("--lda-iter", type=int, default=50, help="scikit-learn max_iter and gensim passes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-topic")
    ap.add_argument("--synthetic", action="store_true", help="also the two-layer GBN recovery check")
    ap.add_argument("--synthetic-sets", default="", help="only these synthetic corpora (their seeds, comma-separated)")
    ap.add_argument("--only-synthetic", action="store_true", help="the recovery check alone")
    ap.add_argument("--prodlda-epochs", type=int, default=300, help="ProdLDA training epochs")
    ap.add_argument("--fit-args", default="", help="more options for the generalized GBN's `gaml topic fit`, one string")
    ap.add_argument("--prior-in", default="input", choices=("input", "shape"),
                    help="the GBNs' --prior-in (input: gaml's; shape: WHAI's), newsgroups and synthetic fits alike")
    ap.add_argument("--synthetic-inits", default="corpus,nmf", help="starts of the synthetic fits, comma-separated")
    ap.add_argument("--lda", action=argparse.BooleanOptionalAction, default=True,
                    help="scikit-learn LDA's rows on the synthetic corpora")
    ap.add_argument("--skip", default="", help="comma-separated methods to leave out (gen,linear,sklearn,gensim,prodlda)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from gaml_cli.core.artifacts import load_artifact
    from gaml_cli.methods.gbn import metrics as M
    from gaml_cli.methods.gbn.vocab import load_bow

    torch.set_num_threads(1)
    if args.only_synthetic:
        synthetic_recovery(args, out)
        return
    bow_path = out / "bow.safetensors"
    gaml("topic", "vocab", "--corpus", args.corpus, "--out", bow_path, "--seed", args.seed)
    bow = load_bow(str(bow_path))
    K = int(args.layers.split(",")[0])
    x_all = bow.dense()
    x_test = bow.dense(bow.rows("test"))
    x_train = bow.dense(bow.rows("train"))
    obs, held = M.completion_split(x_test, 0.8, args.seed)
    vocab_index = {w: i for i, w in enumerate(bow.vocab)}
    print(json.dumps({"corpus": args.corpus, "documents": bow.n_docs, "train": len(x_train), "test": len(x_test),
                      "vocab": bow.vocab_size, "heldout_words": int(held.sum()), "layers": args.layers}), flush=True)

    for name, extra in (("generalized GBN", args.fit_args.split()), ("linear GBN", ["--linear"])):
        extra = [*extra, "--prior-in", args.prior_in]
        if ("gen" if name.startswith("generalized") else "linear") in skip:
            continue
        model = out / ("gbn-generalized.safetensors" if name.startswith("generalized") else "gbn-linear.safetensors")
        t0 = time.perf_counter()
        fitted = gaml("topic", "fit", "--corpus", bow_path, "--out", model, "--layers", args.layers, "--steps",
                      args.steps, "--eta", args.eta, "--seed", args.seed, "--checkpoint-every", 0, *extra)
        fit_s = time.perf_counter() - t0
        ppl = gaml("topic", "perplexity", "--model", model, "--corpus", bow_path, "--refine", args.refine,
                   "--seed", args.seed)["perplexity"]
        ppl0 = gaml("topic", "perplexity", "--model", model, "--corpus", bow_path, "--refine", 0,
                    "--seed", args.seed)["perplexity"]
        shown = gaml("topic", "show", "--model", model, "--layer", 1, "--top", bow.vocab_size)["layers"][0]
        topic_word = np.zeros((len(shown), bow.vocab_size))
        for j, t in enumerate(shown):
            topic_word[j, [vocab_index[w] for w in t["words"]]] = t["weights"]
        theta_path = out / (model.stem + "-theta.safetensors")
        gaml("topic", "transform", "--model", model, "--corpus", bow_path, "--out", theta_path)
        theta = load_artifact(theta_path, "topic-theta")["theta_1"]
        row(**metrics_row(name, ppl, topic_word, theta, bow, x_all, fit_s, args.seed,
                          perplexity_no_refine=round(ppl0, 1), layers=fitted["layers"],
                          train_seconds=fitted["train_seconds"], prior_in=args.prior_in,
                          **({"fit_args": args.fit_args} if args.fit_args and name.startswith("generalized") else {})))

    if "sklearn" not in skip:
        from sklearn.decomposition import LatentDirichletAllocation

        t0 = time.perf_counter()
        lda = LatentDirichletAllocation(K, max_iter=args.lda_iter, learning_method="batch",
                                        random_state=args.seed).fit(x_train)
        fit_s = time.perf_counter() - t0
        row(**lda_metrics("scikit-learn LDA", lda.components_, lda.transform, bow, x_all, obs, held, fit_s, args.seed))

    if "gensim" not in skip:
        from gensim.models import LdaModel

        def as_gensim(x):
            return [[(int(i), float(v)) for i, v in zip(np.flatnonzero(r), r[np.flatnonzero(r)])] for r in x]

        t0 = time.perf_counter()
        lda = LdaModel(as_gensim(x_train), num_topics=K, id2word=dict(enumerate(bow.vocab)), passes=args.lda_iter,
                       iterations=100, alpha="auto", eta="auto", random_state=args.seed)
        fit_s = time.perf_counter() - t0

        def theta_fn(x):
            th = np.zeros((len(x), K))
            for d, doc in enumerate(as_gensim(x)):
                for k, v in lda.get_document_topics(doc, minimum_probability=0.0):
                    th[d, k] = v
            return th

        row(**lda_metrics("gensim LDA", lda.get_topics(), theta_fn, bow, x_all, obs, held, fit_s, args.seed))

    if "prodlda" not in skip:
        from prodlda import fit_prodlda

        t0 = time.perf_counter()
        plda = fit_prodlda(x_train, K, epochs=args.prodlda_epochs, seed=args.seed)
        fit_s = time.perf_counter() - t0
        ppl = M.perplexity(plda.word_probs(torch.from_numpy(obs)).numpy(), held)
        theta = plda.theta(torch.from_numpy(x_all)).numpy()
        # its topics' top words: the rows of beta (unnormalised log-weights; the order is what NPMI reads)
        topic_word = plda.beta.weight.detach().numpy().T
        row(**metrics_row("ProdLDA", ppl, topic_word, theta, bow, x_all, fit_s, args.seed))

    if args.synthetic:
        synthetic_recovery(args, out)


# corpora drawn from known two-layer GBNs: (seed, documents, vocabulary, K1, K2)
SYNTHETIC = ((0, 2000, 200, 10, 4), (1, 2000, 300, 12, 5), (2, 2000, 150, 8, 3), (3, 600, 250, 15, 6))


def top_overlap(true_phi, fit_phi, k=10):
    """Mean share of each true topic's k top words among its matched fitted topic's k top words,
    under the one-to-one matching that maximises the total (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    tt = [set(np.argsort(-true_phi[:, i])[:k]) for i in range(true_phi.shape[1])]
    ff = [set(np.argsort(-fit_phi[:, j])[:k]) for j in range(fit_phi.shape[1])]
    o = np.array([[len(a & b) / k for b in ff] for a in tt])
    r, c = linear_sum_assignment(-o)
    return float(o[r, c].mean())


def synthetic_recovery(args, out: Path) -> None:
    """Recovery of the first-layer topics on corpora drawn from known two-layer GBNs: gaml's
    generalized GBN at `gaml topic fit`'s defaults (layers = the true K1, K2) with each start of
    the topics (--init corpus / nmf), and scikit-learn's LDA at its defaults (K1 topics) under
    three seeds; matched cosine and top-10-word overlap, both under one-to-one matchings."""
    import torch
    from sklearn.decomposition import LatentDirichletAllocation

    from gaml_cli.methods.gbn.synthetic import matched_cosine, two_layer_gbn
    from gaml_cli.methods.gbn.train import FitConfig, fit

    only = [int(v) for v in args.synthetic_sets.split(",")] if args.synthetic_sets else None
    for seed, n_docs, V, K1, K2 in SYNTHETIC:
        if only is not None and seed not in only:
            continue
        sbow, phi1, _ = two_layer_gbn(n_docs=n_docs, V=V, K1=K1, K2=K2, words_per_doc=120, seed=seed)
        rows = np.arange(sbow.n_docs)
        corpus = {"corpus_seed": seed, "documents": sbow.n_docs, "vocab": V, "layers": [K1, K2]}
        for init in args.synthetic_inits.split(","):
            t0 = time.perf_counter()
            model, _ = fit(sbow, rows, FitConfig(layers=(K1, K2), init=init, checkpoint_every=0, seed=args.seed,
                                                 prior_in=args.prior_in), out / "synthetic.ckpt")
            with torch.no_grad():
                fp = model.phi(0).numpy()
            row(method=f"generalized GBN, gaml topic fit defaults, --init {init} (synthetic two-layer GBN)", **corpus,
                seed=args.seed, prior_in=args.prior_in, matched_cosine=round(matched_cosine(phi1, fp), 4),
                top10_overlap=round(top_overlap(phi1, fp), 4), fit_s=round(time.perf_counter() - t0, 1))
        if not args.lda:
            continue
        x = sbow.dense()
        for s in (0, 1, 2):
            t0 = time.perf_counter()
            lda = LatentDirichletAllocation(K1, random_state=s).fit(x)
            fp = (lda.components_ / lda.components_.sum(1, keepdims=True)).T
            row(method="scikit-learn LDA, defaults (synthetic two-layer GBN)", **corpus, seed=s,
                matched_cosine=round(matched_cosine(phi1, fp), 4), top10_overlap=round(top_overlap(phi1, fp), 4),
                fit_s=round(time.perf_counter() - t0, 1))

if __name__ == "__main__":
    main()
