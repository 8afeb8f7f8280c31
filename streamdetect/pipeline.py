"""The worker's per-batch steps as plain functions: decode, validate, featurize + score,
threshold, build outputs. Each takes and returns a whole batch; none touches Kafka, so each is
unit-tested without a broker. ``process_batch`` chains them; the batch service only moves
records between Kafka and it.

Nothing here raises on bad data: every record that cannot be scored becomes a dead letter
with a reason code (``records.DeadLetterReason``), the error text and the raw bytes.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter

import numpy as np
import orjson
from pydantic import ValidationError

from offline.bundle import Bundle
from offline.features.sensor_likelihood import THRESHOLD_KEY
from streamdetect import scoring
from streamdetect.feeds import EventTable, Feed
from streamdetect.kafka.records import alert_id
from streamdetect.state import PartitionState
from streamdetect.thresholds import apply_thresholds, p_values, rows_by_key


@dataclass
class InputRecord:
    """The fields of a Kafka record the pipeline reads (aiokafka's ConsumerRecord has them all)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None  # ms since the epoch (producer create time)


_VALUE, _OFFSET, _PARTITION, _TIMESTAMP = (attrgetter(name) for name in ("value", "offset", "partition", "timestamp"))


@dataclass
class Decoded:
    record: InputRecord
    obj: dict


@dataclass
class Valid:
    record: InputRecord
    obj: dict | None  # None for events validated straight from their bytes
    event: object  # the feed's pydantic event


@dataclass
class BatchOutput:
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    scores: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    scored: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    latency_ms_max: float = 0.0
    warming: int = 0  # valid events a stateful feed could not score yet (e.g. a sensor's window is not full)
    unseen_categories: int = 0  # categorical values outside the bundle's vocabulary, scored as "<other>"
    suppressed: int = 0  # alerts held back by the alert budget per key per hour
    suppressed_by_label: int = 0  # alerts held back because an analyst called the same pattern of the key a false alarm
    drift_events: list[dict] = field(default_factory=list)  # model-control messages (action "drift")
    stage_seconds: dict[str, float] = field(default_factory=dict)  # seconds per step of process_batch


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def dead_letter(record: InputRecord, feed: str, reason: str, error: str, *, error_types: Sequence[str] = (),
                event_id: str | None = None, model_version: str | None = None) -> dict:
    return {
        "reason": reason, "error": error[:2000], "error_types": list(error_types), "feed": feed,
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "timestamp": record.timestamp, "key_b64": _b64(record.key), "raw_b64": _b64(record.value) or "",
        "event_id": event_id, "model_version": model_version,
    }


# -- decode ---------------------------------------------------------------------------------
def decode(records: Iterable[InputRecord], *, feed: str, max_event_bytes: int) -> tuple[list[Decoded], list[dict]]:
    """Bytes -> JSON objects. Oversized, unparsable and non-object records become dead letters."""
    decoded, dead = [], []
    for record in records:
        raw = record.value or b""
        if len(raw) > max_event_bytes:
            dead.append(dead_letter(record, feed, "oversized", f"{len(raw)} bytes > max_event_bytes {max_event_bytes}"))
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            obj = _lenient_json(raw)
            if obj is None:
                dead.append(dead_letter(record, feed, "invalid_json", str(exc)))
                continue
        if not isinstance(obj, dict):
            dead.append(dead_letter(record, feed, "not_an_object", f"expected a JSON object, got {type(obj).__name__}"))
            continue
        decoded.append(Decoded(record, obj))
    return decoded, dead


def _lenient_json(raw: bytes):
    """JSON with NaN/Infinity literals (as Python's json.dumps writes them): orjson refuses those;
    we parse them so that validation can say *which field* is not finite. None if still invalid.
    UTF-8 only, as orjson: given bytes, ``json.loads`` would also guess UTF-16/32 and skip a BOM."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


# -- validate -------------------------------------------------------------------------------
def validate_json(records: Sequence[InputRecord], feed: Feed, *, max_event_bytes: int) -> tuple[list[Valid], list[InputRecord]]:
    """One pydantic-core call per record, straight from its bytes (``model_validate_json``); the
    fallback of ``validate_batch``. Returns the valid events (``obj`` is left None) and the records
    that failed, for the two-step path (``decode``, ``validate``) that words their dead letters."""
    valid, rest = [], []
    validate_bytes = feed.event_model.model_validate_json
    for record in records:
        raw = record.value
        if raw is None or len(raw) > max_event_bytes:
            rest.append(record)
            continue
        try:
            valid.append(Valid(record, None, validate_bytes(raw)))
        except (ValueError, RecursionError):  # ValidationError, also for malformed JSON
            rest.append(record)
    return valid, rest


def validate(decoded: Iterable[Decoded], feed: Feed) -> tuple[list[Valid], list[dict]]:
    """JSON objects -> the feed's events; invalid ones become ``invalid_event`` dead letters."""
    valid, dead = [], []
    model = feed.event_model
    for item in decoded:
        try:
            valid.append(Valid(item.record, item.obj, model.model_validate(item.obj)))
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            event_id = item.obj.get("event_id")
            dead.append(dead_letter(
                item.record, feed.name, "invalid_event",
                "; ".join(f"{'.'.join(map(str, e['loc'])) or '<event>'}: {e['msg']}" for e in errors),
                error_types=sorted({e["type"] for e in errors}),
                event_id=event_id if isinstance(event_id, str) else None,
            ))
    return valid, dead


# -- featurize, score, threshold, build outputs ------------------------------------------------
def validate_batch(records: Sequence[InputRecord], feed: Feed, *, max_event_bytes: int
                   ) -> tuple[list[InputRecord], EventTable, list[dict]]:
    """Bytes -> (the valid events' records, their ``EventTable``, dead letters), in input order.

    Three passes, each taking what the one before left: the feed's msgspec mirror
    (``Feed.fast_decoder``, stricter than the model and cheaper: ``fast_decode``); one pydantic-core call for
    the rest of the batch (``Feed.batch_validator``), whose errors name the failing items so that a
    second call validates the others; and, for those still failing, the two-step path (``decode``,
    ``validate``) that words their dead letters."""
    values = list(map(_VALUE, records))
    try:
        fits = max(map(len, values), default=0) <= max_event_bytes
    except TypeError:  # a record without a value
        fits = False
    if fits:
        candidates = list(records)
    else:
        candidates = [r for r in records if r.value is not None and len(r.value) <= max_event_bytes]
        values = [r.value for r in candidates]
    fast_records, fast_table = [], None
    if feed.fast_decoder is not None and candidates:
        accepted, fast_table = feed.fast_decoder.decode(values)
        if len(accepted) == len(records):  # the common case: every record valid
            return candidates, fast_table, []
        fast_records = [candidates[i] for i in accepted]
        taken = set(accepted)
        candidates = [r for i, r in enumerate(candidates) if i not in taken]
    events: list | None = None
    for _ in range(2):  # the batch; then, if some failed, the batch without them
        try:
            events = feed.batch_validator.validate_python([r.value for r in candidates]) if candidates else []
            break
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors(include_url=False, include_input=False, include_context=False)
                   if e["loc"] and isinstance(e["loc"][0], int)}
            if not bad:
                break
            candidates = [r for i, r in enumerate(candidates) if i not in bad]
    if events is None:  # errors that name no item, or failures left after the bad items went: one call per record
        more, _ = validate_json(candidates, feed, max_event_bytes=max_event_bytes)
        events, candidates = [v.event for v in more], [v.record for v in more]
    accepted_ids = {id(r) for r in candidates + fast_records}
    refused = [r for r in records if id(r) not in accepted_ids] if len(accepted_ids) < len(records) else []
    decoded, dead = decode(refused, feed=feed.name, max_event_bytes=max_event_bytes)
    slow, invalid = validate(decoded, feed)  # e.g. a NaN literal decoded leniently that turned out valid
    dead += invalid
    valid = candidates + [v.record for v in slow]
    table = EventTable.from_events(events + [v.event for v in slow])
    if fast_records:
        valid, table = fast_records + valid, EventTable.concat([fast_table, table]) if valid else fast_table
    if len(valid) > 1 and (slow or fast_records):  # back to input order
        position = {id(record): i for i, record in enumerate(records)}
        order = sorted(range(len(valid)), key=lambda j: position[id(valid[j])])
        if order != list(range(len(valid))):
            valid, table = [valid[j] for j in order], table.take(order)
    return valid, table, dead


def _event_object(record: InputRecord) -> dict:
    """The JSON object of a valid event's record (alerts quote it)."""
    try:
        return orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return _lenient_json(record.value)


def process_batch(
    records: Sequence[InputRecord],
    *,
    feed: Feed,
    bundle: Bundle,
    states: dict[int, PartitionState],
    new_state,  # () -> PartitionState, for partitions seen for the first time
    rate: float,
    max_event_bytes: int,
    top_k: int = 5,
    publish_scores: bool = True,
    max_scores_per_record: int = 2048,
    now: float | None = None,
    false_alarms: Mapping[tuple[str, str], float] | None = None,
) -> BatchOutput:
    """One batch of one feed (any mix of its partitions) -> alerts, scores records, dead letters.

    Updates ``states`` (per partition: key levels and the next offset to consume).
    ``false_alarms``: ``{(key, pattern): until}`` -- an alert of ``key`` whose pattern (``alert_pattern``
    of its top features) an analyst called a false alarm is not published before event time ``until``
    (unix seconds); it counts in ``suppressed_by_label`` and its scores entry says not alerted.
    """
    now = time.time() if now is None else now
    version = bundle.version
    clock = [time.perf_counter()]
    valid, table, dead = validate_batch(records, feed, max_event_bytes=max_event_bytes)
    clock.append(time.perf_counter())
    X = np.empty((0, bundle.schema.n_features), np.float32)
    warming = unseen = 0
    if valid and feed.stateful_columns is not None:
        valid, table, columns, warming = _stateful_columns(feed, valid, table, bundle, states, new_state)
    elif valid:
        columns = feed.columns(table)
    if valid:
        X, kept, rejected, unseen = scoring.featurize(bundle, columns)
        event_ids = table.text("event_id")
        for row, error in rejected.items():
            dead.append(dead_letter(valid[row], feed.name, "featurize_error", error, event_id=event_ids[row],
                                    model_version=version))
        if len(kept) < len(valid):
            valid = [valid[i] for i in kept.tolist()]
            table = table.take(kept.tolist())
    clock.append(time.perf_counter())
    scores = scoring.score(bundle, X)
    clock.append(time.perf_counter())

    output = BatchOutput(scored=len(valid), warming=warming, unseen_categories=unseen)
    for letter in dead:
        output.dead_by_reason[letter["reason"]] = output.dead_by_reason.get(letter["reason"], 0) + 1
    output.dead_letters = [orjson.dumps(letter) for letter in dead]

    # thresholds per partition, each against its state as it was before this batch
    event_ids = table.text("event_id") if valid else []
    keys = feed.keys(table) if valid else []
    times = table.time("event_time") if valid else []
    partitions = np.fromiter(map(_PARTITION, valid), dtype=np.int64, count=len(valid))
    offsets = np.fromiter(map(_OFFSET, valid), dtype=np.int64, count=len(valid))
    stamps = np.fromiter((t or 0 for t in map(_TIMESTAMP, valid)), dtype=np.float64, count=len(valid))
    dead_by_partition: dict[int, int] = {}
    for letter in dead:
        dead_by_partition[letter["partition"]] = dead_by_partition.get(letter["partition"], 0) + 1
    alert_rows: list[tuple[int, float, float]] = []
    calibration = bundle.calibration_scores
    fixed_threshold = (bundle.manifest.get("extra") or {}).get(THRESHOLD_KEY)  # the model's own operating rule, if any
    for partition in np.unique(partitions).tolist():
        rows = np.flatnonzero(partitions == partition)
        state = states.get(partition)
        if state is None:
            state = states[partition] = new_state()
        part_keys = _take(keys, rows) if len(rows) < len(valid) else keys
        state.observe_model(version)  # a swapped model starts its key levels and drift detectors afresh
        # event times only matter to an alert budget (per hour of event time)
        event_times = table.epoch_seconds("event_time")[rows] if state.budget.per_hour is not None else None
        groups = rows_by_key(part_keys) if len(part_keys) > 1 else None  # thresholds and drift both group by key
        result = apply_thresholds(state, part_keys, scores[rows], calibration, rate=rate, event_times=event_times,
                                  fixed_threshold=fixed_threshold, groups=groups)
        output.suppressed += result.suppressed
        if state.drift is not None:  # drift is judged on the calibrated p-values, before any per-key adaptation
            state.drift.feed = feed.name
            raw = p_values(scores[rows], calibration)
            for event in state.drift.update_batch(part_keys, raw, model_version=version, partition=partition,
                                                  event_times=_take(times, rows), groups=groups):
                output.drift_events.append(event.to_message())
        if false_alarms and result.alerted.any():
            output.suppressed_by_label += _suppress_known_false_alarms(result.alerted, rows, false_alarms, bundle, X, columns,
                                                                      kept, keys, table, top_k)
        for i in np.flatnonzero(result.alerted).tolist():
            alert_rows.append((int(rows[i]), float(result.p_values[i]), float(result.thresholds[i])))
        if publish_scores:
            output.scores += _scores_records(feed, version, partition, valid[rows[0]].topic, event_ids, rows, offsets,
                                             stamps, scores, result, dead_by_partition.pop(partition, 0), now,
                                             max_scores_per_record)
    clock.append(time.perf_counter())
    # the next offset to consume, for checkpoints and commits
    all_partitions = np.fromiter(map(_PARTITION, records), dtype=np.int64, count=len(records))
    all_offsets = np.fromiter(map(_OFFSET, records), dtype=np.int64, count=len(records))
    last_offsets = {partition: int(all_offsets[all_partitions == partition].max())
                    for partition in np.unique(all_partitions).tolist()}
    for partition, offset in last_offsets.items():
        state = states.get(partition)
        if state is None:
            state = states[partition] = new_state()
        if state.next_offset is None or offset >= state.next_offset:
            state.next_offset = offset + 1

    if alert_rows:
        rows = [r for r, _, _ in alert_rows]
        # the alerted events' raw values, which explanations quote
        reasons = scoring.top_features(bundle, X[rows], _raw_numeric(bundle, columns, kept, rows), top_k)
        for (row, p_value, threshold), top in zip(alert_rows, reasons):
            event_id = event_ids[row]
            alert = {
                "alert_id": alert_id(feed.name, event_id), "event_id": event_id, "feed": feed.name,
                "key": keys[row], "event_time": times[row].isoformat(),
                "score": float(scores[row]), "p_value": p_value, "threshold": threshold,
                "model_version": version, "top_features": top, "event": _event_object(valid[row]),
            }
            output.alerts.append((event_id.encode(), orjson.dumps(alert)))
    oldest = min(filter(None, map(_TIMESTAMP, records)), default=None)
    output.latency_ms_max = max(0.0, now * 1000 - oldest) if oldest else 0.0
    clock.append(time.perf_counter())
    # decode_validate: validation and dead letters; threshold: thresholds, drift and the scores records;
    # outputs: offsets and alerts
    output.stage_seconds = {stage: end - start for stage, start, end in
                            zip(("decode_validate", "featurize", "score", "threshold", "outputs"), clock, clock[1:])}
    return output


def alert_pattern(top_features: Sequence[dict], size: int = 3) -> str:
    """What an alert is about, for "the same pattern" of a false alarm: its top features' names, sorted."""
    return ",".join(sorted(f["name"] for f in top_features[:size]))


def _raw_numeric(bundle: Bundle, columns, kept: np.ndarray, rows) -> np.ndarray | None:
    """The rows' numeric input values in raw units, schema order (``columns`` rows: before featurize kept some)."""
    if not bundle.schema.numeric:
        return None
    return np.column_stack([np.asarray(columns[c], dtype=np.float64)[kept[rows]] for c in bundle.schema.numeric])


def _suppress_known_false_alarms(alerted: np.ndarray, rows: np.ndarray, false_alarms, bundle, X, columns, kept, keys,
                                 table, top_k: int) -> int:
    """Clear ``alerted`` (in place) where the alert repeats a key's false-alarm pattern; returns how many."""
    keyed = {key for key, _ in false_alarms}
    candidates = [i for i in np.flatnonzero(alerted).tolist() if keys[rows[i]] in keyed]
    if not candidates:
        return 0
    batch_rows = [int(rows[i]) for i in candidates]
    reasons = scoring.top_features(bundle, X[batch_rows], _raw_numeric(bundle, columns, kept, batch_rows), top_k)
    when = table.epoch_seconds("event_time")
    cleared = 0
    for i, row, top in zip(candidates, batch_rows, reasons):
        until = false_alarms.get((keys[row], alert_pattern(top)))
        if until is not None and when[row] < until:
            alerted[i] = False
            cleared += 1
    return cleared


def _stateful_columns(feed: Feed, valid: list[InputRecord], table: EventTable, bundle: Bundle,
                      states: dict[int, PartitionState], new_state):
    """Featurize with per-partition feed state (``feed.stateful_columns``), partition by partition
    (each in offset order); the events keep their input order, and those not ready are dropped
    (returned as a count)."""
    partitions = np.fromiter(map(_PARTITION, valid), dtype=np.int64, count=len(valid))
    distinct = np.unique(partitions).tolist()
    columns: dict[str, np.ndarray] = {}
    ready = np.zeros(len(valid), dtype=bool)
    for partition in distinct:
        state = states.get(partition)
        if state is None:
            state = states[partition] = new_state()
        rows = np.flatnonzero(partitions == partition) if len(distinct) > 1 else None
        part = table if rows is None else table.take(rows.tolist())
        part_columns, part_ready = feed.stateful_columns(part, state.feed_state, bundle)
        if rows is None:
            columns, ready = part_columns, part_ready
            break
        for name, values in part_columns.items():
            columns.setdefault(name, np.empty(len(valid), dtype=values.dtype))[rows] = values
        ready[rows] = part_ready
    if ready.all():
        return valid, table, columns, 0
    kept = np.flatnonzero(ready).tolist()
    return [valid[r] for r in kept], table.take(kept), {name: values[kept] for name, values in columns.items()}, len(valid) - len(kept)


def _take(values: Sequence, rows: np.ndarray) -> list:
    """``values`` at ``rows``, in C (a list comprehension costs ~0.1 us per row)."""
    if len(rows) == 0:
        return []
    taken = itemgetter(*rows.tolist())(values)
    return [taken] if len(rows) == 1 else list(taken)


def _scores_records(feed, version, partition, topic, event_ids, rows, offsets, stamps, scores, result, dead_letters,
                    now, chunk) -> list[tuple[bytes, bytes]]:
    """One partition's scores records (``rows`` of the batch's valid events, at ``offsets``, produced at ``stamps``)."""
    records = []
    for start in range(0, len(rows), chunk):  # stay well under the broker's message size limit
        part = rows[start : start + chunk]
        part_offsets, part_stamps = offsets[part], stamps[part]
        part_stamps = part_stamps[part_stamps > 0]
        body = {
            "feed": feed.name, "topic": topic, "partition": partition,
            "first_offset": int(part_offsets.min()), "last_offset": int(part_offsets.max()), "model_version": version,
            "event_ids": _take(event_ids, part),
            "scores": scores[part].tolist(),
            "p_values": result.p_values[start : start + len(part)].tolist(),
            "alerted": result.alerted[start : start + len(part)].tolist(),
            "thresholds": result.thresholds[start : start + len(part)].tolist(),
            "dead_letters": dead_letters if start == 0 else 0,
            "latency_ms_max": max(0.0, now * 1000 - float(part_stamps.min())) if len(part_stamps) else 0.0,
            "produced_at": now,
        }
        records.append((str(partition).encode(), orjson.dumps(body)))
    return records
