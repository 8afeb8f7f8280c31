"""Deep SVDD, and the Gaussian-copula distance that beats it on the credit-card time split.

``deepsvdd``: one-class Deep SVDD (Ruff et al., ICML 2018). A bias-free MLP ``phi``
(``models/deep_svdd.py``) is trained on normal rows only to pull their representations towards a
centre ``c`` fixed from an initial forward pass (``eps``-guarded against zero coordinates);
Adam's ``weight_decay`` is the paper's regulariser. Training uses the shared loop
(``training.train_loop``), keeps the epoch with the lowest mean distance on the held-out normal
rows (``X_val``) and may stop early. The score is ``||phi(x) - c||^2``. ``n_ensemble > 1`` trains
that many networks (seeds ``seed + 1000 * i``) and averages their distances, each divided by its
median training distance. ``input_stage="copula"`` puts the fixed ``CopulaWhitening`` stage in
front of the network. ``explain`` gives integrated gradients of the score from the training
rows' mean (``expected``) to the row; they sum (up to the quadrature of ``explain_steps``
midpoints) to ``score(x) - score(mean)``.

``copula``: the squared Mahalanobis distance of a row's Gaussian-copula normal scores from the
training rows' mean, i.e. the hypersphere distance of the fixed input stage alone (nothing is
trained; no seed changes it). On the credit-card training period it ranks frauds far better than
a trained Deep SVDD, whose objective, given enough steps, also compresses the directions in
which frauds differ (``benchmarks/results/creditcard_deep_svdd_selection.txt``). ``explain``
splits the score exactly: ``(z - mean)_j * [Cov^-1 (z - mean)]_j`` per feature (they sum to the
score; a negative share means the feature makes the row look more typical given the others);
``expected`` is the per-feature training median.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from offline.detectors.base import Detector, as_float32
from offline.detectors.training import predict_in_chunks, seed_everything, train_loop
from offline.models.deep_svdd import CopulaWhitening, DeepSVDDNet

BASELINE_KEY = "meta.baseline"  # training rows' mean: the explanation's reference point
SCALE_KEY = "meta.scale"  # per-member median training distance (ensemble normalisation)
STAGE_PREFIX = "stage."  # the fixed input stage's statistics
INPUT_STAGES = ("none", "copula")


class DeepSVDDDetector(Detector):
    """One-class Deep SVDD: squared distance of phi(x) from the hypersphere centre.

    >>> import numpy as np
    >>> normal = np.random.default_rng(0).normal(size=(1024, 4)).astype("float32")
    >>> det = DeepSVDDDetector(epochs=3, progress=False).fit(normal)
    >>> bool(det.score(normal[:1] + 8)[0] > np.median(det.score(normal)))
    True
    >>> det.explain(normal[:2]).shape
    (2, 4)
    """

    name = "deepsvdd"
    explains: ClassVar[bool] = True

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (64,),
        rep_dim: int = 32,
        activation: str = "relu",
        output_activation: bool = True,
        input_stage: str = "none",
        eps: float = 0.1,
        n_ensemble: int = 1,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-4,
        weight_decay: float = 5e-7,
        patience: int | None = 5,
        explain_steps: int = 16,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        if n_ensemble < 1:
            raise ValueError(f"n_ensemble must be >= 1, not {n_ensemble}")
        if input_stage not in INPUT_STAGES:
            raise ValueError(f"input_stage must be one of {INPUT_STAGES}, not {input_stage!r}")
        self.hidden, self.rep_dim, self.activation = tuple(hidden), rep_dim, activation
        self.output_activation, self.input_stage, self.eps, self.n_ensemble = output_activation, input_stage, eps, n_ensemble
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.patience, self.explain_steps = patience, explain_steps
        self.seed, self.device, self.progress = seed, device, progress
        self.module: nn.ModuleList | None = None
        self.stage: CopulaWhitening | None = None
        self.scale: torch.Tensor | None = None
        self.baseline: np.ndarray | None = None
        self.history: list[dict] = []

    def _net(self, n_features: int) -> DeepSVDDNet:
        return DeepSVDDNet(n_features, self.hidden, self.rep_dim, activation=self.activation, output_activation=self.output_activation)

    def _build(self, n_features: int) -> nn.ModuleList:
        return nn.ModuleList(self._net(n_features) for _ in range(self.n_ensemble))

    def _staged(self, X: np.ndarray) -> np.ndarray:
        return X if self.stage is None else predict_in_chunks(self.stage, X, device=self.device)

    def fit(self, X, *, X_val=None) -> "DeepSVDDDetector":
        X = as_float32(X)
        self.baseline = X.mean(axis=0).astype(np.float32)
        self.stage = CopulaWhitening(X.shape[1]).fit(X).to(self.device) if self.input_stage == "copula" else None
        U = self._staged(X)
        U_val = None if X_val is None else self._staged(as_float32(X_val))
        self.module, self.history, scales = nn.ModuleList(), [], []
        for i in range(self.n_ensemble):
            generator = seed_everything(self.seed + 1000 * i)  # each member's weights and batches
            net = self._net(U.shape[1]).to(self.device)
            net.set_center(torch.from_numpy(U).to(self.device), eps=self.eps)
            history = train_loop(
                net, lambda batch, net=net: net(batch).mean(), U, X_val=U_val,
                epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                patience=self.patience, generator=generator, desc=f"{self.name}[{i}]" if self.n_ensemble > 1 else self.name,
                device=self.device, progress=self.progress,
            )
            self.history += [{**row, "member": i} for row in history] if self.n_ensemble > 1 else history
            scales.append(float(np.median(predict_in_chunks(net, U, device=self.device))) or 1.0)
            self.module.append(net)
        self.scale = torch.tensor(scales, dtype=torch.float32)
        return self

    # -- scoring ---------------------------------------------------------------------------
    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        u = x if self.stage is None else self.stage(x)
        if len(self.module) == 1:
            return self.module[0](u)
        scale = self.scale.to(x.device)
        return torch.stack([net(u) / scale[i] for i, net in enumerate(self.module)]).mean(dim=0)

    def score(self, X) -> np.ndarray:
        return predict_in_chunks(self._score_tensor, as_float32(X), device=self.device)

    def embed(self, X, *, member: int = 0) -> np.ndarray:
        """Representations phi(x) of one member network."""
        net = self.module[member]
        return predict_in_chunks(lambda x: net.embed(x if self.stage is None else self.stage(x)), as_float32(X), device=self.device)

    def expected(self, X) -> np.ndarray:
        """The explanation's reference row (the training rows' mean), repeated for each row."""
        X = as_float32(X)
        return np.broadcast_to(self.baseline, X.shape).copy()

    def explain(self, X, *, chunk: int = 4096) -> np.ndarray:
        """Integrated gradients of the score from the training mean to each row: ``(n, n_features)``."""
        X = as_float32(X)
        baseline = torch.from_numpy(self.baseline).to(self.device)
        alphas = ((torch.arange(self.explain_steps, dtype=torch.float32) + 0.5) / self.explain_steps).tolist()
        out = np.empty(X.shape, dtype=np.float32)
        with torch.enable_grad():
            for start in range(0, len(X), chunk):
                x = torch.from_numpy(X[start : start + chunk]).to(self.device)
                delta = x - baseline
                total = torch.zeros_like(x)
                for alpha in alphas:
                    point = (baseline + alpha * delta).requires_grad_(True)
                    (gradient,) = torch.autograd.grad(self._score_tensor(point).sum(), point)
                    total += gradient
                out[start : start + chunk] = (delta * total / self.explain_steps).detach().cpu().numpy()
        return out

    # -- bundle state ------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        if self.stage is not None:
            tensors.update({STAGE_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.stage.state_dict().items()})
        tensors[SCALE_KEY] = self.scale.detach().cpu().contiguous()
        tensors[BASELINE_KEY] = torch.from_numpy(np.ascontiguousarray(self.baseline))
        return tensors

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "DeepSVDDDetector":
        detector = cls(**params)
        tensors = dict(tensors)
        detector.scale = tensors.pop(SCALE_KEY).float()
        detector.baseline = tensors.pop(BASELINE_KEY).numpy().astype(np.float32)
        if detector.baseline.shape != (n_features,):
            raise ValueError(f"deepsvdd state has {detector.baseline.shape[0]} features, the schema {n_features}")
        stage = {k[len(STAGE_PREFIX):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(STAGE_PREFIX)]}
        if detector.input_stage == "copula":
            detector.stage = CopulaWhitening(n_features, stage["knots_x"].shape[1])
            detector.stage.load_state_dict(stage)
            detector.stage.to(detector.device).eval()
        detector.module = detector._build(n_features)
        detector.module.load_state_dict(tensors)
        detector.module.to(detector.device).eval()
        return detector


class CopulaDistanceDetector(Detector):
    """Squared Mahalanobis distance in Gaussian-copula space (the Deep SVDD input stage alone).

    >>> import numpy as np
    >>> normal = np.random.default_rng(0).standard_t(3, size=(2000, 3)).astype("float32")
    >>> det = CopulaDistanceDetector().fit(normal)
    >>> bool(det.score([[6, -6, 6]])[0] > np.quantile(det.score(normal), 0.99))
    True
    >>> bool(np.allclose(det.explain(normal[:5]).sum(axis=1), det.score(normal[:5]), rtol=1e-4, atol=1e-4))
    True
    """

    name = "copula"
    explains: ClassVar[bool] = True

    def __init__(self, *, n_knots: int = 512, extrapolate: bool = False, seed: int = 0, device: str = "cpu"):
        # ``seed`` changes nothing (no randomness); it is accepted like every detector's
        self.n_knots, self.extrapolate, self.seed, self.device = n_knots, extrapolate, seed, device
        self.stage: CopulaWhitening | None = None

    def fit(self, X, *, X_val=None) -> "CopulaDistanceDetector":
        X = as_float32(X)
        self.stage = CopulaWhitening(X.shape[1], self.n_knots, extrapolate=self.extrapolate).fit(X).to(self.device).eval()
        return self

    def score(self, X) -> np.ndarray:
        return predict_in_chunks(lambda x: (self.stage(x) ** 2).sum(dim=1), as_float32(X), device=self.device)

    def explain(self, X) -> np.ndarray:
        """Per-feature shares ``(z - mean)_j * [Cov^-1 (z - mean)]_j``; each row sums to its score."""

        def shares(x: torch.Tensor) -> torch.Tensor:
            centred = self.stage.marginals(x) - self.stage.mean
            precision = self.stage.whitening.T @ self.stage.whitening
            return centred * (centred @ precision)

        return predict_in_chunks(shares, as_float32(X), device=self.device)

    def expected(self, X) -> np.ndarray:
        """About the training median of every feature: the value whose normal score is the mean score."""
        X = as_float32(X)
        with torch.no_grad():
            typical = self.stage.inverse_marginals(self.stage.mean[None, :]).cpu().numpy()[0]
        return np.broadcast_to(typical, X.shape).copy()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.stage.state_dict().items()}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "CopulaDistanceDetector":
        detector = cls(**params)
        if tensors["mean"].shape != (n_features,):
            raise ValueError(f"copula state has {tensors['mean'].shape[0]} features, the schema {n_features}")
        detector.stage = CopulaWhitening(n_features, tensors["knots_x"].shape[1], extrapolate=detector.extrapolate)
        detector.stage.load_state_dict(dict(tensors))
        detector.stage.to(detector.device).eval()
        return detector
