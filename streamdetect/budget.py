"""Alert budget per key per hour: a token bucket per key, driven by event time.

A key (a sensor, a card, a host) may raise at most ``per_hour`` alerts per hour of *event time*
on average, with bursts of up to ``burst`` alerts (default ``max(1, per_hour)``); an alert
that finds the bucket empty is suppressed (counted, not published). Event time, not wall-clock
time, so that a replay of last month's data is rationed as it was lived, and a restarted worker
that reprocesses a batch decides the same way. Fractional budgets work: ``per_hour=1/24`` is
one alert per key per day.

State is plain JSON (``{key: [tokens, last_event_time_s]}``), kept in the partition state and
checkpointed with it.

>>> budget = AlertBudget(per_hour=1.0)
>>> t0 = 1_700_000_000.0
>>> budget.allow(["s1", "s1", "s1"], [True, True, True], [t0, t0 + 60, t0 + 3600]).tolist()
[True, False, True]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class AlertBudget:
    def __init__(self, *, per_hour: float | None, burst: float | None = None, max_keys: int = 100_000):
        if per_hour is not None and per_hour <= 0:
            raise ValueError("per_hour must be positive (or None for no budget)")
        self.per_hour = per_hour
        self.burst = burst if burst is not None else (max(1.0, per_hour) if per_hour else 1.0)
        self.max_keys = max_keys
        self.buckets: dict[str, list[float]] = {}  # key -> [tokens, last event time (unix s)]
        self.suppressed = 0

    def allow(self, keys: Sequence[str], alerted: Sequence[bool] | np.ndarray, event_times: Sequence[float]) -> np.ndarray:
        """Which of the ``alerted`` events may alert; updates the buckets (in event order)."""
        alerted = np.asarray(alerted, dtype=bool)
        if self.per_hour is None:
            return alerted.copy()
        out = np.zeros(len(alerted), dtype=bool)
        rate = self.per_hour / 3600.0
        for i in np.flatnonzero(alerted).tolist():
            key, when = keys[i], float(event_times[i])
            bucket = self.buckets.pop(key, None)
            if bucket is None:
                bucket = [self.burst, when]
            tokens = min(self.burst, bucket[0] + max(0.0, when - bucket[1]) * rate)
            if tokens >= 1.0 - 1e-9:
                tokens -= 1.0
                out[i] = True
            else:
                self.suppressed += 1
            self.buckets[key] = [tokens, max(when, bucket[1])]  # most recently used last
        while len(self.buckets) > self.max_keys:
            self.buckets.pop(next(iter(self.buckets)))
        return out

    def to_dict(self) -> dict:
        return {"buckets": self.buckets, "suppressed": self.suppressed}

    def load(self, data: dict | None) -> "AlertBudget":
        if data:
            self.buckets = {str(k): [float(v[0]), float(v[1])] for k, v in data.get("buckets", {}).items()}
            self.suppressed = int(data.get("suppressed", 0))
        return self
