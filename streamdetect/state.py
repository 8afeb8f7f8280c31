"""Per-partition state (``PartitionState``) and its checkpoints in the compacted state topic.

A partition's state: the per-key score levels of the adaptive thresholds (``KeyLevel``), the
feed's own state (sensor windows), the alert budget and the drift detectors, and the next offset.

The state topic has as many partitions as the feed topics; the state of feed partition ``p``
goes to state partition ``p`` with key ``"<feed>:<p>"`` (so a worker assigned ``p`` reads one
partition back), as JSON (never pickle) including the next offset to consume.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from river import stats

from streamdetect.budget import AlertBudget
from streamdetect.drift import DriftMonitor
from streamdetect.thresholds import rows_by_key

log = logging.getLogger(__name__)


class KeyLevel:
    """Rolling median of one key's recent raw scores, plus how many it has seen.

    The rolling quantile is built from the recent scores when the median is first asked for: the
    median is only read once a key is past its warm-up, and a fleet of many keys that are mostly
    young (10,000 sensors) would otherwise pay for a quantile update per event it never reads."""

    __slots__ = ("count", "quantile", "values")

    def __init__(self, window: int, values: Sequence[float] = (), count: int = 0):
        self.quantile: stats.RollingQuantile | None = None
        self.values: deque[float] = deque((float(v) for v in values), maxlen=window)  # ours is what we checkpoint
        self.count = max(count, len(values))

    def update(self, value: float) -> None:
        self.update_many([value])

    def update_many(self, values: list[float]) -> None:
        if self.quantile is not None:
            update = self.quantile.update
            for value in values[-self.values.maxlen:]:  # only the last window's worth can stay in the window
                update(value)
        self.values.extend(values)
        self.count += len(values)

    def median(self) -> float | None:
        if self.quantile is None:
            self.quantile = stats.RollingQuantile(0.5, window_size=self.values.maxlen)
            for value in self.values:
                self.quantile.update(value)
        return self.quantile.get()


class PartitionState:
    """Per-key levels of one input partition, LRU-bounded, with the next offset to consume.

    Also carries, all checkpointed with it: the feed's own state (``feed_state``, e.g. the sensor
    windows), the alert budget per key per hour (``budget.AlertBudget``), the drift detectors per
    key (``drift.DriftMonitor``, when configured) and the model version the levels belong to (a new
    model has a new score scale: its levels and drift detectors start afresh).
    """

    def __init__(self, *, window: int, warmup: int, max_keys: int = 100_000,
                 budget_per_hour: float | None = None, drift: dict | None = None):
        self.window, self.warmup, self.max_keys = window, warmup, max_keys
        self.keys: OrderedDict[str, KeyLevel] = OrderedDict()
        self.next_offset: int | None = None
        self.feed_state: dict = {}
        self.budget = AlertBudget(per_hour=budget_per_hour, max_keys=max_keys)
        self.drift_params = drift
        self.drift = DriftMonitor("", **drift) if drift is not None else None
        self.model_version: str | None = None

    def reconfigure(self, *, budget_per_hour: float | None, drift: dict | None) -> None:
        """Apply the configured budget and drift settings to a restored state (keeping its buckets and detectors)."""
        self.budget.per_hour = budget_per_hour
        if budget_per_hour is not None:
            self.budget.burst = max(1.0, budget_per_hour)
        if drift != self.drift_params:
            saved = self.drift.to_dict() if self.drift is not None else None
            self.drift = DriftMonitor("", **drift).load(saved) if drift is not None else None
            self.drift_params = drift

    def observe_model(self, version: str) -> bool:
        """Start the key levels and drift detectors afresh when the model changes; True if it did."""
        if self.model_version == version:
            return False
        if self.model_version is not None:
            self.keys.clear()
            if self.drift is not None:
                self.drift.keys.clear()
        self.model_version = version
        return True

    def factors(self, keys: Sequence[str], calibration_median: float) -> dict[str, float]:
        """Level factor per distinct key in ``keys`` (1 for unknown or warming-up keys)."""
        out = {}
        for key in set(keys):
            level = self.keys.get(key)
            median = level.median() if level is not None and level.count >= self.warmup else None
            out[key] = max(1.0, median / calibration_median) if median is not None else 1.0
        return out

    def update(self, keys: Sequence[str], scores: np.ndarray, groups: dict | None = None) -> None:
        # grouped by key, in order: one bulk update per key (``groups``: rows_by_key(keys), when the caller has it)
        values = scores.tolist()
        levels = self.keys
        for key, rows in (groups if groups is not None else rows_by_key(keys)).items():
            level = levels.get(key)
            if level is None:
                level = levels[key] = KeyLevel(self.window)
            else:
                levels.move_to_end(key)
            level.update_many([values[r] for r in rows] if len(rows) < len(values) else values)
        while len(self.keys) > self.max_keys:
            self.keys.popitem(last=False)  # least recently seen key

    # -- checkpoints: plain JSON-able dicts ---------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "window": self.window,
            "warmup": self.warmup,
            "next_offset": self.next_offset,
            "keys": {key: {"count": level.count, "values": list(level.values)} for key, level in self.keys.items()},
            "feed_state": plain(self.feed_state),
            "budget": self.budget.to_dict(),
            "drift": self.drift.to_dict() if self.drift is not None else None,
            "model_version": self.model_version,
            "options": {"budget_per_hour": self.budget.per_hour, "drift": self.drift_params},
        }

    @classmethod
    def from_dict(cls, data: dict, *, window: int, warmup: int, max_keys: int = 100_000,
                  budget_per_hour: float | None | str = "checkpoint", drift: dict | None | str = "checkpoint") -> "PartitionState":
        """Restore; the configured window and warm-up win over the checkpoint's (settings may change).
        Budget and drift settings not given are the checkpoint's own (``reconfigure`` changes them)."""
        options = data.get("options") or {}
        if budget_per_hour == "checkpoint":
            budget_per_hour = options.get("budget_per_hour")
        if drift == "checkpoint":
            drift = options.get("drift")
        state = cls(window=window, warmup=warmup, max_keys=max_keys, budget_per_hour=budget_per_hour, drift=drift)
        state.next_offset = data.get("next_offset")
        state.feed_state = data.get("feed_state") or {}
        state.budget.load(data.get("budget"))
        if state.drift is not None:
            state.drift.load(data.get("drift"))
        state.model_version = data.get("model_version")
        for key, level in data.get("keys", {}).items():
            state.keys[key] = KeyLevel(window, level["values"][-window:], int(level["count"]))
        while len(state.keys) > max_keys:
            state.keys.popitem(last=False)
        return state



def state_key(feed: str, partition: int) -> str:
    return f"{feed}:{partition}"


def checkpoint_value(feed: str, partition: int, state_dict: dict) -> bytes:
    return orjson.dumps({"feed": feed, "partition": partition, "written_at": time.time(), **state_dict})


def plain(value: Any) -> Any:
    """A feed state as JSON-able builtins: the live objects a featurization keeps there (a sensor's
    window store, its streaming detectors) become their ``to_dict()``; dicts are walked."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if to_dict is not None else value


async def read_latest_states(
    bootstrap_kwargs: dict[str, Any], topic: str, partitions: list[int], *, timeout: float = 15.0
) -> dict[str, dict]:
    """Read state ``partitions`` of ``topic`` to their end; the latest value per key.

    "The end" is the high watermark of the fetch responses, not ``end_offsets()``: Tansu answers
    ListOffsets(latest) wrongly for multi-record batches (see ``broker.py``).
    """
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**bootstrap_kwargs, enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=50, auto_offset_reset="earliest")
    await consumer.start()
    latest: dict[str, dict] = {}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        pending = set(tps)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"state topic {topic} partitions {sorted(tp.partition for tp in pending)} not read within {timeout:.0f}s")
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for records in batch.values():
                for record in records:
                    if record.key is None or record.value is None:
                        continue  # tombstone or foreign record
                    try:
                        latest[record.key.decode()] = orjson.loads(record.value)
                    except (orjson.JSONDecodeError, UnicodeDecodeError):
                        log.warning("state topic %s[%d]@%d: unreadable checkpoint, skipped", topic, record.partition, record.offset)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    pending.discard(tp)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return latest
