"""Analysts' labels: ``feedback`` records in, checked like any feed, kept by event id.

A record is ``{event_id, label: confirmed|false_alarm, analyst, at}`` (``records.Feedback``).
Anything else goes to the dead-letter topic with a reason (``oversized``, ``invalid_json``,
``not_an_object``, ``invalid_event``) and the raw bytes, as the feed scorer does. The app keeps
the accepted labels in a changelog-backed Faust table (a restarted worker reads them back), the
retrain loop learns a second stage from them (``streamdetect.retrain.labels``), and the review
page shows and writes them.
"""

from __future__ import annotations

import datetime as dt

import orjson
from pydantic import ValidationError

from streamdetect.kafka.records import Feedback
from streamdetect.pipeline import InputRecord, dead_letter, decode

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
