"""Classical baselines under the same protocol: scikit-learn IsolationForest, river HalfSpaceTrees."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from offline.detectors.base import Detector, as_float32


class IsolationForestDetector(Detector):
    """scikit-learn's IsolationForest; score = minus its ``score_samples`` (higher = more anomalous).

    >>> import numpy as np
    >>> normal = np.random.default_rng(0).normal(size=(256, 3))
    >>> det = IsolationForestDetector(n_estimators=50).fit(normal)
    >>> bool(det.score([[8, 8, 8]])[0] > det.score([[0, 0, 0]])[0])
    True
    """

    name = "iforest"

    def __init__(self, *, n_estimators: int = 200, max_samples: int | str = "auto", seed: int = 0, n_jobs: int = 1):
        self.n_estimators, self.max_samples, self.seed, self.n_jobs = n_estimators, max_samples, seed, n_jobs
        self.model = None

    def fit(self, X, *, X_val=None) -> "IsolationForestDetector":
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(
            n_estimators=self.n_estimators, max_samples=self.max_samples, random_state=self.seed, n_jobs=self.n_jobs
        ).fit(as_float32(X))
        return self

    def score(self, X) -> np.ndarray:
        return -self.model.score_samples(as_float32(X))


class HalfSpaceTreesDetector(Detector):
    """river's HalfSpaceTrees, learnt one row at a time on min-max scaled rows (it needs [0, 1]).

    It is a streaming model: ``fit`` streams the normal rows once. By default ``score`` does not
    learn (the tabular benchmarks' protocol); with ``learn_while_scoring`` it scores each row and
    then learns it (``score_one`` then ``learn_one``, river's prequential use, as the NAB replay
    runs it), and ``fit`` keeps the prequential scores of the training rows after the first
    window (``prequential``: out-of-sample calibration scores).

    A bundle stores the rows ``fit`` learnt, not the trees: river keeps them in Python objects and a
    bundle holds tensors only (no pickle). Loading relearns those rows with the same seed, which
    rebuilds the same trees; what a streaming model learnt while scoring in the worker is not in the
    bundle (a restarted worker starts again from the trained model).

    >>> import numpy as np
    >>> normal = np.random.default_rng(0).uniform(size=(300, 2))
    >>> det = HalfSpaceTreesDetector(n_trees=10, window_size=100).fit(normal)
    >>> det.score([[0.5, 0.5], [5.0, 5.0]]).shape
    (2,)
    >>> again = HalfSpaceTreesDetector.from_state(det.get_params(), det.state_tensors(), n_features=2)
    >>> bool(np.array_equal(again.score([[0.2, 0.9], [5.0, 5.0]]), det.score([[0.2, 0.9], [5.0, 5.0]])))
    True
    """

    name = "hst"

    def __init__(self, *, n_trees: int = 25, height: int = 15, window_size: int = 250, seed: int = 0,
                 learn_while_scoring: bool = False, progress: bool = True):
        self.n_trees, self.height, self.window_size, self.seed = n_trees, height, window_size, seed
        self.learn_while_scoring, self.progress = learn_while_scoring, progress
        self.model = self.rows = self.prequential = None

    def _rows(self, X):
        scaled = np.clip((as_float32(X) - self.low) / self.span, 0.0, 1.0)
        for row in scaled:
            yield dict(enumerate(row.tolist()))

    def fit(self, X, *, X_val=None) -> "HalfSpaceTreesDetector":
        from river.anomaly import HalfSpaceTrees

        self.rows = X = as_float32(X)
        self.low = X.min(axis=0)
        self.span = np.where(X.max(axis=0) > self.low, X.max(axis=0) - self.low, 1.0)
        self.model = HalfSpaceTrees(n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed)
        if self.learn_while_scoring:
            self.prequential = self.score(X)[self.window_size:]
            return self
        for row in tqdm(self._rows(X), total=len(X), desc="hst", disable=not self.progress, leave=False, mininterval=1):
            self.model.learn_one(row)
        return self

    def score(self, X) -> np.ndarray:
        n = len(as_float32(X))
        if not self.learn_while_scoring:
            return np.fromiter((self.model.score_one(row) for row in self._rows(X)), dtype=np.float64, count=n)
        out = np.empty(n, dtype=np.float64)
        for i, row in enumerate(self._rows(X)):
            out[i] = self.model.score_one(row)
            self.model.learn_one(row)
        return out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"learnt_rows": torch.from_numpy(np.ascontiguousarray(self.rows))}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "HalfSpaceTreesDetector":
        rows = tensors["learnt_rows"].numpy()
        if rows.ndim != 2 or rows.shape[1] != n_features:
            raise ValueError(f"learnt_rows has shape {tuple(rows.shape)}, the schema has {n_features} features")
        return cls(**{**params, "progress": False}).fit(rows)
