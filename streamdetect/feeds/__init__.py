"""Feeds: what an event of each input topic looks like and how it becomes the bundle's columns.

A feed is one module in this package that defines a pydantic event model (extra fields
forbidden, non-finite numbers forbidden, ranges checked), names its entity key field, builds
the column dict the bundle's ``FeatureSchema`` reads from a batch of validated events, and says
how to turn rows of its benchmark dataset into events (for ``replay record``). Register it in
``FEEDS`` below: the worker, the replay tool and the demo never special-case a feed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from operator import attrgetter
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

if TYPE_CHECKING:
    from offline.data import TabularData
    from streamdetect.settings import Settings


@dataclass(frozen=True)
class Feed:
    name: str  # also the registry directory: <registry>/<name>/
    topic_setting: str  # field of settings.topics holding the topic name
    event_model: type[BaseModel]
    key_field: str | None  # entity key (card, host, sensor); None: the feed has none
    columns: Callable[[Sequence[BaseModel]], dict[str, np.ndarray]]
    dataset: str | None = None  # benchmark dataset the replay tool records events from
    events_from_dataset: Callable[["TabularData", np.ndarray], list[dict]] | None = None
    #: feeds whose features need per-partition state (e.g. sliding windows): (events, feed_state, bundle)
    #: -> (columns, ready); ``feed_state`` is a JSON-able dict checkpointed with the partition state
    stateful_columns: Callable[[Sequence[BaseModel], dict, object], tuple[dict[str, np.ndarray], np.ndarray]] | None = None

    def topic(self, settings: "Settings") -> str:
        return getattr(settings.topics, self.topic_setting)

    def key_of(self, event: BaseModel) -> str:
        """The entity key for adaptive thresholds; events without one share the key ""."""
        value = getattr(event, self.key_field) if self.key_field else None
        return "" if value is None else str(value)


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


def numeric_columns(events: Sequence[BaseModel], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of float fields as float64 arrays (one attrgetter call per event, then one array)."""
    if not events:
        return {name: np.empty(0, dtype=np.float64) for name in names}
    getter = attrgetter(*names)
    block = np.array([getter(e) for e in events], dtype=np.float64).reshape(len(events), len(names))
    return {name: block[:, j] for j, name in enumerate(names)}


__all__ = ["FEEDS", "Feed", "get_feed", "numeric_columns"]
