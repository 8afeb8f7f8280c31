"""Validated events column by column: what a feed's ``columns`` reads.

Number fields are float64 arrays, string fields lists, datetime fields lists of datetimes, one
entry per event. The worker validates a batch (``pipeline.validate_batch``) and turns the events into a
table once (here, or in ``fast_decode``), so that featurization, keys, times and ids are read
column-wise instead of attribute by attribute per event (the per-stage times of
``python -m benchmarks.stream_bench`` show the effect: ``featurize`` in benchmarks/results/stream.json).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter

import numpy as np
from pydantic import BaseModel


@dataclass
class EventTable:
    """A batch of validated events, by field."""

    n: int
    numbers: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, list] = field(default_factory=dict)  # None where an optional string is absent
    times: dict[str, list[dt.datetime]] = field(default_factory=dict)
    events: list[BaseModel] | None = None  # the pydantic events, when built from them (stateful feeds read these)
    _epoch: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def number(self, name: str) -> np.ndarray:
        return self.numbers[name]

    def text(self, name: str) -> list:
        return self.texts[name]

    def time(self, name: str) -> list[dt.datetime]:
        return self.times[name]

    def epoch_seconds(self, name: str) -> np.ndarray:
        """Seconds since the epoch (a naive time is taken as UTC), computed once per field."""
        cached = self._epoch.get(name)
        if cached is None:
            utc = dt.timezone.utc
            cached = self._epoch[name] = np.fromiter(
                ((t if t.tzinfo is not None else t.replace(tzinfo=utc)).timestamp() for t in self.times[name]),
                dtype=np.float64, count=self.n)
        return cached

    @classmethod
    def from_events(cls, events: Sequence[BaseModel]) -> "EventTable":
        """From pydantic events of one model; its float fields become numbers, datetime fields times,
        the others texts (as the events hold them)."""
        events = list(events)
        table = cls(len(events), events=events)
        if not events:
            return table
        numbers, times, texts = field_layout(type(events[0]))
        fields = [e.__dict__ for e in events]  # a pydantic model keeps its field values in __dict__
        if numbers:
            rows = [itemgetter(*numbers)(f) for f in fields] if len(numbers) > 1 else [(f[numbers[0]],) for f in fields]
            block = np.array(rows, dtype=np.float64).reshape(len(events), len(numbers))
            table.numbers = {name: block[:, j] for j, name in enumerate(numbers)}
        table.times = {name: [f[name] for f in fields] for name in times}
        table.texts = {name: [f[name] for f in fields] for name in texts}
        return table

    @classmethod
    def concat(cls, tables: Sequence["EventTable"]) -> "EventTable":
        """The rows of ``tables`` one after the other (tables of one feed: the same fields)."""
        first = tables[0]
        return cls(
            sum(t.n for t in tables),
            numbers={k: np.concatenate([t.numbers[k] for t in tables]) for k in first.numbers},
            texts={k: [v for t in tables for v in t.texts[k]] for k in first.texts},
            times={k: [v for t in tables for v in t.times[k]] for k in first.times},
            events=None if any(t.events is None for t in tables) else [e for t in tables for e in t.events],
        )

    def take(self, index: Sequence[int]) -> "EventTable":
        index = list(index)
        return EventTable(
            len(index),
            numbers={k: v[index] for k, v in self.numbers.items()},
            texts={k: [v[i] for i in index] for k, v in self.texts.items()},
            times={k: [v[i] for i in index] for k, v in self.times.items()},
            events=None if self.events is None else [self.events[i] for i in index],
        )


@cache
def field_layout(model: type[BaseModel]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(number, time, text) field names of a model, by annotation: required plain floats are
    numbers, datetimes times, everything else (strings, optional or union fields) texts."""
    numbers, times, texts = [], [], []
    for name, info in model.model_fields.items():
        if info.annotation is float and info.is_required():
            numbers.append(name)
        elif info.annotation is dt.datetime and info.is_required():
            times.append(name)
        else:
            texts.append(name)
    return tuple(numbers), tuple(times), tuple(texts)
