"""Offsets of scored batches, committed only once every output of the batch (and of every batch
before it) is acknowledged by the broker: at-least-once, without an await per event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from streamdetect.serving.metrics import Metrics

log = logging.getLogger(__name__)


class CatchUp(NamedTuple):
    """How a restored partition rejoins when its state checkpoint and its committed offset differ
    (a worker killed between the two writes). Records below ``until`` are handled one way only:
    ``publish`` False: the previous owner published them (the offset is committed) but the checkpoint
    lacks them, so they update the state and nothing is sent; ``publish`` True: the checkpoint already
    counts them but their outputs may not have been acknowledged, so they are published again (same
    alert ids) against a throw-away copy of the state. Either way each event counts once in the state."""

    until: int
    publish: bool


class OffsetLedger:
    """Batches whose outputs are sent but not yet acknowledged, oldest first, and the offsets ready
    to commit. The scorer fetches and scores the next batch meanwhile; ``settle`` moves the offsets
    of acknowledged batches to ``to_commit`` and wakes the committer."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.inflight: deque[tuple[list[asyncio.Future], dict[TopicPartition, int]]] = deque()
        self.to_commit: dict[TopicPartition, int] = {}
        self.commit_wanted = asyncio.Event()
        self.committing: asyncio.Future | None = None

    def add(self, futures: list[asyncio.Future], offsets: dict[TopicPartition, int]) -> None:
        self.inflight.append((futures, offsets))

    async def settle(self, keep: int) -> None:
        """Move the offsets of acknowledged batches to the committer; wait for the oldest batches
        until at most ``keep`` are in flight. A failed output is fatal, as it was before (the batch
        is never committed, so it is reprocessed after the restart)."""
        waited = time.perf_counter()
        while self.inflight:
            futures, offsets = self.inflight[0]
            if len(self.inflight) > keep:
                await asyncio.gather(*futures)
            elif not all(f.done() for f in futures):
                break
            for f in futures:
                f.result()  # raises the send error, if any
            self.inflight.popleft()
            self.to_commit.update(offsets)
            self.commit_wanted.set()
        self.metrics.stage_seconds["publish"] += time.perf_counter() - waited

    async def commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets, self.to_commit = self.to_commit, {}
        if not offsets:
            return
        started = time.perf_counter()
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:  # a rebalance took the partitions: they are reprocessed
            self.metrics.commit_failures += 1
            log.warning("offset commit failed (%s); those batches will be reprocessed by the partitions' new owner", exc)
        except (KafkaError, OSError) as exc:  # e.g. the broker is unreachable: a later commit covers these offsets
            self.metrics.commit_failures += 1
            log.warning("offset commit failed (%s); retried with the next batch", exc)
            self.to_commit = {**offsets, **self.to_commit}
        self.metrics.stage_seconds["commit"] += time.perf_counter() - started

    async def drain(self, consumer: AIOKafkaConsumer) -> None:
        """Every batch in flight acknowledged and committed (before a revoke or a stop)."""
        await self.settle(keep=0)
        if self.committing is not None:
            await asyncio.shield(self.committing)
        if self.to_commit:
            await self.commit(consumer)
