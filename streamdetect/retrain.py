"""Drift -> retrain -> shadow -> promote (or reject), and rollback.

The ``retrain`` agent in ``app.py`` reads ``model-control``; on a ``drift`` message (published by
the batch scorer, see ``drift.py``) or a manual ``{"action": "retrain", "feed": ...}`` it runs
``Retrainer.run`` for the feed, at most one at a time per feed and not more often than the
configured cooldown. Every step is a ``model-control`` message and a log line:

``retrain_started`` -> ``candidate_trained`` (or ``retrain_failed``) -> ``shadow_started`` ->
``shadow_result`` -> ``promote`` (handled by ``apply_control``: every scoring worker swaps to the
new bundle without a restart) or ``candidate_rejected``. ``{"action": "rollback", "feed": ...}``
returns to the previous version (``offline.bundle.rollback``).

1. **Training data**: after a drift, the first ``window_events`` events scored after the drift
   point (the retrainer waits for them; a manual ``retrain`` takes the latest ``window_events``
   scored), read back from the feed topic between the scorer group's committed offsets, minus every event that
   alerted (``alerts`` topic) or that an analyst confirmed anomalous (``feedback`` topic:
   ``{"event_id", "label": "confirmed" | "false_alarm"}``). Sensor windows are rebuilt from
   the events in order with the window configuration of the bundle in service.
2. **Training** runs in a separate process (``train_candidate``, a process pool with the spawn
   start method): ``offline.train.fit_model`` on the earliest ``1 - calibration_fraction`` of the
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
import concurrent.futures
import datetime as dt
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

log = logging.getLogger("streamdetect.retrain")

#: model-control actions that describe the retrain loop (``apply_control`` ignores them)
LOOP_ACTIONS = frozenset({"drift", "retrain", "retrain_started", "retrain_failed", "retrain_skipped", "candidate_trained",
                          "shadow_started", "shadow_result", "candidate_rejected"})


# -- the decision: plain functions ------------------------------------------------------------------
@dataclass
class ShadowStats:
    """One model's behaviour on the shadow events (and on the known anomalies)."""

    version: str
    events: int = 0
    alerts: int = 0  # p-value < target rate
    known_anomalies: int = 0
    known_detected: int = 0

    @property
    def alert_rate(self) -> float:
        return self.alerts / self.events if self.events else float("nan")


def shadow_stats(version: str, p_values: np.ndarray, rate: float, known_p_values: np.ndarray | None = None) -> ShadowStats:
    known = np.asarray([] if known_p_values is None else known_p_values, dtype=float)
    p = np.asarray(p_values, dtype=float)
    return ShadowStats(version, int(len(p)), int((p < rate).sum()), int(len(known)), int((known < rate).sum()))


@dataclass
class Decision:
    promote: bool
    reason: str
    current: dict = field(default_factory=dict)
    candidate: dict = field(default_factory=dict)


def promotion_decision(current: ShadowStats, candidate: ShadowStats, *, target_rate: float, min_events: int = 100) -> Decision:
    """Promote only when the candidate is better calibrated and loses no known anomaly.

    >>> cur = ShadowStats("v0001", events=1000, alerts=400, known_anomalies=4, known_detected=4)
    >>> new = ShadowStats("v0002", events=1000, alerts=12, known_anomalies=4, known_detected=4)
    >>> promotion_decision(cur, new, target_rate=0.01).promote
    True
    >>> promotion_decision(cur, ShadowStats("v0003", 1000, 12, 4, 2), target_rate=0.01).reason
    'candidate detects 2 of 4 known anomalies, the model in service 4'
    """
    evidence = {"current": _stats_dict(current), "candidate": _stats_dict(candidate)}
    if candidate.events < min_events:
        return Decision(False, f"only {candidate.events} shadow events (< {min_events})", **evidence)
    if candidate.known_detected < current.known_detected:
        return Decision(False, f"candidate detects {candidate.known_detected} of {candidate.known_anomalies} known anomalies, "
                               f"the model in service {current.known_detected}", **evidence)
    gap_current = abs(current.alert_rate - target_rate)
    gap_candidate = abs(candidate.alert_rate - target_rate)
    if not gap_candidate < gap_current:
        return Decision(False, f"candidate alert rate {candidate.alert_rate:.4f} is not closer to the target {target_rate:g} "
                               f"than the model in service's {current.alert_rate:.4f}", **evidence)
    return Decision(True, f"alert rate {current.alert_rate:.4f} -> {candidate.alert_rate:.4f} (target {target_rate:g}); "
                          f"known anomalies detected {current.known_detected} -> {candidate.known_detected} of {candidate.known_anomalies}",
                    **evidence)


def _stats_dict(stats: ShadowStats) -> dict:
    return {**asdict(stats), "alert_rate": round(stats.alert_rate, 6) if stats.events else None}


def drop_rows(event_ids: Sequence[str], alerted: set[str], confirmed: set[str]) -> np.ndarray:
    """Boolean mask of the rows kept for training: neither alerted nor analyst-confirmed."""
    return np.fromiter((i not in alerted and i not in confirmed for i in event_ids), dtype=bool, count=len(event_ids))


# -- featurization of recent events (the same as the worker's) ---------------------------------
def event_frame(feed_name: str, events: Sequence[dict], window_config: dict | None, feed_state: dict | None = None,
                stats: dict | None = None):
    """Validated events (dicts, in partition/offset order) -> (feature frame, event ids, ready mask, events)."""
    import pandas as pd

    from streamdetect.feeds import get_feed

    feed = get_feed(feed_name)
    models = [feed.event_model.model_validate(e) for e in events]
    ids = [m.event_id for m in models]
    if window_config is not None:
        from offline.windows import WindowConfig, fold_windows

        config = WindowConfig.from_dict(window_config)
        columns, ready = fold_windows([m.sensor_id for m in models], [m.values for m in models],
                                      {} if feed_state is None else feed_state, config, stats)
    else:
        columns, ready = feed.columns_of(models), np.ones(len(models), dtype=bool)
    return pd.DataFrame(columns), ids, ready, models


def train_candidate(job: dict) -> dict:
    """Runs in a worker *process*: recent events -> candidate bundle in the registry. Returns a summary."""
    import torch

    torch.set_num_threads(1)
    from offline import bundle as bundles
    from offline.train import fit_model

    started = time.perf_counter()
    current = bundles.load_bundle(Path(job["current_bundle"]))
    extra = current.manifest.get("extra") or {}
    window = extra.get("sensor_windows")
    events = [orjson.loads(line) for line in Path(job["events_path"]).read_bytes().splitlines() if line]
    stats = None
    if window is not None:  # per-sensor statistics of the recent readings that are neither alerted nor confirmed
        from offline.windows import STATS_KEY, fit_sensor_stats

        _, ids, _, models = event_frame(job["feed"], events, None)
        normal = drop_rows(ids, set(job["alerted"]), set(job["confirmed"]))
        fresh = fit_sensor_stats([m.sensor_id for m, ok in zip(models, normal) if ok],
                                 [m.values for m, ok in zip(models, normal) if ok])
        stats = {**(extra.get(STATS_KEY) or {}), **fresh}
        extra = {**extra, STATS_KEY: stats}
    frame, ids, ready, _ = event_frame(job["feed"], events, window, stats=stats)
    keep = ready & drop_rows(ids, set(job["alerted"]), set(job["confirmed"]))
    frame = frame[keep].reset_index(drop=True)
    if len(frame) < job["min_train_rows"]:
        raise ValueError(f"only {len(frame)} usable rows after dropping alerted/confirmed events (< {job['min_train_rows']})")
    cut = int(len(frame) * (1 - job["calibration_fraction"]))
    schema = current.schema
    params = {**current.manifest["model"]["params"], **job.get("params", {}), "progress": False}
    fitted = fit_model(current.model_name, params, frame.iloc[:cut], frame.iloc[cut:],
                       numeric=schema.numeric, categorical=schema.categorical, log_scale=schema.log_scale)
    directory = bundles.next_version_dir(Path(job["registry"]), job["feed"])
    bundles.save_bundle(
        directory, detector=fitted.detector, schema=fitted.schema, calibration_scores=fitted.calibration_scores,
        feed=job["feed"], dataset=f"{job['feed']}:recent-events",
        score_definition=current.manifest["score"]["definition"], training_fingerprint=fitted.training_fingerprint,
        metrics={"train_rows": cut, "calibration_rows": len(frame) - cut, "events_read": len(events),
                 "dropped": int((~keep).sum()), "trigger": job.get("trigger")},
        extra={**extra, "retrained_from": current.version},
    )
    return {"version": directory.name, "train_rows": cut, "calibration_rows": len(frame) - cut, "events_read": len(events),
            "dropped_alerted_or_confirmed": int((ready & ~keep).sum()), "seconds": round(time.perf_counter() - started, 2)}


def shadow_compare(feed_name: str, current_dir: str, candidate_dir: str, history: list[dict], shadow: list[dict],
                   known: list[dict], rate: float) -> tuple[ShadowStats, ShadowStats]:
    """Score the shadow events with both bundles (windows continue from ``history``); also the
    known anomalies (scored in their own windows, from the history they were recorded in)."""
    from offline import bundle as bundles
    from streamdetect.scoring import score
    from streamdetect.thresholds import p_values

    from offline.windows import stats_of_bundle

    current, candidate = bundles.load_bundle(Path(current_dir)), bundles.load_bundle(Path(candidate_dir))
    window = (current.manifest.get("extra") or {}).get("sensor_windows")
    n_hist = len(history)
    known_ids = {e.get("event_id") for e in known}
    out = []
    for bundle in (current, candidate):  # each with its own sensor statistics, as it would be served
        all_frame, all_ids, all_ready, _ = event_frame(feed_name, history + shadow, window, stats=stats_of_bundle(bundle))
        frame, ready = all_frame.iloc[n_hist:], all_ready[n_hist:]
        known_rows = np.array([i in known_ids and r for i, r in zip(all_ids, all_ready)], dtype=bool)
        X, _ = bundle.schema.transform(frame[ready])
        p = p_values(score(bundle, X), bundle.calibration_scores)
        Xk, _ = bundle.schema.transform(all_frame[known_rows]) if known_rows.any() else (np.empty((0, bundle.schema.n_features)), None)
        pk = p_values(score(bundle, Xk), bundle.calibration_scores) if len(Xk) else np.empty(0)
        out.append(shadow_stats(bundle.version, p, rate, pk))
    return out[0], out[1]


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

    def __init__(self, settings, bootstrap_kwargs: dict, publish: Callable[[dict], Awaitable[None]]):
        self.settings, self.kafka, self.publish = settings, bootstrap_kwargs, publish
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
        """A ``drift`` or ``retrain`` message: start a retrain for its feed unless one runs or cooled down."""
        feed = message.get("feed")
        config = self.settings.retrain
        if feed not in self.settings.feeds:
            return f"retrain: feed {feed!r} not served here"
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
            since = _parse_time(trigger.get("event_time")) if drift else None
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


def _parse_time(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _record_time(record) -> dt.datetime | None:
    try:
        return _parse_time(orjson.loads(record.value).get("event_time"))
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None


def after_time(records: list, since: dt.datetime | None) -> list:
    """Records whose event time is at or after ``since`` (all when ``since`` is None)."""
    if since is None:
        return list(records)
    return [r for r in records if (t := _record_time(r)) is not None and t >= since]


def choose_window(records: list, n: int, *, latest: bool) -> tuple[list, dict[int, int]]:
    """The first (or latest) ``n`` records in event-time order -- per partition a contiguous run --
    and, per partition, the offset after the last one chosen."""
    timed = sorted(records, key=lambda r: ((_record_time(r) or dt.datetime.min.replace(tzinfo=dt.timezone.utc)), r.partition, r.offset))
    chosen = timed[-n:] if latest else timed[:n]
    ends: dict[int, int] = {}
    for r in chosen:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return chosen, ends


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

