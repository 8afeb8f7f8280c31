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

State is a ``WindowStore`` in the feed state, checkpointed by the worker with its partition state as
the JSON of its ``to_dict()``.

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
STATE_KEY = "sensors"  # feed_state[STATE_KEY]: a WindowStore; in a checkpoint {sensor_id: {"n", "mean", "var", "window"}},
#: window the last ``size`` readings flat, channel values of one reading together, oldest first


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


class WindowStore(Mapping):
    """The per-sensor windows and running statistics of one partition, as arrays (one slot per sensor).

    ``fold_windows`` keeps it in ``feed_state[STATE_KEY]`` and folds a whole batch with array
    operations, one pass per "rank" (the k-th reading of a sensor within the batch), so a fleet of
    thousands of interleaved sensors costs a few numpy calls per batch instead of Python work per
    reading and window position. Its ``to_dict()`` is the checkpoint format -- ``{sensor: {"n",
    "mean", "var", "window"}}``, least recently seen first, ``window`` the last ``min(n, size)``
    readings flat -- and ``from_dict`` reads it back (also the nested windows of older checkpoints).
    As a mapping it shows that format, sensor by sensor.
    """

    def __init__(self, size: int, channels: int, capacity: int = 64):
        self.size, self.channels = size, channels
        self.slot_of: dict[str, int] = {}
        self.sensor_of: list[str | None] = []  # slot -> sensor id (None: a free slot)
        self.free: list[int] = []
        self.n = np.zeros(0, dtype=np.int64)
        self.mean = np.zeros((0, channels))
        self.var = np.zeros((0, channels))
        self.window = np.zeros((0, size, channels))  # oldest first; only the last min(n, size) rows are readings
        self.last_seen = np.zeros(0, dtype=np.int64)
        self.tick = 0
        self._stats: Mapping | None = None  # the statistics the known-sensor arrays were filled from
        self.known = np.zeros(0, dtype=bool)
        self.center = np.zeros((0, channels))
        self.scale = np.ones((0, channels))
        self._grow(capacity)

    # -- slots ------------------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        old = len(self.n)
        if capacity <= old:
            return
        extra = capacity - old
        self.n = np.concatenate([self.n, np.zeros(extra, dtype=np.int64)])
        self.mean = np.concatenate([self.mean, np.zeros((extra, self.channels))])
        self.var = np.concatenate([self.var, np.zeros((extra, self.channels))])
        self.window = np.concatenate([self.window, np.zeros((extra, self.size, self.channels))])
        self.last_seen = np.concatenate([self.last_seen, np.zeros(extra, dtype=np.int64)])
        self.known = np.concatenate([self.known, np.zeros(extra, dtype=bool)])
        self.center = np.concatenate([self.center, np.zeros((extra, self.channels))])
        self.scale = np.concatenate([self.scale, np.ones((extra, self.channels))])
        self.sensor_of += [None] * extra
        self.free += list(range(capacity - 1, old - 1, -1))  # lowest slot first

    def slots(self, sensor_ids: Sequence[str]) -> np.ndarray:
        """The slot of each sensor id, new sensors getting fresh ones."""
        get = self.slot_of.get
        slots = [get(key, -1) for key in sensor_ids]
        if -1 in slots:
            for i, key in enumerate(sensor_ids):
                if slots[i] == -1:
                    slot = self.slot_of.get(key)
                    if slot is None:
                        slot = self._new_slot(key)
                    slots[i] = slot
        return np.asarray(slots, dtype=np.int64)

    def _new_slot(self, key: str) -> int:
        if not self.free:
            self._grow(2 * len(self.n))
        slot = self.free.pop()
        self.slot_of[key], self.sensor_of[slot] = slot, key
        self.n[slot], self.mean[slot], self.var[slot], self.window[slot] = 0, 0.0, 0.0, 0.0
        self._look_up(slot)
        return slot

    def _look_up(self, slot: int) -> None:
        known = (self._stats or {}).get(self.sensor_of[slot])
        self.known[slot] = known is not None
        if known is not None:
            self.center[slot], self.scale[slot] = known["center"], known["scale"]

    def use_stats(self, stats: Mapping) -> None:
        """The model's per-sensor statistics (looked up again only when the model's change)."""
        if stats is not self._stats:
            self._stats = stats
            for slot in self.slot_of.values():
                self._look_up(slot)

    def forget_beyond(self, max_sensors: int) -> None:
        """Drop the least recently seen sensors beyond ``max_sensors``."""
        extra = len(self.slot_of) - max_sensors
        if extra <= 0:
            return
        used = np.fromiter(self.slot_of.values(), dtype=np.int64, count=len(self.slot_of))
        for slot in used[np.argsort(self.last_seen[used], kind="stable")[:extra]].tolist():
            del self.slot_of[self.sensor_of[slot]]
            self.sensor_of[slot] = None
            self.free.append(slot)

    # -- the checkpoint format ------------------------------------------------------------------
    def _entry(self, slot: int) -> dict:
        filled = min(int(self.n[slot]), self.size)
        return {"n": int(self.n[slot]), "mean": self.mean[slot].tolist(), "var": self.var[slot].tolist(),
                "window": self.window[slot, self.size - filled:].ravel().tolist()}

    def _ordered(self) -> list[str]:
        return sorted(self.slot_of, key=lambda key: self.last_seen[self.slot_of[key]])

    def to_dict(self) -> dict:
        return {key: self._entry(self.slot_of[key]) for key in self._ordered()}

    @classmethod
    def from_dict(cls, data: Mapping, size: int, channels: int) -> "WindowStore":
        store = cls(size, channels, capacity=max(64, len(data)))
        for key, saved in data.items():
            slot = store._new_slot(key)
            window = saved["window"]
            if window and isinstance(window[0], list):  # a checkpoint from before windows were flat
                window = [v for reading in window for v in reading]
            rows = np.asarray(window, dtype=np.float64).reshape(-1, channels)[-size:]
            store.n[slot] = int(saved["n"])
            store.mean[slot], store.var[slot] = saved["mean"], saved["var"]
            if len(rows):
                store.window[slot, size - len(rows):] = rows
            store.tick += 1
            store.last_seen[slot] = store.tick
        return store

    def __getitem__(self, key: str) -> dict:
        return self._entry(self.slot_of[key])

    def __iter__(self):
        return iter(self._ordered())

    def __len__(self) -> int:
        return len(self.slot_of)


_NO_STATS: dict = {}


def _store_of(feed_state: dict, config: WindowConfig) -> WindowStore:
    """The partition's ``WindowStore`` (built from a checkpoint's dict the first time, or anew)."""
    store = feed_state.get(STATE_KEY)
    if not isinstance(store, WindowStore) or store.size != config.size or store.channels != config.channels:
        saved = store.to_dict() if isinstance(store, WindowStore) else (store or {})
        store = feed_state[STATE_KEY] = WindowStore.from_dict(saved, config.size, config.channels)
    return store


def fold_windows(
    sensor_ids: Sequence[str], readings: Sequence[Sequence[float]], feed_state: dict, config: WindowConfig,
    stats: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Fold readings (in arrival order; one list of channel values each, or an (n, channels) array) into the per-sensor
    windows of ``feed_state`` and return the standardised window each reading completes as
    columns ``config.names()``, plus a boolean ``ready`` per reading (False: the sensor is warming
    up, or the reading's channel count is wrong; such rows hold NaN). ``feed_state`` is updated in
    place; its windows live in a ``WindowStore`` (JSON through its ``to_dict``). ``stats``: the
    model's per-sensor statistics.
    """
    size, channels = config.size, config.channels
    n_events = len(sensor_ids)
    out = np.full((n_events, size * channels), np.nan, dtype=np.float64)
    ready = np.zeros(n_events, dtype=bool)
    store = _store_of(feed_state, config)
    store.use_stats(stats if stats is not None else _NO_STATS)
    if isinstance(readings, np.ndarray):  # (n, channels) already: every reading has the model's shape
        rows = list(range(n_events)) if readings.reshape(n_events, -1).shape[1] == channels else []
    else:
        rows = [i for i, values in enumerate(readings) if len(values) == channels]  # others: not ready, state untouched
    if not rows:
        return {name: out[:, j] for j, name in enumerate(config.names())}, ready
    if len(rows) < n_events:
        sensor_ids, readings = [sensor_ids[i] for i in rows], [readings[i] for i in rows]
    rows = np.asarray(rows, dtype=np.int64)
    values = np.asarray(readings, dtype=np.float64).reshape(len(rows), channels)
    slots = store.slots(sensor_ids)
    # rank: how many readings of the same sensor come before this one in the batch
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_slots)) + 1]
    rank = np.empty(len(slots), dtype=np.int64)
    rank[order] = np.arange(len(slots)) - np.repeat(starts, np.diff(np.r_[starts, len(slots)]))
    floor_alpha = 1.0 / config.memory
    standard = np.empty((len(slots), size, channels))
    is_ready = np.zeros(len(slots), dtype=bool)
    for r in range(int(rank.max()) + 1):
        take = np.flatnonzero(rank == r) if r or rank.any() else np.arange(len(slots))
        s = slots[take]
        x = values[take]
        n = store.n[s]
        window = store.window[s]
        window[:, :-1] = window[:, 1:]
        window[:, -1] = x
        store.window[s] = window
        known = store.known[s]
        mean, var = store.mean[s], store.var[s]
        ok = (n + 1 >= size) & (known | (n >= config.warmup))
        if ok.any():
            # the running statistics as they were before this reading (a spike is measured against the past)
            center = np.where(known[:, None], store.center[s], mean)
            scale = np.where(known[:, None], store.scale[s], np.maximum(np.sqrt(var), 1e-6 * np.maximum(1.0, np.abs(mean))))
            standard[take[ok]] = (window[ok] - center[ok, None, :]) / scale[ok, None, :]
            is_ready[take[ok]] = True
        alpha = np.maximum(1.0 / (n + 1), floor_alpha)[:, None]
        delta = x - mean
        store.mean[s] = mean + alpha * delta
        store.var[s] = np.where((n > 0)[:, None], (1.0 - alpha) * (var + alpha * delta * delta), 0.0)
        store.n[s] = n + 1
    # least -> most recently seen, in arrival order
    store.last_seen[slots] = store.tick + 1 + np.arange(len(slots))
    store.tick += len(slots)
    store.forget_beyond(config.max_sensors)
    if is_ready.any():
        np.clip(standard, -config.clip, config.clip, out=standard)
        out[rows[is_ready]] = standard[is_ready].reshape(int(is_ready.sum()), size * channels)
        ready[rows[is_ready]] = True
    return {name: out[:, j] for j, name in enumerate(config.names())}, ready


def window_frame(sensor_ids: Sequence[str], values, config: WindowConfig, *, feed_state: dict | None = None,
                 stats: Mapping | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Readings (in arrival order) -> the windows the worker would score (``config.names()``
    columns) and the rows that are ready. Training uses this, offline and in the retrainer."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    columns, ready = fold_windows(list(sensor_ids), values.tolist(), {} if feed_state is None else feed_state, config, stats)
    return pd.DataFrame(columns), ready
