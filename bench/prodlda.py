"""ProdLDA (Srivastava & Sutton, "Autoencoding Variational Inference for Topic Models", ICLR
2017), written here in plain torch as a peer for bench/topic.py; not part of gaml.

    encoder    x -> softplus(W1 x) -> softplus(W2 .) -> dropout -> mu = BN(W_mu .), ln sigma^2 = BN(W_s .)
    prior      the Laplace approximation in the softmax basis of Dirichlet(alpha):
                 mu0_k = ln alpha_k - mean_j ln alpha_j
                 sigma0_k^2 = (1/alpha_k)(1 - 2/K) + (1/K^2) sum_j 1/alpha_j
    theta      softmax(mu + sigma * eps), dropout
    decoder    p(w | theta) = softmax(BN(theta beta)): beta (topics x words) is not normalised
               per topic, so the word distribution is a weighted product of experts
    loss       -sum_w x_w ln p(w | theta) + KL(N(mu, sigma^2) || N(mu0, sigma0^2))

Defaults as in the authors' code: alpha = 1, 100 hidden units, dropout 0.2, Adam lr 2e-3 with
beta1 0.99. Document completion: theta = softmax(mu) of the observed words (eval mode: no
dropout, batch norm with its running statistics), predicting with softmax(BN(theta beta)).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ProdLDA(nn.Module):
    def __init__(self, V: int, K: int, hidden: int = 100, dropout: float = 0.2, alpha: float = 1.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(V, hidden), nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.mu, self.logvar = nn.Linear(hidden, K), nn.Linear(hidden, K)
        self.bn_mu = nn.BatchNorm1d(K, affine=False)
        self.bn_logvar = nn.BatchNorm1d(K, affine=False)
        self.beta = nn.Linear(K, V, bias=False)
        self.bn_beta = nn.BatchNorm1d(V, affine=False)
        nn.init.xavier_uniform_(self.beta.weight)
        a = torch.full((K,), float(alpha))
        self.register_buffer("mu0", a.log() - a.log().mean())
        self.register_buffer("var0", (1.0 / a) * (1 - 2.0 / K) + (1.0 / a).sum() / K ** 2)

    def encode(self, x):
        h = self.drop(F.softplus(self.fc2(F.softplus(self.fc1(x)))))
        return self.bn_mu(self.mu(h)), self.bn_logvar(self.logvar(h))

    def decode(self, theta):
        return torch.log_softmax(self.bn_beta(self.beta(theta)), dim=1)

    def loss(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        theta = self.drop(torch.softmax(z, dim=1))
        rec = -(x * self.decode(theta)).sum(1)
        var = logvar.exp()
        kl = 0.5 * ((var / self.var0) + (mu - self.mu0) ** 2 / self.var0 - 1 + self.var0.log() - logvar).sum(1)
        return (rec + kl).mean()

    @torch.no_grad()
    def theta(self, x):
        return torch.softmax(self.encode(x)[0], dim=1)

    @torch.no_grad()
    def word_probs(self, x):
        return self.decode(self.theta(x)).exp()


def fit_prodlda(x_train: np.ndarray, K: int, epochs: int = 300, batch_size: int = 64, lr: float = 2e-3,
                seed: int = 0) -> ProdLDA:
    torch.manual_seed(seed)
    model = ProdLDA(x_train.shape[1], K)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.99, 0.999))
    x = torch.from_numpy(np.asarray(x_train, dtype=np.float32))
    n = len(x)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for a in range(0, n, batch_size):
            idx = perm[a:a + batch_size]
            if len(idx) < 2:  # batch norm needs two documents
                continue
            loss = model.loss(x[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model
