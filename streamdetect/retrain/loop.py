"""Drift -> retrain -> shadow -> promote (or reject), and rollback.

The ``retrain`` agent in ``app.py`` reads ``model-control``; on a ``drift`` message (published by
the batch scorer, see ``drift.py``) or a manual ``{"action": "retrain", "feed": ...}`` it runs
``Retrainer.run`` for the feed, at most one at a time per feed and not more often than the
configured cooldown. Every step is a ``model-control`` message and a log line:

``retrain_started`` -> ``candidate_trained`` (or ``retrain_failed``) -> ``shadow_started`` ->
``shadow_result`` -> ``promote`` (handled by ``apply_control``: every scoring worker swaps to the
new bundle without a restart) or ``candidate_rejected``. ``{"action": "rollback", "feed": ...}``
returns to the previous version (``offline.bundle.rollback``).

``{"action": "learn", "feed": ...}`` (sent by the feedback agent every ``labels.learn_every`` new
labels, or by hand) learns a second stage from the analysts' labels instead (``Retrainer.learn``,
``retrain/labels.py``): ``learn_started`` (or ``learn_skipped``: too few labels) -> ``shadow_result``
-> ``promote`` or ``candidate_rejected`` (or ``learn_failed``). The drift retrain below refits the
unsupervised part of a labelled bundle; the next labels teach a new stage on top of it.

1. **Training data**: after a drift, the first ``window_events`` events scored after the drift
   point (the retrainer waits for them; a manual ``retrain`` takes the latest ``window_events``
   scored), read back from the feed topic between the scorer group's committed offsets, minus every event that
   alerted (``alerts`` topic) or that an analyst confirmed anomalous (``feedback`` topic:
   ``{"event_id", "label": "confirmed" | "false_alarm"}``). Sensor windows are rebuilt from
   the events in order with the window configuration of the bundle in service.
2. **Training** runs in a separate process (``train_candidate``, a process pool with the spawn
   start method): ``offline.training.train.fit_model`` on the earliest ``1 - calibration_fraction`` of the
   rows, calibration on the rest, ``offline.bundle.save_bundle`` into the next registry version.
3. **Shadow**: the next ``shadow_events`` events after the training window (waited for) are scored by the
   model in service and by the candidate, side by side (same featurization, same state).
4. **Promotion** (``promotion_decision``): the candidate must be better calibrated -- its alert
   rate (share of p-values below the target) closer to the target than the current model's --
   and must not lose detection on known anomalies (analyst-confirmed events): it must flag at
   least as many of them as the current model.
"""

from __future__ import annotations

import asyncio
import json
import concurrent.futures
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

import orjson

from streamdetect.retrain.candidate import shadow_compare, train_candidate
from streamdetect.retrain.policy import after_time, choose_window, parse_time, promotion_decision

log = logging.getLogger("streamdetect.retrain")

# -- the loop against Kafka --------------------------------------------------------------------
async def read_range(bootstrap_kwargs: dict, topic: str, ranges: dict[int, tuple[int, int]], *, timeout: float) -> list:
    """Records of ``topic`` in ``[start, end)`` per partition, partition by partition in offset order.
    Waits (up to ``timeout``) for records that are not there yet."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    ranges = {p: r for p, r in ranges.items() if r[1] > r[0]}
    if not ranges:
        return []
    consumer = AIOKafkaConsumer(**bootstrap_kwargs, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    got: dict[int, list] = {p: [] for p in ranges}
    try:
        tps = {p: TopicPartition(topic, p) for p in ranges}
        consumer.assign(list(tps.values()))
        for p, (start, _) in ranges.items():
            consumer.seek(tps[p], start)
        deadline = time.monotonic() + timeout
        pending = set(ranges)
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*[tps[p] for p in pending], timeout_ms=200, max_records=10_000)
            for tp, records in batch.items():
                end = ranges[tp.partition][1]
                got[tp.partition] += [r for r in records if r.offset < end]
                if records and records[-1].offset >= end - 1:
                    pending.discard(tp.partition)
    finally:
        await consumer.stop()
    return [r for p in sorted(got) for r in got[p]]


async def read_all(bootstrap_kwargs: dict, topic: str, *, timeout: float = 10.0) -> list:
    """Every record of a (low-volume) topic, to the high watermark of each partition."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, **bootstrap_kwargs, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50,
                                auto_offset_reset="earliest")
    await consumer.start()
    out = []
    try:
        deadline = time.monotonic() + timeout
        idle = 0
        while time.monotonic() < deadline and idle < 3:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            records = [r for rs in batch.values() for r in rs]
            out += records
            idle = 0 if records else idle + 1
    finally:
        await consumer.stop()
    return out


async def committed_offsets(bootstrap_kwargs: dict, topic: str, group: str, partitions: int) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**bootstrap_kwargs, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        out = {}
        for p in range(partitions):
            committed = await consumer.committed(TopicPartition(topic, p))
            out[p] = committed or 0
        return out
    finally:
        await consumer.stop()


class Retrainer:
    """The retrain loop of one worker. ``publish(message)`` sends a ``model-control`` message."""

    def __init__(self, settings, bootstrap_kwargs: dict, publish: Callable[[dict], Awaitable[None]],
                 labels: Callable[[], dict[str, dict]] = dict):
        self.settings, self.kafka, self.publish = settings, bootstrap_kwargs, publish
        self.labels = labels  # event id -> the analysts' latest label (the app's ``labels`` table)
        self.running: dict[str, asyncio.Task] = {}
        self.last_started: dict[str, float] = {}
        self.history: deque[dict] = deque(maxlen=100)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _step(self, message: dict) -> None:
        message = {**message, "at": time.time()}
        self.history.append(message)
        log.info("retrain loop: %s", orjson.dumps(message).decode()[:600])
        await self.publish(message)

    async def _wait_for(self, topic: str, base: dict[int, int], count: int, timeout: float) -> dict[int, int]:
        """Committed offsets of the scorer group once ``count`` events past ``base`` are scored (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            now = await committed_offsets(self.kafka, topic, self.settings.kafka.consumer_group, self.settings.topics.partitions)
            done = sum(max(0, now[p] - base.get(p, 0)) for p in now)
            if done >= count or time.monotonic() > deadline:
                return now
            await asyncio.sleep(1.0)

    def trigger(self, message: dict) -> str:
        """A ``drift``, ``retrain`` or ``learn`` message: start a retrain (or label learning) for its feed
        unless one runs or, for drift, one started within the cooldown."""
        feed = message.get("feed")
        config = self.settings.retrain
        if feed not in self.settings.feeds:
            return f"retrain: feed {feed!r} not served here"
        if message.get("action") == "learn":
            if feed in self.running and not self.running[feed].done():
                return f"learn: {feed} is retraining; the labels wait for the next request"
            self.running[feed] = asyncio.ensure_future(self.learn(feed))
            return f"learn: started for {feed}"
        if not config.enabled and message.get("action") == "drift":
            return f"retrain: drift on {feed} noted; automatic retraining is off"
        if feed in self.running and not self.running[feed].done():
            return f"retrain: {feed} already retraining; drift noted"
        since = time.monotonic() - self.last_started.get(feed, -1e9)
        if message.get("action") == "drift" and since < config.cooldown_s:
            return f"retrain: {feed} retrained {since:.0f}s ago (cooldown {config.cooldown_s:.0f}s); drift noted"
        self.last_started[feed] = time.monotonic()
        self.running[feed] = asyncio.ensure_future(self.run(feed, trigger=message))
        return f"retrain: started for {feed} (trigger {message.get('action')} key {message.get('key')!r})"

    async def run(self, feed: str, *, trigger: dict) -> dict | None:
        from offline import bundle as bundles
        from streamdetect.feeds import get_feed

        settings, config = self.settings, self.settings.retrain
        topic = get_feed(feed).topic(settings)
        rate = settings.scoring.target_false_alarm_rate
        registry = Path(settings.registry_dir)
        try:
            current_version = bundles.current_version(registry, feed)
            current_dir = bundles.feed_dir(registry, feed) / current_version
            await self._step({"action": "retrain_started", "feed": feed, "model_version": current_version,
                              "trigger": {k: trigger.get(k) for k in ("action", "key", "partition", "evidence", "model_version")}})
            partitions = settings.topics.partitions
            now = await committed_offsets(self.kafka, topic, settings.kafka.consumer_group, partitions)
            drift = trigger.get("action") == "drift"
            since = parse_time(trigger.get("event_time")) if drift else None
            # the scored events of the last window_events per partition; after a drift, those since the
            # drift point, waiting for more when too few have been scored yet
            records = await read_range(self.kafka, topic, {p: (max(0, e - config.window_events), e) for p, e in now.items()}, timeout=60)
            read_to = dict(now)
            deficit = config.window_events - len(after_time(records, since))
            if drift and deficit > 0:
                read_to = await self._wait_for(topic, now, deficit, config.collect_timeout_s)
                records += await read_range(self.kafka, topic, {p: (now[p], read_to[p]) for p in now}, timeout=60)
            train_records, train_end = choose_window(after_time(records, since), config.window_events, latest=not drift)
            for p in now:
                train_end.setdefault(p, read_to[p] if drift else now[p])
            events = _decode_valid(sorted(train_records, key=lambda r: (r.partition, r.offset)), feed)
            alerted = {orjson.loads(r.value).get("event_id") for r in await read_all(self.kafka, settings.topics.alerts)
                       if r.value and orjson.loads(r.value).get("feed") == feed}
            feedback = [orjson.loads(r.value) for r in await read_all(self.kafka, settings.topics.feedback) if r.value]
            confirmed = {f.get("event_id") for f in feedback if f.get("label") == "confirmed"}
            job_dir = Path(settings.data.data_dir) / "retrain" / feed
            job_dir.mkdir(parents=True, exist_ok=True)
            events_path = job_dir / f"events-{int(time.time() * 1000)}.jsonl"
            events_path.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
            job = {"feed": feed, "registry": str(registry), "current_bundle": str(current_dir), "events_path": str(events_path),
                   "alerted": sorted(i for i in alerted if i), "confirmed": sorted(i for i in confirmed if i),
                   "min_train_rows": config.min_train_rows, "calibration_fraction": config.calibration_fraction,
                   "params": config.params, "trigger": trigger.get("action")}
            loop = asyncio.get_running_loop()
            summary = await asyncio.wait_for(loop.run_in_executor(self.pool(), train_candidate, job), config.timeout_s)
            candidate = summary["version"]
            await self._step({"action": "candidate_trained", "feed": feed, "version": candidate, "model_version": current_version,
                              "summary": summary, "dropped_alerted": len(alerted), "confirmed_anomalies": len(confirmed)})
            await self._step({"action": "shadow_started", "feed": feed, "current": current_version, "candidate": candidate,
                              "events": config.shadow_events})
            shadow_records = [r for r in records if r.offset >= train_end[r.partition]]
            if len(shadow_records) < config.shadow_events:  # wait for the next events to be scored
                more_to = await self._wait_for(topic, read_to, config.shadow_events - len(shadow_records), config.collect_timeout_s)
                shadow_records += await read_range(self.kafka, topic, {p: (read_to[p], more_to[p]) for p in read_to}, timeout=60)
            shadow = _decode_valid(sorted(shadow_records, key=lambda r: (r.partition, r.offset)), feed)
            known = [e for e in events if e.get("event_id") in confirmed]
            cur, cand = await asyncio.to_thread(shadow_compare, feed, str(current_dir), str(bundles.feed_dir(registry, feed) / candidate),
                                                events, shadow, known, rate)
            decision = promotion_decision(cur, cand, target_rate=rate, min_events=min(config.min_shadow_events, config.shadow_events))
            await self._step({"action": "shadow_result", "feed": feed, "candidate": candidate, "promote": decision.promote,
                              "reason": decision.reason, "current_stats": decision.current, "candidate_stats": decision.candidate})
            if decision.promote and config.auto_promote:
                await self._step({"action": "promote", "feed": feed, "version": candidate, "reason": decision.reason})
            else:
                await self._step({"action": "candidate_rejected", "feed": feed, "version": candidate, "reason": decision.reason})
            return {"candidate": candidate, "decision": asdict(decision)}
        except Exception as exc:  # the loop must never take the worker down
            log.exception("retrain of %s failed", feed)
            await self._step({"action": "retrain_failed", "feed": feed, "error": f"{type(exc).__name__}: {exc}"[:1000]})
            return None

    async def learn(self, feed: str) -> dict | None:
        """Labels -> second-stage candidate -> check -> promote or reject (``retrain/labels.py``)."""
        from offline import bundle as bundles
        from streamdetect.feeds import get_feed
        from streamdetect.retrain.labels import train_label_stage

        settings, config = self.settings, self.settings.labels
        registry = Path(settings.registry_dir)
        try:
            current_version = bundles.current_version(registry, feed)
            labels = self.labels()
            alerts = [orjson.loads(r.value) for r in await read_all(self.kafka, settings.topics.alerts) if r.value]
            alerted = {a["event_id"]: a["event"] for a in alerts if a.get("feed") == feed}
            labelled = [{"event": alerted[i], "label": labels[i]["label"]} for i in sorted(labels) if i in alerted]
            confirmed = sum(item["label"] == "confirmed" for item in labelled)
            counts = {"labels": len(labelled), "confirmed": confirmed, "false_alarm": len(labelled) - confirmed}
            if len(labelled) < config.min_labels or min(confirmed, len(labelled) - confirmed) < config.min_per_class:
                await self._step({"action": "learn_skipped", "feed": feed, "model_version": current_version, **counts,
                                  "reason": f"needs {config.min_labels} labelled alerts with {config.min_per_class} of each label"})
                return None
            await self._step({"action": "learn_started", "feed": feed, "model_version": current_version, **counts})
            current_dir = bundles.feed_dir(registry, feed) / current_version
            normals = []
            if "calibration_rows" not in json.loads((current_dir / bundles.MANIFEST).read_text()):
                # no held-out normal rows in the bundle: the latest scored events that neither alerted nor were confirmed
                topic = get_feed(feed).topic(settings)
                now = await committed_offsets(self.kafka, topic, settings.kafka.consumer_group, settings.topics.partitions)
                span = max(1, config.calibration_events // settings.topics.partitions)
                records = await read_range(self.kafka, topic, {p: (max(0, e - span), e) for p, e in now.items()}, timeout=60)
                excluded = set(alerted) | {i for i, v in labels.items() if v["label"] == "confirmed"}
                normals = [e for e in _decode_valid(records, feed) if e.get("event_id") not in excluded]
            job_dir = Path(settings.data.data_dir) / "retrain" / feed
            job_dir.mkdir(parents=True, exist_ok=True)
            stamp = int(time.time() * 1000)
            labelled_path, normals_path = job_dir / f"labelled-{stamp}.jsonl", job_dir / f"normals-{stamp}.jsonl"
            labelled_path.write_bytes(b"\n".join(orjson.dumps(item) for item in labelled))
            normals_path.write_bytes(b"\n".join(orjson.dumps(e) for e in normals))
            job = {"feed": feed, "registry": str(registry), "current_bundle": str(current_dir),
                   "labelled_path": str(labelled_path), "normals_path": str(normals_path),
                   "regularization": config.regularization, "target_rate": settings.scoring.target_false_alarm_rate}
            loop = asyncio.get_running_loop()
            summary = await asyncio.wait_for(loop.run_in_executor(self.pool(), train_label_stage, job), settings.retrain.timeout_s)
            decision = summary["decision"]
            await self._step({"action": "shadow_result", "feed": feed, "candidate": summary["version"], "stage": "labels",
                              "promote": decision["promote"], "reason": decision["reason"], "summary": summary})
            if decision["promote"] and settings.retrain.auto_promote:
                await self._step({"action": "promote", "feed": feed, "version": summary["version"], "reason": decision["reason"]})
            else:
                await self._step({"action": "candidate_rejected", "feed": feed, "version": summary["version"], "reason": decision["reason"]})
            return summary
        except Exception as exc:  # the loop must never take the worker down
            log.exception("label learning for %s failed", feed)
            await self._step({"action": "learn_failed", "feed": feed, "error": f"{type(exc).__name__}: {exc}"[:1000]})
            return None


def _decode_valid(records: list, feed_name: str) -> list[dict]:
    from streamdetect.feeds import get_feed

    feed = get_feed(feed_name)
    out = []
    for record in records:
        try:
            obj = orjson.loads(record.value)
            feed.event_model.model_validate(obj)
        except Exception:  # noqa: BLE001 - anything the scorer dead-lettered is not training data
            continue
        out.append(obj)
    return out

