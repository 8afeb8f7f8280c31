"""Deep SVDD network (Ruff et al., "Deep One-Class Classification", ICML 2018) for tabular rows.

A bias-free MLP ``phi`` maps a row to a representation; the anomaly score is the squared distance
of ``phi(x)`` from a fixed centre ``c``. The paper's choices that keep the hypersphere from
collapsing onto the trivial constant map are kept here: no bias terms anywhere (a bias could
output ``c`` for every input), and a centre that is fixed from a forward pass before training
rather than learnt (``set_center``, with coordinates near zero pushed out to ``+-eps``). The
module holds the centre as a buffer, so that loaded weights score exactly as the trained ones.

``CopulaWhitening`` is a fixed input stage (fitted statistics, no trained weights): per-feature
normal scores through each training marginal, then whitening. Its output's squared norm is a
distance on its own (the ``copula`` detector); it can also feed the Deep SVDD network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class CopulaWhitening(nn.Module):
    """A fixed (fitted, never trained) input stage: the Gaussian copula of the training rows, whitened.

    Each feature goes through its training marginal's normal-score map ``z = Phi^-1(F(x))``,
    piecewise linear between ``n_knots`` quantile knots (equally spaced in ``z``, so the tails are
    resolved too; tied knots get their mid-rank score). Beyond the training range the score is
    held at the outermost knot (``+-Phi^-1(1 - 0.5/n)``, as scikit-learn's ``QuantileTransformer``
    clips), or with ``extrapolate=True`` continued linearly with the slope of the outer 1% of the
    tail; holding was the better of the two on the credit-card training period
    (``benchmarks/results/creditcard_deep_svdd_selection.txt``). Then ``u = W (z - mean)`` with ``W = Cov(z)^-1/2``, so that
    ``||u||^2`` is the squared Mahalanobis distance in copula space. Heavy-tailed features (the
    credit-card V28, V23, V20, ...) are compressed by their own marginal, not by a shared scale.
    """

    def __init__(self, n_features: int, n_knots: int = 512, *, extrapolate: bool = False):
        super().__init__()
        self.extrapolate = extrapolate
        self.register_buffer("knots_x", torch.zeros(n_features, n_knots, dtype=torch.float64))
        self.register_buffer("knots_z", torch.zeros(n_features, n_knots, dtype=torch.float64))
        self.register_buffer("slope_low", torch.ones(n_features, dtype=torch.float64))
        self.register_buffer("slope_high", torch.ones(n_features, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("whitening", torch.eye(n_features))

    @torch.no_grad()
    def fit(self, X: np.ndarray) -> "CopulaWhitening":
        X = np.asarray(X, dtype=np.float64)
        n, d = X.shape
        k = self.knots_x.shape[1]
        z_max = _normal_quantile(1.0 - 0.5 / n)
        z = np.linspace(-z_max, z_max, k)
        p = np.array([_normal_cdf(v) for v in z])
        knots_x = np.quantile(X, p, axis=0).T  # (d, k), non-decreasing per row
        knots_z = np.broadcast_to(z, (d, k)).copy()
        slope_low, slope_high = np.ones(d), np.ones(d)
        lo, hi = int(np.searchsorted(p, 0.01)), int(np.searchsorted(p, 0.99))
        for j in range(d):
            xs, zs = knots_x[j], knots_z[j]
            values, start = np.unique(xs, return_index=True)  # runs of tied knots: their mid-rank score
            ends = np.append(start[1:], k)
            for a, b in zip(start, ends):
                zs[a:b] = zs[a:b].mean()
            xs += np.arange(k) * 1e-9 * max(1.0, float(np.abs(xs).max()))  # strictly increasing
            span_low, span_high = xs[lo] - xs[0], xs[-1] - xs[hi]
            slope_low[j] = (zs[lo] - zs[0]) / span_low if span_low > 1e-6 else 1.0
            slope_high[j] = (zs[-1] - zs[hi]) / span_high if span_high > 1e-6 else 1.0
        self.knots_x.copy_(torch.from_numpy(knots_x))
        self.knots_z.copy_(torch.from_numpy(knots_z))
        self.slope_low.copy_(torch.from_numpy(np.maximum(slope_low, 1e-3)))
        self.slope_high.copy_(torch.from_numpy(np.maximum(slope_high, 1e-3)))
        scores = self.marginals(torch.from_numpy(X)).double().numpy()
        mean = scores.mean(axis=0)
        eigenvalues, vectors = np.linalg.eigh(np.cov(scores - mean, rowvar=False).reshape(d, d))
        eigenvalues = np.maximum(eigenvalues, 1e-6 * max(float(eigenvalues.max()), 1e-12))
        self.mean.copy_(torch.from_numpy(mean).float())
        self.whitening.copy_(torch.from_numpy(vectors @ np.diag(eigenvalues**-0.5) @ vectors.T).float())
        return self

    def marginals(self, x: torch.Tensor) -> torch.Tensor:
        """Normal scores per feature, ``(n, d)``; differentiable almost everywhere."""
        x = x.to(self.knots_x.dtype)
        kx, kz = self.knots_x, self.knots_z  # (d, k)
        k = kx.shape[1]
        position = torch.searchsorted(kx, x.T.contiguous()).T.clamp(1, k - 1)  # (n, d): right knot
        columns = torch.arange(kx.shape[0], device=x.device).expand_as(position)
        x0, x1 = kx[columns, position - 1], kx[columns, position]
        z0, z1 = kz[columns, position - 1], kz[columns, position]
        inside = z0 + (z1 - z0) * (x - x0) / (x1 - x0)
        if self.extrapolate:
            below = kz[:, 0] + (x - kx[:, 0]) * self.slope_low
            above = kz[:, -1] + (x - kx[:, -1]) * self.slope_high
        else:
            below, above = kz[:, 0].expand_as(x), kz[:, -1].expand_as(x)
        z = torch.where(x < kx[:, 0], below, torch.where(x > kx[:, -1], above, inside))
        return z.float()

    def inverse_marginals(self, z: torch.Tensor) -> torch.Tensor:
        """Feature values whose normal scores are ``z`` (inside the training range), ``(n, d)``."""
        z = z.to(self.knots_z.dtype).clamp(self.knots_z[:, 0], self.knots_z[:, -1])
        kx, kz = self.knots_x, self.knots_z
        k = kx.shape[1]
        position = torch.searchsorted(kz.contiguous(), z.T.contiguous()).T.clamp(1, k - 1)
        columns = torch.arange(kx.shape[0], device=z.device).expand_as(position)
        x0, x1 = kx[columns, position - 1], kx[columns, position]
        z0, z1 = kz[columns, position - 1], kz[columns, position]
        width = torch.where(z1 > z0, z1 - z0, torch.ones_like(z1))
        return (x0 + (x1 - x0) * ((z - z0) / width).clamp(0, 1)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.marginals(x) - self.mean) @ self.whitening.T


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _normal_quantile(p: float) -> float:
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1)}


class DeepSVDDNet(nn.Module):
    """``phi``: bias-free MLP ``n_features -> hidden... -> rep_dim``; ``forward(x)`` is
    ``||phi(x) - c||^2`` per row.

    ``output_activation=True`` puts the hidden activation after the last layer too (PyOD's
    DeepSVDD does, with ReLU); the paper's representation is linear in its last layer.
    """

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (64,),
        rep_dim: int = 32,
        *,
        activation: str = "relu",
        output_activation: bool = True,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, not {activation!r}")
        sizes = [n_features, *hidden, rep_dim]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out, bias=False))
            if i < len(sizes) - 2 or output_activation:
                layers.append(ACTIVATIONS[activation]())
        self.phi = nn.Sequential(*layers)
        self.register_buffer("center", torch.zeros(rep_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x)

    def distance(self, z: torch.Tensor) -> torch.Tensor:
        return ((z - self.center) ** 2).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.distance(self.embed(x))

    @torch.no_grad()
    def set_center(self, x: torch.Tensor, *, eps: float = 0.1, chunk: int = 8192) -> torch.Tensor:
        """Fix ``c`` as the mean representation of ``x`` (in eval mode); coordinates with
        ``|c_i| < eps`` become ``+-eps`` (``+eps`` where exactly zero, e.g. a dead ReLU unit), so
        that no unit can reach the centre by shrinking its weights to zero."""
        was_training = self.training
        self.eval()
        total = torch.zeros_like(self.center)
        for start in range(0, len(x), chunk):
            total += self.embed(x[start : start + chunk]).sum(dim=0)
        center = total / max(len(x), 1)
        small = center.abs() < eps
        center[small & (center < 0)] = -eps
        center[small & (center >= 0)] = eps
        self.center.copy_(center)
        self.train(was_training)
        return self.center
