"""The worker's output records, as pydantic models: the contract for whoever reads our topics.

The worker builds these records as plain dicts (cheaper per event) and tests validate them
against these models, so the two cannot drift apart silently.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: namespace of alert ids: uuid5(ALERT_NAMESPACE, f"{feed}:{event_id}") is the same on every reprocessing
ALERT_NAMESPACE = uuid.UUID("9b7f1c52-5a0e-4f55-9d2c-2f6f3c1b9a10")

DeadLetterReason = Literal["oversized", "invalid_json", "not_an_object", "invalid_event", "featurize_error"]


def alert_id(feed: str, event_id: str) -> str:
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{feed}:{event_id}"))


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopFeature(_Record):
    name: str
    value: float  # what the event carried, raw units
    expected: float  # the model's reconstruction, raw units
    contribution: float  # share of the score (squared reconstruction error)


class Alert(_Record):
    """One flagged event; key of the Kafka record: the event id."""

    alert_id: str
    event_id: str
    feed: str
    key: str
    event_time: dt.datetime
    score: float
    p_value: float = Field(gt=0, le=1)
    threshold: float
    model_version: str
    top_features: list[TopFeature]
    event: dict


class ScoresRecord(_Record):
    """Every event of one scored batch of one partition; key: the partition number."""

    feed: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    model_version: str
    event_ids: list[str]
    scores: list[float]
    p_values: list[float]
    alerted: list[bool]
    thresholds: list[float]
    dead_letters: int
    latency_ms_max: float
    produced_at: float  # unix seconds


class Feedback(_Record):
    """An analyst's verdict on an alerted event; key of the Kafka record: the event id."""

    event_id: str = Field(min_length=1, max_length=200)
    label: Literal["confirmed", "false_alarm"]
    analyst: str = Field(min_length=1, max_length=200)
    at: dt.datetime  # when the analyst labelled it


class DeadLetter(_Record):
    """An input record that could not be scored, with the bytes to replay it after a fix."""

    reason: DeadLetterReason
    error: str
    error_types: list[str] = []  # pydantic error types, e.g. ["missing"], ["finite_number"]
    feed: str
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key_b64: str | None
    raw_b64: str
    event_id: str | None = None
    model_version: str | None = None
