"""Calibrated, adaptive thresholds shared by every feed.

1. **Conformal p-values.** The bundle carries sorted anomaly scores of held-out normal rows. An
   event's p-value is ``(1 + #{calibration >= score}) / (n + 1)``: under normal data p-values are
   (super-)uniform, so alerting at ``p < rate`` keeps the false-alarm rate at about ``rate``.
2. **Per-key adaptation.** Some entities (a card, a host, a sensor) run "hotter" than the
   calibration data. Each key keeps a river ``RollingQuantile(0.5)`` of its recent raw scores;
   once the key has ``warmup`` events its level factor is
   ``max(1, rolling_median / median(calibration))`` and the p-value is taken of
   ``score / factor``, i.e. the key's threshold is the calibrated one times the factor.
   Events without a key share the key "".

Each batch is compared against the state as it was *before* the batch, then the state is
updated with the batch, so an anomaly burst cannot raise its own threshold within a batch.
State is kept per input partition (``PartitionState``), bounded (LRU over keys) and serialised as
plain JSON (the window's values), never pickle.

>>> import numpy as np
>>> calibration = np.arange(1.0, 100.0)          # 99 normal scores
>>> p_values(np.array([0.5, 50.0, 1000.0]), calibration).round(3).tolist()
[1.0, 0.51, 0.01]
>>> from streamdetect.state import PartitionState
>>> state = PartitionState(window=50, warmup=0)
>>> result = apply_thresholds(state, ["a", "a"], np.array([50.0, 1000.0]), calibration, rate=0.05)
>>> result.alerted.tolist(), float(result.thresholds[0])
([False, True], 96.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from offline.metrics import conformal_p_values

if TYPE_CHECKING:  # the state module imports this one
    from streamdetect.state import PartitionState


def rows_by_key(keys: Sequence[str]) -> dict[str, np.ndarray | list[int]]:
    """Each distinct key's rows, in order. A batch often has one key (the feed's "" when its
    events carry none): that case costs one ``set`` instead of a Python step per event."""
    distinct = set(keys)
    if len(distinct) == 1:
        return {distinct.pop(): np.arange(len(keys))}
    rows_of: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        rows = rows_of.get(key)
        if rows is None:
            rows_of[key] = [row]
        else:
            rows.append(row)
    return rows_of


#: conformal p-values of scores against sorted calibration scores (vectorised); one formula, in offline.metrics
p_values = conformal_p_values


def score_threshold(calibration_sorted: np.ndarray, rate: float) -> float:
    """The score above which ``p_values(score) < rate``: the calibrated threshold.

    ``p < rate`` holds exactly when at most ``m`` calibration scores are >= the score, where ``m``
    is the largest count with ``(1 + m) / (n + 1) < rate``; that is every score above
    ``calibration[n - 1 - m]``. With too few calibration scores for ``rate`` nothing can alert (inf).
    """
    n = len(calibration_sorted)
    m = int(np.sum((1.0 + np.arange(n + 1)) / (n + 1.0) < rate)) - 1
    if m < 0:
        return float("inf")
    return float(calibration_sorted[n - 1 - m])


@dataclass
class ThresholdResult:
    p_values: np.ndarray
    alerted: np.ndarray  # bool
    thresholds: np.ndarray  # score threshold each event was held to (calibrated threshold x key factor)
    factors: np.ndarray
    suppressed: int = 0  # alerts the key's budget did not allow


def apply_thresholds(
    state: "PartitionState", keys: Sequence[str], scores: np.ndarray, calibration_sorted: np.ndarray, *, rate: float,
    event_times: Sequence[float] | None = None, fixed_threshold: float | None = None, groups: dict | None = None,
) -> ThresholdResult:
    """p-values and alert decisions of one partition's batch, then fold the batch into ``state``.

    With ``event_times`` (unix seconds) and a budget configured, alerts beyond a key's budget per
    hour are suppressed (``result.suppressed``). ``fixed_threshold``: the bundle's own operating
    rule (a detector that adapts per key itself, e.g. the streaming likelihood): alert when the score
    is at least that, instead of the conformal p-value below ``rate`` and the key levels. ``groups``:
    ``rows_by_key(keys)``, when the caller has it (the drift detectors need it too)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(calibration_sorted)  # sorted: the median is its middle (np.median would sort it again)
    calibration_median = max(float(calibration_sorted[(n - 1) // 2] + calibration_sorted[n // 2]) / 2.0, 1e-12) if n else 1e-12
    if fixed_threshold is not None:
        factors = np.ones(len(keys))
        p = p_values(scores, calibration_sorted)
        thresholds = np.full(len(keys), float(fixed_threshold))
        alerted = scores >= fixed_threshold
    else:
        by_key = state.factors(keys, calibration_median)
        factors = np.full(len(keys), next(iter(by_key.values()))) if len(by_key) == 1 else \
            np.fromiter(map(by_key.__getitem__, keys), dtype=np.float64, count=len(keys))
        p = p_values(scores / factors, calibration_sorted)
        thresholds = score_threshold(calibration_sorted, rate) * factors
        state.update(keys, scores, groups)
        alerted = p < rate
    suppressed = 0
    if event_times is not None and state.budget.per_hour is not None and alerted.any():
        allowed = state.budget.allow(keys, alerted, event_times)
        suppressed = int(alerted.sum() - allowed.sum())
        alerted = allowed
    return ThresholdResult(p_values=p, alerted=alerted, thresholds=thresholds, factors=factors, suppressed=suppressed)
