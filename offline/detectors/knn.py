"""k-nearest-neighbour distance detector (as PyOD's ``KNN``): score = distance to the training rows.

A row is as anomalous as it is far from the normal rows it was fitted on: the score is the mean
(``method="mean"``) or largest (``"largest"``) Euclidean distance to its ``k`` nearest distinct
training rows, found with scikit-learn's ``NearestNeighbors`` (exact, brute force, in chunks).
Exact duplicates are dropped at fit time: they add no information to a distance and would make the
k-th neighbour of a much-repeated row zero (KDD Cup 99's 178k training rows have 33k distinct ones).

``expected(X)`` is the nearest training row, so ``explain(X)`` (squared difference per feature)
names what differs from the closest normal example. The state is the distinct training rows
(tensors), so the detector can go into a bundle; its size grows with them, hence ``max_rows``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from offline.detectors.base import Detector, as_float32


class KNNDetector(Detector):
    """Distance to the k nearest distinct training rows (mean or largest), exact, brute force.

    >>> import numpy as np
    >>> normal = np.random.default_rng(0).normal(size=(500, 3))
    >>> det = KNNDetector(k=3).fit(normal)
    >>> bool(det.score([[5, 5, 5]])[0] > det.score([[0, 0, 0]])[0])
    True
    """

    name = "knn"
    explains: ClassVar[bool] = True

    def __init__(self, *, k: int = 1, method: str = "mean", max_rows: int | None = 200_000, seed: int = 0):
        if method not in ("mean", "largest"):
            raise ValueError(f"method must be 'mean' or 'largest', not {method!r}")
        self.k, self.method, self.max_rows, self.seed = k, method, max_rows, seed
        self.rows: np.ndarray | None = None
        self._index = None

    def fit(self, X, *, X_val=None) -> "KNNDetector":
        rows = np.unique(as_float32(X), axis=0)
        if self.max_rows is not None and len(rows) > self.max_rows:  # bound memory and bundle size
            rows = rows[np.sort(np.random.default_rng(self.seed).choice(len(rows), self.max_rows, replace=False))]
        self.rows = np.ascontiguousarray(rows)
        self._index = None
        return self

    @property
    def index(self):
        if self._index is None:
            from sklearn.neighbors import NearestNeighbors

            self._index = NearestNeighbors(n_neighbors=min(self.k, len(self.rows)), algorithm="brute").fit(self.rows)
        return self._index

    def _neighbours(self, X) -> tuple[np.ndarray, np.ndarray]:
        return self.index.kneighbors(as_float32(X))

    def score(self, X) -> np.ndarray:
        distances, _ = self._neighbours(X)
        return distances.mean(axis=1) if self.method == "mean" else distances[:, -1]

    def expected(self, X) -> np.ndarray:
        """The nearest training row of each row."""
        _, nearest = self._neighbours(X)
        return self.rows[nearest[:, 0]]

    def explain(self, X) -> np.ndarray:
        """Squared difference per feature from the nearest training row (sums to the squared
        nearest-neighbour distance)."""
        X = as_float32(X)
        return (X - self.expected(X)) ** 2

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"rows": torch.from_numpy(self.rows)}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "KNNDetector":
        detector = cls(**params)
        detector.rows = np.ascontiguousarray(tensors["rows"].numpy())
        if detector.rows.shape[1] != n_features:
            raise ValueError(f"knn state has {detector.rows.shape[1]} features, the schema {n_features}")
        return detector
