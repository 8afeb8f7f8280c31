"""The ``transactions`` feed: card transactions shaped like the ULB credit-card data set.

An event carries the 28 PCA components ``V1``..``V28`` and ``Amount`` as numbers, an
``event_id``, an ``event_time`` and optionally the ``card_id`` it belongs to (the entity key
of the adaptive thresholds; the public data set has none, so replayed events share key "").

>>> event = TransactionEvent.model_validate(
...     {"event_id": "cc-1", "event_time": "2013-09-01T00:00:00Z", "Amount": 9.99, **{f"V{i}": 0.0 for i in range(1, 29)}})
>>> FEED.key_of(event), FEED.columns_of([event])["Amount"].tolist()
('', [9.99])
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from offline.data.creditcard import hour_of_day_columns
from streamdetect.feeds import EventTable, Feed, numeric_columns

PCA_COLUMNS = [f"V{i}" for i in range(1, 29)]
NUMERIC_COLUMNS = PCA_COLUMNS + ["Amount"]
#: the data set's ``Time`` is seconds since its first transaction; the release covers two days of September 2013
TIME_BASE = dt.datetime(2013, 9, 1, tzinfo=dt.timezone.utc)

EventId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
# strict: a number must be a JSON number ("1.5" as a string is a type error, not silently parsed);
# the bounds are far outside anything the data set holds (|V| < 125, Amount < 26k) and catch garbage
Component = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-1_000.0, le=1_000.0)]
Amount = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0, le=10_000_000.0)]


class _TransactionBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    event_time: dt.datetime
    card_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    Amount: Amount


TransactionEvent: type[BaseModel] = create_model(
    "TransactionEvent",
    __base__=_TransactionBase,
    __doc__="One card transaction; extra fields and non-finite or out-of-range numbers are rejected.",
    **{name: (Component, ...) for name in PCA_COLUMNS},
)


def transaction_columns(table: EventTable) -> dict[str, np.ndarray]:
    """The numeric fields plus the hour of day of ``event_time`` (UTC), as the bundle's schema expects."""
    columns = numeric_columns(table, NUMERIC_COLUMNS)
    hours = (table.epoch_seconds("event_time") % 86_400.0) / 3_600.0  # since midnight UTC
    columns.update(hour_of_day_columns(hours))
    return columns


def events_from_dataset(data, index: np.ndarray) -> list[dict]:
    """Events for rows ``index`` of the credit-card data: ids ``cc-<row>`` (stable across runs),
    times ``TIME_BASE + Time``; no label (labels travel separately)."""
    index = np.asarray(index)
    values = np.round(data.features.iloc[index][NUMERIC_COLUMNS].to_numpy(dtype=np.float64), 6)
    seconds = data.extra["Time"].to_numpy()[index]
    times = [(TIME_BASE + dt.timedelta(seconds=float(s))).isoformat().replace("+00:00", "Z") for s in seconds]
    return [
        {"event_id": f"cc-{row}", "event_time": when, **dict(zip(NUMERIC_COLUMNS, row_values))}
        for row, when, row_values in zip(index.tolist(), times, values.tolist())
    ]


FEED = Feed(
    name="transactions",
    topic_setting="transactions",
    event_model=TransactionEvent,
    key_field="card_id",
    columns=transaction_columns,
    dataset="creditcard",
    events_from_dataset=events_from_dataset,
)
