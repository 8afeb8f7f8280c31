"""Measuring primitives shared by the stream bench and the broker probe: producing at a rate,
reading a topic to its end, CPU samples of a process and latency per time window."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from streamdetect.worker_process import cpu_seconds


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def sample_cpu(pid: int, samples: list[tuple[float, float]], interval: float = 1.0) -> None:
    """Append (wall time, CPU seconds of ``pid``) to ``samples`` every ``interval`` until cancelled."""
    while True:
        samples.append((time.time(), cpu_seconds(pid)))
        await asyncio.sleep(interval)


def latency_windows(sent_s: Sequence[float], latency_ms: Sequence[float], *, origin: float | None = None,
                    window_s: float = 5.0, cpu_samples: Sequence[tuple[float, float]] = ()) -> list[dict]:
    """Latency percentiles of the events sent in each ``window_s`` since ``origin`` (default: the
    first send), with the share of a core the sampled process used in that window: a run's overall
    p99 hides whether latency was steady or grew as the run went on (Tansu's fetch cost grows with
    the length of a partition)."""
    sent, latency = np.asarray(sent_s, dtype=float), np.asarray(latency_ms, dtype=float)
    if not len(sent):
        return []
    first, windows = (sent.min() if origin is None else origin), []
    cpu = np.asarray(cpu_samples, dtype=float).reshape(-1, 2)
    for start in np.arange(0.0, sent.max() - first + 1e-9, window_s):
        chosen = latency[(sent - first >= start) & (sent - first < start + window_s)]
        if not len(chosen):
            continue
        window = {"from_s": round(float(start), 1), "events": int(len(chosen)),
                  **{f"p{p}": round(float(np.percentile(chosen, p)), 1) for p in (50, 99)}}
        inside = cpu[(cpu[:, 0] >= first + start) & (cpu[:, 0] <= first + start + window_s)] if len(cpu) else cpu
        if len(inside) >= 2:
            window["cpu_share"] = round(float((inside[-1, 1] - inside[0, 1]) / (inside[-1, 0] - inside[0, 0])), 2)
        windows.append(window)
    return windows


async def produce(kafka: dict, topic: str, messages: Sequence[bytes | None], keys: Sequence[bytes | None] | None = None,
                  *, rate: float = 0.0, request_timeout_ms: int = 40_000) -> list[tuple[int, int]]:
    """Send ``messages`` (at ``rate``/s; 0 = as fast as possible), wait for every acknowledgement,
    return each message's (partition, offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka, linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20, acks="all",
                                request_timeout_ms=request_timeout_ms)
    await producer.start()
    futures = []
    started = time.perf_counter()
    try:
        for i, message in enumerate(messages):
            futures.append(await producer.send(topic, message, key=keys[i] if keys is not None else None))
            if rate > 0:
                ahead = (i + 1) / rate - (time.perf_counter() - started)
                if ahead > 0.005:
                    await asyncio.sleep(ahead)
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metadata]


async def wait_caught_up(consumer, timeout: float = 60.0, on_batch: Callable[[dict], None] | None = None) -> None:
    """Consume the consumer's topics to their fetch high watermarks (``on_batch`` sees each batch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
        if on_batch is not None:
            on_batch(batch)
        assignment = consumer.assignment()
        caught_up = bool(assignment)
        for tp in assignment:
            highwater = consumer.highwater(tp)
            caught_up &= highwater is not None and await consumer.position(tp) >= highwater
        if caught_up:
            return
    raise TimeoutError(f"{sorted(consumer.subscription())} not read to their end within {timeout:.0f}s")
