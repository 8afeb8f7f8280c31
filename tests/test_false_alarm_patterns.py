"""An analyst's false alarm holds back the same pattern of the same key (pipeline, feedback)."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import orjson
import pytest

from streamdetect import pipeline
from streamdetect.feedback import false_alarm_patterns, with_pattern
from streamdetect.feeds import get_feed
from streamdetect.kafka.records import ScoresRecord
from streamdetect.pipeline import InputRecord, alert_pattern
from streamdetect.state import PartitionState

FEED = get_feed("transactions")


@pytest.fixture(scope="module")
def keyed_events(creditcard, creditcard_split):
    """Credit-card test rows with frauds, every event on card "card-7"."""
    test = creditcard_split.test
    index = np.concatenate([test[:2000], test[creditcard.labels[test] == 1][:20]])
    return [{**e, "card_id": "card-7"} for e in FEED.events_from_dataset(creditcard, index)]


def run(events, bundle, false_alarms=None):
    now = int(time.time() * 1000)
    records = [InputRecord("transactions", 0, i, orjson.dumps(e), None, now) for i, e in enumerate(events)]
    return pipeline.process_batch(records, feed=FEED, bundle=bundle, states={}, rate=0.01, max_event_bytes=65536,
                                  new_state=lambda: PartitionState(window=1000, warmup=10**9), false_alarms=false_alarms)


def alerted_in_scores(out) -> dict[str, bool]:
    flags = {}
    for _, value in out.scores:
        record = ScoresRecord.model_validate_json(value)
        flags.update(zip(record.event_ids, record.alerted))
    return flags


def test_a_false_alarm_holds_back_its_pattern_for_its_key_until_it_expires(keyed_events, creditcard_bundle):
    first = run(keyed_events, creditcard_bundle)
    alerts = [orjson.loads(v) for _, v in first.alerts]
    assert alerts and first.suppressed_by_label == 0
    called_off = alerts[0]
    pattern = alert_pattern(called_off["top_features"])
    same = [a["event_id"] for a in alerts if alert_pattern(a["top_features"]) == pattern]
    later = dt.datetime.fromisoformat(max(e["event_time"] for e in keyed_events).replace("Z", "+00:00")).timestamp() + 1

    held = run(keyed_events, creditcard_bundle, {("card-7", pattern): later})
    published = {orjson.loads(v)["event_id"] for _, v in held.alerts}
    assert held.suppressed_by_label == len(same) and not published & set(same)
    assert published == {a["event_id"] for a in alerts} - set(same)  # other patterns still alert
    flags = alerted_in_scores(held)
    assert not any(flags[i] for i in same) and all(flags[i] for i in published)

    # another key, or an expired label: nothing is held back
    for false_alarms in ({("card-8", pattern): later}, {("card-7", pattern): 0.0}):
        again = run(keyed_events, creditcard_bundle, false_alarms)
        assert again.suppressed_by_label == 0 and len(again.alerts) == len(alerts)


def test_a_false_alarm_label_takes_its_alerts_key_and_pattern_and_the_table_rebuilds_them():
    alert = {"event_id": "cc-9", "feed": "transactions", "key": "card-7", "event_time": "2013-09-02T10:00:00+00:00",
             "top_features": [{"name": n} for n in ("V14", "V4", "V12", "V10")]}
    recent = [orjson.dumps({**alert, "event_id": "cc-8"}), orjson.dumps(alert)]
    label = {"event_id": "cc-9", "label": "false_alarm", "analyst": "ana", "at": "2026-12-02T00:00:00Z"}
    stored = with_pattern(label, recent, suppress_hours=2)
    expected_until = dt.datetime(2013, 9, 2, 12, tzinfo=dt.timezone.utc).timestamp()
    assert stored == {**label, "feed": "transactions", "key": "card-7", "pattern": "V12,V14,V4", "until": expected_until}
    assert false_alarm_patterns([stored, None, {**label, "event_id": "cc-1"}]) == {"transactions": {("card-7", "V12,V14,V4"): expected_until}}
    # confirmed labels, alerts without a key, alerts no longer in memory: no pattern
    assert with_pattern({**label, "label": "confirmed"}, recent, suppress_hours=2)["label"] == "confirmed"
    assert "pattern" not in with_pattern(label, [orjson.dumps({**alert, "key": ""})], suppress_hours=2)
    assert "pattern" not in with_pattern(label, [], suppress_hours=2)
