"""The same work as the batch scorer, done the plain Faust way: for ``python -m benchmarks.stream_bench``.

    faust -A benchmarks.bench_agent worker -l info

One Faust agent reads the transactions topic with ``stream.take_events`` (batches of up to
``scoring.batch_size`` events, ``scoring.linger_ms``), runs the same ``pipeline.process_batch``
(validate, featurize, score with the bundle, threshold) and publishes scores records, alerts and
dead letters through Faust's own producer; Faust acknowledges and commits the offsets. It is
the baseline the batch path (``service.BatchScorer``) is measured against; it does not restore
or checkpoint state and has no model swaps: it is not a production worker.
"""

from __future__ import annotations

import asyncio
import time

import faust
import torch

from offline.bundle import load_current
from streamdetect import pipeline
from streamdetect.kafka.broker import faust_broker_config
from streamdetect.kafka.local import resolve_bootstrap
from streamdetect.feeds import get_feed
from streamdetect.settings import get_settings
from streamdetect.state import PartitionState

settings = get_settings()
broker = resolve_bootstrap(settings)
feed = get_feed("transactions")
scoring = settings.scoring
datadir = settings.data.data_dir / "faust-bench-agent"
datadir.parent.mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.app_id,
    **faust_broker_config(settings, broker.bootstrap),
    broker_client_id=settings.kafka.client_id,
    consumer_auto_offset_reset="earliest",
    topic_partitions=settings.topics.partitions,
    store="memory://",
    datadir=str(datadir),
    web_port=settings.web_port,
    web_host="127.0.0.1",
    producer_linger=0.005,
    autodiscover=False,
)
source = app.topic(feed.topic(settings), value_serializer="raw", key_serializer="raw")
alerts = app.topic(settings.topics.alerts, value_serializer="raw", key_serializer="raw")
scores = app.topic(settings.topics.scores, value_serializer="raw", key_serializer="raw")
deadletter = app.topic(settings.topics.deadletter, value_serializer="raw", key_serializer="raw")
counts = {"events": 0, "scored": 0, "dead_letters": 0, "batches": 0, "first_batch_at": None, "last_batch_at": None}
states: dict[int, PartitionState] = {}


def new_state() -> PartitionState:
    return PartitionState(window=scoring.threshold_window, warmup=scoring.threshold_warmup)


@app.agent(source)
async def score_plainly(stream):
    torch.set_num_threads(1)
    bundle = await asyncio.to_thread(load_current, settings.registry_dir, feed.name)
    async for events in stream.take_events(scoring.batch_size, within=max(scoring.linger_ms, 10) / 1000):
        started = time.time()
        counts["first_batch_at"] = counts["first_batch_at"] or started
        records = [pipeline.InputRecord(e.message.topic, e.message.partition, e.message.offset, e.message.value,
                                        e.message.key, int(e.message.timestamp * 1000)) for e in events]
        output = await asyncio.to_thread(
            pipeline.process_batch, records, feed=feed, bundle=bundle, states=states, new_state=new_state,
            rate=scoring.target_false_alarm_rate, max_event_bytes=scoring.max_event_bytes,
            top_k=scoring.top_features, publish_scores=scoring.publish_scores)
        for key, value in output.alerts:
            await alerts.send(key=key, value=value)
        for key, value in output.scores:
            await scores.send(key=key, value=value)
        for value in output.dead_letters:
            await deadletter.send(value=value)
        counts["events"] += len(records)
        counts["scored"] += output.scored
        counts["dead_letters"] += len(output.dead_letters)
        counts["batches"] += 1
        counts["last_batch_at"] = time.time()


@app.page("/metrics.json")
async def metrics_view(web, request):
    return web.json(counts)


@app.page("/ready")
async def ready(web, request):
    return web.json({"ready": True})
