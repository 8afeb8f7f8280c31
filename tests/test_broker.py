"""Broker resolution, client configuration, topic creation and the Tansu quirks we work around."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamdetect.kafka.broker import BrokerError, EmbeddedBroker, client_kwargs, ensure_topics, free_port, port_open, project_topics, redacted
from streamdetect.kafka.local import resolve_bootstrap
from streamdetect.settings import Settings
from streamdetect.state import read_latest_states


def test_sasl_ssl_client_config_never_shows_the_password():
    settings = Settings(kafka={"bootstrap": "k1:9093,k2:9093", "security_protocol": "SASL_PLAINTEXT",
                               "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc", "sasl_password": "s3cret"})
    kwargs = client_kwargs(settings)
    assert kwargs["sasl_plain_password"] == "s3cret" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "s3cret" not in repr(redacted(kwargs)) and "s3cret" not in repr(settings)
    with pytest.raises(BrokerError, match="SASL_USERNAME"):
        client_kwargs(Settings(kafka={"bootstrap": "k:1", "security_protocol": "SASL_SSL"}))


def test_configured_bootstrap_wins():
    resolved = resolve_bootstrap(Settings(kafka={"bootstrap": "kafka.example:9092"}))
    assert resolved.bootstrap == "kafka.example:9092" and resolved.kind == "external" and resolved.owner is None


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_embedded_broker_starts_is_reused_and_stops():
    port = free_port()
    settings = Settings(kafka={"embedded_port": port})
    first = resolve_bootstrap(settings)
    try:
        assert first.kind == "embedded" and port_open("127.0.0.1", port)
        second = resolve_bootstrap(settings)  # something listens there: reuse, do not own
        assert second.kind == "embedded-reused" and second.owner is None
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port).start()
    finally:
        first.stop()
    assert not port_open("127.0.0.1", port)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_topics_are_created_with_the_configured_partitions(embedded_broker):
    suffix = uuid.uuid4().hex[:6]
    settings = Settings(topics={"transactions": f"tx-{suffix}", "state": f"state-{suffix}", "partitions": 3})
    created = ensure_topics(embedded_broker.bootstrap, settings, [settings.topics.transactions, settings.topics.state])
    assert sorted(created) == sorted([f"tx-{suffix}", f"state-{suffix}"])
    assert ensure_topics(embedded_broker.bootstrap, settings, [settings.topics.transactions]) == []  # idempotent
    assert len(project_topics(settings)) == 9

    async def partitions():
        admin = AIOKafkaAdminClient(bootstrap_servers=embedded_broker.bootstrap)
        await admin.start()
        try:
            return {m["topic"]: len(m["partitions"]) for m in await admin.describe_topics([f"tx-{suffix}", f"state-{suffix}"])}
        finally:
            await admin.close()

    assert asyncio.run(partitions()) == {f"tx-{suffix}": 3, f"state-{suffix}": 3}


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_state_partitions_are_read_to_their_real_end(embedded_broker):
    """Tansu's ListOffsets(latest) reports the last *batch* base offset + 1, so a reader trusting
    end_offsets() would stop early; read_latest_states goes by the fetch high watermark."""
    topic = f"state-{uuid.uuid4().hex[:6]}"
    ensure_topics(embedded_broker.bootstrap, Settings(topics={"state": topic, "partitions": 2}), [topic])
    kafka = {"bootstrap_servers": embedded_broker.bootstrap}

    async def run():
        producer = AIOKafkaProducer(**kafka, linger_ms=50)
        await producer.start()
        try:  # 300 records in one batch, last value per key wins
            futures = [await producer.send(topic, b'{"n": %d}' % i, key=b"transactions:1", partition=1) for i in range(300)]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**kafka)
        await consumer.start()
        try:
            end = (await consumer.end_offsets([TopicPartition(topic, 1)]))[TopicPartition(topic, 1)]
        finally:
            await consumer.stop()
        return end, await read_latest_states(kafka, topic, [0, 1])

    end_offset, states = asyncio.run(run())
    assert states == {"transactions:1": {"n": 299}}
    if end_offset != 300:  # the quirk is still there: document that our workaround is what makes this pass
        assert end_offset < 300
