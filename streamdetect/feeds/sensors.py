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
from collections.abc import Sequence
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from offline.features.windows import MANIFEST_KEY, STATE_KEY, STATS_KEY, WindowConfig, fold_windows, stats_of_bundle, window_frame  # noqa: F401
from streamdetect.feeds import EventTable, Feed

MAX_CHANNELS = 16

Reading = Annotated[float, Field(strict=False, allow_inf_nan=False, ge=-1e12, le=1e12)]


class SensorEvent(BaseModel):
    """One reading; extra fields and non-finite or absurd values are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-/]+$")]
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


def featurize_windows(
    events: Sequence[SensorEvent], feed_state: dict, config: WindowConfig, stats: dict | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The worker's featurization of a batch of one partition: ``offline.features.windows.fold_windows``."""
    return fold_windows([e.sensor_id for e in events], [e.values for e in events], feed_state, config, stats)


def stateful_columns(events: Sequence[SensorEvent], feed_state: dict, bundle) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The pipeline's hook: windows with the bundle's window configuration and sensor statistics.

    A reading with the wrong number of channels for the model is returned as ready with NaN
    features, so that the pipeline dead-letters it (``featurize_error``) instead of skipping it."""
    config = WindowConfig.of_bundle(bundle)
    columns, ready = featurize_windows(events, feed_state, config, stats_of_bundle(bundle))
    wrong_shape = np.fromiter((len(e.values) != config.channels for e in events), dtype=bool, count=len(events))
    return columns, ready | wrong_shape


def sensor_columns(table: EventTable) -> dict[str, np.ndarray]:
    """The stateless view (latest reading only); the worker uses ``featurize_windows``."""
    return {"value": np.fromiter((e.values[0] for e in table.events), dtype=np.float64, count=table.n)}


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
)
