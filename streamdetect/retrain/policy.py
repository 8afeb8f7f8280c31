"""The retrain policy, as plain functions: which recent events a candidate learns from, and
whether a shadowed candidate is promoted (better calibrated, no known anomaly lost)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import orjson

#: model-control actions that describe the retrain loop (``apply_control`` ignores them)
LOOP_ACTIONS = frozenset({"drift", "retrain", "retrain_started", "retrain_failed", "retrain_skipped", "candidate_trained",
                          "shadow_started", "shadow_result", "candidate_rejected",
                          "learn", "learn_started", "learn_skipped", "learn_failed"})


@dataclass
class ShadowStats:
    """One model's behaviour on the shadow events (and on the known anomalies)."""

    version: str
    events: int = 0
    alerts: int = 0  # p-value < target rate
    known_anomalies: int = 0
    known_detected: int = 0

    @property
    def alert_rate(self) -> float:
        return self.alerts / self.events if self.events else float("nan")


def shadow_stats(version: str, p_values: np.ndarray, rate: float, known_p_values: np.ndarray | None = None) -> ShadowStats:
    known = np.asarray([] if known_p_values is None else known_p_values, dtype=float)
    p = np.asarray(p_values, dtype=float)
    return ShadowStats(version, int(len(p)), int((p < rate).sum()), int(len(known)), int((known < rate).sum()))


@dataclass
class Decision:
    promote: bool
    reason: str
    current: dict = field(default_factory=dict)
    candidate: dict = field(default_factory=dict)


def promotion_decision(current: ShadowStats, candidate: ShadowStats, *, target_rate: float, min_events: int = 100) -> Decision:
    """Promote only when the candidate is better calibrated and loses no known anomaly.

    >>> cur = ShadowStats("v0001", events=1000, alerts=400, known_anomalies=4, known_detected=4)
    >>> new = ShadowStats("v0002", events=1000, alerts=12, known_anomalies=4, known_detected=4)
    >>> promotion_decision(cur, new, target_rate=0.01).promote
    True
    >>> promotion_decision(cur, ShadowStats("v0003", 1000, 12, 4, 2), target_rate=0.01).reason
    'candidate detects 2 of 4 known anomalies, the model in service 4'
    """
    evidence = {"current": _stats_dict(current), "candidate": _stats_dict(candidate)}
    if candidate.events < min_events:
        return Decision(False, f"only {candidate.events} shadow events (< {min_events})", **evidence)
    if candidate.known_detected < current.known_detected:
        return Decision(False, f"candidate detects {candidate.known_detected} of {candidate.known_anomalies} known anomalies, "
                               f"the model in service {current.known_detected}", **evidence)
    gap_current = abs(current.alert_rate - target_rate)
    gap_candidate = abs(candidate.alert_rate - target_rate)
    if not gap_candidate < gap_current:
        return Decision(False, f"candidate alert rate {candidate.alert_rate:.4f} is not closer to the target {target_rate:g} "
                               f"than the model in service's {current.alert_rate:.4f}", **evidence)
    return Decision(True, f"alert rate {current.alert_rate:.4f} -> {candidate.alert_rate:.4f} (target {target_rate:g}); "
                          f"known anomalies detected {current.known_detected} -> {candidate.known_detected} of {candidate.known_anomalies}",
                    **evidence)


def _stats_dict(stats: ShadowStats) -> dict:
    return {**asdict(stats), "alert_rate": round(stats.alert_rate, 6) if stats.events else None}


def drop_rows(event_ids: Sequence[str], alerted: set[str], confirmed: set[str]) -> np.ndarray:
    """Boolean mask of the rows kept for training: neither alerted nor analyst-confirmed."""
    return np.fromiter((i not in alerted and i not in confirmed for i in event_ids), dtype=bool, count=len(event_ids))


def parse_time(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _record_time(record) -> dt.datetime | None:
    try:
        return parse_time(orjson.loads(record.value).get("event_time"))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None


def after_time(records: list, since: dt.datetime | None) -> list:
    """Records whose event time is at or after ``since`` (all when ``since`` is None)."""
    if since is None:
        return list(records)
    return [r for r in records if (t := _record_time(r)) is not None and t >= since]


def choose_window(records: list, n: int, *, latest: bool) -> tuple[list, dict[int, int]]:
    """The first (or latest) ``n`` records in event-time order -- per partition a contiguous run --
    and, per partition, the offset after the last one chosen."""
    timed = sorted(records, key=lambda r: ((_record_time(r) or dt.datetime.min.replace(tzinfo=dt.timezone.utc)), r.partition, r.offset))
    chosen = timed[-n:] if latest else timed[:n]
    ends: dict[int, int] = {}
    for r in chosen:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return chosen, ends
