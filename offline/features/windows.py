"""Sliding windows per sensor, normalised per sensor: the featurization of the ``sensor-readings``
feed, shared by the worker (``streamdetect.feeds.sensors``), the retrainer and offline training,
so that a model always sees exactly the windows it will be served.

Each sensor keeps its last ``size`` readings. The window a reading completes is expressed in the
sensor's own standard units: ``(reading - center) / scale`` per channel, where ``center`` and
``scale`` are

- the sensor's **model statistics** when the bundle has them (``fit_sensor_stats``: median and
  1.4826 x MAD of the sensor's training readings, fitted with the model and stored in its manifest
  under ``sensor_stats``), so the model judges a sensor against its own normal level as it was
  learnt, and a level shift stays visible until a retrained model learns the new level;
- otherwise (a sensor the model has never seen) **running statistics** kept in the state: an
  exponentially weighted mean and variance whose memory is ``memory`` readings (exact running
  mean/variance for the first ``memory`` readings), taken *before* the reading is folded in (a
  spike is measured against the past). Such a sensor's first ``warmup`` readings are not scored.

State is a plain JSON-able dict (checkpointed by the worker with its partition state).

>>> config = WindowConfig(size=3, warmup=3)
>>> columns, ready = fold_windows(["p"] * 5, [[1.0], [2.0], [1.0], [2.0], [9.0]], {}, config)
>>> ready.tolist()
[False, False, False, True, True]
>>> config.names()
['value[t-2]', 'value[t-1]', 'value[t-0]']
>>> round(float(columns["value[t-0]"][4]), 2)   # 9.0 against mean 1.5, std 0.5 of the past
15.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

MANIFEST_KEY = "sensor_windows"  # manifest["extra"][MANIFEST_KEY] = WindowConfig.to_dict()
STATS_KEY = "sensor_stats"  # manifest["extra"][STATS_KEY] = {sensor: {"center": [..], "scale": [..]}}
STATE_KEY = "sensors"  # feed_state[STATE_KEY] = {sensor_id: {"n", "mean", "var", "window"}}; window: the last
#: ``size`` readings flat, channel values of one reading together, oldest first


@dataclass(frozen=True)
class WindowConfig:
    size: int = 16  # readings per window
    channels: int = 1  # values per reading
    memory: int = 1000  # readings the per-sensor normalisation remembers
    warmup: int = 32  # readings per sensor before its windows are scored (>= size)
    clip: float = 50.0  # standardised values are clipped to +-clip (a flat sensor that moves is "very" anomalous, not inf)
    max_sensors: int = 100_000  # per partition; the least recently seen sensor is forgotten beyond this

    def __post_init__(self) -> None:
        if self.size < 1 or self.channels < 1 or self.memory < 2 or self.warmup < self.size:
            raise ValueError(f"invalid window config {self}: need size>=1, channels>=1, memory>=2, warmup>=size")

    def names(self) -> list[str]:
        """Feature names, oldest position first (channel-major within a position)."""
        lags = range(self.size - 1, -1, -1)
        if self.channels == 1:
            return [f"value[t-{k}]" for k in lags]
        return [f"value{c}[t-{k}]" for k in lags for c in range(self.channels)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WindowConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def of_bundle(cls, bundle) -> "WindowConfig":
        extra = bundle.manifest.get("extra") or {}
        if MANIFEST_KEY not in extra:
            raise ValueError(f"bundle {bundle.version} has no {MANIFEST_KEY} in its manifest: it was not trained for the sensor feed")
        return cls.from_dict(extra[MANIFEST_KEY])


def fit_sensor_stats(sensor_ids: Sequence[str], values) -> dict[str, dict[str, list[float]]]:
    """Robust per-sensor statistics of training readings: median and 1.4826 x MAD per channel
    (the standard deviation where the MAD is 0; a tiny floor for constant sensors).

    >>> fit_sensor_stats(["a"] * 5 + ["b"] * 3, [1, 2, 3, 4, 100, 7, 7, 7])["a"]
    {'center': [3.0], 'scale': [1.4826]}
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    # one grouped pass per statistic (a fleet of 10,000 sensors would take minutes as one mask per sensor)
    frame = pd.DataFrame(values)
    keys = pd.Index(np.asarray(sensor_ids, dtype=object), name="sensor")
    groups = frame.groupby(keys, sort=False)
    center = groups.median()
    deviation = (frame - groups.transform("median")).abs().groupby(keys, sort=False).median()
    std = groups.std(ddof=0).fillna(0.0)
    center_a, scale_a, std_a = center.to_numpy(), 1.4826 * deviation.to_numpy(), std.to_numpy()
    scale_a = np.where(scale_a > 0, scale_a, std_a)
    scale_a = np.maximum(scale_a, 1e-6 * np.maximum(1.0, np.abs(center_a)))
    return {str(sensor): {"center": [round(float(c), 10) for c in c_row], "scale": [round(float(v), 10) for v in s_row]}
            for sensor, c_row, s_row in zip(center.index, center_a, scale_a)}


def stats_of_bundle(bundle) -> dict:
    return (bundle.manifest.get("extra") or {}).get(STATS_KEY) or {}


def _new_sensor(channels: int) -> dict:
    return {"n": 0, "mean": [0.0] * channels, "var": [0.0] * channels, "window": []}


def fold_windows(
    sensor_ids: Sequence[str], readings: Sequence[Sequence[float]], feed_state: dict, config: WindowConfig,
    stats: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fold readings (in arrival order; one list of channel values each) into the per-sensor
    windows of ``feed_state`` and return the standardised window each reading completes as
    columns ``config.names()``, plus a boolean ``ready`` per reading (False: the sensor is warming
    up, or the reading's channel count is wrong; such rows hold NaN). ``feed_state`` is a plain
    JSON-able dict and is updated in place. ``stats``: the model's per-sensor statistics.
    """
    stats = stats or {}
    sensors: dict = feed_state.setdefault(STATE_KEY, {})
    n_events, size, channels = len(sensor_ids), config.size, config.channels
    out = np.full((n_events, size * channels), np.nan, dtype=np.float64)
    ready = np.zeros(n_events, dtype=bool)
    floor_alpha = 1.0 / config.memory
    # the loop only folds the state and notes each ready reading's window and normalisation; the
    # windows are standardised below in one array operation (per position and channel in Python,
    # that was most of the sensor feed's featurize stage)
    rows, windows, centers, scales = [], [], [], []
    width = size * channels
    for i, (key, values) in enumerate(zip(sensor_ids, readings)):
        if len(values) != channels:
            continue  # not ready: wrong shape for this model
        sensor = sensors.pop(key, None) or _new_sensor(channels)
        sensors[key] = sensor  # re-insert: dict order is least -> most recently seen
        window = sensor["window"]
        if window and isinstance(window[0], list):  # a checkpoint from before windows were flat
            window = sensor["window"] = [v for reading in window for v in reading]
        window.extend(values)
        if len(window) > width:
            del window[: len(window) - width]
        n, mean, var = sensor["n"], sensor["mean"], sensor["var"]
        known = stats.get(key)
        if len(window) == width and (known is not None or n >= config.warmup):
            rows.append(i)
            windows.extend(window)
            if known is not None:
                centers.append(known["center"])
                scales.append(known["scale"])
            else:  # the running statistics as they were before this reading
                centers.append(list(mean))
                scales.append([max(math.sqrt(var[c]), 1e-6 * max(1.0, abs(mean[c]))) for c in range(channels)])
        alpha = max(1.0 / (n + 1), floor_alpha)
        for c in range(channels):
            delta = values[c] - mean[c]
            mean[c] += alpha * delta
            var[c] = (1.0 - alpha) * (var[c] + alpha * delta * delta) if n else 0.0
        sensor["n"] = n + 1
    if rows:
        standard = np.array(windows, dtype=np.float64).reshape(len(rows), size, channels)
        standard -= np.array(centers, dtype=np.float64)[:, None, :]
        standard /= np.array(scales, dtype=np.float64)[:, None, :]
        np.clip(standard, -config.clip, config.clip, out=standard)
        out[rows] = standard.reshape(len(rows), width)
        ready[rows] = True
    while len(sensors) > config.max_sensors:
        sensors.pop(next(iter(sensors)))
    names = config.names()
    return {name: out[:, j] for j, name in enumerate(names)}, ready


def window_frame(sensor_ids: Sequence[str], values, config: WindowConfig, *, feed_state: dict | None = None,
                 stats: Mapping | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Readings (in arrival order) -> the windows the worker would score (``config.names()``
    columns) and the rows that are ready. Training uses this, offline and in the retrainer."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    columns, ready = fold_windows(list(sensor_ids), values.tolist(), {} if feed_state is None else feed_state, config, stats)
    return pd.DataFrame(columns), ready
