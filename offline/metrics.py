"""Metrics and threshold rules (scikit-learn underneath). Test labels choose no threshold, except
in the rule named ``oracle-best-f1``, which is reported only beside the label-free ones."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support, roc_auc_score


def conformal_p_values(scores: np.ndarray, calibration_sorted: np.ndarray) -> np.ndarray:
    """Conformal p-value of each score against sorted scores of held-out normal rows:
    ``(1 + #{calibration >= score}) / (n + 1)``. The one copy of the formula: the worker's thresholds,
    the labelled stage and the fusion detector all call it.

    >>> conformal_p_values(np.array([0.5, 50.0, 1000.0]), np.arange(1.0, 100.0)).round(3).tolist()
    [1.0, 0.51, 0.01]
    """
    n = len(calibration_sorted)
    at_least = n - np.searchsorted(calibration_sorted, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + at_least) / (n + 1.0)


def threshold_at_false_alarm_rate(normal_scores: np.ndarray, rate: float) -> float:
    """Score above which a fraction ``rate`` of held-out normal rows falls (label-free)."""
    return float(np.quantile(np.asarray(normal_scores, dtype=np.float64), 1.0 - rate, method="higher"))


def threshold_top_fraction(scores: np.ndarray, fraction: float) -> float:
    """Flag the top ``fraction`` of the scored rows (the KDD protocol's rule)."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - fraction))


def oracle_best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    return {"auroc": float(roc_auc_score(labels, scores)), "auprc": float(average_precision_score(labels, scores))}


def thresholded_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    predicted = (np.asarray(scores) > threshold).astype(int) if np.isfinite(threshold) else np.zeros(len(scores), int)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average="binary", zero_division=0)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "threshold": float(threshold), "flagged": int(predicted.sum())}
