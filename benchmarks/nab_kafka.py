"""NAB through Kafka and the worker process: the transport half of ``python -m benchmarks.nab_replay``.

``nab_replay`` replays each series through the worker's per-batch code in-process (deterministic,
and the only way to run the drift -> retrain loop on event time). With ``--transport kafka`` the
same series go through the real thing: an embedded Tansu broker (or ``KAFKA__BOOTSTRAP``) and one
``faust -A streamdetect.app worker`` process per (model, threshold rule), serving the
``sensor-readings`` feed. The series are replayed one after the other, each by its own bundle: the
bundle is promoted in the worker's registry, the worker swaps to it without a restart (as after a
retrain), the series' readings are produced keyed by sensor, and the run waits until the
series' last reading has a score record from that bundle. Alerts are read back from the alerts
topic. Drift and retraining are off: this measures the first model of each series.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from aiokafka import AIOKafkaConsumer

from offline import bundle as bundles
from offline.bundle import Bundle
from offline.data.nab import NABSeries
from benchmarks.measure import produce
from benchmarks.stream_bench import TOPIC_FIELDS, run_settings
from streamdetect.worker_process import WorkerProcess, wait_for
from streamdetect.kafka.broker import EmbeddedBroker, client_kwargs, ensure_topics, free_port
from streamdetect.feeds import get_feed
from streamdetect.settings import Settings

log = logging.getLogger("benchmarks.nab_kafka")
FEED = get_feed("sensor-readings")


def _row(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


class OutputReader:
    """Reads the run's alerts and score records as they come (one consumer for the whole run)."""

    def __init__(self, kafka: dict, settings: Settings):
        self.kafka, self.topics = kafka, settings.topics
        self.alerted: dict[str, set[int]] = {}  # sensor -> rows alerted
        self.scored_by: dict[str, dict[int, str]] = {}  # sensor -> row -> model version that scored it
        self.flagged: dict[str, set[int]] = {}  # sensor -> rows its scores records say alerted (alerts travel apart)
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(self.topics.alerts, self.topics.scores, **self.kafka, group_id=None,
                                         enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                         max_partition_fetch_bytes=16 << 20)
        await self.consumer.start()

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not seen within {timeout:.0f}s")
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, records in batch.items():
                for record in records:
                    value = orjson.loads(record.value)
                    if tp.topic == self.topics.alerts:
                        self.alerted.setdefault(value["key"], set()).add(_row(value["event_id"]))
                    else:
                        for event_id, alerted in zip(value["event_ids"], value["alerted"]):
                            sensor = event_id.rsplit("-", 1)[0]
                            self.scored_by.setdefault(sensor, {})[_row(event_id)] = value["model_version"]
                            if alerted:
                                self.flagged.setdefault(sensor, set()).add(_row(event_id))

    def settled(self, sensor: str, last: int) -> bool:
        """The sensor's reading ``last`` is scored and every alert its scores records announce has arrived."""
        return last in self.scored_by.get(sensor, {}) and self.flagged.get(sensor, set()) <= self.alerted.get(sensor, set())

    async def stop(self) -> None:
        await self.consumer.stop()


def events_of(series: NABSeries) -> list[bytes]:
    times = pd.DatetimeIndex(series.timestamps).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [orjson.dumps({"event_id": f"{series.sensor_id}-{i}", "sensor_id": series.sensor_id, "event_time": t, "value": v})
            for i, (t, v) in enumerate(zip(times, series.values.tolist()))]


def replay_series_through_kafka(
    corpus: dict[str, NABSeries], bundle_of: dict[str, Bundle], *, budget_per_hour: float | None, target_rate: float,
    batch_size: int, base: Settings, workdir: Path, log_name: str,
) -> dict[str, tuple[np.ndarray, float]]:
    """Every series of ``corpus`` through Kafka and one worker process, each scored by its bundle
    (``bundle_of[name]``); returns, per series, which readings alerted and the replay's seconds."""
    registry = workdir / "registry"
    shutil.rmtree(registry, ignore_errors=True)
    broker = None
    bootstrap = base.kafka.bootstrap
    if not bootstrap:
        broker = EmbeddedBroker(free_port(), log_path=workdir / "tansu.log").start()
        bootstrap = broker.bootstrap
    worker = None
    try:
        names = list(corpus)
        versions = {}
        for i, name in enumerate(names, start=1):  # every bundle in the registry up front; the pointer moves
            versions[name] = f"v{i:04d}"
            shutil.copytree(bundle_of[name].path, bundles.feed_dir(registry, FEED.name) / versions[name])
        bundles.promote(registry, FEED.name, versions[names[0]])
        settings, env = run_settings(base, registry, free_port(), extra_env={
            "STREAMDETECT_FEEDS": '["sensor-readings"]', "STREAMDETECT_DRIFT__ENABLED": "false",
            "STREAMDETECT_SCORING__TARGET_FALSE_ALARM_RATE": str(target_rate),
            "STREAMDETECT_SCORING__BATCH_SIZE": str(batch_size), "STREAMDETECT_SCORING__TOP_FEATURES": "3",
            **({"STREAMDETECT_SCORING__ALERT_BUDGET_PER_HOUR": str(budget_per_hour)} if budget_per_hour else {}),
        })
        ensure_topics(bootstrap, settings, [getattr(settings.topics, f) for f in TOPIC_FIELDS])
        kafka = client_kwargs(base, bootstrap)
        worker = WorkerProcess(settings, env, bootstrap, workdir / f"{log_name}.log")
        worker.start()
        return asyncio.run(_replay_all(corpus, names, versions, registry, settings, kafka, worker))
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()


async def _replay_all(corpus, names, versions, registry, settings, kafka, worker) -> dict[str, tuple[np.ndarray, float]]:

    reader = OutputReader(kafka, settings)
    await reader.start()
    alerted = {}
    try:
        for name in names:
            series, version = corpus[name], versions[name]
            if bundles.current_version(registry, FEED.name) != version:
                bundles.promote(registry, FEED.name, version)
            # the worker looks at the registry every few seconds and swaps between batches
            await asyncio.to_thread(wait_for, lambda: worker.metrics()["models"].get(FEED.name) == version,
                                    60, 0.2, f"worker serving {version}")
            started = time.perf_counter()
            messages = events_of(series)
            await produce(kafka, settings.topics.sensor_readings, messages, [series.sensor_id.encode()] * len(messages))
            last = len(messages) - 1
            await reader.until(lambda: reader.settled(series.sensor_id, last), timeout=900,
                               what=f"{name}: score of its last reading and every alert announced")
            scored = reader.scored_by[series.sensor_id]
            wrong = {v for v in scored.values() if v != version}
            if wrong:
                raise RuntimeError(f"{name}: readings scored by {sorted(wrong)}, expected {version} only")
            mask = np.zeros(len(messages), dtype=bool)
            mask[sorted(reader.alerted.get(series.sensor_id, ()))] = True
            alerted[name] = (mask, time.perf_counter() - started)
            log.info("kafka replay %s (%s): %d readings, %d scored, %d alerts, %.1fs", name, version, len(messages),
                     len(scored), int(mask.sum()), time.perf_counter() - started)
    finally:
        await reader.stop()
    return alerted
