"""The Faust worker: ``faust -A streamdetect.app worker -l info``.

Wiring only (DESIGN.md, "The worker"): the feed topics are scored in batches by ``ScoreFeeds``,
a service the worker hosts (``serving.scorer.BatchScorer``); Faust agents handle the low-volume
``model-control`` and ``feedback`` topics (analysts' labels, kept in the changelog-backed ``labels``
table); Faust's web server answers ``/health``, ``/ready``, ``/metrics`` (Prometheus text format),
``/metrics.json`` (the same counts and more timings as JSON, for the demo and tests) and the review
page (``/review``, ``streamdetect.review``).

Importing this module does no I/O. When the worker starts, ``_connect`` resolves the broker: ``STREAMDETECT_KAFKA__BOOTSTRAP`` if set, else it starts (or
reuses, when something already listens on ``kafka.embedded_port``) the embedded in-memory Tansu
broker, stopped when the worker exits; the topics are created with the configured partition count.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from typing import Any

import faust
import orjson
from mode import Service

from streamdetect.feedback import FEED as FEEDBACK
from streamdetect import review
from streamdetect.feedback import false_alarm_patterns, new_label, read_feedback, with_pattern
from streamdetect.kafka.broker import client_kwargs, ensure_topics, faust_broker_config, redacted
from streamdetect.kafka.local import ResolvedBroker, resolve_bootstrap
from streamdetect.pipeline import InputRecord
from streamdetect.retrain.loop import Retrainer
from streamdetect.retrain.policy import LOOP_ACTIONS
from streamdetect.serving.metrics import Metrics
from streamdetect.serving.models import ModelHolder
from streamdetect.serving.scorer import BatchScorer
from streamdetect.settings import get_settings

log = logging.getLogger("streamdetect.app")

settings = get_settings()
# the broker's address is known without I/O: the configured cluster, else the embedded broker's port,
# where ``_connect`` starts (or reuses) it when the worker starts
bootstrap = settings.kafka.bootstrap or f"127.0.0.1:{settings.kafka.embedded_port}"
app = faust.App(
    settings.app_id,
    **faust_broker_config(settings, bootstrap),
    broker_client_id=settings.kafka.client_id,
    broker_request_timeout=30.0,
    consumer_auto_offset_reset="earliest",
    topic_partitions=settings.topics.partitions,
    topic_replication_factor=settings.topics.replication_factor,
    # the one Faust table (``labels``) lives in memory and is rebuilt from its changelog topic on start;
    # per-key scoring state lives in the batch scorer (checkpointed to the state topic)
    store="memory://",
    datadir=str(settings.data.data_dir / "faust"),
    web_port=settings.web_port,
    web_host="127.0.0.1",
    producer_linger=0.005,
    # one record per producer batch for Faust's own (low-volume) sends: the labels table's changelog,
    # control and feedback messages. Tansu reports a partition's end as the start of its last batch
    # + 1 (kafka/broker.py), so Faust's table recovery, which reads the changelog to that end, dropped
    # or reverted labels of a multi-record last batch after a kill -9 (3 of 6 restarts in the test).
    # The batch scorer has its own producer and keeps its batches.
    producer_max_batch_size=1,
    autodiscover=False,
)
metrics = Metrics(settings.feeds)
models = ModelHolder(settings.registry_dir, settings.feeds, metrics)
metrics.versions = models.versions  # read at scrape time (``streamdetect_model_info``)
control_topic = app.topic(settings.topics.model_control, value_serializer="raw")
feedback_topic = app.topic(settings.topics.feedback, key_serializer="raw", value_serializer="raw")
deadletter_topic = app.topic(settings.topics.deadletter, value_serializer="raw")
#: event id -> the latest label ``{event_id, label, analyst, at}``; a kill -9 loses nothing: every
#: write goes to the ``<app_id>-labels-changelog`` topic, which a starting worker reads back
#: (``tests/test_feedback.py`` kills a worker and compares the table before and after, on both brokers)
labels = app.Table("labels", default=None, partitions=settings.topics.partitions)


class Connection:
    """The broker this worker talks to and the clients' keyword arguments, set at start-up."""

    broker: ResolvedBroker | None = None
    kafka_kwargs: dict[str, Any] = {}
    retrainer: Retrainer | None = None


connection = Connection()


@app.on_worker_init.connect
def _connect(sender, **kwargs) -> None:
    """Worker start-up: resolve (or start) the broker, create the topics, make the data folders."""
    broker = resolve_bootstrap(settings)
    atexit.register(broker.stop)  # only stops a broker this process started
    ensure_topics(broker.bootstrap, settings)
    connection.broker, connection.kafka_kwargs = broker, client_kwargs(settings, broker.bootstrap)
    connection.retrainer = Retrainer(settings, connection.kafka_kwargs, _publish_control, labels=lambda: dict(labels.items()))
    log.info("kafka client config: %s", redacted({k: v for k, v in connection.kafka_kwargs.items() if k != "ssl_context"}))
    (settings.data.data_dir / "faust").parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level


@app.service
class ScoreFeeds(BatchScorer):
    instance: "ScoreFeeds | None" = None

    def __init__(self, **kwargs):
        super().__init__(settings, connection.kafka_kwargs, models, metrics, **kwargs)
        ScoreFeeds.instance = self

    def state_options(self) -> dict:
        """Alert budget per key per hour and drift detectors of every partition state."""
        drift = settings.drift
        return {
            "budget_per_hour": settings.scoring.alert_budget_per_hour,
            "drift": {"detector": drift.detector, "delta": drift.delta, "alpha": drift.alpha,
                      "min_events": drift.min_events, "cooldown": drift.cooldown} if drift.enabled else None,
        }

    def new_state(self):
        state = super().new_state()
        state.reconfigure(**self.state_options())
        return state

    async def on_assigned(self, assigned) -> None:
        await super().on_assigned(assigned)
        async with self.lock:  # restored states: the configured budget and drift settings
            for states in self.states.values():
                for state in states.values():
                    state.reconfigure(**self.state_options())

    @Service.timer(0.5)
    async def _publish_drift(self) -> None:
        """Drift events found while scoring (``pipeline``) -> ``model-control``, keyed by feed."""
        messages = []
        async with self.lock:
            for states in self.states.values():
                for state in states.values():
                    if state.drift is not None and state.drift.outbox:
                        messages += state.drift.outbox
                        state.drift.outbox = []
        for message in messages:
            await control_topic.send(key=message["feed"].encode(), value=orjson.dumps(message))


@app.agent(control_topic)
async def apply_control(messages):
    """``{action: load|promote|rollback, feed, version?}``: change the model in service, no restart.

    Control messages are consumed by one worker of the group; the others see the new registry
    pointer within seconds through their registry watch.
    """
    async for raw in messages:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            log.error("model-control: unreadable message %r (%s)", raw[:200], exc)
            continue
        if not isinstance(message, dict):
            log.error("model-control: expected a JSON object, got %r", message)
            continue
        if message.get("action") in LOOP_ACTIONS:
            continue  # the retrain loop's own messages: the ``retrain`` agent reads them
        log.info("model-control: %s", await asyncio.to_thread(models.apply_control, message))


async def _publish_control(message: dict) -> None:
    await control_topic.send(key=str(message.get("feed", "")).encode(), value=orjson.dumps(message))


@app.agent(control_topic)
async def retrain(messages):
    """Drift -> retrain -> shadow -> promote (``streamdetect.retrain``): ``drift`` messages from the scorers and
    manual ``{action: retrain, feed}`` requests start a retrain of the feed (training in a
    separate process); every step is published back on ``model-control``."""
    async for raw in messages:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # apply_control logs it
        if isinstance(message, dict) and message.get("action") in ("drift", "retrain", "learn"):
            log.info("model-control: %s", connection.retrainer.trigger(message))


def _refresh_false_alarms() -> None:
    """The scorer's false-alarm patterns, from the labels table (so a restarted worker has them too)."""
    if ScoreFeeds.instance is not None:
        ScoreFeeds.instance.false_alarms = false_alarm_patterns(labels.values())


@app.timer(5.0)
async def _false_alarms_after_recovery() -> None:
    """The table is rebuilt from its changelog after the agents start: pick its patterns up."""
    _refresh_false_alarms()


class LabelCount:
    """Labels accepted since the last label-learning run was requested."""

    new = 0


@app.agent(feedback_topic)
async def take_feedback(stream):
    """``feedback`` -> the ``labels`` table (bad records -> ``deadletter``, with a reason); every
    ``labels.learn_every`` new labels ask the retrain loop to learn a second stage for each feed."""
    async for event in stream.events():
        message = event.message
        record = InputRecord(message.topic, message.partition, message.offset, event.value, message.key,
                             int(message.timestamp * 1000) if message.timestamp else None)
        label, letter = read_feedback(record, max_event_bytes=settings.scoring.max_event_bytes)
        if letter is not None:
            await deadletter_topic.send(value=orjson.dumps(letter))
            metrics.observe_published(FEEDBACK, 0, {letter["reason"]: 1})
            continue
        scorer = ScoreFeeds.instance
        if scorer is not None:
            label = with_pattern(label, scorer.recent_alerts, suppress_hours=settings.labels.suppress_hours)
        labels[label["event_id"]] = label
        _refresh_false_alarms()
        metrics.observe_label(label["label"])
        LabelCount.new += 1
        if settings.labels.learn_every and LabelCount.new >= settings.labels.learn_every:
            LabelCount.new = 0
            for feed in settings.feeds:
                await _publish_control({"action": "learn", "feed": feed, "labels": len(labels)})


def _status() -> dict:
    scorer = ScoreFeeds.instance
    return {
        "app_id": settings.app_id,
        "broker": {"bootstrap": connection.broker.bootstrap, "kind": connection.broker.kind} if connection.broker else None,
        "models": models.versions(),
        "refused": models.refused,
        "retrain": list(connection.retrainer.history)[-10:] if connection.retrainer else [],
        "ready": bool(scorer and scorer.ready),
        "assignment": sorted(f"{tp.topic}[{tp.partition}]" for tp in scorer.consumer.assignment())
        if scorer and scorer.consumer and scorer.ready else [],
    }


@app.page("/health")
async def health(web, request):
    return web.json({"status": "ok", **_status()})


@app.page("/ready")
async def ready(web, request):
    """200 once a bundle is in service and the batch consumer holds its partitions; 503 before."""
    status = _status()
    return web.json(status, status=200 if status["ready"] else 503)


def _consumer_lag() -> dict[tuple[str, int], int]:
    """{(topic, partition): highwater - position} of the batch consumer's assigned partitions, read at
    scrape time without awaiting anything: both numbers are aiokafka's per-partition state
    (``TopicPartitionState``). The highwater is the one the broker sent with the last fetch response
    for the partition (what ``consumer.highwater(tp)`` returns); the position is the offset after the
    last record ``getmany`` handed to the scorer (``await consumer.position(tp)`` would wait for a
    valid one). So the lag counts records not yet handed out, fetched-but-buffered ones included, as
    the Java consumer's ``records-lag`` does, and it can be as stale as the last fetch (a few ms while
    consuming). A partition with no fetch answer yet, or no position (being reset), is left out."""
    scorer = ScoreFeeds.instance
    consumer = scorer.consumer if scorer is not None else None
    subscription = consumer._subscription.subscription if consumer is not None else None
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return {}
    lag = {}
    for tp in consumer.assignment():
        state = assignment.state_value(tp)
        if state is None or state.highwater is None or not state.has_valid_position:
            continue
        lag[(tp.topic, tp.partition)] = max(0, state.highwater - state.position)
    return lag


metrics.lag = _consumer_lag


@app.page("/metrics")
async def metrics_view(web, request):
    """The Prometheus text exposition (``serving.metrics``)."""
    body, content_type = metrics.render()
    # the content type goes in the headers: aiohttp refuses a ``content_type`` argument that names a charset
    return web.bytes(body, headers={"Content-Type": content_type})


@app.page("/review")
async def review_page(web, request):
    """The analysts' review page: the live alert queue, a label button per alert."""
    return web.html(review.PAGE)


@app.page("/review/alerts.json")
async def review_alerts(web, request):
    """The latest alerts (newest first) with their labels so far."""
    scorer = ScoreFeeds.instance
    recent = list(scorer.recent_alerts) if scorer is not None else []
    return web.json(review.queue(recent, labels))


@app.page("/review/labels.json")
async def review_labels(web, request):
    """Every label this worker's ``labels`` table holds: ``{event_id: {event_id, label, analyst, at}}``."""
    return web.json(dict(labels.items()))


@app.page("/review/label")
class ReviewLabel(faust.web.View):
    """``POST {event_id, label: confirmed|false_alarm, analyst}`` -> a ``feedback`` record."""

    async def post(self, request):
        try:
            body = await request.json()
            record = new_label(body["event_id"], body["label"], body.get("analyst") or "review-page")
        except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            return self.json({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        await feedback_topic.send(key=orjson.loads(record)["event_id"].encode(), value=record)
        return self.json({"sent": orjson.loads(record)}, status=202)


@app.page("/metrics.json")
async def metrics_json_view(web, request):
    return web.json({**metrics.as_dict(), "models": models.versions()})


if __name__ == "__main__":
    app.main()
