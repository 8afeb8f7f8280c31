"""A second stage learnt from analysts' labels on top of an unsupervised detector.

The unsupervised detector keeps finding what nobody has labelled yet; the second stage learns,
from the alerts analysts labelled ``confirmed`` or ``false_alarm``, which of the alerted patterns
are worth an analyst's time. The combined score is

    score(x) = exp(u(x) + weight * logit q(x, u(x))) = odds(x)^weight / p_base(x),    u(x) = -log p_base(x)

where ``p_base`` is the conformal p-value of the base score against the base bundle's
calibration scores (so ``u`` is on the same scale whatever the base model) and ``q`` a logistic
regression on the features and ``u``, fitted on the labelled alerts only. An event the labels say
nothing about keeps its unsupervised evidence ``u``: a new kind of fraud with a high base score
still ranks high. The exponential keeps scores positive, as the worker's per-key level factors
(a ratio of score medians) need. The worker turns the combined score into p-values against the combined scores
of recent normal events, as for any bundle, so the false-alarm rate stays the target.

Why logistic regression and not boosted trees: on the training period only (a simulated analyst
on rows 30%-60%, base fitted on the normals of rows 0-30%, K = 10 labels per hour, target rate
0.001), logistic regression raised the AUPRC of the later half from 0.7498 (no stage) to 0.8784 and
the precision of the analyst's labels there from 0.6364 to 0.7083; boosted trees reached 0.877 and
0.6329 (``python -m benchmarks.analyst_loop select``, written to
``benchmarks/results/analyst_stage_selection.txt``). Its state is a few small tensors, so the
bundle stays tensors-only.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from offline.detectors import detector_class, make_detector
from offline.detectors.base import Detector, as_float32
from offline.metrics import conformal_p_values


def surprise(base_scores: np.ndarray, calibration_sorted: np.ndarray) -> np.ndarray:
    """``-log`` of the conformal p-value of each score against sorted calibration scores."""
    return -np.log(conformal_p_values(base_scores, calibration_sorted))


class LabelledStageDetector(Detector):
    """``base`` (any bundle detector) plus a logistic second stage fitted on labelled alerts.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> normal = rng.normal(size=(3000, 4)).astype("float32")
    >>> base = make_detector("copula").fit(normal[:2000])
    >>> det = LabelledStageDetector(base=base, calibration=base.score(normal[2000:]))
    >>> fraud = rng.normal(size=(40, 4)) + [4, 0, 0, 0]      # far out along feature 0
    >>> odd = rng.normal(size=(40, 4)) + [0, 0, 0, 4]        # as far out, but harmless
    >>> _ = det.fit_labels(np.vstack([fraud, odd]), np.r_[np.ones(40), np.zeros(40)])
    >>> s = det.score(np.array([[4, 0, 0, 0], [0, 0, 0, 4]], dtype="float32"))
    >>> bool(s[0] > s[1])
    True
    """

    name = "labelled"
    explains: ClassVar[bool] = True

    def __init__(self, *, base_model: str = "copula", base_params: dict | None = None, regularization: float = 1.0,
                 weight: float = 1.0, labels: int = 0, confirmed: int = 0, base: Detector | None = None,
                 calibration: np.ndarray | None = None):
        self.base_model = base.name if base is not None else base_model
        self.base_params = base.get_params() if base is not None else dict(base_params or {})
        self.regularization, self.weight, self.labels, self.confirmed = regularization, weight, labels, confirmed
        self.base = base
        self.base_calibration = None if calibration is None else np.sort(np.asarray(calibration, dtype=np.float64))
        self.mean = self.scale = self.coef = None
        self.intercept = 0.0

    def get_params(self) -> dict:
        return {"base_model": self.base_model, "base_params": self.base_params, "regularization": self.regularization,
                "weight": self.weight, "labels": self.labels, "confirmed": self.confirmed}

    # -- the protocol -----------------------------------------------------------------------------
    def fit(self, X, *, X_val=None) -> "LabelledStageDetector":
        raise NotImplementedError("the labelled stage learns from labels: fit the base detector, then call fit_labels(X, y)")

    def fit_labels(self, X, y) -> "LabelledStageDetector":
        """Fit the second stage on labelled rows (1 = confirmed anomaly, 0 = false alarm)."""
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            raise ValueError("the labelled stage needs both confirmed and false-alarm labels")
        Z = self._inputs(as_float32(X))
        self.mean, self.scale = Z.mean(axis=0), Z.std(axis=0) + 1e-6
        model = LogisticRegression(C=self.regularization, class_weight="balanced", max_iter=2000)
        model.fit((Z - self.mean) / self.scale, y)
        self.coef, self.intercept = model.coef_[0].astype(np.float64), float(model.intercept_[0])
        self.labels, self.confirmed = int(len(y)), int(y.sum())
        return self

    def score(self, X) -> np.ndarray:
        Z = self._inputs(as_float32(X))
        return np.exp(Z[:, -1] + self.weight * self.log_odds(Z))

    def log_odds(self, Z: np.ndarray) -> np.ndarray:
        """The second stage's log-odds of 'confirmed' for inputs ``Z`` (features, then ``u``), clipped to +-9."""
        return np.clip(((Z - self.mean) / self.scale) @ self.coef + self.intercept, -9.0, 9.0)

    def explain(self, X) -> np.ndarray:
        return self.base.explain(X)

    def expected(self, X) -> np.ndarray:
        return self.base.expected(X)

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([X.astype(np.float64), surprise(self.base.score(X), self.base_calibration)])

    # -- bundle state ---------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        stage = {"stage.mean": self.mean, "stage.scale": self.scale, "stage.coef": self.coef,
                 "stage.intercept": np.array([self.intercept]), "stage.base_calibration": self.base_calibration}
        return {**{f"base.{k}": v for k, v in self.base.state_tensors().items()},
                **{k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in stage.items()}}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "LabelledStageDetector":
        for name in ("stage.mean", "stage.scale", "stage.coef"):
            if tensors[name].shape != (n_features + 1,):
                raise ValueError(f"labelled stage: {name} has {tensors[name].shape[0] - 1} features, the schema {n_features}")
        base_tensors = {k[len("base."):]: v for k, v in tensors.items() if k.startswith("base.")}
        base = detector_class(params["base_model"]).from_state(params["base_params"], base_tensors, n_features=n_features)
        detector = cls(**{k: v for k, v in params.items() if k not in ("base_model", "base_params")}, base=base,
                       calibration=tensors["stage.base_calibration"].numpy())
        detector.mean, detector.scale = tensors["stage.mean"].numpy(), tensors["stage.scale"].numpy()
        detector.coef, detector.intercept = tensors["stage.coef"].numpy(), float(tensors["stage.intercept"][0])
        return detector


def unwrap(detector: Detector) -> Detector:
    """The unsupervised detector under any labelled stage."""
    return detector.base if isinstance(detector, LabelledStageDetector) else detector


__all__ = ["LabelledStageDetector", "surprise", "unwrap"]
