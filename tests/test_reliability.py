"""Nothing lost: the worker killed mid-replay, fed garbage, cut off from its broker, handed a bad bundle.

The integration tests share one soak run (``fixtures_reliability.soak_run``, the code of the
bench's soak with a shorter broker pause) on a broker of their own: 3,000 good events with
10,000 fuzzed ones mixed in, two ``kill -9`` + restart cycles mid-replay, a bundle with a
malformed manifest promoted, the broker stopped with SIGSTOP for 8 s (the bench: 30 s) and
resumed. The unit tests check the fuzz generator and the fast validation path without a broker.
"""

from __future__ import annotations

import asyncio
import base64
import random

import faust
import orjson
import pytest

from fixtures_reliability import CANARY_PASSWORD, SOAK_FUZZED_EVENTS, SOAK_KILL_CYCLES
from streamdetect import pipeline
from streamdetect.kafka.broker import client_kwargs, faust_broker_config, redacted
from streamdetect.feeds import EventTable, get_feed
from benchmarks.fuzz import KINDS, fuzzed_messages
from streamdetect.kafka.records import DeadLetter, alert_id
from streamdetect.settings import Settings
from streamdetect.state import read_latest_states
from streamdetect.state import PartitionState

FEED = get_feed("transactions")


# -- without a broker ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_events(creditcard, creditcard_split):
    return FEED.events_from_dataset(creditcard, creditcard_split.test[:2000])


def test_fuzzed_events_are_all_bad_and_of_every_kind(good_events):
    bad = fuzzed_messages(good_events[:100], 2000, seed=7)
    assert len(bad) == 2000 and {kind for kind, _ in bad} == set(KINDS)
    messages = [m for kind, m in bad if kind != "empty"]
    assert len(set(messages)) == len(messages), "fuzzed messages are distinct"


def test_fast_path_gives_exactly_the_two_step_outputs(good_events, creditcard_bundle, monkeypatch):
    """validate_batch (one pydantic-core call for the batch) vs orjson + model_validate per event:
    same scores, alerts and dead letters, byte for byte, on good events mixed with fuzzed ones."""
    bad = fuzzed_messages(good_events[:100], 3000, seed=11)
    messages = [orjson.dumps(e) for e in good_events] + [m for _, m in bad]
    random.Random(0).shuffle(messages)
    records = [pipeline.InputRecord("transactions", i % 4, i, m, None, 1_700_000_000_000) for i, m in enumerate(messages)]

    def run():
        return pipeline.process_batch(records, feed=FEED, bundle=creditcard_bundle, states={},
                                      new_state=lambda: PartitionState(window=100, warmup=10), rate=0.05,
                                      max_event_bytes=64 * 1024, now=1_700_000_001.0)

    def two_step(records, feed, *, max_event_bytes):
        decoded, dead = pipeline.decode(records, feed=feed.name, max_event_bytes=max_event_bytes)
        valid, invalid = pipeline.validate(decoded, feed)
        return [v.record for v in valid], EventTable.from_events([v.event for v in valid]), dead + invalid

    fast = run()
    monkeypatch.setattr(pipeline, "validate_batch", two_step)
    slow = run()
    assert fast.scored == slow.scored == len(good_events)
    assert len(fast.dead_letters) == len(bad)
    assert fast.scores == slow.scores and fast.alerts == slow.alerts and fast.dead_letters == slow.dead_letters
    assert fast.alerts, "rate 0.05 on the credit-card test rows gives alerts"
    for letter in fast.dead_letters:
        DeadLetter.model_validate(orjson.loads(letter))


def test_wrong_encodings_are_dead_lettered(good_events):
    """JSON must be UTF-8 (as orjson reads it); the lenient NaN path must not accept UTF-16 or a BOM."""
    text = orjson.dumps(good_events[0]).decode()
    for raw in (text.encode("utf-16"), text.encode("utf-16-le"), text.encode("utf-32"), b"\xef\xbb\xbf" + text.encode()):
        decoded, dead = pipeline.decode([pipeline.InputRecord("t", 0, 0, raw)], feed="transactions",
                                        max_event_bytes=1 << 16)
        assert not decoded and dead[0]["reason"] == "invalid_json"


def test_sasl_and_tls_settings_reach_faust_and_aiokafka_without_showing_the_secret(tmp_path):
    """The same SASL_SSL settings produce the aiokafka client kwargs and Faust's credentials, and
    Faust's driver turns those into the same aiokafka auth arguments; nothing printable holds the password."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    certifi = pytest.importorskip("certifi")  # any CA bundle will do (certifi comes with the test extras' requests)

    secret = "s3cret-sasl-pw"
    settings = Settings(kafka={"bootstrap": "k1:9093,k2:9093", "security_protocol": "SASL_SSL",
                               "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc", "sasl_password": secret,
                               "ssl_cafile": certifi.where()})
    kwargs = client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["ssl_context"] is not None
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == \
        ("SCRAM-SHA-512", "svc", secret)
    config = faust_broker_config(settings, "k1:9093,k2:9093")
    assert config["broker"] == "kafka://k1:9093;kafka://k2:9093"
    app = faust.App("sasl-config-test", **config, autodiscover=False, datadir=str(tmp_path))
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "svc" and auth["sasl_plain_password"] == secret
    assert auth["ssl_context"] is not None
    printed = " ".join(map(repr, [redacted({k: v for k, v in kwargs.items() if k != "ssl_context"}), settings,
                                  settings.kafka, app.conf.broker_credentials]))
    assert secret not in printed
    # TLS without SASL: an SSL context for both
    tls = Settings(kafka={"bootstrap": "k:9093", "security_protocol": "SSL", "ssl_cafile": certifi.where()})
    assert client_kwargs(tls)["ssl_context"] is not None
    tls_auth = credentials_to_aiokafka_auth(faust.App("tls-test", **faust_broker_config(tls, "k:9093"),
                                                      autodiscover=False, datadir=str(tmp_path)).conf.broker_credentials)
    assert tls_auth["security_protocol"] == "SSL" and tls_auth["ssl_context"] is not None


# -- the soak: real broker, real worker subprocess ---------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(400)
def test_no_event_is_lost_across_kills_and_a_broker_pause(soak_run):
    r = soak_run.reliability
    assert r["kill_cycles"] == SOAK_KILL_CYCLES and r["worker_starts"] == SOAK_KILL_CYCLES + 1
    assert soak_run.lost == set(), f"{len(soak_run.lost)} events never scored, e.g. {sorted(soak_run.lost)[:5]}"
    assert r["events_lost"] == 0 and r["good_events_in_deadletter"] == 0


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_every_fuzzed_event_lands_in_deadletter_with_a_reason(soak_run):
    r = soak_run.reliability
    assert r["fuzzed_events"] == SOAK_FUZZED_EVENTS
    assert soak_run.bad_missing == set(), f"not dead-lettered: {sorted(soak_run.bad_missing)[:5]}"
    assert r["fuzzed_in_deadletter"] == r["fuzzed_events"]
    for position, kind in soak_run.bad_positions.items():
        letter = DeadLetter.model_validate(soak_run.account.dead[position])
        assert letter.reason in ("oversized", "invalid_json", "not_an_object", "invalid_event"), (kind, letter.reason)
        if kind == "oversized":
            assert letter.reason == "oversized"
        if kind in ("missing_field", "extra_field", "bad_value", "nan_inf", "huge_number"):
            assert letter.reason == "invalid_event" and letter.error_types, (kind, letter.error)
    # the raw bytes travel with the dead letter, so a fixed worker can replay them
    sample = next(p for p, kind in soak_run.bad_positions.items() if kind == "truncated")
    assert base64.b64decode(soak_run.account.dead[sample]["raw_b64"])


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_alerts_repeat_only_with_the_same_alert_id(soak_run):
    r = soak_run.reliability
    assert soak_run.account.alerts, "the soak runs at a 5% false-alarm target: alerts are expected"
    for alert in soak_run.account.alerts:
        assert alert["alert_id"] == alert_id("transactions", alert["event_id"])
    assert r["duplicate_alerts_after_dedup"] == 0


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_threshold_and_drift_state_continue_from_the_state_topic(soak_run, own_broker):
    r = soak_run.reliability
    assert r["state_restored_on_start"] >= SOAK_KILL_CYCLES, "every restart restores the partitions' state"
    settings = soak_run.settings
    last_offset: dict[int, int] = {}
    for record in soak_run.account.score_records:
        last_offset[record["partition"]] = max(last_offset.get(record["partition"], -1), record["last_offset"])
    for partition, offset in soak_run.account.dead:
        last_offset[partition] = max(last_offset.get(partition, -1), offset)
    states = asyncio.run(read_latest_states(client_kwargs(settings, own_broker.bootstrap), settings.topics.state,
                                            sorted(last_offset)))
    for partition, offset in last_offset.items():
        assert states[f"transactions:{partition}"]["next_offset"] == offset + 1
    levels = sum(states[f"transactions:{p}"]["keys"][""]["count"] for p in last_offset)
    drift = sum(states[f"transactions:{p}"]["drift"][""]["count"] for p in last_offset)
    # good records, not good event ids: a producer retrying through the broker pause may write one twice
    good, last_process = r["good_records_in_feed"], r["scored_by_the_last_worker_process"]
    assert good >= len(soak_run.good_ids)
    # the state carries the events of every worker process, not only of the last one; a kill lands between
    # a checkpoint and a commit, and the restart lines the two up again (service.CatchUp): each good record
    # counts exactly once, none missed, none twice
    assert last_process < 0.8 * good, "the kills happened mid-replay"
    assert levels == good and drift == good, (levels, drift, good, last_process)
    assert r["events_in_threshold_state"] == levels and r["events_in_drift_state"] == drift


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_malformed_bundle_is_refused_and_the_model_in_service_keeps_serving(soak_run):
    r = soak_run.reliability
    assert r["bad_bundle_refused"], "the log names the refused bundle and the malformed manifest"
    assert r["model_versions_scored"] == ["v0001"]


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_the_worker_recovers_from_the_pause_by_itself_with_bounded_memory(soak_run):
    r = soak_run.reliability
    assert r["broker_pause_s"] > 0 and r["worker_restarts_needed"] == 0, soak_run.notes
    memory = r["worker_memory_mb"]
    assert memory["end"] is not None and memory["end"]["peak_rss_mb"] < 1500
    assert memory["end"]["rss_mb"] - memory["start"]["rss_mb"] < 400, memory


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_no_secret_in_the_worker_log(soak_run):
    assert soak_run.log_text and CANARY_PASSWORD not in soak_run.log_text
