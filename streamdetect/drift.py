"""Drift detection on the score / p-value stream, per feed and key.

Under a well-calibrated model, the conformal p-values of normal events are uniform on (0, 1]
(mean 1/2). When a key's normal level moves away from what the model was trained on, its
p-values pile up near 0 (or drift up when the model became too lenient). A river drift detector
(ADWIN by default, KSWIN on request) watches each key's p-values, river style: ``update(x)``
then ``drift_detected``. A drift becomes a ``DriftEvent`` with its evidence; the worker publishes
it on ``model-control`` as a retrain request (see ``streamdetect.retrain``).

State is checkpointable as plain JSON: each key keeps its recent values (bounded), and a
restored monitor rebuilds its river detectors by replaying them.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> watch = PValueDrift(detector="adwin", delta=0.001, min_events=100)
>>> hits = []
>>> for i, p in enumerate(np.r_[rng.uniform(size=1000), rng.uniform(size=300) * 0.05]):
...     watch.update(float(p))
...     if watch.drift_detected:
...         hits.append(i)
>>> len(hits) >= 1 and 1000 <= hits[0] < 1100
True
>>> watch.evidence()["direction"]
'down'
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from river import drift as river_drift

from streamdetect.thresholds import rows_by_key

log = logging.getLogger(__name__)


class PValueDrift:
    """One key's drift detector over a stream of p-values (or scores).

    ``min_events``: no drift is reported before this many values (the detector's own warm-up);
    ``cooldown``: values after a reported drift during which no other is reported (the retrain
    it triggers needs time to land).
    """

    def __init__(self, *, detector: str = "adwin", delta: float = 0.001, alpha: float = 0.0001,
                 min_events: int = 200, cooldown: int = 500, history: int = 256, seed: int = 0):
        if detector not in ("adwin", "kswin"):
            raise ValueError(f"detector must be 'adwin' or 'kswin', not {detector!r}")
        self.detector, self.delta, self.alpha, self.seed = detector, delta, alpha, seed
        self.min_events, self.cooldown = min_events, cooldown
        self.recent: deque[float] = deque(maxlen=history)
        self.count = 0
        self.quiet_until = 0
        self.drift_detected = False
        self._before_mean: float | None = None
        self._river = self._new()

    def _new(self):
        if self.detector == "kswin":
            return river_drift.KSWIN(alpha=self.alpha, window_size=200, stat_size=60, seed=self.seed)
        return river_drift.ADWIN(delta=self.delta)

    def update(self, x: float) -> None:
        self.update_many([float(x)])

    def update_many(self, values: list[float]) -> list[int]:
        """Each value in turn; the indices at which a drift was reported (``drift_detected``: at the last)."""
        river, update, start = self._river, self._river.update, self.count
        hits = []
        for i, x in enumerate(values):
            update(x)
            if river.drift_detected:
                count = start + i + 1
                if count >= self.min_events and count >= self.quiet_until:
                    # the mean of the values before this one (only now: it cost ~20 us per event)
                    before = (list(self.recent) + values[:i])[-self.recent.maxlen:]
                    self._before_mean = float(np.mean(before)) if before else None
                    self.quiet_until = count + self.cooldown
                    hits.append(i)
        self.count = start + len(values)
        self.recent.extend(values)
        self.drift_detected = bool(hits) and hits[-1] == len(values) - 1
        return hits

    def evidence(self) -> dict:
        """What the detector saw: recent mean vs. the expected 1/2, the window river kept, counts."""
        recent = list(self.recent)
        tail = recent[-min(len(recent), 50):]
        mean_recent = float(np.mean(tail)) if tail else float("nan")
        width = getattr(self._river, "width", None)
        return {
            "detector": self.detector,
            "events_seen": self.count,
            "mean_recent": round(mean_recent, 6),
            "mean_history": round(float(np.mean(recent)), 6) if recent else None,
            "expected_mean": 0.5,
            "fraction_below_0.05": round(float(np.mean(np.asarray(tail) < 0.05)), 4) if tail else None,
            "direction": "down" if mean_recent < 0.5 else "up",
            "window_width": None if width is None else int(width),
            "river_estimation": getattr(self._river, "estimation", None),
        }

    def to_dict(self) -> dict:
        return {"count": self.count, "quiet_until": self.quiet_until, "recent": list(self.recent)}

    def load(self, data: dict) -> "PValueDrift":
        """Restore: replay the kept values into a fresh river detector, then the counters."""
        self._river = self._new()
        self.recent.clear()
        for x in data.get("recent", []):
            self._river.update(float(x))
            self.recent.append(float(x))
        self.count = int(data.get("count", len(self.recent)))
        self.quiet_until = int(data.get("quiet_until", 0))
        self.drift_detected = False
        return self


@dataclass
class DriftEvent:
    """A drift on one key of one feed; published on ``model-control`` as ``action: drift``."""

    feed: str
    key: str
    model_version: str
    event_time: str | None
    partition: int | None
    evidence: dict = field(default_factory=dict)

    def to_message(self) -> dict:
        return {"action": "drift", **asdict(self)}


class DriftMonitor:
    """Per-key ``PValueDrift`` detectors of one feed partition (LRU-bounded), batch in, events out."""

    def __init__(self, feed: str, *, max_keys: int = 10_000, **detector_params):
        self.feed, self.max_keys, self.params = feed, max_keys, detector_params
        self.keys: OrderedDict[str, PValueDrift] = OrderedDict()
        self.outbox: list[dict] = []  # drift messages not yet published (the worker drains it; not checkpointed)

    def _get(self, key: str) -> PValueDrift:
        detector = self.keys.get(key)
        if detector is not None:
            self.keys.move_to_end(key)
            return detector
        detector = self.keys[key] = PValueDrift(**self.params)
        while len(self.keys) > self.max_keys:
            self.keys.popitem(last=False)
        return detector

    def update_batch(self, keys: Sequence[str], values: np.ndarray, *, model_version: str,
                     event_times: Sequence | None = None, partition: int | None = None,
                     groups: dict | None = None) -> list[DriftEvent]:
        """Feed each key's detector its values (grouped by key, in order); ``event_times`` (datetimes
        or strings) label the drift events. ``groups``: ``rows_by_key(keys)``, when the caller has it."""
        values = np.asarray(values, dtype=np.float64).tolist()
        events = []
        for key, rows in (groups if groups is not None else rows_by_key(keys)).items():
            detector = self._get(key)
            for hit in detector.update_many([values[r] for r in rows] if len(rows) < len(values) else values):
                evidence = detector.evidence()
                log.warning("drift on %s key %r (model %s): %s", self.feed, key, model_version, evidence)
                when = None if event_times is None else event_times[rows[hit]]
                events.append(DriftEvent(self.feed, key, model_version,
                                         when.isoformat() if hasattr(when, "isoformat") else when, partition, evidence))
                self.outbox.append(events[-1].to_message())
        return events

    def to_dict(self) -> dict:
        return {key: detector.to_dict() for key, detector in self.keys.items()}

    def load(self, data: dict | None) -> "DriftMonitor":
        for key, saved in (data or {}).items():
            self.keys[key] = PValueDrift(**self.params).load(saved)
        return self
