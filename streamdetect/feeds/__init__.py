"""Feeds: what an event of each input topic looks like and how it becomes the bundle's columns.

A feed is one module in this package that defines a pydantic event model (extra fields
forbidden, non-finite numbers forbidden, ranges checked), names its entity key field, builds
the column dict the bundle's ``FeatureSchema`` reads from a batch of validated events (an
``EventTable``), and says
how to turn rows of its benchmark dataset into events (for ``replay record``). Register it in
``FEEDS`` below: the worker, the replay tool and the demo never special-case a feed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Json, TypeAdapter

from streamdetect.feeds.columnar import EventTable
from streamdetect.feeds.fast_decode import FastDecoder, fast_decoder

if TYPE_CHECKING:
    from offline.data import TabularData
    from streamdetect.settings import Settings


@dataclass(frozen=True)
class Feed:
    name: str  # also the registry directory: <registry>/<name>/
    topic_setting: str  # field of settings.topics holding the topic name
    event_model: type[BaseModel]
    key_field: str | None  # entity key (card, host, sensor); None: the feed has none
    columns: Callable[[EventTable], dict[str, np.ndarray]]
    dataset: str | None = None  # benchmark dataset the replay tool records events from
    events_from_dataset: Callable[["TabularData", np.ndarray], list[dict]] | None = None
    #: feeds whose features need per-partition state (e.g. sliding windows): (one partition's EventTable,
    #: feed_state, bundle) -> (columns, ready); ``feed_state`` is a JSON-able dict checkpointed with the partition state
    stateful_columns: Callable[[EventTable, dict, object], tuple[dict[str, np.ndarray], np.ndarray]] | None = None
    #: the feed's own first validation pass, where the generic msgspec mirror cannot express its model
    #: (``decode(values) -> (accepted positions, EventTable)``, stricter than the model)
    decoder: "FastDecoder | None" = None

    def topic(self, settings: "Settings") -> str:
        return getattr(settings.topics, self.topic_setting)

    def key_of(self, event: BaseModel) -> str:
        """The entity key for adaptive thresholds; events without one share the key ""."""
        value = getattr(event, self.key_field) if self.key_field else None
        return "" if value is None else str(value)

    def keys(self, table: EventTable) -> list[str]:
        """``key_of`` for every event of a table."""
        if not self.key_field:
            return [""] * table.n
        return ["" if value is None else str(value) for value in table.text(self.key_field)]

    def columns_of(self, events: Sequence[BaseModel]) -> dict[str, np.ndarray]:
        """The bundle's columns of pydantic events (the worker goes through ``EventTable`` itself)."""
        return self.columns(EventTable.from_events(events))

    @property
    def batch_validator(self) -> TypeAdapter:
        """Validates a list of raw JSON events in one pydantic-core call (cheaper than one call per
        event: ``decode_validate`` in benchmarks/results/stream.json); errors name the failing
        items by index."""
        return _batch_validator(self.event_model)

    @property
    def fast_decoder(self) -> "FastDecoder | None":
        """The feed's own ``decoder``, else the event model's msgspec mirror (``fast_decode``); None
        if the model has no exact one (pydantic alone then validates the feed)."""
        return self.decoder if self.decoder is not None else fast_decoder(self.event_model)


@cache
def _batch_validator(model: type[BaseModel]) -> TypeAdapter:
    return TypeAdapter(list[Json[model]])


#: feed name -> "module:attribute" of its ``Feed``; imported lazily
FEEDS: dict[str, str] = {
    "transactions": "streamdetect.feeds.transactions:FEED",
    "sensor-readings": "streamdetect.feeds.sensors:FEED",
    "access-logs": "streamdetect.feeds.access_logs:FEED",
}


def get_feed(name: str) -> Feed:
    try:
        module, attribute = FEEDS[name].split(":")
    except KeyError:
        raise KeyError(f"unknown feed {name!r}; known: {', '.join(sorted(FEEDS))} (add one in streamdetect/feeds/)") from None
    return getattr(import_module(module), attribute)


def numeric_columns(table: EventTable, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of float fields as float64 arrays."""
    if table.n == 0:
        return {name: np.empty(0, dtype=np.float64) for name in names}
    return {name: table.number(name) for name in names}


__all__ = ["FEEDS", "EventTable", "Feed", "get_feed", "numeric_columns"]
