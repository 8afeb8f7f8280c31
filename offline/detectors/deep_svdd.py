"""Deep SVDD detector: score = squared distance of a row's learnt representation from a centre.

One-class Deep SVDD (Ruff et al., ICML 2018): a bias-free MLP ``phi`` (``models/deep_svdd.py``)
is trained on normal rows only to pull their representations towards a centre ``c`` that is
fixed from an initial forward pass (``eps``-guarded against zero coordinates); weight decay
(Adam's ``weight_decay``) is the paper's regulariser. Training uses the shared loop
(``training.train_loop``), keeps the epoch with the lowest mean distance on the held-out normal
rows (``X_val``) and stops early. The score of a row is ``||phi(x) - c||^2``.

``n_ensemble > 1`` trains that many networks (seeds ``seed + 1000 * i``) and scores with the mean
of their distances, each divided by its median distance over the training rows (so that no
member dominates by scale); one network is the plain Deep SVDD.

``explain(X)`` gives per-feature contributions by integrated gradients of the score along the
straight path from the training rows' mean (``expected``) to the row: they sum (up to the
quadrature of ``explain_steps`` midpoints) to ``score(x) - score(mean)``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from offline.detectors.base import Detector, as_float32
from offline.detectors.training import predict_in_chunks, seed_everything, train_loop
from offline.models.deep_svdd import DeepSVDDNet

BASELINE_KEY = "meta.baseline"  # training rows' mean: the explanation's reference point
SCALE_KEY = "meta.scale"  # per-member median training distance (ensemble normalisation)


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
        eps: float = 0.1,
        n_ensemble: int = 1,
        epochs: int = 30,
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
        self.hidden, self.rep_dim, self.activation = tuple(hidden), rep_dim, activation
        self.output_activation, self.eps, self.n_ensemble = output_activation, eps, n_ensemble
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.patience, self.explain_steps = patience, explain_steps
        self.seed, self.device, self.progress = seed, device, progress
        self.module: nn.ModuleList | None = None
        self.scale: torch.Tensor | None = None
        self.baseline: np.ndarray | None = None
        self.history: list[dict] = []

    def _net(self, n_features: int) -> DeepSVDDNet:
        return DeepSVDDNet(n_features, self.hidden, self.rep_dim, activation=self.activation, output_activation=self.output_activation)

    def _build(self, n_features: int) -> nn.ModuleList:
        return nn.ModuleList(self._net(n_features) for _ in range(self.n_ensemble))

    def fit(self, X, *, X_val=None) -> "DeepSVDDDetector":
        X = as_float32(X)
        X_val = None if X_val is None else as_float32(X_val)
        self.module, self.history, scales = nn.ModuleList(), [], []
        for i in range(self.n_ensemble):
            generator = seed_everything(self.seed + 1000 * i)  # each member's weights and batches
            net = self._net(X.shape[1]).to(self.device)
            net.set_center(torch.from_numpy(X).to(self.device), eps=self.eps)
            history = train_loop(
                net, lambda batch, net=net: net(batch).mean(), X, X_val=X_val,
                epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                patience=self.patience, generator=generator, desc=f"{self.name}[{i}]" if self.n_ensemble > 1 else self.name,
                device=self.device, progress=self.progress,
            )
            self.history += [{**row, "member": i} for row in history] if self.n_ensemble > 1 else history
            scales.append(float(np.median(predict_in_chunks(net, X, device=self.device))) or 1.0)
            self.module.append(net)
        self.scale = torch.tensor(scales, dtype=torch.float32)
        self.baseline = X.mean(axis=0).astype(np.float32)
        return self

    # -- scoring ---------------------------------------------------------------------------
    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.module) == 1:
            return self.module[0](x)
        scale = self.scale.to(x.device)
        return torch.stack([net(x) / scale[i] for i, net in enumerate(self.module)]).mean(dim=0)

    def score(self, X) -> np.ndarray:
        return predict_in_chunks(self._score_tensor, as_float32(X), device=self.device)

    def embed(self, X, *, member: int = 0) -> np.ndarray:
        """Representations phi(x) of one member network."""
        return predict_in_chunks(self.module[member].embed, as_float32(X), device=self.device)

    def expected(self, X) -> np.ndarray:
        """The explanation's reference row (the training rows' mean), repeated for each row."""
        X = as_float32(X)
        return np.broadcast_to(self.baseline, X.shape).copy()

    def explain(self, X, *, chunk: int = 4096) -> np.ndarray:
        """Integrated gradients of the score from the training mean to each row: ``(n, n_features)``."""
        X = as_float32(X)
        baseline = torch.from_numpy(self.baseline).to(self.device)
        alphas = (torch.arange(self.explain_steps, dtype=torch.float32) + 0.5) / self.explain_steps
        out = np.empty(X.shape, dtype=np.float32)
        with torch.enable_grad():
            for start in range(0, len(X), chunk):
                x = torch.from_numpy(X[start : start + chunk]).to(self.device)
                delta = x - baseline
                total = torch.zeros_like(x)
                for alpha in alphas.tolist():
                    point = (baseline + alpha * delta).requires_grad_(True)
                    (gradient,) = torch.autograd.grad(self._score_tensor(point).sum(), point)
                    total += gradient
                out[start : start + chunk] = (delta * total / self.explain_steps).detach().cpu().numpy()
        return out

    # -- bundle state ------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
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
        detector.module = detector._build(n_features)
        detector.module.load_state_dict(tensors)
        detector.module.to(detector.device).eval()
        return detector
