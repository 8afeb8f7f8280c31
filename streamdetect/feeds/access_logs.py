"""The ``access-logs`` feed: connection records of a network or access log, as KDD Cup 99 has them.

An event carries the 41 KDD connection fields by name (``protocol_type``, ``service`` and
``flag`` as text, everything else as numbers), an ``event_id``, an ``event_time`` and the
``host`` it was seen on (the entity key of the adaptive thresholds). The bundle's schema one-hot
encodes the three text fields with its training vocabulary; a service or flag the model never
saw is encoded as ``<other>``, scored and counted (``unseen_categories`` in /metrics.json), never a
dead letter, because new services appear on real networks every day.

An alert names the fields that look wrong: ``{"name": "dst_bytes", "value": 52340, "expected":
1210, ...}`` reads "dst_bytes ~43x its expected value"; for a text field the reason is its
one-hot column, e.g. ``service=<other>`` with value 1 and expected ~0.

>>> event = AccessLogEvent.model_validate({**{name: 0 for name in NUMERIC_FIELDS}, "protocol_type": "tcp",
...     "service": "http", "flag": "SF", "event_id": "nsl-kdd-1", "event_time": "2024-01-01T00:00:00Z", "host": "web-1"})
>>> FEED.key_of(event), FEED.columns_of([event])["service"].tolist()
('web-1', ['http'])
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from streamdetect.feeds import EventTable, Feed, numeric_columns

#: the 41 KDD Cup 99 connection fields in the order of kddcup.names (a test checks them against the file)
KDD_FIELDS = [
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment", "urgent",
    "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted", "num_root",
    "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login",
    "count", "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate", "same_srv_rate",
    "diff_srv_rate", "srv_diff_host_rate", "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate",
    "dst_host_diff_srv_rate", "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
]
TEXT_FIELDS = ["protocol_type", "service", "flag"]
NUMERIC_FIELDS = [f for f in KDD_FIELDS if f not in TEXT_FIELDS]
RATE_FIELDS = [f for f in NUMERIC_FIELDS if f.endswith("_rate")]

# strict: numbers must be JSON numbers; counts are non-negative, rates are fractions
Count = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0, le=1e13)]
Rate = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0, le=1.0)]
Text = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class _AccessLogBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
    event_time: dt.datetime
    host: Annotated[str, Field(min_length=1, max_length=253)] | None = None


AccessLogEvent: type[BaseModel] = create_model(
    "AccessLogEvent",
    __base__=_AccessLogBase,
    __doc__="One connection record; extra fields, non-finite numbers, negative counts and rates outside [0, 1] are rejected.",
    **{name: (Text, ...) for name in TEXT_FIELDS},
    **{name: (Rate if name in RATE_FIELDS else Count, ...) for name in NUMERIC_FIELDS},
)


def access_log_columns(table: EventTable) -> dict[str, np.ndarray]:
    columns = numeric_columns(table, NUMERIC_FIELDS)
    for name in TEXT_FIELDS:
        columns[name] = np.array(table.text(name), dtype=object)
    return columns


def events_from_dataset(data, index: np.ndarray) -> list[dict]:
    """Access-log events for rows ``index`` of KDD/NSL-KDD (see ``offline.data.kdd.access_log_events``)."""
    from offline.data.kdd import access_log_events

    return access_log_events(data, index)[0]


FEED = Feed(
    name="access-logs",
    topic_setting="access_logs",
    event_model=AccessLogEvent,
    key_field="host",
    columns=access_log_columns,
    dataset="nsl-kdd",
    events_from_dataset=events_from_dataset,
)
