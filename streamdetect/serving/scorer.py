"""The batch scorer the Faust worker hosts.

Faust's per-event stream machinery costs ~175 us per event and its Kafka driver waits up to
1.5 s per fetch (DESIGN.md, "The worker"), so the feed topics are consumed here instead: an
aiokafka consumer group, ``getmany`` with a short fetch wait, one ``pipeline.process_batch`` per
feed per batch, outputs produced without per-event awaits, and offsets committed only after
every output of the batch is acknowledged (at-least-once, ``offsets.OffsetLedger``).
"""

from __future__ import annotations

import asyncio
from collections import deque
import gc
import logging
import time
from collections import defaultdict
from typing import Any

import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from mode import Service

from streamdetect import drift as _drift  # noqa: F401 -- imported at start-up, not in the first batch (river.drift pulls in scipy: ~2 s)
from streamdetect import pipeline
from streamdetect.feeds import Feed, get_feed
from streamdetect.serving.metrics import Metrics
from streamdetect.serving.models import ModelHolder
from streamdetect.serving.offsets import CatchUp, OffsetLedger
from streamdetect.settings import Settings
from streamdetect.state import PartitionState, checkpoint_value, read_latest_states, state_key

log = logging.getLogger(__name__)


def _log_checkpoint_error(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("state checkpoint not written (%s); the next one supersedes it", future.exception())


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, scorer: "BatchScorer"):
        self.scorer = scorer

    async def on_partitions_revoked(self, revoked) -> None:
        await self.scorer.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.scorer.on_assigned(assigned)


class BatchScorer(Service):
    """Consumes the feed topics in batches and scores them; started by the Faust worker."""

    def __init__(self, settings: Settings, bootstrap_kwargs: dict[str, Any], models: ModelHolder, metrics: Metrics, **kwargs):
        super().__init__(**kwargs)
        self.settings, self.bootstrap_kwargs, self.models, self.metrics = settings, bootstrap_kwargs, models, metrics
        self.feeds: dict[str, Feed] = {get_feed(name).topic(settings): get_feed(name) for name in settings.feeds}
        self.states: dict[str, dict[int, PartitionState]] = {feed.name: {} for feed in self.feeds.values()}
        self.lock = asyncio.Lock()  # a batch, a checkpoint flush and a revoke never interleave
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.last_checkpoint = 0.0
        self.ready = False
        # offsets are committed (by ``_committer``) only once every output of their batch and of every
        # batch before it is acknowledged; the next batch is fetched and scored meanwhile
        self.offsets = OffsetLedger(metrics)
        self.catch_up: dict[TopicPartition, CatchUp] = {}
        self.assignments = 0  # completed ``on_assigned`` calls: a batch fetched across one is fetched again
        self.prepared: set[TopicPartition] = set()  # assigned partitions whose state ``on_assigned`` has set up
        self.recent_alerts: deque[bytes] = deque(maxlen=settings.labels.recent_alerts)  # the review page's queue
        #: feed -> {(key, pattern): until (event time, unix s)}: analysts' false alarms not to repeat (set by the app)
        self.false_alarms: dict[str, dict[tuple[str, str], float]] = {}

    def new_state(self) -> PartitionState:
        scoring = self.settings.scoring
        return PartitionState(window=scoring.threshold_window, warmup=scoring.threshold_warmup)

    # -- lifecycle ----------------------------------------------------------------------------
    async def on_start(self) -> None:
        # one torch thread: batches are small, and on a shared few-core host torch's default
        # thread pool spin-waits against the event loop (measured 2048-event batches: 56 ms with
        # one thread vs 330-420 ms with two under load)
        torch.set_num_threads(1)
        kafka = self.settings.kafka
        self.producer = AIOKafkaProducer(**self.bootstrap_kwargs, acks="all", linger_ms=0,
                                         max_batch_size=1 << 20, max_request_size=8 << 20)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            **self.bootstrap_kwargs,
            group_id=kafka.consumer_group,
            enable_auto_commit=False,
            # "earliest": a new group reads the feed from its start; also, Tansu's ListOffsets(latest)
            # is unreliable (broker.py), so "latest" would start at a wrong offset there
            auto_offset_reset="earliest",
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 << 20,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            # Tansu holds a join for about half the rebalance timeout before it completes the group
            rebalance_timeout_ms=6_000,
            max_poll_interval_ms=120_000,
        )

    async def on_stop(self) -> None:
        self.ready = False
        if self.consumer is not None:
            async with self.lock:  # let a batch in flight finish, then flush state
                try:
                    await self.offsets.drain(self.consumer)
                    await self._checkpoint([(feed, p) for feed, parts in self.states.items() for p in parts])
                except (KafkaError, OSError) as exc:
                    log.warning("final checkpoint failed: %s", exc)
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    @Service.task
    async def _consume(self) -> None:
        scoring = self.settings.scoring
        while not self.should_stop and not all(self.models.current(f.name) for f in self.feeds.values()):
            for feed in self.feeds.values():
                await asyncio.to_thread(self.models.refresh, feed.name)
            if not all(self.models.current(f.name) for f in self.feeds.values()):
                await self.sleep(2.0)  # no bundle yet: do not consume (nothing would be scored)
        # start-up objects (Faust, torch, the bundle) live as long as the worker: moved out of the
        # collector's sight, full collections no longer walk them after every few batches
        gc.freeze()
        # a batch allocates several container objects per event (the events, their field dicts),
        # freed by reference counting when the batch ends; with the default threshold (700) the
        # collector would scan them every few dozen events for nothing
        gc.set_threshold(50_000, 20, 20)
        self.consumer.subscribe(list(self.feeds), listener=_Rebalance(self))
        await self.consumer.start()
        log.info("batch scorer: consuming %s as group %s", ", ".join(self.feeds), self.settings.kafka.consumer_group)
        while not self.should_stop:
            fetch_started = time.perf_counter()
            assignments = self.assignments
            try:
                batch = await self.consumer.getmany(timeout_ms=max(scoring.linger_ms, 10), max_records=scoring.batch_size)
            except ConsumerStoppedError:
                break
            if batch:
                # getmany hands out buffered records without yielding to the event loop, so batch after
                # batch would run before aiokafka's fetcher could ask for the partitions already drained
                # (or the producer send the outputs): a few loop turns let that request go out now, and
                # the broker serves it while this batch is scored
                for _ in range(4):
                    await asyncio.sleep(0)
                self.metrics.stage_seconds["fetch"] += time.perf_counter() - fetch_started
                async with self.lock:
                    if assignments != self.assignments or not self.prepared.issuperset(batch):
                        self._refetch(batch)
                    else:
                        await self._handle(batch)
            else:  # idle: settle what is in flight, checkpoint when due
                async with self.lock:
                    await self.offsets.settle(keep=0)
                    if time.monotonic() - self.last_checkpoint > scoring.checkpoint_interval_s:
                        await self._checkpoint_due()

    @Service.task
    async def _watch_loop_lag(self) -> None:
        """While anything holds the event loop (a batch, a checkpoint, Faust's own work), fetched
        events wait: the lag of a 10 ms timer shows how long (/metrics.json ``loop_lag_ms_last_30s``)."""
        while not self.should_stop:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            self.metrics.loop_lag_ms.append((time.perf_counter() - started - 0.01) * 1000)

    @Service.task
    async def _committer(self) -> None:
        """Commits the offsets of settled batches, off the fetch-score loop, one commit at a time."""
        while not self.should_stop:
            ledger = self.offsets
            await self.wait_for_stopped(ledger.commit_wanted, timeout=1.0)
            ledger.commit_wanted.clear()
            if ledger.to_commit and self.consumer is not None:
                ledger.committing = asyncio.ensure_future(ledger.commit(self.consumer))
                await asyncio.shield(ledger.committing)
                # settled batches meanwhile accumulate in ``to_commit``: one commit covers them all
                await self.sleep(self.settings.kafka.commit_interval_ms / 1000)

    @Service.timer(3.0)
    async def _watch_registry(self) -> None:
        """A promotion by the CLI (or by a control message another worker consumed) shows here."""
        for feed in self.feeds.values():
            await asyncio.to_thread(self.models.refresh, feed.name)

    # -- one batch ------------------------------------------------------------------------------
    def _refetch(self, batch: dict[TopicPartition, list]) -> None:
        """Drop a batch fetched while partitions were being assigned, and fetch it again. The consumer
        starts fetching from the committed offsets as soon as it has the assignment, before
        ``on_assigned`` has restored the state and sought to where the state needs it (``CatchUp``):
        such a batch may hold records the state has not reached yet, records it is about to read again
        from the seek, or records of a partition whose state is not restored yet."""
        assigned = self.consumer.assignment()
        for tp, records in batch.items():
            if tp not in assigned or not records:
                continue
            catch_up = self.catch_up.get(tp)
            state = self.states[self.feeds[tp.topic].name].get(tp.partition)
            if catch_up is not None and not catch_up.publish and state is not None:
                self.consumer.seek(tp, state.next_offset)
            else:
                self.consumer.seek(tp, records[0].offset)
        log.info("dropped a batch fetched during the assignment; fetching it again from the restored positions")

    async def _handle(self, batch: dict[TopicPartition, list]) -> None:
        started = time.perf_counter()
        assigned = self.consumer.assignment()
        by_topic: dict[str, list] = defaultdict(list)
        state_only: dict[str, list] = defaultdict(list)
        outputs_only: dict[str, list] = defaultdict(list)
        commit: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            if tp not in assigned or not records:
                continue  # revoked while we waited for the lock: the new owner reprocesses it
            catch_up = self.catch_up.get(tp)
            if catch_up is not None:
                split = next((i for i, r in enumerate(records) if r.offset >= catch_up.until), len(records))
                (outputs_only if catch_up.publish else state_only)[tp.topic].extend(records[:split])
                records = records[split:]
                if records:
                    del self.catch_up[tp]
                elif not catch_up.publish:
                    continue  # nothing new to commit: the offset is already past these records
            by_topic[tp.topic].extend(records)
            commit[tp] = (records or batch[tp])[-1].offset + 1
        futures = []
        for topic, records in state_only.items():
            feed = self.feeds[topic]
            self._process(feed, records, self.states[feed.name])
            self.metrics.caught_up += len(records)
        for topic, records in outputs_only.items():
            feed, scoring = self.feeds[topic], self.settings.scoring
            states = self.states[feed.name]
            scratch = {p: PartitionState.from_dict(states[p].to_dict(), window=scoring.threshold_window,
                                                   warmup=scoring.threshold_warmup)
                       for p in {r.partition for r in records} if p in states}
            futures += await self._publish(feed, self._process(feed, records, scratch))
        for topic, records in by_topic.items():
            if records:
                feed = self.feeds[topic]
                futures += await self._publish(feed, self._process(feed, records, self.states[feed.name]))
        # the offsets are committed once these outputs (and those of every earlier batch) are acknowledged;
        # meanwhile the next batch is fetched and scored (at most 4 batches in flight)
        self.offsets.add(futures, commit)
        await self.offsets.settle(keep=4)
        checkpointing = time.perf_counter()
        await self._checkpoint_due(wait=False)
        self.metrics.stage_seconds["checkpoint"] += time.perf_counter() - checkpointing
        self.metrics.batches += 1
        self.metrics.last_batch_seconds = time.perf_counter() - started
        self.metrics.busy_seconds += self.metrics.last_batch_seconds

    def _process(self, feed: Feed, records: list, states: dict[int, PartitionState]) -> pipeline.BatchOutput:
        scoring = self.settings.scoring
        bundle = self.models.current(feed.name)  # a swapped bundle takes effect here, at the next batch
        processing = time.perf_counter()
        output = pipeline.process_batch(
            records,
            feed=feed, bundle=bundle, states=states, new_state=self.new_state,
            rate=scoring.target_false_alarm_rate, max_event_bytes=scoring.max_event_bytes,
            top_k=scoring.top_features, publish_scores=scoring.publish_scores,
            false_alarms=self.false_alarms.get(feed.name),
        )
        self.metrics.suppressed_by_label += output.suppressed_by_label
        self.metrics.observe_batch(feed.name, len(records), output.scored, latency_s=time.perf_counter() - processing,
                                   oldest_event_age_s=output.latency_ms_max / 1000,
                                   unseen_categories=output.unseen_categories)
        for stage, seconds in getattr(output, "stage_seconds", {}).items():
            self.metrics.stage_seconds[stage] += seconds
        return output

    async def _publish(self, feed: Feed, output: pipeline.BatchOutput) -> list[asyncio.Future]:
        publishing = time.perf_counter()
        topics, send = self.settings.topics, self.producer.send
        futures = [await send(topics.alerts, value, key=key) for key, value in output.alerts]
        futures += [await send(topics.scores, value, key=key) for key, value in output.scores]
        futures += [await send(topics.deadletter, value) for value in output.dead_letters]
        self.metrics.observe_published(feed.name, len(output.alerts), output.dead_by_reason)
        self.recent_alerts.extend(value for _, value in output.alerts)
        self.metrics.stage_seconds["publish"] += time.perf_counter() - publishing
        return futures

    # -- state: checkpoint, restore ---------------------------------------------------------------
    async def _checkpoint_due(self, wait: bool = True) -> None:
        if time.monotonic() - self.last_checkpoint >= self.settings.scoring.checkpoint_interval_s:
            await self._checkpoint([(feed, p) for feed, parts in self.states.items() for p in parts], wait=wait)

    async def _checkpoint(self, which: list[tuple[str, int]], wait: bool = True) -> None:
        """Send the state of ``which`` partitions; ``wait``: until acknowledged (else the send
        errors are only logged: the next checkpoint supersedes this one)."""
        futures = []
        for feed, partition in which:
            state = self.states[feed].get(partition)
            if state is None or state.next_offset is None:
                continue
            futures.append(await self.producer.send(
                self.settings.topics.state, checkpoint_value(feed, partition, state.to_dict()),
                key=state_key(feed, partition).encode(), partition=partition,
            ))
        self.last_checkpoint = time.monotonic()
        if wait:
            await asyncio.gather(*futures)
        else:
            for future in futures:
                future.add_done_callback(_log_checkpoint_error)

    async def on_revoked(self, revoked) -> None:
        async with self.lock:
            try:
                await self.offsets.drain(self.consumer)
            except (KafkaError, OSError) as exc:
                log.warning("outputs in flight not settled on revoke (%s); the next owner reprocesses them", exc)
            which = [(self.feeds[tp.topic].name, tp.partition) for tp in revoked if tp.topic in self.feeds]
            try:
                await self._checkpoint(which)
            except (KafkaError, OSError) as exc:
                log.warning("checkpoint on revoke failed (%s); the next owner restores an older state", exc)
            for feed, partition in which:
                self.states[feed].pop(partition, None)
            for tp in revoked:
                self.catch_up.pop(tp, None)
                self.prepared.discard(tp)
        self.ready = False
        log.info("revoked %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    async def on_assigned(self, assigned) -> None:
        by_feed: dict[str, list[int]] = defaultdict(list)
        for tp in assigned:
            if tp.topic in self.feeds:
                by_feed[self.feeds[tp.topic].name].append(tp.partition)
        partitions = sorted({p for parts in by_feed.values() for p in parts})
        try:
            latest = await read_latest_states(self.bootstrap_kwargs, self.settings.topics.state, partitions)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("could not read the state topic (%s); starting with empty threshold state", exc)
            latest = {}
        scoring = self.settings.scoring
        restored = []
        async with self.lock:
            for tp in assigned:
                feed = self.feeds.get(tp.topic)
                if feed is None:
                    continue
                saved = latest.get(state_key(feed.name, tp.partition))
                if saved is None:
                    self.states[feed.name].setdefault(tp.partition, self.new_state())
                    continue
                self.states[feed.name][tp.partition] = PartitionState.from_dict(
                    saved, window=scoring.threshold_window, warmup=scoring.threshold_warmup)
                restored.append(f"{feed.name}[{tp.partition}]@{saved.get('next_offset')}")
                await self._rejoin(tp, saved.get("next_offset"))
            self.prepared.update(tp for tp in assigned if tp.topic in self.feeds)
            self.assignments += 1
        self.ready = True
        log.info("assigned %s; restored state of %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned),
                 ", ".join(restored) or "no partition (fresh state)")

    async def _rejoin(self, tp: TopicPartition, checkpointed: int | None) -> None:
        """Line a restored partition's state up with its committed offset (see ``CatchUp``)."""
        self.catch_up.pop(tp, None)
        if checkpointed is None:
            return
        try:
            committed = await self.consumer.committed(tp)
        except (KafkaError, OSError) as exc:
            log.warning("%s[%d]: committed offset unknown (%s); state may miss or repeat a few events",
                        tp.topic, tp.partition, exc)
            return
        committed = committed or 0  # no commit yet: the group starts at the log's start
        if checkpointed < committed:
            self.consumer.seek(tp, checkpointed)
            self.catch_up[tp] = CatchUp(until=committed, publish=False)
            log.info("%s[%d]: state checkpoint at %d, committed %d: replaying the gap into the state only",
                     tp.topic, tp.partition, checkpointed, committed)
        elif checkpointed > committed:
            self.catch_up[tp] = CatchUp(until=checkpointed, publish=True)
            log.info("%s[%d]: state checkpoint at %d, committed %d: republishing the gap without counting it twice",
                     tp.topic, tp.partition, checkpointed, committed)
