"""End-to-end demo: broker, worker, the credit-card evaluation slice replayed, results read back.

    python -m streamdetect.demo              # the whole test split (~114k events)
    python -m streamdetect.demo --limit 20000 --rate 5000

Starts the embedded broker (unless ``STREAMDETECT_KAFKA__BOOTSTRAP`` is set), creates the topics,
starts ``faust -A streamdetect.app worker`` as a subprocess, waits until it is consuming, replays
the events of the time-ordered test split plus a few malformed ones, reads alerts, scores and
dead letters until every event is accounted for, and prints what happened next to the offline
figures of the same bundle. Worker and broker are stopped on the way out, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import click
import numpy as np
import orjson

from offline.bundle import BundleError, load_current
from streamdetect.kafka.broker import EmbeddedBroker, client_kwargs, ensure_topics, free_port
from streamdetect.kafka.local import ResolvedBroker, resolve_bootstrap
from streamdetect.kafka.collect import Outputs, collect_outputs
from streamdetect.feeds import get_feed
from streamdetect.replay import dataset_slice, malformed_examples, send_messages
from streamdetect.settings import get_settings
from streamdetect.worker_process import WorkerProcess

log = logging.getLogger("streamdetect.demo")


# -- the report ----------------------------------------------------------------------------------------
def summarize(outputs: Outputs, labels: dict[str, int], *, sent: int, malformed: int, seconds: float) -> dict:
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    ids = [i for i in labels if i in outputs.scores]
    y_true = np.array([labels[i] for i in ids])
    y_alert = np.array([outputs.scores[i]["alerted"] for i in ids])
    scores = np.array([outputs.scores[i]["score"] for i in ids])
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_alert, average="binary", zero_division=0)
    latencies = np.array([r["latency_ms_max"] for r in outputs.score_records]) if outputs.score_records else np.zeros(1)
    return {
        "events_sent": sent + malformed, "good_events": sent, "malformed_events": malformed,
        "scored": len(outputs.scores), "alerts": len(outputs.alerts),
        "dead_letters": dict(outputs.dead_by_reason),
        "precision": float(precision), "recall": float(recall), "f1": float(f1),
        "auroc": float(roc_auc_score(y_true, scores)) if 0 < y_true.sum() < len(y_true) else None,
        "anomalies_in_slice": int(y_true.sum()),
        "end_to_end_events_per_s": len(outputs.scores) / seconds if seconds else None,
        "batch_latency_ms": {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95)),
                             "max": float(latencies.max())},
    }


def offline_figures(manifest: dict, rate: float) -> dict:
    metrics = manifest.get("metrics", {})
    rule = metrics.get(f"val-fpr-{rate:g}", {})
    return {"rule": f"val-fpr-{rate:g}", "precision": rule.get("precision"), "recall": rule.get("recall"),
            "f1": rule.get("f1"), "auroc": metrics.get("auroc"), "auprc": metrics.get("auprc"),
            "test_rows": metrics.get("test_rows"), "preset": metrics.get("preset")}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


# -- the command ------------------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--feed", default="transactions", show_default=True, help="feed to replay")
@click.option("--limit", type=int, default=None, help="replay only the first N events of the test split")
@click.option("--rate", type=float, default=0.0, show_default=True, help="events per second; 0 = as fast as possible")
@click.option("--malformed/--no-malformed", default=True, show_default=True, help="add one malformed event of each kind")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="seconds to wait for every event to be accounted for")
@click.option("--web-port", type=int, default=None, help="worker web port (default: a free port)")
@click.option("--log", "log_path", type=click.Path(path_type=Path), default=Path("runs/demo/worker.log"), show_default=True)
def main(feed: str, limit: int | None, rate: float, malformed: bool, timeout: float, web_port: int | None, log_path: Path) -> None:
    """Replay the credit-card evaluation slice through a real broker and worker, and report."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    feed_spec = get_feed(feed)
    try:
        bundle = load_current(settings.registry_dir, feed)
    except BundleError as exc:
        raise click.ClickException(f"{exc}\n(make demo trains one first, or: make model FEED={feed})") from None
    click.echo(f"bundle in service: {bundle.path} ({bundle.model_name})")

    resolved: ResolvedBroker | None = None
    worker: WorkerProcess | None = None
    try:
        if settings.kafka.bootstrap:
            resolved = resolve_bootstrap(settings)
        else:  # our own broker, on a free port, so that a stray one on the default port is not mixed in
            broker = EmbeddedBroker(free_port()).start()
            resolved = ResolvedBroker(broker.bootstrap, "embedded", broker)
            click.echo(f"embedded in-memory development broker on {broker.bootstrap}")
        ensure_topics(resolved.bootstrap, settings)
        kafka = client_kwargs(settings, resolved.bootstrap)

        events, labels = dataset_slice(feed, settings, limit=limit)
        messages = [orjson.dumps(e) for e in events]
        bad = malformed_examples(events[0], max_event_bytes=settings.scoring.max_event_bytes) if malformed else []
        if bad:  # spread them through the stream
            for i, (_, message, _, _) in enumerate(bad):
                messages.insert((i + 1) * len(messages) // (len(bad) + 1), message)
        label_of = {e["event_id"]: int(y) for e, y in zip(events, labels)}
        click.echo(f"replaying {len(events)} events of the {feed_spec.dataset} test split "
                   f"({int(labels.sum())} labelled anomalous) + {len(bad)} malformed")

        web_port = web_port or free_port()
        started = time.monotonic()
        worker = WorkerProcess(settings.model_copy(update={"web_port": web_port}), {}, resolved.bootstrap, log_path)
        worker.spawn()
        worker.wait_ready(timeout=90)
        status = worker.get("ready")
        click.echo(f"worker ready in {time.monotonic() - started:.1f}s, serving {status['models']} (log: {log_path})")

        sent_at = time.time()
        since_ms = int(sent_at * 1000)

        async def replay_and_collect():
            from streamdetect.replay import key_from_field

            sending = asyncio.create_task(send_messages(kafka, feed_spec.topic(settings), messages, rate=rate,
                                                        key=key_from_field(feed_spec.key_field), progress=False))
            outputs = await collect_outputs(kafka, settings, expected=len(messages), since_ms=since_ms,
                                            timeout=timeout, event_ids=set(label_of))
            return await sending, outputs

        sent, outputs = asyncio.run(replay_and_collect())
        seconds = max(max((r["produced_at"] for r in outputs.score_records), default=sent_at) - sent_at, 1e-9)
        report = summarize(outputs, label_of, sent=len(events), malformed=len(bad), seconds=seconds)
        report["send_rate_events_per_s"] = sent["rate"]
        metrics = worker.metrics()
        offline = offline_figures(bundle.manifest, settings.scoring.target_false_alarm_rate)
        _print_report(report, metrics, offline, bundle.version, accounted=outputs.accounted(), expected=len(messages))
        if outputs.accounted() < len(messages):
            raise click.ClickException(f"only {outputs.accounted()} of {len(messages)} events accounted for within "
                                       f"{timeout:.0f}s; see the worker log {log_path}")
    except KeyboardInterrupt:
        click.echo("interrupted; stopping worker and broker")
    finally:
        if worker is not None:
            worker.stop()
        if resolved is not None:
            resolved.stop()


def _print_report(report: dict, metrics: dict, offline: dict, version: str, *, accounted: int, expected: int) -> None:
    busy = metrics.get("busy_seconds") or 0
    click.echo("")
    click.echo(f"events sent        {report['events_sent']} ({report['good_events']} good, {report['malformed_events']} malformed)")
    click.echo(f"accounted for      {accounted} of {expected}")
    click.echo(f"scored             {report['scored']}")
    click.echo(f"alerts             {report['alerts']}")
    click.echo(f"dead letters       {report['dead_letters'] or 'none'}")
    if metrics.get("unseen_categories"):
        click.echo(f"unseen categories  {metrics['unseen_categories']} values outside the training vocabulary, scored as <other>")
    click.echo(f"throughput         {report['end_to_end_events_per_s']:.0f} events/s end to end "
               f"(replay sent {report['send_rate_events_per_s']:.0f}/s); worker busy {busy:.1f}s"
               + (f" -> {metrics['scored'] / busy:.0f} events/s of scoring capacity" if busy else ""))
    lat = report["batch_latency_ms"]
    click.echo(f"latency            send -> scored, per batch max: p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms")
    click.echo("")
    click.echo(f"{'':19}{'precision':>10}{'recall':>10}{'f1':>10}{'auroc':>10}")
    click.echo(f"{'online (' + version + ')':19}{_fmt(report['precision']):>10}{_fmt(report['recall']):>10}"
               f"{_fmt(report['f1']):>10}{_fmt(report['auroc']):>10}   {report['anomalies_in_slice']} anomalies in the slice")
    click.echo(f"{'offline ' + offline['rule']:19}{_fmt(offline['precision']):>10}{_fmt(offline['recall']):>10}"
               f"{_fmt(offline['f1']):>10}{_fmt(offline['auroc']):>10}   bundle manifest, {offline['test_rows']} test rows, "
               f"preset {offline['preset']}")
    click.echo("(online alerts use the adaptive per-key threshold; offline uses the fixed calibrated threshold)")


if __name__ == "__main__":
    main()
