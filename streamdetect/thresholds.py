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
>>> state = PartitionState(window=50, warmup=0)
>>> result = apply_thresholds(state, ["a", "a"], np.array([50.0, 1000.0]), calibration, rate=0.05)
>>> result.alerted.tolist(), float(result.thresholds[0])
([False, True], 96.0)
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from river import stats


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


def p_values(scores: np.ndarray, calibration_sorted: np.ndarray) -> np.ndarray:
    """Conformal p-values of ``scores`` against sorted calibration scores (vectorised)."""
    n = len(calibration_sorted)
    at_least = n - np.searchsorted(calibration_sorted, scores, side="left")
    return (1.0 + at_least) / (n + 1.0)


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


class KeyLevel:
    """Rolling median of one key's recent raw scores, plus how many it has seen."""

    __slots__ = ("count", "quantile", "values")

    def __init__(self, window: int, values: Sequence[float] = (), count: int = 0):
        self.quantile = stats.RollingQuantile(0.5, window_size=window)
        self.values: deque[float] = deque(maxlen=window)  # river's window is opaque; ours is what we checkpoint
        self.count = 0
        for value in values:
            self.update(float(value))
        self.count = max(count, self.count)

    def update(self, value: float) -> None:
        self.update_many([value])

    def update_many(self, values: list[float]) -> None:
        if len(values) > self.values.maxlen:  # only the last window's worth can stay in the window
            self.count += len(values) - self.values.maxlen
            values = values[-self.values.maxlen:]
        update = self.quantile.update
        for value in values:
            update(value)
        self.values.extend(values)
        self.count += len(values)

    def median(self) -> float | None:
        return self.quantile.get()


class PartitionState:
    """Per-key levels of one input partition, LRU-bounded, with the next offset to consume.

    Also carries, all checkpointed with it: the feed's own state (``feed_state``, e.g. the sensor
    windows), the alert budget per key per hour (``budget.AlertBudget``), the drift detectors per
    key (``drift.DriftMonitor``, when configured) and the model version the levels belong to (a new
    model has a new score scale: its levels and drift detectors start afresh).
    """

    def __init__(self, *, window: int, warmup: int, max_keys: int = 100_000,
                 budget_per_hour: float | None = None, drift: dict | None = None):
        from streamdetect.budget import AlertBudget
        from streamdetect.drift import DriftMonitor

        self.window, self.warmup, self.max_keys = window, warmup, max_keys
        self.keys: OrderedDict[str, KeyLevel] = OrderedDict()
        self.next_offset: int | None = None
        self.feed_state: dict = {}
        self.budget = AlertBudget(per_hour=budget_per_hour, max_keys=max_keys)
        self.drift_params = drift
        self.drift = DriftMonitor("", **drift) if drift is not None else None
        self.model_version: str | None = None

    def reconfigure(self, *, budget_per_hour: float | None, drift: dict | None) -> None:
        """Apply the configured budget and drift settings to a restored state (keeping its buckets and detectors)."""
        from streamdetect.drift import DriftMonitor

        self.budget.per_hour = budget_per_hour
        if budget_per_hour is not None:
            self.budget.burst = max(1.0, budget_per_hour)
        if drift != self.drift_params:
            saved = self.drift.to_dict() if self.drift is not None else None
            self.drift = DriftMonitor("", **drift).load(saved) if drift is not None else None
            self.drift_params = drift

    def observe_model(self, version: str) -> bool:
        """Start the key levels and drift detectors afresh when the model changes; True if it did."""
        if self.model_version == version:
            return False
        if self.model_version is not None:
            self.keys.clear()
            if self.drift is not None:
                self.drift.keys.clear()
        self.model_version = version
        return True

    def factors(self, keys: Sequence[str], calibration_median: float) -> dict[str, float]:
        """Level factor per distinct key in ``keys`` (1 for unknown or warming-up keys)."""
        out = {}
        for key in set(keys):
            level = self.keys.get(key)
            median = level.median() if level is not None and level.count >= self.warmup else None
            out[key] = max(1.0, median / calibration_median) if median is not None else 1.0
        return out

    def update(self, keys: Sequence[str], scores: np.ndarray) -> None:
        # grouped by key, in order: one bulk update per key
        for key, rows in rows_by_key(keys).items():
            level = self.keys.get(key)
            if level is None:
                level = self.keys[key] = KeyLevel(self.window)
            else:
                self.keys.move_to_end(key)
            level.update_many(scores[rows].tolist())
        while len(self.keys) > self.max_keys:
            self.keys.popitem(last=False)  # least recently seen key

    # -- checkpoints: plain JSON-able dicts ---------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "window": self.window,
            "warmup": self.warmup,
            "next_offset": self.next_offset,
            "keys": {key: {"count": level.count, "values": list(level.values)} for key, level in self.keys.items()},
            "feed_state": self.feed_state,
            "budget": self.budget.to_dict(),
            "drift": self.drift.to_dict() if self.drift is not None else None,
            "model_version": self.model_version,
            "options": {"budget_per_hour": self.budget.per_hour, "drift": self.drift_params},
        }

    @classmethod
    def from_dict(cls, data: dict, *, window: int, warmup: int, max_keys: int = 100_000,
                  budget_per_hour: float | None | str = "checkpoint", drift: dict | None | str = "checkpoint") -> "PartitionState":
        """Restore; the configured window and warm-up win over the checkpoint's (settings may change).
        Budget and drift settings not given are the checkpoint's own (``reconfigure`` changes them)."""
        options = data.get("options") or {}
        if budget_per_hour == "checkpoint":
            budget_per_hour = options.get("budget_per_hour")
        if drift == "checkpoint":
            drift = options.get("drift")
        state = cls(window=window, warmup=warmup, max_keys=max_keys, budget_per_hour=budget_per_hour, drift=drift)
        state.next_offset = data.get("next_offset")
        state.feed_state = data.get("feed_state") or {}
        state.budget.load(data.get("budget"))
        if state.drift is not None:
            state.drift.load(data.get("drift"))
        state.model_version = data.get("model_version")
        for key, level in data.get("keys", {}).items():
            state.keys[key] = KeyLevel(window, level["values"][-window:], int(level["count"]))
        while len(state.keys) > max_keys:
            state.keys.popitem(last=False)
        return state


@dataclass
class ThresholdResult:
    p_values: np.ndarray
    alerted: np.ndarray  # bool
    thresholds: np.ndarray  # score threshold each event was held to (calibrated threshold x key factor)
    factors: np.ndarray
    suppressed: int = 0  # alerts the key's budget did not allow


def apply_thresholds(
    state: PartitionState, keys: Sequence[str], scores: np.ndarray, calibration_sorted: np.ndarray, *, rate: float,
    event_times: Sequence[float] | None = None,
) -> ThresholdResult:
    """p-values and alert decisions of one partition's batch, then fold the batch into ``state``.

    With ``event_times`` (unix seconds) and a budget configured, alerts beyond a key's budget per
    hour are suppressed (``result.suppressed``)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(calibration_sorted)  # sorted: the median is its middle (np.median would sort it again)
    calibration_median = max(float(calibration_sorted[(n - 1) // 2] + calibration_sorted[n // 2]) / 2.0, 1e-12) if n else 1e-12
    by_key = state.factors(keys, calibration_median)
    factors = np.full(len(keys), next(iter(by_key.values()))) if len(by_key) == 1 else \
        np.fromiter(map(by_key.__getitem__, keys), dtype=np.float64, count=len(keys))
    p = p_values(scores / factors, calibration_sorted)
    thresholds = score_threshold(calibration_sorted, rate) * factors
    state.update(keys, scores)
    alerted = p < rate
    suppressed = 0
    if event_times is not None and state.budget.per_hour is not None and alerted.any():
        allowed = state.budget.allow(keys, alerted, event_times)
        suppressed = int(alerted.sum() - allowed.sum())
        alerted = allowed
    return ThresholdResult(p_values=p, alerted=alerted, thresholds=thresholds, factors=factors, suppressed=suppressed)
