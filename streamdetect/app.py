"""The Faust worker: ``faust -A streamdetect.app worker -l info``.

Wiring only (DESIGN.md, "The worker"): the feed topics are scored in batches by ``ScoreFeeds``,
a service the worker hosts (``service.BatchScorer``); Faust agents handle the low-volume
``model-control`` topic; Faust's web server answers ``/health``, ``/ready`` and ``/metrics``.

With no ``STREAMDETECT_KAFKA__BOOTSTRAP`` set, importing this module starts (or reuses, when
something already listens on ``kafka.embedded_port``) the embedded in-memory Tansu broker and
stops it when the worker exits; the topics are created with the configured partition count.
"""

from __future__ import annotations

import asyncio
import atexit
import logging

import faust
import orjson
from mode import Service

from streamdetect.broker import client_kwargs, ensure_topics, faust_broker_config, redacted, resolve_bootstrap
from streamdetect.retrain import LOOP_ACTIONS, Retrainer
from streamdetect.service import BatchScorer, Metrics, ModelHolder
from streamdetect.settings import get_settings

log = logging.getLogger("streamdetect.app")

settings = get_settings()
broker = resolve_bootstrap(settings)
atexit.register(broker.stop)  # only stops a broker this process started
ensure_topics(broker.bootstrap, settings)
kafka_kwargs = client_kwargs(settings, broker.bootstrap)
faust_datadir = settings.data.data_dir / "faust"
faust_datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
log.info("kafka client config: %s", redacted({k: v for k, v in kafka_kwargs.items() if k != "ssl_context"}))

app = faust.App(
    settings.app_id,
    **faust_broker_config(settings, broker.bootstrap),
    broker_client_id=settings.kafka.client_id,
    broker_request_timeout=30.0,
    consumer_auto_offset_reset="earliest",
    topic_partitions=settings.topics.partitions,
    topic_replication_factor=settings.topics.replication_factor,
    store="memory://",  # no Faust tables: per-key state lives in the batch scorer (checkpointed to the state topic)
    datadir=str(faust_datadir),
    web_port=settings.web_port,
    web_host="127.0.0.1",
    producer_linger=0.005,
    autodiscover=False,
)

models = ModelHolder(settings.registry_dir, settings.feeds)
metrics = Metrics()
control_topic = app.topic(settings.topics.model_control, value_serializer="raw")


@app.service
class ScoreFeeds(BatchScorer):
    instance: "ScoreFeeds | None" = None

    def __init__(self, **kwargs):
        super().__init__(settings, kafka_kwargs, models, metrics, **kwargs)
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


retrainer = Retrainer(settings, kafka_kwargs, _publish_control)


@app.agent(control_topic)
async def retrain(messages):
    """Drift -> retrain -> shadow -> promote (``retrain.py``): ``drift`` messages from the scorers and
    manual ``{action: retrain, feed}`` requests start a retrain of the feed (training in a
    separate process); every step is published back on ``model-control``."""
    async for raw in messages:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # apply_control logs it
        if isinstance(message, dict) and message.get("action") in ("drift", "retrain"):
            log.info("model-control: %s", retrainer.trigger(message))


def _status() -> dict:
    scorer = ScoreFeeds.instance
    return {
        "app_id": settings.app_id,
        "broker": {"bootstrap": broker.bootstrap, "kind": broker.kind},
        "models": models.versions(),
        "refused": models.refused,
        "retrain": list(retrainer.history)[-10:],
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


@app.page("/metrics")
async def metrics_view(web, request):
    return web.json({**metrics.as_dict(), "models": models.versions()})


if __name__ == "__main__":
    app.main()
