"""Analysts' labels on the ``feedback`` topic: checked like a feed, kept in the ``labels`` table.

Unit part: ``streamdetect.feedback.read_feedback`` and ``new_label`` alone. Integration part: a real
worker on a real broker takes good and bad ``feedback`` records (the good ones show in
``/review/labels.json``, the bad ones go to ``deadletter`` with their reason and raw bytes), is
killed with SIGKILL, and a new worker reads the labels back from the table's changelog topic.

``LiveWorker`` (a worker subprocess with its isolated topics) is shared with ``test_review_page``
and ``test_labelled_stage``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from streamdetect.feedback import FEED, new_label, read_feedback
from streamdetect.kafka.records import DeadLetter, Feedback
from streamdetect.pipeline import InputRecord

MAX_EVENT_BYTES = 64 * 1024


def record(value: bytes, *, key: bytes | None = b"cc-1", offset: int = 7) -> InputRecord:
    return InputRecord("feedback-test", 2, offset, value, key, 1_764_640_000_000)


def good(event_id: str = "cc-1", label: str = "confirmed", analyst: str = "ana", at: str = "2026-12-02T03:00:00Z") -> dict:
    return {"event_id": event_id, "label": label, "analyst": analyst, "at": at}


# -- unit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", ["confirmed", "false_alarm"])
def test_a_good_record_becomes_a_label(label):
    got, dead = read_feedback(record(orjson.dumps(good(label=label))), max_event_bytes=MAX_EVENT_BYTES)
    assert dead is None
    assert Feedback.model_validate(got).label == label
    assert got["event_id"] == "cc-1" and got["analyst"] == "ana" and got["label"] == label
    assert Feedback.model_validate(got).at == Feedback.model_validate(good()).at  # the same instant, JSON-ready
    orjson.dumps(got)  # what the table stores and labels.json serves


BAD = [
    # name, raw bytes, reason, pydantic error type (invalid_event only), event id kept in the letter
    ("invalid json", b'{"event_id": "cc-1", "label": ', "invalid_json", None, None),
    ("not an object", b'["cc-1", "confirmed"]', "not_an_object", None, None),
    ("a bare string", b'"confirmed"', "not_an_object", None, None),
    ("missing analyst", orjson.dumps({k: v for k, v in good().items() if k != "analyst"}), "invalid_event", "missing", "cc-1"),
    ("label maybe", orjson.dumps(good(label="maybe")), "invalid_event", "literal_error", "cc-1"),
    ("an unknown field", orjson.dumps({**good(), "score": 3}), "invalid_event", "extra_forbidden", "cc-1"),
    ("event id not a string", orjson.dumps({**good(), "event_id": 17}), "invalid_event", "string_type", None),
]


@pytest.mark.parametrize("name, raw, reason, error_type, event_id", BAD, ids=[b[0] for b in BAD])
def test_a_bad_record_becomes_a_dead_letter_with_its_reason_and_bytes(name, raw, reason, error_type, event_id):
    got, dead = read_feedback(record(raw, offset=41), max_event_bytes=MAX_EVENT_BYTES)
    assert got is None
    letter = DeadLetter.model_validate(dead)  # the dead-letter contract, as for the feeds
    assert letter.reason == reason and letter.feed == FEED == "feedback"
    assert base64.b64decode(letter.raw_b64) == raw  # replayable after a fix
    assert base64.b64decode(letter.key_b64) == b"cc-1"
    assert (letter.topic, letter.partition, letter.offset, letter.timestamp) == ("feedback-test", 2, 41, 1_764_640_000_000)
    assert letter.error
    if error_type:
        assert error_type in letter.error_types, letter.error
    assert letter.event_id == event_id


def test_an_oversized_record_is_refused_unread():
    raw = orjson.dumps(good(analyst="a" * 150))
    got, dead = read_feedback(record(raw), max_event_bytes=100)
    assert got is None and dead["reason"] == "oversized" and base64.b64decode(dead["raw_b64"]) == raw


def test_new_label_writes_what_read_feedback_accepts_and_refuses_a_bad_label():
    raw = new_label("cc-9", "false_alarm", "bob")
    got, dead = read_feedback(record(raw), max_event_bytes=MAX_EVENT_BYTES)
    assert dead is None and (got["event_id"], got["label"], got["analyst"]) == ("cc-9", "false_alarm", "bob")
    with pytest.raises(ValueError):  # pydantic's ValidationError: the review page answers 400
        new_label("cc-9", "maybe", "bob")
    with pytest.raises(ValueError):
        new_label("", "confirmed", "bob")


# -- a live worker, shared by the integration tests of the labels ------------------------------
@dataclass
class LiveWorker:
    """A ``faust ... worker`` subprocess with its own topics, app id and group (``isolated_settings``)."""

    process: object  # streamdetect.worker_process.WorkerProcess
    kafka: dict
    registry: Path

    @classmethod
    def start_new(cls, kafka_broker, registry: Path, base_settings, root: Path, env: dict | None = None) -> "LiveWorker":
        from fixtures_worker import isolated_settings
        from streamdetect.kafka.broker import client_kwargs, ensure_topics, free_port
        from streamdetect.worker_process import WorkerProcess

        port = free_port()
        settings, worker_env = isolated_settings(base_settings, registry, port)
        worker_env.update({
            "STREAMDETECT_DATA__DATA_DIR": str(root / "data"),  # retrain jobs and Faust's folder: private
            "STREAMDETECT_DRIFT__ENABLED": "false",  # no drift-triggered retraining in these tests
            "STREAMDETECT_LABELS__LEARN_EVERY": "0",  # label learning only on an explicit {action: learn}
            **(env or {}),
        })
        settings = settings.model_copy(update={"web_port": port, "data": settings.data.model_copy(update={"data_dir": root / "data"})})
        ensure_topics(kafka_broker.bootstrap, settings)
        worker = cls(WorkerProcess(settings, worker_env, kafka_broker.bootstrap, root / "worker.log"),
                     client_kwargs(settings, kafka_broker.bootstrap), registry)
        worker.start()
        return worker

    @property
    def settings(self):
        return self.process.settings

    @property
    def port(self) -> int:
        return self.process.port

    def start(self, timeout: float = 120.0) -> None:
        self.process.spawn()
        try:
            self.process.wait_ready(timeout=timeout)
        except Exception as exc:
            self.stop()
            raise AssertionError(f"worker did not get ready ({exc})") from None

    def stop(self) -> None:
        from streamdetect.kafka.broker import stop_process

        if self.process.process is not None:
            stop_process(self.process.process)

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    def get(self, view: str) -> dict:
        return self.process.get(view)

    def wait_view(self, view: str, condition, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            got = self.get(view)
            if condition(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f}s; /{view} says {str(got)[:1500]}\n{self.log_tail()}")
            time.sleep(0.3)

    def send(self, topic: str, messages: list[bytes], key_field: str | None = "event_id") -> None:
        from streamdetect.replay import key_from_field, send_messages

        asyncio.run(send_messages(self.kafka, topic, messages, key=key_from_field(key_field), progress=False))

    def read(self, topic: str, timeout: float = 10.0) -> list:
        """Every record of a low-volume topic so far (aiokafka, no group)."""
        from streamdetect.retrain.loop import read_all

        return asyncio.run(read_all(self.kafka, topic, timeout=timeout))

    def post(self, view: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{view}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


# -- integration --------------------------------------------------------------------------------
def recovery_log(worker) -> str:
    """The restarted worker's lines about the changelog's end offsets (Faust reads the changelog up to them)."""
    lines = worker.process.log_path.read_text(errors="replace").splitlines()
    start = max((i for i, line in enumerate(lines) if "Highwater for active changelog" in line), default=len(lines))
    return "\n".join(lines[start:start + 8])


@pytest.fixture(scope="module")
def worker(kafka_broker, creditcard_bundles, settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("feedback-worker")
    registry = root / "registry"
    shutil.copytree(creditcard_bundles, registry)
    handle = LiveWorker.start_new(kafka_broker, registry, settings, root)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def sent(worker):
    """Good and bad ``feedback`` records sent to the worker: {event id: its latest label}, the bad
    records as (raw bytes, reason)."""
    run = uuid.uuid4().hex[:6]
    ids = [f"cc-{run}-{i}" for i in range(4)]
    good_records = [
        good(ids[0], "confirmed", "ana"),
        good(ids[1], "false_alarm", "ana"),
        good(ids[2], "confirmed", "bob"),
        good(ids[3], "confirmed", "bob"),
        good(ids[3], "false_alarm", "ana", at="2026-12-02T03:05:00Z"),  # relabelled: the latest label wins
    ]
    good_records = [good(f"cc-{run}-bulk-{i}", ("confirmed", "false_alarm")[i % 2], "carol") for i in range(40)] + good_records
    bad_records = [
        (b'{"event_id": "cc-x", "label": ', "invalid_json"),
        (b'[1, 2, 3]', "not_an_object"),
        (orjson.dumps({"event_id": f"cc-{run}-missing", "label": "confirmed", "at": "2026-12-02T03:00:00Z"}), "invalid_event"),
        (orjson.dumps(good(f"cc-{run}-maybe", "maybe")), "invalid_event"),
    ]
    # the bad records first, then the labels in one burst, as a review session sends them
    worker.send(worker.settings.topics.feedback, [raw for raw, _ in bad_records] + [orjson.dumps(r) for r in good_records])
    latest = {}
    for r in good_records:
        latest[r["event_id"]] = r
    return latest, bad_records


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_good_labels_land_in_the_table_and_bad_ones_in_deadletter(worker, sent):
    latest, bad = sent
    labels = worker.wait_view("review/labels.json", lambda got: set(latest) <= set(got), 30, "every good label in the table")
    assert len(labels) == len(latest), labels  # nothing else: the bad records are not in the table
    for event_id, expected in latest.items():
        assert labels[event_id]["event_id"] == event_id
        assert (labels[event_id]["label"], labels[event_id]["analyst"]) == (expected["label"], expected["analyst"])
        assert Feedback.model_validate(labels[event_id]).at == Feedback.model_validate(expected).at

    deadline = time.monotonic() + 30
    while True:
        letters = [DeadLetter.model_validate(orjson.loads(r.value)) for r in worker.read(worker.settings.topics.deadletter)]
        letters = [d for d in letters if d.feed == "feedback"]
        if len(letters) >= len(bad) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_raw = {base64.b64decode(d.raw_b64): d for d in letters}
    assert len(letters) == len(bad) and len(by_raw) == len(bad), (letters, worker.log_tail())
    for raw, reason in bad:
        letter = by_raw[raw]
        assert letter.reason == reason, (raw, letter)
        assert letter.topic == worker.settings.topics.feedback and letter.offset >= 0
    assert by_raw[bad[2][0]].event_id and "missing" in by_raw[bad[2][0]].error_types
    assert "literal_error" in by_raw[bad[3][0]].error_types
    assert worker.process.alive(), "the worker never stops on bad data"


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_post_review_label_refuses_a_bad_label_with_400(worker):
    status, body = worker.post("review/label", {"event_id": "cc-1", "label": "maybe", "analyst": "ana"})
    assert status == 400 and "label" in body["error"], body
    status, body = worker.post("review/label", {"label": "confirmed"})
    assert status == 400 and "KeyError" in body["error"], body


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_labels_survive_a_kill_9_of_the_worker(worker, sent):
    from streamdetect.retrain.loop import committed_offsets

    latest, _ = sent
    before = worker.wait_view("review/labels.json", lambda got: set(latest) <= set(got), 30, "every label before the kill")
    # the feedback agent's offsets committed past every record sent (Faust commits every 2.8 s): the
    # restarted worker does not read these records again, so its labels can only come from the changelog
    topic, partitions = worker.settings.topics.feedback, worker.settings.topics.partitions
    sent_records = sum(1 for _ in worker.read(topic))
    deadline = time.monotonic() + 30
    while sum(asyncio.run(committed_offsets(worker.kafka, topic, worker.settings.app_id, partitions)).values()) < sent_records:
        assert time.monotonic() < deadline, f"the feedback offsets were not committed within 30 s\n{worker.log_tail()}"
        time.sleep(0.5)
    pid = worker.process.process.pid
    worker.process.kill9()
    assert not worker.process.alive()
    worker.start()
    assert worker.process.process.pid != pid
    deadline = time.monotonic() + 20  # the table is recovered before the worker is ready; a margin
    while (after := worker.get("review/labels.json")) != before and time.monotonic() < deadline:
        time.sleep(0.5)
    missing = sorted(set(before) - set(after))
    changed = {k: (before[k]["label"], after[k]["label"]) for k in before if k in after and after[k] != before[k]}
    assert after == before, (
        f"the restarted worker's table lost {len(missing)} of {len(before)} labels {missing[:5]} and holds an older label "
        f"for {len(changed)} {dict(list(changed.items())[:5])} (before the kill, after it)\n{recovery_log(worker)}")
    # and it goes on taking labels
    late = good(f"{next(iter(latest))}-late", "confirmed", "carol")
    worker.send(worker.settings.topics.feedback, [orjson.dumps(late)])
    final = worker.wait_view("review/labels.json", lambda got: late["event_id"] in got, 30, "a label sent after the restart")
    assert final[late["event_id"]]["analyst"] == "carol" and len(final) == len(before) + 1
