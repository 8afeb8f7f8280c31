"""Checkpoints of per-partition state in the compacted state topic.

The state topic has as many partitions as the feed topics; the state of feed partition ``p``
goes to state partition ``p`` with key ``"<feed>:<p>"`` (so a worker assigned ``p`` reads one
partition back), as JSON (never pickle) including the next offset to consume.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


def state_key(feed: str, partition: int) -> str:
    return f"{feed}:{partition}"


def checkpoint_value(feed: str, partition: int, state_dict: dict) -> bytes:
    return orjson.dumps({"feed": feed, "partition": partition, "written_at": time.time(), **state_dict})


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
