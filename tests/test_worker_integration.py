"""The worker end to end: the real embedded Tansu broker and a real ``faust ... worker`` subprocess.

One worker per module (start-up costs ~15 s); the tests run in file order and build on each
other's traffic (replay, checkpoints, model swaps, restart).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from fixtures_worker import isolated_settings, slice_with_frauds
from streamdetect.kafka.broker import client_kwargs, ensure_topics, free_port
from streamdetect.kafka.collect import collect_outputs
from streamdetect.kafka.broker import stop_process as stop_worker
from streamdetect.worker_process import WorkerProcess
from streamdetect.feeds import get_feed
from streamdetect.kafka.records import Alert, DeadLetter, ScoresRecord, alert_id
from streamdetect.replay import key_from_field, malformed_examples, send_messages
from streamdetect.state import read_latest_states

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
FEED = get_feed("transactions")


@dataclass
class Worker:
    process: object
    settings: object
    env: dict
    kafka: dict
    port: int
    log: Path
    registry: Path
    bootstrap: str

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def health(self, page: str = "health") -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{page}", timeout=5) as response:
            return json.loads(response.read())

    def wait_health(self, condition, timeout: float = 30.0, page: str = "health") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health(page)
            if condition(health):
                return health
            time.sleep(0.3)
        raise AssertionError(f"worker {page} never satisfied the condition: {health}\n{self.log_tail()}")

    def start(self) -> None:
        worker = WorkerProcess(self.settings.model_copy(update={"web_port": self.port}), self.env, self.bootstrap, self.log)
        worker.spawn()
        self.process = worker.process
        try:
            worker.wait_ready(timeout=120)
        except Exception:
            stop_worker(self.process)
            raise AssertionError(f"worker did not get ready:\n{self.log_tail()}")


@pytest.fixture(scope="module")
def worker(kafka_broker, creditcard_bundles, settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("worker")
    registry = root / "registry"
    shutil.copytree(creditcard_bundles, registry)  # private: these tests move the pointer
    port = free_port()
    worker_settings, env = isolated_settings(settings, registry, port)
    ensure_topics(kafka_broker.bootstrap, worker_settings)
    handle = Worker(None, worker_settings, env, client_kwargs(worker_settings, kafka_broker.bootstrap), port,
                    root / "worker.log", registry, kafka_broker.bootstrap)
    handle.start()
    yield handle
    stop_worker(handle.process)


@pytest.fixture(scope="module")
def replayed(worker, creditcard, creditcard_split):
    """The first 3000 test-split rows plus every fraud of the test split, with malformed events
    spread among them, replayed into the worker; everything read back."""
    index = slice_with_frauds(creditcard, creditcard_split, 3000)
    events = FEED.events_from_dataset(creditcard, index)
    labels = dict(zip((e["event_id"] for e in events), creditcard.labels[index].tolist()))
    bad = malformed_examples(events[0], max_event_bytes=worker.settings.scoring.max_event_bytes)
    messages = [orjson.dumps(e) for e in events]
    for i, (_, message, _, _) in enumerate(bad):
        messages.insert((i + 1) * len(messages) // (len(bad) + 1), message)
    since = int(time.time() * 1000)

    async def run():
        await send_messages(worker.kafka, worker.settings.topics.transactions, messages, key=key_from_field(None),
                            progress=False)
        return await collect_outputs(worker.kafka, worker.settings, expected=len(messages), since_ms=since,
                                     timeout=120, event_ids=set(labels), progress=False)

    outputs = asyncio.run(run())
    return events, labels, bad, outputs


def test_every_event_is_scored_once_or_dead_lettered(worker, replayed):
    events, labels, bad, outputs = replayed
    assert outputs.accounted() == len(events) + len(bad), worker.log_tail()
    assert set(outputs.scores) == set(labels)
    duplicates = {i: n for i, n in outputs.times_scored.items() if n != 1}
    assert not duplicates, f"scored more than once: {list(duplicates.items())[:5]}"
    for record in outputs.score_records:
        ScoresRecord.model_validate(record)
        assert record["model_version"] == "v0001"


def test_malformed_events_land_in_deadletter_with_their_reason(replayed):
    _, _, bad, outputs = replayed
    assert len(outputs.dead_letters) == len(bad)
    letters = [DeadLetter.model_validate(d) for d in outputs.dead_letters]
    import base64

    by_raw = {base64.b64decode(d.raw_b64): d for d in letters}
    for name, message, reason, error_type in bad:
        letter = by_raw[message]
        assert letter.reason == reason, name
        assert letter.topic.startswith("transactions-") and letter.offset >= 0
        if error_type:
            assert error_type in letter.error_types, (name, letter.error)


def test_alerts_follow_the_schema_and_catch_frauds(replayed):
    _, labels, _, outputs = replayed
    alerts = [Alert.model_validate(a) for a in outputs.alerts]
    assert alerts
    for alert in alerts:
        assert alert.alert_id == alert_id("transactions", alert.event_id)
        assert alert.model_version == "v0001" and alert.p_value < 0.01 and alert.score > alert.threshold
        assert alert.top_features and alert.event["event_id"] == alert.event_id
        assert outputs.scores[alert.event_id]["alerted"]
    alerted = {a.event_id for a in alerts}
    assert alerted == {i for i, s in outputs.scores.items() if s["alerted"]}
    frauds = {i for i, y in labels.items() if y == 1}
    recall = len(alerted & frauds) / len(frauds)
    false_alarm_rate = len(alerted - frauds) / (len(labels) - len(frauds))
    # offline, this quick fixture model has recall ~0.35-0.6 at a 1% false-alarm rate; a floor well above chance
    assert recall > 0.25, f"recall {recall:.2f} of {len(frauds)} frauds"
    assert false_alarm_rate < 0.05, f"false-alarm rate {false_alarm_rate:.3f}"


def test_partition_state_is_checkpointed_with_the_next_offset(worker, replayed):
    _, _, _, outputs = replayed
    last = {}
    for record in outputs.score_records:
        last[record["partition"]] = max(last.get(record["partition"], -1), record["last_offset"])
    for letter in outputs.dead_letters:
        last[letter["partition"]] = max(last.get(letter["partition"], -1), letter["offset"])
    time.sleep(1.5)  # checkpoint interval is 0.5 s in these tests; idle flushes follow
    states = asyncio.run(read_latest_states(worker.kafka, worker.settings.topics.state, sorted(last)))
    for partition, offset in last.items():
        saved = states[f"transactions:{partition}"]
        assert saved["next_offset"] == offset + 1
        assert saved["keys"][""]["count"] > 0 and saved["keys"][""]["values"]


def _send_and_collect(worker, creditcard, rows) -> dict:
    events = FEED.events_from_dataset(creditcard, rows)
    ids = {e["event_id"] for e in events}
    since = int(time.time() * 1000)

    async def run():
        await send_messages(worker.kafka, worker.settings.topics.transactions, [orjson.dumps(e) for e in events],
                            key=key_from_field(None), progress=False)
        return await collect_outputs(worker.kafka, worker.settings, expected=len(events), since_ms=since, timeout=60,
                                     event_ids=ids, progress=False)

    outputs = asyncio.run(run())
    assert set(outputs.scores) == ids, worker.log_tail()
    return outputs.scores


def _control(worker, message: dict) -> None:
    async def run():
        await send_messages(worker.kafka, worker.settings.topics.model_control, [orjson.dumps(message)],
                            key=lambda _: message["feed"].encode(), progress=False)

    asyncio.run(run())


def test_promotion_swaps_the_model_without_restart(worker, creditcard, creditcard_split):
    pid = worker.process.pid
    _control(worker, {"action": "promote", "feed": "transactions", "version": "v0002"})
    worker.wait_health(lambda h: h["models"]["transactions"] == "v0002")
    scores = _send_and_collect(worker, creditcard, creditcard_split.test[5000:5200])
    assert {s["model_version"] for s in scores.values()} == {"v0002"}
    assert worker.process.pid == pid and worker.process.poll() is None


def test_a_tampered_bundle_is_refused_and_the_old_one_keeps_serving(worker, creditcard, creditcard_split):
    _control(worker, {"action": "promote", "feed": "transactions", "version": "v0003"})
    health = worker.wait_health(lambda h: h["refused"].get("transactions") == "v0003")
    assert health["models"]["transactions"] == "v0002"
    scores = _send_and_collect(worker, creditcard, creditcard_split.test[5200:5400])
    assert {s["model_version"] for s in scores.values()} == {"v0002"}
    log = worker.log.read_text(errors="replace")
    assert "REFUSED bundle v0003" in log and "does not match" in log


def test_a_restarted_worker_restores_state_and_does_not_rescore(worker, creditcard, creditcard_split, replayed):
    stop_worker(worker.process)
    restarted_at = int(time.time() * 1000)
    worker.log.write_text("")
    worker.start()
    log = worker.log.read_text(errors="replace")
    assert "restored state of transactions[" in log, worker.log_tail()
    # the registry still points at the tampered v0003: a fresh worker serves the last good version of the history
    health = worker.health()
    assert health["models"]["transactions"] == "v0002" and health["refused"] == {"transactions": "v0003"}
    assert "FALLBACK bundle v0002" in log
    new_events = FEED.events_from_dataset(creditcard, creditcard_split.test[5400:5600])

    async def run():
        await send_messages(worker.kafka, worker.settings.topics.transactions, [orjson.dumps(e) for e in new_events],
                            key=key_from_field(None), progress=False)
        return await collect_outputs(worker.kafka, worker.settings, expected=len(new_events), since_ms=restarted_at,
                                     timeout=60, progress=False)  # every event scored since the restart

    outputs = asyncio.run(run())
    assert set(outputs.scores) == {e["event_id"] for e in new_events}, "only the new events are scored after the restart"


async def _rewind(worker, old_states: dict[str, dict], checkpoint_behind: list[int], commit_behind: list[int]) -> None:
    """What a kill -9 between the two writes leaves: for ``checkpoint_behind`` partitions the state
    topic gets their older checkpoint back; for ``commit_behind`` the group's offset goes back to it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(**worker.kafka, acks="all")
    await producer.start()
    try:
        for p in checkpoint_behind:
            old = old_states[f"transactions:{p}"]
            await producer.send_and_wait(worker.settings.topics.state, orjson.dumps(old),
                                         key=f"transactions:{p}".encode(), partition=p)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**worker.kafka, group_id=worker.settings.kafka.consumer_group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {TopicPartition(worker.settings.topics.transactions, p): old_states[f"transactions:{p}"]["next_offset"]
               for p in commit_behind}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


def test_a_kill_between_checkpoint_and_commit_counts_each_event_once(worker, creditcard, creditcard_split):
    """A worker killed after committing but before checkpointing (or the reverse) leaves the state
    topic and the group's offsets apart; the next start lines them up: the state ends as if the
    worker had never died, and only outputs that may be missing are published again."""
    partitions = list(range(worker.settings.topics.partitions))
    time.sleep(1.5)  # the idle checkpoint after the last test's traffic
    before = asyncio.run(read_latest_states(worker.kafka, worker.settings.topics.state, partitions))
    events = FEED.events_from_dataset(creditcard, creditcard_split.test[5600:6400])
    ids = {e["event_id"] for e in events}

    def collect(expected: int, since_ms: int, timeout: float = 60):
        return asyncio.run(collect_outputs(worker.kafka, worker.settings, expected=expected, since_ms=since_ms,
                                           timeout=timeout, event_ids=ids, progress=False))

    since = int(time.time() * 1000)
    asyncio.run(send_messages(worker.kafka, worker.settings.topics.transactions, [orjson.dumps(e) for e in events],
                              key=key_from_field(None), progress=False))
    first = collect(len(events), since)
    assert set(first.scores) == ids, worker.log_tail()
    partition_of = {i: r["partition"] for r in first.score_records for i in r["event_ids"]}
    stop_worker(worker.process)  # a clean stop: the final checkpoint and commit agree
    after = asyncio.run(read_latest_states(worker.kafka, worker.settings.topics.state, partitions))
    checkpoint_behind, commit_behind = partitions[0::2], partitions[1::2]
    assert all(after[f"transactions:{p}"]["next_offset"] > before[f"transactions:{p}"]["next_offset"]
               for p in partitions), "the new events reached every partition"
    asyncio.run(_rewind(worker, before, checkpoint_behind, commit_behind))

    restarted_at = int(time.time() * 1000)
    worker.log.write_text("")
    worker.start()
    republished = {i for i, p in partition_of.items() if p in commit_behind}
    again = collect(len(republished), restarted_at)
    # the commit-behind partitions' outputs go out again (a consumer dedups them by alert id); the
    # checkpoint-behind partitions' events were published before the "kill" and are not sent twice
    assert set(again.scores) == republished, (len(again.scores), len(republished), worker.log_tail())
    assert {a["alert_id"] for a in again.alerts} <= {a["alert_id"] for a in first.alerts}
    log = worker.log.read_text(errors="replace")
    assert "replaying the gap into the state only" in log and "republishing the gap" in log, worker.log_tail()
    worker.wait_health(lambda m: m["caught_up"] == len(ids) - len(republished), page="metrics.json")
    assert set(collect(len(ids), restarted_at, timeout=3).scores) == republished, "nothing else went out again"
    time.sleep(1.5)
    restored = asyncio.run(read_latest_states(worker.kafka, worker.settings.topics.state, partitions))
    for p in partitions:  # the same state as the clean stop wrote, to the last kept value
        saved, expected = restored[f"transactions:{p}"], after[f"transactions:{p}"]
        assert saved["next_offset"] == expected["next_offset"]
        assert saved["keys"][""]["count"] == expected["keys"][""]["count"], p
        assert saved["keys"][""]["values"] == pytest.approx(expected["keys"][""]["values"]), p
        assert saved["drift"][""]["count"] == expected["drift"][""]["count"], p
