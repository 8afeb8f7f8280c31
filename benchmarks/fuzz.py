"""Fuzzed input for the worker: many ways an event on a feed topic can be bad.

``fuzzed_messages`` turns good events into ``n`` distinct broken messages (random bytes,
truncated JSON, wrong types, NaN/Infinity, huge numbers, missing and extra fields, wrong text
encodings, oversized messages, non-objects, deep nesting, bad ids and times, empty values and
tombstones), each tagged with its kind. Every message is checked against the pipeline's own
decode and validate before it is returned, so a mutation that happens to produce a valid event
is never counted as bad (it is replaced by another one).

>>> good = {"event_id": "cc-1", "event_time": "2013-09-01T00:00:00Z", "Amount": 1.0,
...         **{f"V{i}": 0.5 for i in range(1, 29)}}
>>> bad = fuzzed_messages([good], 200, seed=1, max_event_bytes=4096)
>>> len(bad), len({m for _, m in bad if m is not None}) >= 198
(200, True)
>>> sorted({kind for kind, _ in bad})[:4]
['bad_value', 'deep_nesting', 'empty', 'encoding']
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import orjson

from streamdetect import pipeline
from streamdetect.feeds import Feed, get_feed

#: relative frequency of each kind (oversized messages are big: kept rare)
KINDS: dict[str, int] = {
    "random_bytes": 12, "truncated": 12, "wrong_type": 12, "nan_inf": 8, "huge_number": 8, "missing_field": 8,
    "extra_field": 8, "encoding": 8, "not_an_object": 6, "bad_value": 10, "deep_nesting": 1, "oversized": 1,
    "empty": 1,
}
_STRANGE = ["abc", "", "1.5", True, False, None, [], [1.0], {}, {"v": 1.0}]


def _numeric_fields(event: dict) -> list[str]:
    return [k for k, v in event.items() if isinstance(v, float)]


def _mutate(kind: str, event: dict, rng: random.Random, serial: int, max_event_bytes: int) -> bytes | None:
    numeric = _numeric_fields(event)
    field = rng.choice(numeric)
    base = {**event, "event_id": f"fuzz-{kind}-{serial}"}
    if kind == "random_bytes":
        return rng.randbytes(rng.randint(1, 600))
    if kind == "truncated":
        raw = orjson.dumps(base)
        return raw[: rng.randint(1, len(raw) - 1)]
    if kind == "wrong_type":
        target = rng.choice([field, field, "event_id", "event_time"])
        value = rng.choice(_STRANGE + ([12345, 1.5] if target != field else []))
        if target == field and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = "abc"
        return orjson.dumps({**base, target: value})
    if kind == "nan_inf":
        literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
        raw = orjson.dumps({**base, field: 12345.678})
        return raw.replace(b"12345.678", literal, 1)
    if kind == "huge_number":
        value = rng.choice([1e300, -1e300, 10**30, -(10**25), 1e12, 5e6 * 1e3])
        return orjson.dumps({**base, rng.choice([field, "Amount"]): value}) if not isinstance(value, int) \
            else orjson.dumps({**base, field: 0.0}).replace(b'"%s":0.0' % field.encode(), b'"%s":%d' % (field.encode(), value))
    if kind == "missing_field":
        required = [k for k in base if k != "card_id"]
        drop = set(rng.sample(required, rng.randint(1, 3)))
        return orjson.dumps({k: v for k, v in base.items() if k not in drop})
    if kind == "extra_field":
        return orjson.dumps({**base, f"x_{rng.randint(0, 10**6)}": rng.choice([1, "y", None, [1]]), "Class": 0})
    if kind == "encoding":
        text = orjson.dumps({**base, "card_id": f"card-é{serial}"}).decode()
        how = rng.choice(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "bom", "latin-1"])
        if how == "bom":
            return b"\xef\xbb\xbf" + text.encode()
        return text.encode(how)
    if kind == "not_an_object":
        return orjson.dumps(rng.choice([[base], f"event {serial}", serial, 1.5 * serial, None, True, [serial]]))
    if kind == "bad_value":
        change = rng.choice([
            {"event_id": ""}, {"event_id": f"has space {serial}"}, {"event_id": "x" * (129 + serial % 50)},
            {"event_time": "yesterday"}, {"event_time": "2013-13-45T99:00:00Z"}, {"event_time": ""},
            {"card_id": ""}, {"card_id": "c" * 200}, {"Amount": -1.0 - serial}, {field: 1000.5 + serial},
        ])
        return orjson.dumps({**base, **change})
    if kind == "deep_nesting":
        depth = rng.randint(2_000, 20_000)
        return b"[" * depth + b"]" * depth if rng.random() < 0.5 else b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "oversized":
        return orjson.dumps({**base, "card_id": "z" * (max_event_bytes + rng.randint(1, 4096))})
    if kind == "empty":
        return rng.choice([b"", b" ", b"\n", None, b"{", b"}", b"null"])
    raise ValueError(f"unknown fuzz kind {kind!r}")


def is_rejected(message: bytes | None, feed: Feed, *, max_event_bytes: int) -> bool:
    """True if the pipeline's decode + validate would dead-letter ``message``."""
    record = pipeline.InputRecord("fuzz", 0, 0, message)
    decoded, _ = pipeline.decode([record], feed=feed.name, max_event_bytes=max_event_bytes)
    valid, _ = pipeline.validate(decoded, feed)
    return not valid


def fuzzed_messages(events: Sequence[dict], n: int, *, seed: int = 0, max_event_bytes: int = 64 * 1024,
                    feed: str = "transactions") -> list[tuple[str, bytes | None]]:
    """``n`` broken messages made from ``events`` (good events of ``feed``): ``[(kind, message)]``.

    Messages are distinct (except the few fixed ``empty`` ones, e.g. a tombstone ``None``) and
    each one is rejected by the pipeline's decode/validate."""
    rng = random.Random(seed)
    spec = get_feed(feed)
    kinds, weights = list(KINDS), list(KINDS.values())
    out: list[tuple[str, bytes | None]] = []
    seen: set[bytes | None] = set()
    serial = 0
    while len(out) < n:
        kind = rng.choices(kinds, weights)[0]
        serial += 1
        message = _mutate(kind, rng.choice(events), rng, serial, max_event_bytes)
        if kind != "empty" and message in seen:
            continue
        if not is_rejected(message, spec, max_event_bytes=max_event_bytes):
            continue  # the mutation happened to be valid: not a bad event
        seen.add(message)
        out.append((kind, message))
    return out
