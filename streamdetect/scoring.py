"""Bundle -> batch scores and the reasons behind an alert.

Scoring is one vectorised call per batch (the detector runs its forward pass under
``torch.inference_mode``); explanations are computed only for the rows that alert, so their
cost follows the alert rate, not the event rate.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from offline.bundle import Bundle
from offline.features.schema import FeatureError


def featurize(bundle: Bundle, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[int, str], int]:
    """Featurize a batch with the bundle's schema.

    Returns ``(X, kept_rows, rejected, unseen)``: ``X`` holds the featurized rows listed in
    ``kept_rows`` (indices into the batch); ``rejected`` maps each row that could not be featurized
    to the error; ``unseen`` counts categorical values outside the training vocabulary (encoded
    as ``<other>`` and scored, never dropped; the worker reports the count in /metrics.json).
    """
    n = len(next(iter(columns.values()))) if columns else 0
    kept = np.arange(n)
    rejected: dict[int, str] = {}
    while True:
        try:
            X, unseen = bundle.schema.transform({name: np.asarray(values)[kept] for name, values in columns.items()})
            return X, kept, rejected, int(unseen.sum())
        except FeatureError as exc:
            if len(exc.rows) == 0:  # not about rows (e.g. a column the feed does not provide): every row fails
                rejected.update({int(i): str(exc) for i in kept})
                return np.empty((0, bundle.schema.n_features), np.float32), kept[:0], rejected, 0
            rejected.update({int(kept[i]): str(exc) for i in exc.rows})
            kept = np.delete(kept, exc.rows)


def score(bundle: Bundle, X: np.ndarray) -> np.ndarray:
    """Anomaly scores of featurized rows, higher = more anomalous, in one forward pass."""
    if len(X) == 0:
        return np.empty(0, dtype=np.float64)
    return np.asarray(bundle.detector.score(X), dtype=np.float64)


def top_features(
    bundle: Bundle, X: np.ndarray, raw_numeric: np.ndarray | None, k: int
) -> list[list[dict]]:
    """The ``k`` features that contribute most to each row's score.

    ``raw_numeric`` holds the rows' numeric input values in raw units (schema order), so an
    alert shows the value the event carried, e.g. ``Amount`` in currency, not its z-score.
    Each reason is ``{name, value, expected, contribution}``: ``expected`` is the model's
    reconstruction mapped back to raw units; ``contribution`` its share of the score
    (squared reconstruction error in feature space). Models without explanations give [].
    """
    if len(X) == 0 or not getattr(bundle.detector, "explains", False):
        return [[] for _ in range(len(X))]
    schema = bundle.schema
    contributions = np.asarray(bundle.detector.explain(X), dtype=np.float64)
    reconstruction = np.asarray(bundle.detector.expected(X), dtype=np.float64)
    n_numeric = len(schema.numeric)
    expected_raw = schema.numeric_to_raw(reconstruction)
    values = raw_numeric if raw_numeric is not None else schema.numeric_to_raw(X)
    names = schema.output_names
    order = np.argsort(-contributions, axis=1)[:, :k]
    reasons = []
    for row, columns in enumerate(order.tolist()):
        row_reasons = []
        for j in columns:
            if j < n_numeric:
                value, expected = float(values[row, j]), float(expected_raw[row, j])
            else:  # one-hot of a categorical: 1 if the event had this category; expected = reconstructed indicator
                value, expected = float(X[row, j]), float(reconstruction[row, j])
            row_reasons.append({"name": names[j], "value": value, "expected": expected,
                                "contribution": float(contributions[row, j])})
        reasons.append(row_reasons)
    return reasons
