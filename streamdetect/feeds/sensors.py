"""The ``sensor-readings`` feed: readings of sensors whose normal level moves.

An event is ``{sensor_id, event_time, value}``; ``value`` is one number or a list of numbers (one
per channel of a multi-channel sensor); ``event_id`` is optional (default
``<sensor_id>@<event_time>``). The entity key is ``sensor_id``.

A single reading says little, so the model scores a **sliding window** of each sensor's last
``size`` readings. The windows live in the partition state (``feed_state``) that the worker
checkpoints to the state topic, so a restarted or rebalanced worker resumes them. Each sensor is
**normalised by its own statistics** (``offline.features.windows``): the per-sensor median and MAD the model
learnt with (stored in the bundle), or, for a sensor the model has never seen, running statistics
kept in the state (its first ``warmup`` readings are then not scored); so sensors of any scale
share one model, and a level that moves away from what the model learnt is visible until a
retrained model (``streamdetect.retrain``) learns it.

The window's features are named by position, ``value[t-0]`` (the newest reading) to
``value[t-<size-1>]``, so an alert's ``top_features`` point at the deviating part of the window;
multi-channel sensors get ``value<c>[t-k]``. Their ``value`` and ``expected`` are in the sensor's
standard units (``(reading - center) / scale`` of the model's sensor statistics), so ``value 7.9,
expected 0.2`` at ``value[t-0]`` reads "the newest reading is ~8 typical deviations above what the
model expected there"; the raw reading itself is in the alert's ``event``.

The window configuration travels in the bundle (``manifest.extra.sensor_windows``), because a
model must be served with the featurization it was trained with.

>>> config = WindowConfig(size=3, warmup=3)
>>> state = {}
>>> events = [SensorEvent.model_validate({"sensor_id": "pump-1", "event_time": f"2024-01-01T00:0{i}:00Z", "value": v})
...           for i, v in enumerate([1.0, 2.0, 1.0, 2.0, 9.0])]
>>> columns, ready = featurize_windows(events, state, config)
>>> ready.tolist()
[False, False, False, True, True]
>>> config.names()
['value[t-2]', 'value[t-1]', 'value[t-0]']
>>> round(float(columns["value[t-0]"][4]), 2)   # 9.0 against mean 1.5, std 0.5 of the past
15.0
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from operator import attrgetter
from typing import Annotated

import msgspec
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from offline.features.sensor_likelihood import COLUMN as LIKELIHOOD_COLUMN, config_of_manifest, fold_likelihood
from offline.features.windows import MANIFEST_KEY, STATE_KEY, STATS_KEY, WindowConfig, fold_windows, stats_of_bundle, window_frame  # noqa: F401
from streamdetect.feeds import EventTable, Feed
from streamdetect.feeds.fast_decode import RFC3339, parses_datetime

MAX_CHANNELS = 16
MAX_READING = 1e12
SENSOR_ID_PATTERN = r"^[A-Za-z0-9._:\-/]+$"

Reading = Annotated[float, Field(strict=False, allow_inf_nan=False, ge=-MAX_READING, le=MAX_READING)]


class SensorEvent(BaseModel):
    """One reading; extra fields and non-finite or absurd values are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor_id: Annotated[str, Field(min_length=1, max_length=128, pattern=SENSOR_ID_PATTERN)]
    event_time: dt.datetime
    value: Reading | Annotated[list[Reading], Field(min_length=1, max_length=MAX_CHANNELS)]
    event_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _default_event_id(self) -> "SensorEvent":
        if self.event_id is None:
            object.__setattr__(self, "event_id", f"{self.sensor_id}@{self.event_time.isoformat()}")
        return self

    @property
    def values(self) -> list[float]:
        return [float(v) for v in self.value] if isinstance(self.value, list) else [float(self.value)]


class _SensorMirror(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """msgspec's view of a ``SensorEvent`` (types, missing and unknown fields); the constraints are
    checked on the batch by ``SensorDecoder``."""

    sensor_id: str
    event_time: str
    value: float | list[float]
    event_id: str | None = None


class SensorDecoder:
    """The sensor feed's first validation pass (``Feed.fast_decoder``; the generic mirror of
    ``streamdetect.feeds.fast_decode`` cannot express the one-or-many ``value`` and the default
    ``event_id``). Stricter than ``SensorEvent``: what it accepts, the model accepts with the same
    values (``tests/test_fast_decode.py``); the rest goes on to pydantic, which words the dead letters.
    Its table holds what ``EventTable.from_events`` of the validated events would: ``value`` as
    decoded (a number, or a list for a multi-channel reading) and the defaulted ``event_id``."""

    #: the table's fields, as ``FastDecoder`` names them
    numbers: tuple[str, ...] = ()
    times: tuple[str, ...] = ("event_time",)
    texts: tuple[str, ...] = ("sensor_id", "value", "event_id")

    def __init__(self):
        self.decoder = msgspec.json.Decoder(_SensorMirror)
        self.sensor_id = re.compile(SENSOR_ID_PATTERN[:-1] + r"\Z")
        self.time = re.compile(RFC3339)

    def accepts(self, event: _SensorMirror) -> bool:
        value = event.value
        if isinstance(value, list):
            if not 1 <= len(value) <= MAX_CHANNELS or not all(-MAX_READING <= v <= MAX_READING for v in value):
                return False
        elif not -MAX_READING <= value <= MAX_READING:
            return False
        return (len(event.sensor_id) <= 128 and self.sensor_id.match(event.sensor_id) is not None  # the pattern needs >= 1 character
                and self.time.match(event.event_time) is not None and parses_datetime(event.event_time)
                and (event.event_id is None or 1 <= len(event.event_id) <= 200))

    def decode(self, values: list[bytes]) -> tuple[list[int], EventTable]:
        """(positions of the accepted values, their table); the others are for pydantic."""
        try:  # the common case: every value decodes and passes, checked column by column
            events = list(map(self.decoder.decode, values))
            accepted = list(range(len(events)))
            sensor_ids = list(map(_SENSOR_ID, events))
            readings = list(map(_VALUE, events))
            stamps = list(map(_EVENT_TIME, events))
            scalar = np.fromiter(readings, dtype=np.float64, count=len(readings))  # TypeError if one is a list
            if not (all(map(self.sensor_id.match, sensor_ids)) and max(map(len, sensor_ids), default=0) <= 128
                    and all(map(self.time.match, stamps)) and (np.abs(scalar) <= MAX_READING).all()):
                raise ValueError("a check failed")
            times = list(map(dt.datetime.fromisoformat, stamps))
            given = list(map(_EVENT_ID, events))
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, TypeError, ValueError):
            return self._decode_each(values)
        if None in given:  # the model's default id
            given = [e if e is not None else f"{sensor}@{when.isoformat()}" for e, sensor, when in zip(given, sensor_ids, times)]
        if max(map(len, given), default=1) > 200 or not all(given):
            return self._decode_each(values)
        return accepted, _table(times, sensor_ids, readings, given)

    def _decode_each(self, values: list[bytes]) -> tuple[list[int], EventTable]:
        """One value at a time: a batch with a refused value, multi-channel readings or default ids."""
        decode = self.decoder.decode
        accepted, times, sensor_ids, readings, event_ids = [], [], [], [], []
        for i, raw in enumerate(values):
            try:
                event = decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
                continue
            if not self.accepts(event):
                continue
            when = dt.datetime.fromisoformat(event.event_time)
            accepted.append(i)
            times.append(when)
            sensor_ids.append(event.sensor_id)
            readings.append(event.value)
            event_ids.append(event.event_id if event.event_id is not None else f"{event.sensor_id}@{when.isoformat()}")
        return accepted, _table(times, sensor_ids, readings, event_ids)


def _table(times: list, sensor_ids: list, readings: list, event_ids: list) -> EventTable:
    """The decoded events as ``EventTable.from_events`` of the validated events would lay them out."""
    return EventTable(len(times), times={"event_time": times},
                      texts={"sensor_id": sensor_ids, "value": readings, "event_id": event_ids})


_SENSOR_ID, _VALUE, _EVENT_TIME, _EVENT_ID = (attrgetter(name) for name in ("sensor_id", "value", "event_time", "event_id"))


def _channel_lists(values: Sequence) -> list[list[float]]:
    """Each reading's channel values as a list (a single number is one channel)."""
    return [v if isinstance(v, list) else [v] for v in values]


def featurize_windows(
    events: Sequence[SensorEvent], feed_state: dict, config: WindowConfig, stats: dict | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Windows of pydantic events (``offline.features.windows.fold_windows``); the worker's hook,
    ``stateful_columns``, does the same from the batch's table."""
    return fold_windows([e.sensor_id for e in events], [e.values for e in events], feed_state, config, stats)


def stateful_columns(table: EventTable, feed_state: dict, bundle) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The pipeline's hook: windows with the bundle's window configuration and sensor statistics.

    A reading with the wrong number of channels for the model is returned as ready with NaN
    features, so that the pipeline dead-letters it (``featurize_error``) instead of skipping it."""
    likelihood = config_of_manifest(bundle.manifest)
    if likelihood is not None:  # the per-sensor streaming likelihood (single-channel readings)
        return _likelihood_columns(table, feed_state, likelihood)
    config = WindowConfig.of_bundle(bundle)
    values = table.text("value")
    if config.channels == 1 and all(isinstance(v, float) for v in values):  # the common case: one number each
        readings = np.fromiter(values, dtype=np.float64, count=table.n)[:, None]
        return fold_windows(table.text("sensor_id"), readings, feed_state, config, stats_of_bundle(bundle))
    readings = _channel_lists(values)
    columns, ready = fold_windows(table.text("sensor_id"), readings, feed_state, config, stats_of_bundle(bundle))
    wrong_shape = np.fromiter((len(r) != config.channels for r in readings), dtype=bool, count=table.n)
    return columns, ready | wrong_shape


def _likelihood_columns(table: EventTable, feed_state: dict, config) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every reading is ready (a detector scores 0 while it warms up); a multi-channel reading gets a
    NaN feature, so that the pipeline dead-letters it (``featurize_error``)."""
    values = table.text("value")
    single = [v if not isinstance(v, list) else (v[0] if len(v) == 1 else None) for v in values]
    rows = [i for i, v in enumerate(single) if v is not None]
    scores = np.full(table.n, np.nan)
    if rows:
        sensor_ids, times = table.text("sensor_id"), table.epoch_seconds("event_time")
        scores[rows] = fold_likelihood([sensor_ids[i] for i in rows], [single[i] for i in rows], times[rows].tolist(),
                                       feed_state, config)
    return {LIKELIHOOD_COLUMN: scores}, np.ones(table.n, dtype=bool)


def sensor_columns(table: EventTable) -> dict[str, np.ndarray]:
    """The stateless view (latest reading only); the worker uses ``stateful_columns``."""
    return {"value": np.fromiter((r[0] for r in _channel_lists(table.text("value"))), dtype=np.float64, count=table.n)}


def events_from_dataset(data, index: np.ndarray) -> list[dict]:
    """Events for rows ``index`` of ``offline.data.nab.load_nab_tabular``: ids ``<sensor>-<row>``."""
    index = np.asarray(index)
    extra = data.extra.iloc[index]
    times = pd.to_datetime(extra["timestamp"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
    values = data.features["value"].to_numpy()[index].tolist()
    return [
        {"event_id": f"{sensor}-{row}", "sensor_id": sensor, "event_time": when, "value": value}
        for row, sensor, when, value in zip(index.tolist(), extra["sensor_id"].tolist(), times, values)
    ]


FEED = Feed(
    name="sensor-readings",
    topic_setting="sensor_readings",
    event_model=SensorEvent,
    key_field="sensor_id",
    columns=sensor_columns,
    dataset="nab",
    events_from_dataset=events_from_dataset,
    stateful_columns=stateful_columns,
    decoder=SensorDecoder(),
)
