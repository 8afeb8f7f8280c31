"""The one scoring protocol every detector follows, deep or classical.

- ``fit(X_normal, *, X_val=None) -> self``: unsupervised, normal rows only;
- ``score(X) -> (n,)``: higher = more anomalous;
- ``explain(X) -> (n, d)``: per-feature contributions, where the model has them;
- hyperparameters are keyword-only with working defaults.

Detectors that can go into a bundle also offer ``state_tensors()`` and ``from_state()``;
their state is tensors only, so a bundle never needs pickle.
"""

from __future__ import annotations

import inspect
from typing import ClassVar

import numpy as np
import torch


class Detector:
    name: ClassVar[str] = "detector"
    #: True when ``explain`` gives per-feature contributions and ``expected`` reconstructions
    explains: ClassVar[bool] = False
    #: True for models that only take images (N, C, H, W): the CLI refuses them on tabular datasets
    images_only: ClassVar[bool] = False

    def fit(self, X: np.ndarray, *, X_val: np.ndarray | None = None) -> "Detector":
        raise NotImplementedError

    def score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def explain(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self.name} gives no per-feature contributions")

    def expected(self, X: np.ndarray) -> np.ndarray:
        """What the model expected each row to be (its reconstruction), in feature space."""
        raise NotImplementedError(f"{self.name} gives no reconstruction")

    # -- hyperparameters and bundle state -------------------------------------------------
    def get_params(self) -> dict:
        names = [p.name for p in inspect.signature(type(self).__init__).parameters.values() if p.kind is p.KEYWORD_ONLY]
        return {name: getattr(self, name) for name in names}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{self.name} cannot be saved to a bundle (its state is not tensors)")

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "Detector":
        raise NotImplementedError(f"{cls.name} cannot be loaded from a bundle")


def as_float32(X) -> np.ndarray:
    """The one input coercion of every detector: float32, C-contiguous, rows or images.

    - rows: (n, d) stays (n, d); a 1-D (n,) array is one feature, (n, 1);
    - images: (N, C, H, W) stays; (N, H, W) is one channel, (N, 1, H, W).

    Anything else is refused with a ``ValueError``.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim in (1, 3):
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise ValueError(f"expected rows (n, d) or images (N, C, H, W), got an array of shape {X.shape}")
    return np.ascontiguousarray(X)
