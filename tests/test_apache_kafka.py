"""Our pinned clients (aiokafka, faust-streaming) on a real Apache Kafka 4.x broker (KRaft, one node).

Kafka 4.0 removed the old protocol versions, so these tests show what the pinned clients negotiate
and do there, instead of assuming it: topic creation, batched produce, a consumer group that reads
everything back and commits, ``end_offsets()`` (which Tansu gets wrong for multi-record batches,
see ``streamdetect/kafka/broker.py``: here it must equal the records written), the fetch-wait
behaviour (Apache answers a waiting fetch as soon as data arrives) and a Faust agent.

The broker comes from ``streamdetect.kafka.apache`` (Maven Central jars on the JDK). Without
``java`` (or without ``mvn`` and no fetched cache) the tests are skipped, except in CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamdetect.kafka.apache import ApacheKafkaBroker, default_cache_dir, fetch_kafka, kafka_version, verify_kafka
from streamdetect.kafka.broker import BrokerError, free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
PARTITIONS = 4


def _missing_tools() -> list[str]:
    missing = [] if shutil.which("java") else ["java (a JDK or JRE 17+)"]
    cache = default_cache_dir() / "libs"
    if shutil.which("mvn") is None and (not cache.is_dir() or verify_kafka(cache, kafka_version())):
        missing.append("mvn (Maven 3.6+, to fetch Kafka from Maven Central)")
    return missing


@pytest.fixture(scope="module")
def apache_broker(tmp_path_factory):
    """One Apache Kafka broker on a free loopback port for this module."""
    missing = _missing_tools()
    if missing:
        reason = f"the Apache Kafka tests need {' and '.join(missing)} on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true makes them required")
        pytest.skip(reason)
    log_path = tmp_path_factory.mktemp("apache-kafka") / "broker.log"
    started = time.monotonic()
    with ApacheKafkaBroker(free_port(), log_path=log_path, partitions=PARTITIONS) as broker:
        print(f"\nApache Kafka {broker.version} on {broker.bootstrap} in {time.monotonic() - started:.1f}s (log {log_path})")
        yield broker
    assert broker.process is None and broker.workdir is None


async def create_topic(bootstrap: str, partitions: int = PARTITIONS) -> str:
    topic = f"apache-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
        assert [code for _, code, _ in response.topic_errors] == [0], response
        # the controller creates the partitions asynchronously: a busy broker can answer a describe
        # right after CreateTopics with none yet
        deadline = time.monotonic() + 30
        while True:
            (meta,) = await admin.describe_topics([topic])
            if len(meta["partitions"]) == partitions or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert len(meta["partitions"]) == partitions
    finally:
        await admin.close()
    return topic


# -- the fetched broker ---------------------------------------------------------------------
def test_the_pinned_version_is_fetched_and_verified(apache_broker, tmp_path):
    version = kafka_version()
    assert version.split(".")[0] == "4" and apache_broker.version == version
    libs = fetch_kafka()  # cached: verified, not fetched again
    assert (libs / f"kafka_2.13-{version}.jar").is_file() and (libs / f"kafka-clients-{version}.jar").is_file()
    assert verify_kafka(libs, version) == []
    copy = tmp_path / "libs"
    shutil.copytree(libs, copy)
    jar = copy / f"kafka-clients-{version}.jar"
    data = bytearray(jar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    jar.write_bytes(bytes(data))
    (copy / f"kafka_2.13-{version}.jar").unlink()
    problems = verify_kafka(copy, version)
    assert f"kafka-clients-{version}.jar: sha256 differs from SHA256SUMS" in problems
    assert f"kafka_2.13-{version}.jar is missing" in problems


def test_the_port_must_be_free(apache_broker):
    with pytest.raises(BrokerError, match="already in use"):
        ApacheKafkaBroker(apache_broker.port).start()


# -- protocol versions ----------------------------------------------------------------------
async def test_aiokafka_negotiates_a_version_of_every_request_it_uses(apache_broker):
    """aiokafka >= 0.13 picks, per request, the newest version both sides know (ApiVersions).
    Kafka 4 refuses the versions it removed; none of the requests we use falls into that gap."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol import admin, commit, coordination, fetch, group, metadata, offset, produce, transaction

    used = [produce.ProduceRequest, fetch.FetchRequest, offset.OffsetRequest, metadata.MetadataRequest,
            commit.OffsetCommitRequest, commit.OffsetFetchRequest, coordination.FindCoordinatorRequest,
            group.JoinGroupRequest, group.SyncGroupRequest, group.HeartbeatRequest, group.LeaveGroupRequest,
            admin.CreateTopicsRequest, admin.DescribeConfigsRequest, admin.ListGroupsRequest,
            admin.DescribeGroupsRequest, admin.ApiVersionRequest, transaction.InitProducerIdRequest]
    conn = await create_conn(apache_broker.host, apache_broker.port)
    try:
        broker_versions = dict(conn._versions)
    finally:
        conn.close()
    negotiated = {}
    for request in used:
        lo, hi = broker_versions[request.API_KEY]
        ours = [c.API_VERSION for c in request._CLASSES]
        common = [v for v in ours if lo <= v <= hi]
        negotiated[request.__name__] = (max(common) if common else None, f"ours {min(ours)}-{max(ours)}", f"broker {lo}-{hi}")
    print("\n" + "\n".join(f"  {name}: v{v} ({a}, {b})" for name, (v, a, b) in negotiated.items()))
    assert {name: v for name, (v, _, _) in negotiated.items() if v is None} == {}
    # Kafka 4.4 serves aiokafka's newest version of each of these, so nothing falls back to an old one
    assert {name: v for name, (v, _, _) in negotiated.items()} == {r.__name__: max(c.API_VERSION for c in r._CLASSES)
                                                                   for r in used}
    print(f"  broker ApiVersions: {sorted(broker_versions.items())}")


# -- produce, consume, offsets --------------------------------------------------------------
async def test_batches_are_read_back_by_a_group_and_offsets_are_exact(apache_broker):
    bootstrap = apache_broker.bootstrap
    topic = await create_topic(bootstrap)
    written = dict.fromkeys(range(PARTITIONS), 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, acks="all")
    await producer.start()
    try:
        # linger: many sends in flight are collected into one batch per partition
        futures = []
        for i in range(800):
            partition = i % PARTITIONS
            futures.append(await producer.send(topic, f"linger-{i}".encode(), key=str(i).encode(), partition=partition))
            written[partition] += 1
        await asyncio.gather(*futures)
        # explicit multi-record batches: the case Tansu's ListOffsets(latest) gets wrong
        for partition in range(PARTITIONS):
            batch = producer.create_batch()
            for i in range(250):
                assert batch.append(key=None, value=f"batch-{partition}-{i}".encode(), timestamp=None) is not None
            await (await producer.send_batch(batch, topic, partition=partition))
            written[partition] += 250
    finally:
        await producer.stop()

    group = f"apache-group-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=500, session_timeout_ms=10_000,
                                heartbeat_interval_ms=1_000)
    started = time.monotonic()
    await consumer.start()
    try:
        read = dict.fromkeys(range(PARTITIONS), 0)
        joined = None
        deadline = time.monotonic() + 60
        while sum(read.values()) < sum(written.values()) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                joined = joined or time.monotonic() - started
                read[tp.partition] += len(records)
        print(f"\n  group join + first records after {joined:.2f}s; {sum(read.values())} records read")
        assert read == written
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        assert consumer.assignment() == set(partitions)
        ends = await consumer.end_offsets(partitions)
        assert {tp.partition: end for tp, end in ends.items()} == written  # ListOffsets(latest) is exact here
        assert {tp.partition: consumer.highwater(tp) for tp in partitions} == written
        assert {tp.partition: await consumer.position(tp) for tp in partitions} == written
        await consumer.commit()
        assert {tp.partition: await consumer.committed(tp) for tp in partitions} == written
        await consumer.seek_to_end(*partitions)
        assert {tp.partition: await consumer.position(tp) for tp in partitions} == written
    finally:
        await consumer.stop()

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:  # the commits outlive the consumer
        offsets = await admin.list_consumer_group_offsets(group)
        assert {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic} == written
    finally:
        await admin.close()


async def test_a_waiting_fetch_is_answered_as_data_arrives(apache_broker):
    """With fetch_max_wait_ms=500 a consumer at the end of a partition gets a new record in a few
    milliseconds: Apache Kafka answers the parked fetch when data arrives (fetch.min.bytes=1),
    where Tansu answers only when the wait runs out."""
    bootstrap = apache_broker.bootstrap
    topic = await create_topic(bootstrap, partitions=1)
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=500, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([tp])
        await (await producer.send(topic, b"warm-up", partition=0))
        assert (await consumer.getone()).value == b"warm-up"
        latencies = []
        for i in range(8):
            await asyncio.sleep(0.6)  # the consumer's fetch is parked on the broker by now
            sent = time.perf_counter()
            await producer.send(topic, f"probe-{i}".encode(), partition=0)
            record = await asyncio.wait_for(consumer.getone(), 5)
            latencies.append((time.perf_counter() - sent) * 1000)
            assert record.value == f"probe-{i}".encode()
    finally:
        await consumer.stop()
        await producer.stop()
    median = statistics.median(latencies)
    print(f"\n  produce -> consume with fetch_max_wait_ms=500: median {median:.1f} ms, max {max(latencies):.1f} ms "
          f"({', '.join(f'{x:.1f}' for x in latencies)})")
    assert median < 150, latencies  # far below the 500 ms a wait-it-out broker would give


# -- faust-streaming ------------------------------------------------------------------------
FAUST_APP = """\
import sys, time
import faust
from streamdetect.kafka.broker import faust_broker_config
from streamdetect.settings import Settings

bootstrap, topic_name, app_id, out, datadir = sys.argv[1:6]
app = faust.App(app_id, **faust_broker_config(Settings(), bootstrap), autodiscover=False, datadir=datadir,
                web_enabled=False, store="memory://", topic_partitions={partitions},
                consumer_auto_offset_reset="earliest", broker_commit_interval=0.5)
source = app.topic(topic_name, value_serializer="raw", key_serializer="raw")

@app.agent(source)
async def record(stream):
    async for event in stream.events():
        with open(out, "a") as f:
            f.write(f"{{time.time():.6f}} {{event.message.partition}} {{event.value.decode()}}\\n")

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_a_faust_agent_consumes_and_commits(apache_broker, tmp_path):
    bootstrap = apache_broker.bootstrap
    topic = await create_topic(bootstrap)
    app_id = f"apache-faust-{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, f"before-{i}".encode(), partition=i % PARTITIONS)
                               for i in range(40)])
    finally:
        await producer.stop()

    script, out, log = tmp_path / "faust_app.py", tmp_path / "seen.txt", tmp_path / "faust.log"
    script.write_text(FAUST_APP.format(partitions=PARTITIONS))
    started = time.time()
    with open(log, "wb") as log_file:
        process = subprocess.Popen([sys.executable, str(script), bootstrap, topic, app_id, str(out), str(tmp_path / "data")],
                                   cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    try:
        deadline = time.monotonic() + 90
        while len(_lines(out)) < 40 and time.monotonic() < deadline and process.poll() is None:
            await asyncio.sleep(0.2)
        seen = _lines(out)
        assert len(seen) == 40, f"faust saw {len(seen)} of 40; its log:\n{log.read_text()[-4000:]}"
        first = float(seen[0].split()[0]) - started
        # live records: produced while the agent runs
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            sent_at = {}
            for i in range(5):
                sent_at[f"live-{i}"] = time.time()
                await (await producer.send(topic, f"live-{i}".encode(), partition=i % PARTITIONS))
                await asyncio.sleep(0.2)
        finally:
            await producer.stop()
        deadline = time.monotonic() + 30
        while len(_lines(out)) < 45 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        seen = _lines(out)
        assert sorted(line.split()[2] for line in seen) == sorted([f"before-{i}" for i in range(40)] + list(sent_at))
        live = [(float(at) - sent_at[value]) * 1000 for at, _, value in (line.split() for line in seen) if value in sent_at]
        print(f"\n  faust worker start -> first record {first:.1f}s; live records after "
              f"{', '.join(f'{x:.0f}' for x in live)} ms")
        await asyncio.sleep(1.5)  # > broker_commit_interval
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    text = log.read_text()
    assert "Traceback" not in text and "UnsupportedVersion" not in text, text[-4000:]

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:  # Faust committed what its agent acknowledged
        offsets = await admin.list_consumer_group_offsets(app_id)
        committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    expected = {p: sum(1 for i in range(40) if i % PARTITIONS == p) + sum(1 for i in range(5) if i % PARTITIONS == p)
                for p in range(PARTITIONS)}
    assert committed == expected
    print(f"  faust committed {committed}; its internal topics: {sorted(t for t in topics if t.startswith(app_id))}")
