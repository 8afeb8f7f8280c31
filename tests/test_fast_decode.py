"""The msgspec mirror of a feed's event model must never accept what pydantic refuses, nor read a
value differently: on fuzzed events and on near-misses of every field, whatever the mirror
accepts, pydantic accepts with the same values; what the mirror refuses still reaches pydantic."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Annotated

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from offline.data import load_tabular
from streamdetect import pipeline
from streamdetect.feeds import get_feed
from streamdetect.feeds.fast_decode import fast_decoder
from streamdetect.feeds.sensors import SensorDecoder, SensorEvent
from benchmarks.fuzz import fuzzed_messages

TIMES = [
    "2013-09-01T00:00:00Z", "2013-09-01T00:00:00+01:00", "2013-09-01T00:00:00-00:00", "2013-09-01 00:00:00Z",
    "2013-09-01T00:00:00", "2013-09-01T00:00:00.5Z", "2013-09-01T00:00:00.123456Z", "2013-09-01T00:00:00.1234567Z",
    "2013-09-01t00:00:00z", "2013-09-01", "2013-09-01T00:00Z", "2013-02-29T00:00:00Z", "2013-09-01T24:00:00Z",
    "2013-09-01T23:59:60Z", "2013-09-01T00:00:00+24:00", "2013-09-01T00:00:00+23:59", "٢٠١٣-09-01T00:00:00Z",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2013-09-01T00:00:00,5Z", 1378000000, 1378000000.5, None, "",
]
NUMBERS = [0, -0.0, 1, 1.5, -1.5, 999.999999, 1000, 1000.0000001, -1000, 1e7, 1e7 + 1, 1e300, 10**30, -(10**30),
           "1.5", True, None, [1.0], {"v": 1}, 5e-324]
TEXTS = ["cc-1", "cc-1\n", "", "a" * 128, "a" * 129, "a" * 253, "a" * 254, "é", "cc 1", "x/y", "web-1", "tcp", 5, None,
         "\u0000", "\u2028", "SF"]


@pytest.fixture(scope="module")
def nsl_kdd_events(data_store):
    data = load_tabular("nsl-kdd", data_store)
    return get_feed("access-logs").events_from_dataset(data, list(range(0, 5000, 100)))


def near_misses(event: dict, rng: random.Random) -> list[bytes]:
    """The event with each field in turn set to edge values (JSON bytes)."""
    out = []
    for name, value in event.items():
        pool = TIMES if name == "event_time" else NUMBERS if isinstance(value, float) else TEXTS
        out += [json.dumps({**event, name: other}).encode() for other in pool]  # stdlib: ints beyond 64 bits
    out.append(orjson.dumps(event)[:-1] + b', "extra": 1}')
    out.append(orjson.dumps({k: v for k, v in event.items() if k != rng.choice(list(event))}))
    return out


def assert_mirror_within_pydantic(feed_name: str, messages: list[bytes]) -> int:
    feed = get_feed(feed_name)
    mirror = feed.fast_decoder
    accepted, table = mirror.decode(messages)
    for row, position in enumerate(accepted):
        try:
            event = feed.event_model.model_validate_json(messages[position])
        except ValidationError as exc:
            pytest.fail(f"the mirror accepted what pydantic refuses: {messages[position]!r}: {exc}")
        for name in mirror.numbers:
            assert table.number(name)[row] == getattr(event, name), (name, messages[position])
        for name in mirror.texts:
            assert table.text(name)[row] == getattr(event, name), (name, messages[position])
        for name in mirror.times:
            ours, theirs = table.time(name)[row], getattr(event, name)
            assert ours == theirs and ours.utcoffset() == theirs.utcoffset(), (name, messages[position])
    return len(accepted)


def test_the_mirror_exists_only_for_models_it_can_check_exactly():
    assert get_feed("transactions").fast_decoder is not None
    assert get_feed("access-logs").fast_decoder is not None
    # its model validator fills event_id and its value is one number or a list: no generic mirror, its own decoder
    assert fast_decoder(SensorEvent) is None and isinstance(get_feed("sensor-readings").fast_decoder, SensorDecoder)

    class WithValidator(BaseModel):
        model_config = ConfigDict(extra="forbid")
        x: float

        @model_validator(mode="after")
        def _check(self):
            return self

    class Lax(BaseModel):  # extra fields ignored: the mirror would refuse what pydantic takes, and that
        x: float           # is allowed, but ignoring is not forbidding; keep the rule simple: no mirror

    class WithInt(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: Annotated[int, Field(ge=0)]

    assert fast_decoder(WithValidator) is None and fast_decoder(Lax) is None and fast_decoder(WithInt) is None


@pytest.mark.parametrize("feed_name", ["transactions", "access-logs"])
def test_what_the_mirror_accepts_pydantic_accepts_with_the_same_values(feed_name, creditcard, creditcard_split,
                                                                       nsl_kdd_events):
    feed = get_feed(feed_name)
    good = (feed.events_from_dataset(creditcard, creditcard_split.test[:50]) if feed_name == "transactions"
            else nsl_kdd_events[:50])
    rng = random.Random(3)
    messages = [orjson.dumps(e) for e in good] + [m for _, m in fuzzed_messages(good, 3000, seed=5) if m is not None]
    for event in good[:10]:
        messages += near_misses(event, rng)
    accepted = assert_mirror_within_pydantic(feed_name, messages)
    assert accepted >= len(good) + 10, "the good events and some near-misses pass the mirror"
    assert accepted < len(messages) - 3000, "the fuzzed events do not"


def test_what_the_mirror_refuses_pydantic_still_judges_in_input_order(creditcard, creditcard_split):
    """Spellings the mirror leaves to pydantic (a date alone, epoch seconds, 7 decimals) are valid
    events: validate_batch keeps them, in input order, beside the mirror's events and the dead letters."""
    feed = get_feed("transactions")
    good = feed.events_from_dataset(creditcard, creditcard_split.test[:6])
    spellings = ["2013-09-01", 1378000000, "2013-09-01T00:00:00.1234567Z"]
    events = [good[0], {**good[1], "event_time": spellings[0]}, good[2], {**good[3], "event_time": spellings[1]},
              {**good[4], "Amount": "oops"}, {**good[5], "event_time": spellings[2]}]
    records = [pipeline.InputRecord("transactions", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
    valid, table, dead = pipeline.validate_batch(records, feed, max_event_bytes=1 << 16)
    assert [r.offset for r in valid] == [0, 1, 2, 3, 5]
    assert table.text("event_id") == [events[i]["event_id"] for i in (0, 1, 2, 3, 5)]
    assert [d["offset"] for d in dead] == [4] and dead[0]["reason"] == "invalid_event"
    assert table.time("event_time")[1] == dt.datetime(2013, 9, 1)  # a date alone: naive midnight
    assert table.time("event_time")[4].microsecond == 123456  # pydantic truncates; msgspec would round
    assert table.number("Amount").tolist() == [events[i]["Amount"] for i in (0, 1, 2, 3, 5)]


def sensor_events(n: int) -> list[dict]:
    """Readings of a few sensors: one number, several channels, with and without an event id."""
    out = []
    for i in range(n):
        event = {"sensor_id": f"pump-{i % 7}", "event_time": f"2024-01-01T00:{i % 60:02d}:00Z", "value": round(i * 0.37 - 5, 3)}
        if i % 3:
            event["event_id"] = f"pump-{i % 7}-{i}"
        if i % 5 == 0:
            event["value"] = [event["value"], -1.5, 2]
        out.append(event)
    return out


def test_the_sensor_decoder_accepts_only_what_pydantic_accepts_with_the_same_values():
    good = sensor_events(40)
    rng = random.Random(4)
    plain = [e for e in good if not isinstance(e["value"], list)]  # the fuzzer mutates number fields
    messages = [orjson.dumps(e) for e in good] + [m for _, m in fuzzed_messages(plain, 3000, seed=6) if m is not None]
    for event in good[:10]:
        messages += near_misses(event, rng)
        messages += [json.dumps({**event, "value": v}).encode()
                     for v in ([], [1.0] * 16, [1.0] * 17, [1, "2"], [1e12], [1e13], [None], [[1.0]], 1e12, -1e12, 1.0000001e12)]
    accepted = assert_mirror_within_pydantic("sensor-readings", messages)
    assert accepted >= len(good) + 20, "the good events and some near-misses pass the decoder"
    assert accepted < len(messages) - 3000, "the fuzzed events do not"


def test_a_batch_of_plain_readings_takes_the_column_path_and_matches_the_one_by_one_path():
    """The all-valid batch of single numbers (the common case) is checked column by column; its table
    equals the one the per-event path and pydantic build (default ids included)."""
    decoder = get_feed("sensor-readings").fast_decoder
    plain = [e for e in sensor_events(60) if not isinstance(e["value"], list)]
    messages = [orjson.dumps(e) for e in plain]
    accepted, table = decoder.decode(messages)
    each_accepted, each = decoder._decode_each(messages)
    assert accepted == each_accepted == list(range(len(plain)))
    assert table.texts == each.texts and table.times == each.times
    events = [SensorEvent.model_validate_json(m) for m in messages]
    assert table.text("event_id") == [e.event_id for e in events] and table.text("value") == [e.value for e in events]
    # one bad reading in the batch: the others still pass the decoder, the bad one is left to pydantic
    bad = messages[:5] + [orjson.dumps({**plain[5], "value": 2e12})] + messages[6:10]
    records = [pipeline.InputRecord("sensor-readings", 0, i, m) for i, m in enumerate(bad)]
    valid, table, dead = pipeline.validate_batch(records, get_feed("sensor-readings"), max_event_bytes=1 << 16)
    assert [r.offset for r in valid] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert [d["offset"] for d in dead] == [5] and dead[0]["reason"] == "invalid_event"
