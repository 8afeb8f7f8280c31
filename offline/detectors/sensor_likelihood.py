"""The bundle side of the streaming likelihood (registry name ``streaming-likelihood``).

The per-sensor detectors run in the sensor feed's featurization (``offline.features.sensor_likelihood``),
which hands over one feature per reading: the detector's emitted score. This model passes it
through, so the worker's conformal p-values, scores records and alerts treat it as any model's
score; the operating rule (score >= threshold) comes with the bundle (``extra.score_threshold``).

>>> import numpy as np
>>> StreamingLikelihoodDetector().fit(np.zeros((3, 1))).score(np.array([[0.2], [0.7]])).round(2).tolist()
[0.2, 0.7]
"""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.base import Detector, as_float32
from offline.detectors.streaming_likelihood import THRESHOLD


class StreamingLikelihoodDetector(Detector):
    name = "streaming-likelihood"

    def __init__(self, *, threshold: float = THRESHOLD):
        self.threshold = threshold

    def fit(self, X, *, X_val=None) -> "StreamingLikelihoodDetector":
        return self  # nothing to learn offline: each sensor's detector learns from its own readings

    def score(self, X) -> np.ndarray:
        return as_float32(X)[:, 0].astype(np.float64)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"threshold": torch.tensor([float(self.threshold)], dtype=torch.float64)}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "StreamingLikelihoodDetector":
        if n_features != 1:
            raise ValueError(f"streaming-likelihood scores one feature (the emitted likelihood), the schema has {n_features}")
        return cls(**params)

