"""Analysts' labels: ``feedback`` records in, checked like any feed, kept by event id.

A record is ``{event_id, label: confirmed|false_alarm, analyst, at}`` (``records.Feedback``).
Anything else goes to the dead-letter topic with a reason (``oversized``, ``invalid_json``,
``not_an_object``, ``invalid_event``) and the raw bytes, as the feed scorer does. The app keeps
the accepted labels in a changelog-backed Faust table (a restarted worker reads them back), the
retrain loop learns a second stage from them (``streamdetect.retrain.labels``), and the review
page shows and writes them.

A ``false_alarm`` label of an alert that carries an entity key also holds back alerts of the same
key with the same pattern (``pipeline.alert_pattern``: the names of its top features) for
``labels.suppress_hours`` of event time: ``with_pattern`` stores the key, the pattern and the end
of that time with the label, so the table alone rebuilds the set after a restart
(``false_alarm_patterns``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import orjson
from pydantic import ValidationError

from streamdetect.kafka.records import Feedback
from streamdetect.pipeline import InputRecord, alert_pattern, dead_letter, decode

FEED = "feedback"


def read_feedback(record: InputRecord, *, max_event_bytes: int) -> tuple[dict | None, dict | None]:
    """One ``feedback`` record -> ``(label, None)`` or ``(None, dead letter)``."""
    decoded, dead = decode([record], feed=FEED, max_event_bytes=max_event_bytes)
    if dead:
        return None, dead[0]
    obj = decoded[0].obj
    try:
        label = Feedback.model_validate(obj)
    except ValidationError as exc:
        event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
        return None, dead_letter(record, FEED, "invalid_event", str(exc), event_id=event_id,
                                 error_types=[e["type"] for e in exc.errors()])
    return label.model_dump(mode="json"), None


def new_label(event_id: str, label: str, analyst: str) -> bytes:
    """A ``feedback`` record as the review page sends it (validated here, so a bad one never leaves)."""
    record = Feedback(event_id=event_id, label=label, analyst=analyst, at=dt.datetime.now(dt.timezone.utc))
    return orjson.dumps(record.model_dump(mode="json"))


def with_pattern(label: dict, recent_alerts: Iterable[bytes], *, suppress_hours: float) -> dict:
    """A ``false_alarm`` label plus ``{feed, key, pattern, until}`` of its alert, when the alert is among
    ``recent_alerts`` and has a key; any other label unchanged."""
    if label["label"] != "false_alarm" or suppress_hours <= 0:
        return label
    needle = label["event_id"].encode()
    for raw in recent_alerts:
        if needle not in raw:  # a byte search first: most alerts are not this one
            continue
        alert = orjson.loads(raw)
        if alert["event_id"] != label["event_id"] or not alert.get("key"):
            continue
        event_time = dt.datetime.fromisoformat(alert["event_time"].replace("Z", "+00:00"))
        return {**label, "feed": alert["feed"], "key": alert["key"], "pattern": alert_pattern(alert["top_features"]),
                "until": event_time.timestamp() + suppress_hours * 3600}
    return label


def false_alarm_patterns(labels: Iterable[dict]) -> dict[str, dict[tuple[str, str], float]]:
    """feed -> {(key, pattern): until}, from the labels table's values (the latest ``until`` wins)."""
    out: dict[str, dict[tuple[str, str], float]] = {}
    for label in labels:
        if label and label.get("label") == "false_alarm" and label.get("pattern") is not None:
            patterns = out.setdefault(label["feed"], {})
            key = (label["key"], label["pattern"])
            patterns[key] = max(patterns.get(key, 0.0), label["until"])
    return out
