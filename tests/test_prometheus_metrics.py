"""``/metrics`` in the Prometheus text format (issue 15, item 4), read with Prometheus's own parser.

Unit part: ``serving.metrics.Metrics`` alone (a batch observed, rendered, parsed) and the model
holder's promotions and rollbacks. Integration part: a real worker on a real broker, scraped before,
during and after a replay of credit-card events with a malformed one among them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamdetect.serving.metrics import Metrics


def parse(text: str | bytes) -> dict[str, list[tuple[dict, float]]]:
    """{sample name: [(labels, value)]} of a text exposition, through Prometheus's parser."""
    if isinstance(text, bytes):
        text = text.decode()
    samples: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels``; None if there is none."""
    matching = [v for got, v in samples.get(name, []) if all(got.get(k) == str(w) for k, w in labels.items())]
    assert len(matching) <= 1, (name, labels, matching)
    return matching[0] if matching else None


# -- unit ---------------------------------------------------------------------------------------
def test_a_batch_shows_in_the_text_exposition_and_in_the_json_view():
    metrics = Metrics(["transactions", "access-logs"], lag=lambda: {("transactions-x", 0): 7, ("transactions-x", 1): 0},
                      versions=lambda: {"transactions": "v0003", "access-logs": None})
    before = parse(metrics.render()[0])
    assert value(before, "streamdetect_events_in_total", feed="transactions") == 0  # declared feeds start at 0
    assert value(before, "streamdetect_batch_latency_seconds_count", feed="access-logs") == 0

    metrics.observe_batch("transactions", 120, 118, latency_s=0.004, oldest_event_age_s=0.03, unseen_categories=2)
    metrics.observe_batch("transactions", 80, 80, latency_s=0.2, oldest_event_age_s=0.0)  # no timestamps: no age
    metrics.observe_published("transactions", 3, {"invalid_json": 1, "schema": 1})
    metrics.observe_published("transactions", 1, {"schema": 2})
    metrics.observe_control("transactions", "promote")
    metrics.observe_control("transactions", "rollback")
    metrics.observe_control("transactions", "load")  # neither
    metrics.batches, metrics.commit_failures = 2, 1

    body, content_type = metrics.render()
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    samples = parse(body)
    feed = {"feed": "transactions"}
    assert value(samples, "streamdetect_events_in_total", **feed) == 200
    assert value(samples, "streamdetect_events_scored_total", **feed) == 198
    assert value(samples, "streamdetect_alerts_total", **feed) == 4
    assert value(samples, "streamdetect_dead_letters_total", reason="invalid_json", **feed) == 1
    assert value(samples, "streamdetect_dead_letters_total", reason="schema", **feed) == 3
    assert value(samples, "streamdetect_events_in_total", feed="access-logs") == 0
    # the histogram: two batches, one under 5 ms, one between 100 and 250 ms
    assert value(samples, "streamdetect_batch_latency_seconds_count", **feed) == 2
    assert value(samples, "streamdetect_batch_latency_seconds_sum", **feed) == pytest.approx(0.204)
    assert value(samples, "streamdetect_batch_latency_seconds_bucket", le="0.001", **feed) == 0
    assert value(samples, "streamdetect_batch_latency_seconds_bucket", le="0.005", **feed) == 1
    assert value(samples, "streamdetect_batch_latency_seconds_bucket", le="0.1", **feed) == 1
    assert value(samples, "streamdetect_batch_latency_seconds_bucket", le="0.25", **feed) == 2
    assert value(samples, "streamdetect_batch_latency_seconds_bucket", le="5.0", **feed) == 2
    assert value(samples, "streamdetect_batch_latency_seconds_bucket", le="+Inf", **feed) == 2
    assert value(samples, "streamdetect_batch_oldest_event_age_seconds_count", **feed) == 1
    assert value(samples, "streamdetect_batch_oldest_event_age_seconds_sum", **feed) == pytest.approx(0.03)
    # read at scrape time
    assert value(samples, "streamdetect_consumer_lag", topic="transactions-x", partition=0) == 7
    assert value(samples, "streamdetect_consumer_lag", topic="transactions-x", partition=1) == 0
    assert samples["streamdetect_model_info"] == [({"feed": "transactions", "version": "v0003"}, 1.0)]
    assert value(samples, "streamdetect_model_promotions_total", **feed) == 1
    assert value(samples, "streamdetect_model_rollbacks_total", **feed) == 1
    assert value(samples, "streamdetect_batches_total") == 2
    assert value(samples, "streamdetect_commit_failures_total") == 1

    # the JSON view: the same keys as before, the same counts
    view = metrics.as_dict()
    assert set(view) == {"uptime_s", "events", "scored", "alerts", "batches", "dead_letters", "last_batch_latency_ms",
                         "last_batch_seconds", "busy_seconds", "commit_failures", "caught_up", "unseen_categories",
                         "stage_seconds", "loop_lag_ms_last_30s", "labels", "suppressed_by_label"}
    assert view["labels"] == {} and view["suppressed_by_label"] == 0  # no analyst label in this test
    assert (view["events"], view["scored"], view["alerts"], view["unseen_categories"]) == (200, 198, 4, 2)
    assert view["dead_letters"] == {"invalid_json": 1, "schema": 3}
    assert view["last_batch_latency_ms"] == 0.0  # the last batch's oldest event age, as before


def test_instances_do_not_share_a_registry_and_a_failing_source_leaves_its_series_out():
    def broken():
        raise RuntimeError("consumer not started")

    first, second = Metrics(["transactions"], lag=broken, versions=broken), Metrics(["transactions"])
    first.observe_batch("transactions", 5, 5, latency_s=0.01)
    samples = parse(first.render()[0])
    assert value(samples, "streamdetect_events_in_total", feed="transactions") == 5
    assert "streamdetect_consumer_lag" not in samples and "streamdetect_model_info" not in samples
    assert value(parse(second.render()[0]), "streamdetect_events_in_total", feed="transactions") == 0


def test_the_model_holder_counts_promotions_and_rollbacks(registry_copy):
    from streamdetect.serving.models import ModelHolder

    metrics = Metrics(["transactions"])
    holder = ModelHolder(registry_copy, ["transactions"], metrics)
    metrics.versions = holder.versions
    holder.refresh("transactions")
    assert "promote" in holder.apply_control({"action": "promote", "feed": "transactions", "version": "v0002"})
    holder.apply_control({"action": "promote", "feed": "transactions", "version": "v9999"})  # fails: not counted
    holder.apply_control({"action": "rollback", "feed": "transactions"})
    holder.apply_control({"action": "load", "feed": "transactions"})
    samples = parse(metrics.render()[0])
    assert value(samples, "streamdetect_model_promotions_total", feed="transactions") == 1
    assert value(samples, "streamdetect_model_rollbacks_total", feed="transactions") == 1
    assert samples["streamdetect_model_info"] == [({"feed": "transactions", "version": "v0001"}, 1.0)]


# -- integration --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def worker(kafka_broker, creditcard_bundles, settings, tmp_path_factory):
    from fixtures_worker import isolated_settings
    from streamdetect.kafka.broker import client_kwargs, ensure_topics, free_port
    from streamdetect.kafka.broker import stop_process as stop_worker
    from streamdetect.worker_process import WorkerProcess

    root = tmp_path_factory.mktemp("prometheus-worker")
    registry = root / "registry"
    shutil.copytree(creditcard_bundles, registry)
    port = free_port()
    worker_settings, env = isolated_settings(settings, registry, port)
    env["STREAMDETECT_DRIFT__ENABLED"] = "false"  # no retrain traffic: this test reads counters only
    ensure_topics(kafka_broker.bootstrap, worker_settings)
    process = WorkerProcess(worker_settings.model_copy(update={"web_port": port}), env, kafka_broker.bootstrap,
                            root / "worker.log")
    process.spawn()
    try:
        process.wait_ready(timeout=180)
    except Exception:
        stop_worker(process.process)
        raise
    process.kafka = client_kwargs(worker_settings, kafka_broker.bootstrap)
    process.registry = registry
    yield process
    stop_worker(process.process)


def scrape(port: int) -> tuple[str, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.headers["Content-Type"], parse(response.read())


def poll(port: int, condition, timeout: float, what: str, log_tail) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, samples = scrape(port)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s: "
                                 f"{ {k: v for k, v in samples.items() if not k.endswith('_created')} }\n{log_tail()}")
        time.sleep(0.3)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_replay_moves_the_scraped_counters(worker, creditcard, creditcard_split):
    from fixtures_worker import slice_with_frauds
    from offline import bundle as bundles
    from streamdetect.feeds import get_feed
    from streamdetect.kafka.collect import collect_outputs
    from streamdetect.replay import key_from_field, malformed_examples, send_messages

    feed = {"feed": "transactions"}
    events_in = "streamdetect_events_in_total"
    content_type, before = scrape(worker.port)
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    assert value(before, events_in, **feed) == 0
    assert value(before, "streamdetect_alerts_total", **feed) == 0
    assert value(before, "streamdetect_batch_latency_seconds_count", **feed) == 0
    assert "streamdetect_dead_letters_total" not in before

    events = get_feed("transactions").events_from_dataset(creditcard, slice_with_frauds(creditcard, creditcard_split, 300))
    first, second = [orjson.dumps(e) for e in events[: len(events) // 2]], [orjson.dumps(e) for e in events[len(events) // 2:]]
    name, bad, reason, _ = malformed_examples(events[0], max_event_bytes=worker.settings.scoring.max_event_bytes)[0]
    second.insert(len(second) // 2, bad)
    topic, since = worker.settings.topics.transactions, int(time.time() * 1000)

    asyncio.run(send_messages(worker.kafka, topic, first, key=key_from_field(None), progress=False))
    during = poll(worker.port, lambda s: value(s, events_in, **feed) >= len(first), 120, "the first half", worker.log_tail)
    assert value(during, "streamdetect_batch_latency_seconds_count", **feed) > 0

    async def rest():
        await send_messages(worker.kafka, topic, second, key=key_from_field(None), progress=False)
        return await collect_outputs(worker.kafka, worker.settings, expected=len(events) + 1, since_ms=since,
                                     timeout=180, event_ids={e["event_id"] for e in events}, progress=False)

    outputs = asyncio.run(rest())
    assert outputs.accounted() == len(events) + 1, worker.log_tail()
    after = poll(worker.port, lambda s: value(s, events_in, **feed) >= len(events) + 1, 30, "every event", worker.log_tail)

    # the counters moved, by what the worker published
    assert value(during, events_in, **feed) < value(after, events_in, **feed) == len(events) + 1
    assert value(after, "streamdetect_events_scored_total", **feed) == len(events)
    assert outputs.alerts and value(after, "streamdetect_alerts_total", **feed) == len(outputs.alerts)
    assert value(after, "streamdetect_dead_letters_total", reason=reason, **feed) == 1, name
    assert sum(v for _, v in after["streamdetect_dead_letters_total"]) == 1
    # the latency histogram has observations, each in a bucket up to 5 s or in +Inf
    count = value(after, "streamdetect_batch_latency_seconds_count", **feed)
    assert count > value(during, "streamdetect_batch_latency_seconds_count", **feed) > 0
    assert value(after, "streamdetect_batch_latency_seconds_bucket", le="+Inf", **feed) == count
    assert value(after, "streamdetect_batch_latency_seconds_sum", **feed) > 0
    assert value(after, "streamdetect_batch_oldest_event_age_seconds_count", **feed) > 0
    # the model in service, named by the registry's version
    version = bundles.current_version(worker.registry, "transactions")
    assert after["streamdetect_model_info"] == [({"feed": "transactions", "version": version}, 1.0)]
    assert value(after, "streamdetect_model_promotions_total", **feed) == 0
    # the lag gauge, one per assigned partition, back to 0 once the replay is consumed
    assignment = worker.get("health")["assignment"]
    assert len(assignment) == worker.settings.topics.partitions
    partitions = {(label.rsplit("[", 1)[0], label.rsplit("[", 1)[1].rstrip("]")) for label in assignment}

    def lag_settled(samples):
        lags = {(labels["topic"], labels["partition"]): v for labels, v in samples.get("streamdetect_consumer_lag", [])}
        return set(lags) == partitions and not any(lags.values())

    poll(worker.port, lag_settled, 60, "a lag of 0 on every assigned partition", worker.log_tail)
    # the JSON view moved to /metrics.json and agrees
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics.json", timeout=5) as response:
        view = json.loads(response.read())
    assert view["events"] == len(events) + 1 and view["alerts"] == len(outputs.alerts)
    assert view["models"] == {"transactions": version}
