"""The worker's per-batch functions without a broker: decode, validate, featurize, thresholds,
p-values, alert building, state checkpoints, bundle swaps, recorded feeds."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from offline import bundle as bundles
from streamdetect import pipeline, scoring
from streamdetect.feeds import get_feed
from streamdetect.pipeline import InputRecord
from streamdetect.kafka.records import Alert, DeadLetter, ScoresRecord, alert_id
from streamdetect.replay import key_from_field, malformed_examples, read_labels, read_messages, write_recording
from streamdetect.serving.models import ModelHolder
from streamdetect.state import PartitionState
from streamdetect.thresholds import apply_thresholds, p_values, score_threshold

FEED = get_feed("transactions")


@pytest.fixture(scope="module")
def events(creditcard, creditcard_split):
    """Real credit-card test rows as events, with their labels."""
    index = creditcard_split.test[:3000]
    frauds = creditcard_split.test[creditcard.labels[creditcard_split.test] == 1][:20]
    index = np.concatenate([index, frauds])
    return FEED.events_from_dataset(creditcard, index), creditcard.labels[index]


def records_of(messages, partition=0, start=0):
    now = int(time.time() * 1000)
    return [InputRecord("transactions", partition, start + i, m, None, now) for i, m in enumerate(messages)]


# -- decode and validate ----------------------------------------------------------------------------
def test_malformed_events_get_the_right_reason_and_error_type(events):
    good = events[0][0]
    cases = malformed_examples(good, max_event_bytes=4096)
    records = records_of([m for _, m, _, _ in cases] + [orjson.dumps(good)])
    decoded, dead = pipeline.decode(records, feed="transactions", max_event_bytes=4096)
    valid, invalid = pipeline.validate(decoded, FEED)
    by_offset = {d["offset"]: d for d in dead + invalid}
    assert [v.record.offset for v in valid] == [len(cases)]  # only the good one passes
    for offset, (name, message, reason, error_type) in enumerate(cases):
        letter = by_offset[offset]
        DeadLetter.model_validate(letter)
        assert letter["reason"] == reason, name
        if error_type:
            assert error_type in letter["error_types"], (name, letter)
            assert letter["event_id"] == f"bad-{name}"
        import base64

        assert base64.b64decode(letter["raw_b64"]) == message  # the bytes to replay after a fix
        assert letter["error"]


def test_nan_literals_reach_validation_and_name_the_field(events):
    good = dict(events[0][0])
    raw = orjson.dumps(good).replace(b'"V3":', b'"V3":NaN,"_":', 1)  # V3: NaN, then an extra field "_"
    decoded, dead = pipeline.decode(records_of([raw]), feed="transactions", max_event_bytes=65536)
    assert not dead
    _, invalid = pipeline.validate(decoded, FEED)
    assert invalid[0]["reason"] == "invalid_event"
    assert {"finite_number", "extra_forbidden"} <= set(invalid[0]["error_types"])
    assert "V3" in invalid[0]["error"]


def test_columns_follow_the_bundle_schema(events, creditcard_bundle):
    decoded, _ = pipeline.decode(records_of([orjson.dumps(e) for e in events[0][:50]]), feed="transactions",
                                 max_event_bytes=65536)
    valid, _ = pipeline.validate(decoded, FEED)
    columns = FEED.columns_of([v.event for v in valid])
    assert set(creditcard_bundle.schema.input_columns) <= set(columns)
    np.testing.assert_allclose(columns["Amount"], [e["Amount"] for e in events[0][:50]])


def test_featurize_rejects_only_the_bad_rows(creditcard_bundle):
    schema = creditcard_bundle.schema
    columns = {c: np.zeros(5) for c in schema.input_columns}
    columns["V1"][1] = np.nan
    columns["Amount"][3] = np.inf
    X, kept, rejected, unseen = scoring.featurize(creditcard_bundle, columns)
    assert unseen == 0  # the credit-card schema has no categoricals
    assert kept.tolist() == [0, 2, 4] and sorted(rejected) == [1, 3]
    assert X.shape == (3, schema.n_features) and np.isfinite(X).all()


# -- p-values and thresholds -------------------------------------------------------------------------
def test_p_values_match_the_conformal_definition():
    rng = np.random.default_rng(0)
    calibration = np.sort(rng.exponential(size=999))
    scores = np.concatenate([rng.exponential(size=500), calibration[:5], [1e9, -1.0]])
    brute = np.array([(1 + np.sum(calibration >= s)) / (len(calibration) + 1) for s in scores])
    np.testing.assert_allclose(p_values(scores, calibration), brute)


@pytest.mark.parametrize("rate", [0.001, 0.01, 0.05, 0.2])
def test_score_threshold_is_where_p_drops_below_the_rate(rate):
    calibration = np.sort(np.random.default_rng(1).gamma(2.0, size=999))
    threshold = score_threshold(calibration, rate)
    probe = np.concatenate([calibration, calibration + 1e-9, calibration - 1e-9])
    alerted = p_values(probe, calibration) < rate
    np.testing.assert_array_equal(alerted, probe > threshold)


def test_false_alarm_rate_on_normal_scores_is_about_the_target():
    rng = np.random.default_rng(2)
    calibration = np.sort(rng.lognormal(size=5000))
    state = PartitionState(window=1000, warmup=200)
    result = apply_thresholds(state, [""] * 50_000, rng.lognormal(size=50_000), calibration, rate=0.01)
    assert 0.007 < result.alerted.mean() < 0.013


def test_a_hot_key_gets_its_own_level_after_warmup():
    calibration = np.sort(np.random.default_rng(3).uniform(0, 1, size=999))  # median 0.5
    state = PartitionState(window=100, warmup=50)
    hot = np.full(60, 2.0)  # key "hot" runs at 4x the calibration median
    first = apply_thresholds(state, ["hot"] * 60, hot, calibration, rate=0.01)
    assert first.alerted.all() and (first.factors == 1).all()  # compared with the state before the batch: no level yet
    second = apply_thresholds(state, ["hot"] * 3 + ["cold"], np.array([2.0, 2.0, 9.0, 2.0]), calibration, rate=0.01)
    np.testing.assert_allclose(second.factors, [4.0, 4.0, 4.0, 1.0], rtol=0.02)
    assert second.alerted.tolist() == [False, False, True, True]
    np.testing.assert_allclose(second.thresholds[:3], score_threshold(calibration, 0.01) * second.factors[:3])


def test_keys_are_bounded_least_recently_seen_first():
    state = PartitionState(window=10, warmup=0, max_keys=3)
    for key in ["a", "b", "c", "a", "d"]:
        state.update([key], np.array([1.0]))
    assert list(state.keys) == ["c", "a", "d"]


def test_state_round_trips_through_json():
    rng = np.random.default_rng(4)
    state = PartitionState(window=50, warmup=5)
    keys = rng.choice(["x", "y", "z", ""], size=400).tolist()
    state.update(keys, rng.exponential(size=400))
    state.next_offset = 400
    restored = PartitionState.from_dict(orjson.loads(orjson.dumps(state.to_dict())), window=50, warmup=5)
    assert restored.next_offset == 400 and list(restored.keys) == list(state.keys)
    for key in state.keys:
        assert restored.keys[key].count == state.keys[key].count
        assert restored.keys[key].median() == state.keys[key].median()
    calibration = np.sort(rng.exponential(size=500))
    more_keys, more = rng.choice(["x", "y", "w"], size=100).tolist(), rng.exponential(size=100) * 3
    a = apply_thresholds(state, more_keys, more, calibration, rate=0.05)
    b = apply_thresholds(restored, more_keys, more, calibration, rate=0.05)
    np.testing.assert_array_equal(a.p_values, b.p_values)


# -- the whole batch --------------------------------------------------------------------------------------
def test_process_batch_builds_valid_alerts_scores_and_dead_letters(events, creditcard_bundle):
    good, labels = events
    bad = malformed_examples(good[0])
    messages = [orjson.dumps(e) for e in good] + [m for _, m, _, _ in bad]
    records = [InputRecord("transactions", i % 2, i // 2, m, None, int(time.time() * 1000)) for i, m in enumerate(messages)]
    states: dict[int, PartitionState] = {}
    out = pipeline.process_batch(records, feed=FEED, bundle=creditcard_bundle, states=states,
                                 new_state=lambda: PartitionState(window=1000, warmup=200), rate=0.01,
                                 max_event_bytes=65536, top_k=5)
    assert out.scored == len(good)
    assert sum(out.dead_by_reason.values()) == len(bad) == len(out.dead_letters)
    scored_ids = []
    for key, value in out.scores:
        record = ScoresRecord.model_validate_json(value)
        assert key == str(record.partition).encode() and record.model_version == "v0001"
        scored_ids += record.event_ids
    assert sorted(scored_ids) == sorted(e["event_id"] for e in good)
    by_id = {e["event_id"]: e for e in good}
    fraud_ids = {e["event_id"] for e, y in zip(good, labels) if y == 1}
    alerted = set()
    for key, value in out.alerts:
        alert = Alert.model_validate_json(value)
        assert key == alert.event_id.encode() and alert.alert_id == alert_id("transactions", alert.event_id)
        assert alert.p_value < 0.01 and alert.score > alert.threshold
        assert alert.event == by_id[alert.event_id]
        assert len(alert.top_features) == 5
        contributions = [f.contribution for f in alert.top_features]
        assert contributions == sorted(contributions, reverse=True)
        for reason in alert.top_features:  # values in raw units, exactly what the event carried
            if reason.name in ("hour_sin", "hour_cos"):  # derived from event_time, not a field of the event
                continue
            assert reason.value == pytest.approx(by_id[alert.event_id][reason.name], rel=1e-6, abs=1e-9)
        alerted.add(alert.event_id)
    # the fixture's 6-epoch VAE catches about half of these 20 frauds at a 1% false-alarm rate; a floor well above chance (1%)
    assert len(alerted & fraud_ids) >= 0.25 * len(fraud_ids), "the bundle should catch a quarter of these frauds"
    assert states[0].next_offset == (len(messages) + 1) // 2 and states[1].next_offset == len(messages) // 2


def test_reprocessing_gives_the_same_alert_ids(events, creditcard_bundle):
    messages = [orjson.dumps(e) for e in events[0]]
    runs = []
    for _ in range(2):
        out = pipeline.process_batch(records_of(messages), feed=FEED, bundle=creditcard_bundle, states={},
                                     new_state=lambda: PartitionState(window=1000, warmup=200), rate=0.01,
                                     max_event_bytes=65536)
        runs.append([orjson.loads(v)["alert_id"] for _, v in out.alerts])
    assert runs[0] == runs[1] and runs[0]


# -- the model in service ---------------------------------------------------------------------------------
def test_model_holder_refuses_a_tampered_bundle_and_keeps_serving(registry_copy, caplog):
    holder = ModelHolder(registry_copy, ["transactions"])
    assert holder.refresh("transactions") and holder.versions() == {"transactions": "v0001"}
    assert "serving v0002" in holder.apply_control({"action": "promote", "feed": "transactions", "version": "v0002"})
    with caplog.at_level("ERROR"):
        outcome = holder.apply_control({"action": "promote", "feed": "transactions", "version": "v0003"})
    assert "serving v0002" in outcome and holder.refused == {"transactions": "v0003"}
    assert "REFUSED bundle v0003" in caplog.text and "sha256" in caplog.text
    assert not holder.refresh("transactions")  # not retried until the pointer moves
    assert "serving v0002" in holder.apply_control({"action": "rollback", "feed": "transactions"})
    assert bundles.current_version(registry_copy, "transactions") == "v0002"
    assert "ignored" in holder.apply_control({"action": "explode", "feed": "transactions"})
    bundles.promote(registry_copy, "transactions", "v0003")  # a fresh holder (worker restart) falls back to v0002
    fresh = ModelHolder(registry_copy, ["transactions"])
    assert fresh.refresh("transactions") and fresh.versions() == {"transactions": "v0002"}
    assert fresh.refused == {"transactions": "v0003"}
    assert "failed" in holder.apply_control({"action": "promote", "feed": "transactions", "version": "v0999"})


# -- recorded feeds ---------------------------------------------------------------------------------------
def test_recording_keeps_labels_out_of_the_events(events, tmp_path):
    good, labels = events
    events_path, labels_path = write_recording(good[:100], labels[:100], tmp_path / "cc")
    messages = read_messages(events_path)
    assert len(messages) == 100
    assert all(set(orjson.loads(m)) == set(good[0]) for m in messages)
    assert "Class" not in good[0] and "label" not in good[0]
    assert read_labels(labels_path) == {e["event_id"]: int(y) for e, y in zip(good[:100], labels[:100])}
    assert key_from_field(None)(messages[0]) == good[0]["event_id"].encode()
    assert key_from_field("card_id")(orjson.dumps({**good[0], "card_id": "c-7"})) == b"c-7"
    assert key_from_field(None)(b"{broken") is None
    csv_path = tmp_path / "few.csv"
    csv_path.write_text("event_id,V1,Amount\ncc-1,0.5,3\n")
    assert orjson.loads(read_messages(csv_path)[0]) == {"event_id": "cc-1", "V1": 0.5, "Amount": 3}


def test_events_ids_and_times_are_stable(creditcard):
    first = FEED.events_from_dataset(creditcard, np.array([0, 1, 284_806]))
    assert [e["event_id"] for e in first] == ["cc-0", "cc-1", "cc-284806"]
    assert first[0]["event_time"] == "2013-09-01T00:00:00Z"
    assert first[2]["event_time"].startswith("2013-09-02T")
    assert FEED.event_model.model_validate(first[2])
