"""Analysts in the loop on the credit-card time split: does the queue get better with their labels?

``run`` (the measurement): the test period (the last 40% of transactions) is replayed in event
time order through Kafka to a real worker serving a label-free ``copula`` bundle fitted on the
training period. A simulated analyst reads the alert topic and, for each hour of event time,
labels at most ``--capacity`` alerts (K) from the ground truth -- the top of the queue, most
surprising p-value first -- ``--delay-hours`` later, publishing the labels to ``feedback``. After
each hour the harness asks the worker to learn from the labels so far (``{action: learn}`` on
``model-control``); the worker trains, checks and promotes (or rejects) a second stage on its own
(``streamdetect.retrain.labels``). The same replay without feedback is the baseline. Per hour and
over the later half of the period: the precision of the alerts the analyst saw, the frauds caught,
and the AUPRC of what the worker published (events ranked by published p-value, then score).

``select``: how the second stage was chosen, on the training period only (rows 30%-60%: base fitted
on the normals of rows 0-30%), by the same analyst simulated offline: no stage, logistic regression
(``offline.detectors.labelled``) and boosted trees, AUPRC of the later half of that stretch.

    python -m benchmarks.analyst_loop select
    python -m benchmarks.analyst_loop run [--capacity 10] [--delay-hours 1] [--rate 0.001]

Outputs: ``benchmarks/results/analyst_loop.csv`` (one row per arm and hour), ``analyst_loop.json``
(the summary), ``analyst_loop.png`` (precision per hour), ``analyst_stage_selection.txt``.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import logging
import shutil
import time
from pathlib import Path

import click
import numpy as np
import orjson

log = logging.getLogger("benchmarks.analyst_loop")
RESULTS = Path("benchmarks/results")
SELECTION_FOLD = (0.30, 0.60)  # the training period's stretch the selection simulates an analyst on
OUTCOMES = {"promote", "candidate_rejected", "learn_skipped", "learn_failed"}


def queue_order(p_values: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The analyst's queue: smallest p-value first, ties (p-values bottom out at 1/(n+1)) by score."""
    return np.lexsort((-np.asarray(scores), np.asarray(p_values)))


def ranking_auprc(labels: np.ndarray, p_values: np.ndarray, scores: np.ndarray) -> float:
    """AUPRC of the queue order: p-values are comparable across model versions, raw scores are not."""
    from sklearn.metrics import average_precision_score

    order = queue_order(p_values, scores)
    rank = np.empty(len(order))
    rank[order] = np.arange(len(order))
    return float(average_precision_score(labels, -rank))


def hour_rows(summary_rows: list[dict], arm: str, hours: np.ndarray, labels: np.ndarray, alerted: dict[int, float],
              seen: dict[int, list[int]], versions: dict[int, str]) -> list[dict]:
    rows = []
    for hour in np.unique(hours).tolist():
        in_hour = hours == hour
        shown = seen.get(hour, [])
        alert_rows = [r for r in alerted if hours[r] == hour]
        rows.append({"arm": arm, "hour": hour, "day": hour // 24, "events": int(in_hour.sum()), "frauds": int(labels[in_hour].sum()),
                     "alerts": len(alert_rows), "alerts_fraud": int(sum(labels[r] for r in alert_rows)),
                     "analyst_labelled": len(shown), "analyst_confirmed": int(sum(labels[r] for r in shown)),
                     "analyst_precision": round(float(np.mean([labels[r] for r in shown])), 4) if shown else None,
                     "model_version": versions.get(hour, "")})
    summary_rows.extend(rows)
    return rows


# -- select: offline, on the training period ---------------------------------------------------
def simulate_offline(kind: str, X: np.ndarray, y: np.ndarray, hours: np.ndarray, base, base_calibration: np.ndarray,
                     X_normal: np.ndarray, *, capacity: int, rate: float) -> dict:
    """The analyst of ``run`` without Kafka: hour by hour, label the top-K alerts, refit the stage."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from offline.detectors.labelled import LabelledStageDetector, surprise
    from streamdetect.thresholds import p_values

    u = surprise(base.score(X), base_calibration)
    combined, calibration = u.copy(), np.sort(surprise(base.score(X_normal), base_calibration))
    labelled: list[int] = []
    shown_by_hour = {}
    for hour in np.unique(hours).tolist():
        rows = np.flatnonzero(hours == hour)
        p = p_values(combined[rows], calibration)
        alerts = rows[p < rate]
        shown = alerts[queue_order(p[p < rate], combined[alerts])][:capacity]
        shown_by_hour[hour] = shown.tolist()
        labelled += shown.tolist()
        if kind == "none" or len(set(y[labelled].tolist())) < 2:
            continue
        if kind == "logistic":
            stage = LabelledStageDetector(base=base, calibration=base_calibration).fit_labels(X[labelled], y[labelled])
            combined, calibration = stage.score(X), np.sort(stage.score(X_normal))
        else:  # boosted trees on the same inputs, combined the same way
            Z = np.column_stack([X, u])
            trees = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=8, min_samples_leaf=5, random_state=0)
            trees.fit(Z[labelled], y[labelled])
            q = np.clip(trees.predict_proba(Z)[:, 1], 1e-4, 1 - 1e-4)
            combined = u + np.log(q / (1 - q))
            Zn = np.column_stack([X_normal, surprise(base.score(X_normal), base_calibration)])
            qn = np.clip(trees.predict_proba(Zn)[:, 1], 1e-4, 1 - 1e-4)
            calibration = np.sort(Zn[:, -1] + np.log(qn / (1 - qn)))
    later = np.arange(len(y)) >= len(y) // 2
    shown_later = [r for rows in shown_by_hour.values() for r in rows if later[r]]
    from sklearn.metrics import average_precision_score

    return {"stage": kind, "labelled": len(labelled), "confirmed": int(y[labelled].sum()),
            "analyst_precision_later_half": round(float(y[shown_later].mean()), 4) if shown_later else None,
            "auprc_later_half": round(float(average_precision_score(y[later], combined[later])), 4)}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Analysts in the loop on the credit-card time split (see the module's docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--capacity", type=click.IntRange(1), default=10, show_default=True, help="labels per hour of event time (K)")
@click.option("--rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.001, show_default=True,
              help="target false-alarm rate of the alerts")
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS / "analyst_stage_selection.txt", show_default=True)
def select(capacity: int, rate: float, out: Path) -> None:
    """Choose the second stage on the training period only (no test label is read)."""
    from offline.data import load_tabular
    from offline.data.settings import data_store
    from offline.training.train import fit_model

    data = load_tabular("creditcard", data_store())
    n = len(data.labels)
    start, end = (int(n * f) for f in SELECTION_FOLD)
    normals = np.flatnonzero(data.labels[:start] == 0)
    held_out = int(len(normals) * 0.15)
    fitted = fit_model("copula", {}, data.features.iloc[normals[:-held_out]], data.features.iloc[normals[-held_out:]],
                       numeric=data.numeric, log_scale=data.log_scale)
    X, _ = fitted.schema.transform(data.features.iloc[start:end])
    X_normal, _ = fitted.schema.transform(data.features.iloc[normals[-held_out:]])
    y = data.labels[start:end].astype(int)
    hours = (data.extra["Time"].to_numpy()[start:end] // 3600).astype(int)
    results = [simulate_offline(kind, X, y, hours, fitted.detector, np.sort(fitted.calibration_scores), X_normal,
                                capacity=capacity, rate=rate) for kind in ("none", "logistic", "trees")]
    lines = [f"# Second-stage selection on the training period (rows {SELECTION_FOLD[0]:.0%}-{SELECTION_FOLD[1]:.0%}; "
             f"copula fitted on the normals of rows 0-{SELECTION_FOLD[0]:.0%}); K = {capacity} per hour, rate {rate}",
             f"# {len(y)} events, {int(y.sum())} frauds, {len(np.unique(hours))} hours; command: python -m benchmarks.analyst_loop select",
             "", "| stage | labelled | confirmed | analyst precision, later half | AUPRC, later half |", "|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['labelled']} | {r['confirmed']} | {r['analyst_precision_later_half']} | {r['auprc_later_half']} |"
              for r in results]
    best = max(results, key=lambda r: r["auprc_later_half"])
    lines += ["", f"chosen: {best['stage']} (highest AUPRC of the later half)"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


# -- run: through Kafka and a real worker -----------------------------------------------------
class ControlWatch:
    """Reads ``model-control`` from the start: the worker's learn outcomes."""

    def __init__(self, kafka: dict, topic: str):
        self.kafka, self.topic, self.messages, self.consumer = kafka, topic, [], None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(self.topic, **self.kafka, group_id=None, enable_auto_commit=False,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=50)
        await self.consumer.start()

    async def outcome(self, after: int, timeout: float) -> dict:
        """The first learn outcome published after the ``after``-th message seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages[after:]:
                if message.get("action") in OUTCOMES:
                    return message
            batch = await self.consumer.getmany(timeout_ms=300)
            self.messages += [orjson.loads(r.value) for records in batch.values() for r in records if r.value]
        raise TimeoutError(f"no learn outcome on {self.topic} within {timeout:.0f}s")

    async def stop(self) -> None:
        await self.consumer.stop()


async def replay_arm(arm: str, *, feedback: bool, data, rows: np.ndarray, settings, kafka: dict, worker, capacity: int,
                     delay_hours: int) -> tuple[list[dict], dict]:
    from aiokafka import AIOKafkaProducer

    from streamdetect.feeds import get_feed
    from streamdetect.kafka.collect import collect_outputs
    from streamdetect.replay import key_from_field, send_messages

    labels = data.labels[rows].astype(int)
    hours = (data.extra["Time"].to_numpy()[rows] // 3600).astype(int)
    events = get_feed("transactions").events_from_dataset(data, rows)
    position = {e["event_id"]: i for i, e in enumerate(events)}
    topics = settings.topics
    watch = ControlWatch(kafka, topics.model_control)
    await watch.start()
    producer = AIOKafkaProducer(**kafka)
    await producer.start()
    p_value, score = np.ones(len(rows)), np.zeros(len(rows))
    alerted: dict[int, float] = {}
    seen: dict[int, list[int]] = {}
    versions: dict[int, str] = {}
    pending: list[tuple[int, list[int]]] = []  # (hour the labels are due, rows)
    learn_log = []
    try:
        for hour in np.unique(hours).tolist():
            in_hour = np.flatnonzero(hours == hour)
            since = int(time.time() * 1000) - 1
            await send_messages(kafka, topics.transactions, [orjson.dumps(events[i]) for i in in_hour],
                                key=key_from_field(None), progress=False)
            out = await collect_outputs(kafka, settings, expected=len(in_hour), since_ms=since, timeout=300,
                                        event_ids={events[i]["event_id"] for i in in_hour}, progress=False)
            if out.accounted() < len(in_hour):
                raise RuntimeError(f"{arm}: hour {hour}: {out.accounted()} of {len(in_hour)} events came back")
            for event_id, s in out.scores.items():
                i = position[event_id]
                p_value[i], score[i] = s["p_value"], s["score"]
                versions[hour] = s["model_version"]
            hour_alerts = sorted({position[a["event_id"]] for a in out.alerts if a["event_id"] in position})
            for i in hour_alerts:
                alerted[i] = p_value[i]
            queue = np.array(hour_alerts, dtype=int)
            shown = queue[queue_order(p_value[queue], score[queue])][:capacity].tolist() if len(queue) else []
            seen[hour] = shown
            pending.append((hour + delay_hours, shown))
            due = [r for h, rs in pending if h <= hour for r in rs]
            pending = [(h, rs) for h, rs in pending if h > hour]
            if not feedback or not due:
                continue
            for i in due:
                at = (dt.datetime.fromisoformat(events[i]["event_time"].replace("Z", "+00:00")) + dt.timedelta(hours=delay_hours))
                record = {"event_id": events[i]["event_id"], "label": "confirmed" if labels[i] else "false_alarm",
                          "analyst": "simulated", "at": at.isoformat()}
                await producer.send_and_wait(topics.feedback, orjson.dumps(record), key=events[i]["event_id"].encode())
            await asyncio.sleep(1.0)  # the feedback agent stores them in its table
            mark = len(watch.messages)
            await producer.send_and_wait(topics.model_control, orjson.dumps({"action": "learn", "feed": "transactions"}),
                                         key=b"transactions")
            outcome = await watch.outcome(mark, timeout=600)
            learn_log.append({"hour": hour, "action": outcome["action"], "version": outcome.get("version"),
                              "reason": outcome.get("reason") or outcome.get("error")})
            log.info("%s hour %d: %s", arm, hour, learn_log[-1])
            if outcome["action"] == "promote":
                version = outcome["version"]
                deadline = time.monotonic() + 60
                while worker.get("health")["models"].get("transactions") != version and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
    finally:
        await producer.stop()
        await watch.stop()
    rows_out: list[dict] = []
    hour_rows(rows_out, arm, hours, labels, alerted, seen, versions)
    later = np.arange(len(rows)) >= len(rows) // 2
    later_hours = {int(h) for h in hours[later]}
    shown_later = [r for h, rs in seen.items() if h in later_hours for r in rs if later[r]]
    summary = {
        "arm": arm, "events": int(len(rows)), "frauds": int(labels.sum()), "alerts": len(alerted),
        "alerts_fraud": int(sum(labels[r] for r in alerted)),
        "analyst_labelled": sum(len(v) for v in seen.values()), "analyst_confirmed": int(sum(labels[r] for v in seen.values() for r in v)),
        "analyst_precision": round(float(np.mean([labels[r] for v in seen.values() for r in v])), 4),
        "later_half_events": int(later.sum()), "later_half_frauds": int(labels[later].sum()),
        "later_half_analyst_labelled": len(shown_later),
        "later_half_analyst_precision": round(float(np.mean(labels[shown_later])), 4) if shown_later else None,
        "later_half_auprc": round(ranking_auprc(labels[later], p_value[later], score[later]), 4),
        "auprc": round(ranking_auprc(labels, p_value, score), 4),
        "learn_runs": learn_log,
    }
    return rows_out, summary


@cli.command()
@click.option("--capacity", type=click.IntRange(1), default=10, show_default=True, help="labels per hour of event time (K)")
@click.option("--delay-hours", type=click.IntRange(0), default=1, show_default=True,
              help="hours of event time between an alert and its label")
@click.option("--rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.001, show_default=True,
              help="the worker's target false-alarm rate")
@click.option("--hours", "max_hours", type=click.IntRange(1), default=None, help="replay only the first N hours (a shortened run; labelled so)")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("runs/analyst"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS / "analyst_loop.csv", show_default=True)
def run(capacity: int, delay_hours: int, rate: float, max_hours: int | None, workdir: Path, out: Path) -> None:
    """Replay the test period through Kafka with and without the simulated analyst's labels."""
    from benchmarks.stream_bench import TOPIC_FIELDS, run_settings
    from offline import bundle as bundles
    from offline.data import load_tabular
    from offline.data.settings import data_store
    from offline.training.protocols import time_ordered_split
    from offline.training.train import train_tabular
    from streamdetect.kafka.broker import EmbeddedBroker, client_kwargs, ensure_topics, free_port
    from streamdetect.settings import get_settings
    from streamdetect.worker_process import WorkerProcess

    base = get_settings()
    data = load_tabular("creditcard", data_store())
    rows = np.sort(time_ordered_split(data).test)
    if max_hours is not None:
        hours = data.extra["Time"].to_numpy()[rows] // 3600
        rows = rows[hours < hours.min() + max_hours]
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "source-registry"
    if not (source / "transactions" / "pointer.json").exists():
        train_tabular(dataset="creditcard", model="copula", store=data_store(), registry=source, feed="transactions",
                      target_rate=rate, progress=False)
    broker = None
    bootstrap = base.kafka.bootstrap
    if not bootstrap:
        broker = EmbeddedBroker(free_port(), log_path=workdir / "tansu.log").start()
        bootstrap = broker.bootstrap
    all_rows, summaries = [], []
    try:
        for arm, feedback in (("without feedback", False), ("with feedback", True)):
            registry = workdir / f"registry-{'with' if feedback else 'without'}"
            shutil.rmtree(registry, ignore_errors=True)
            shutil.copytree(source, registry)
            settings, env = run_settings(base, registry, free_port(), extra_env={
                "STREAMDETECT_FEEDS": '["transactions"]', "STREAMDETECT_DRIFT__ENABLED": "false",
                "STREAMDETECT_SCORING__TARGET_FALSE_ALARM_RATE": str(rate), "STREAMDETECT_LABELS__LEARN_EVERY": "0"})
            ensure_topics(bootstrap, settings, [getattr(settings.topics, f) for f in TOPIC_FIELDS])
            worker = WorkerProcess(settings, env, bootstrap, workdir / f"worker-{'with' if feedback else 'without'}.log")
            worker.start()
            try:
                started = time.monotonic()
                hour_table, summary = asyncio.run(replay_arm(arm, feedback=feedback, data=data, rows=rows, settings=settings,
                                                             kafka=client_kwargs(base, bootstrap), worker=worker,
                                                             capacity=capacity, delay_hours=delay_hours))
                summary["seconds"] = round(time.monotonic() - started, 1)
                summary["versions"] = bundles.list_versions(registry, "transactions")
            finally:
                worker.stop()
            all_rows += hour_table
            summaries.append(summary)
            log.info("%s: %s", arm, {k: v for k, v in summary.items() if k != "learn_runs"})
    finally:
        if broker is not None:
            broker.stop()
    shortened = max_hours is not None
    meta = {"command": "python -m benchmarks.analyst_loop run" + (f" --hours {max_hours}" if shortened else ""),
            "capacity_per_hour": capacity, "delay_hours": delay_hours, "target_false_alarm_rate": rate,
            "base_model": "copula", "shortened": shortened, "code_version": bundles.code_version(),
            "broker": "apache" if base.kafka.local_broker == "apache" and not broker else "tansu",
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(all_rows[0]))
        writer.writeheader()
        writer.writerows(all_rows)
    out.with_suffix(".json").write_text(json.dumps({**meta, "arms": summaries}, indent=1))
    plot(all_rows, out.with_suffix(".png"), meta)
    for s in summaries:
        click.echo(f"{s['arm']}: analyst precision {s['analyst_precision']} (later half {s['later_half_analyst_precision']}), "
                   f"confirmed {s['analyst_confirmed']} of {s['frauds']} frauds, AUPRC later half {s['later_half_auprc']}")


def plot(rows: list[dict], path: Path, meta: dict) -> None:
    from offline.figures.plots import plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        ax.plot([r["hour"] for r in mine], [r["analyst_precision"] if r["analyst_precision"] is not None else np.nan for r in mine],
                marker="o", label=arm)
    ax.set_xlabel("hour of event time (credit-card test period)")
    ax.set_ylabel(f"precision of the analyst's {meta['capacity_per_hour']} labels")
    ax.set_ylim(0, 1.02)
    ax.set_title(("SHORTENED RUN: " if meta["shortened"] else "") + "analyst queue precision per hour", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    cli()
