"""NAB through the worker: ``python -m benchmarks.nab_replay``.

For every NAB series (one sensor of the ``sensor-readings`` feed):

1. **Train** on NAB's probationary period only (the first 15% of the series; no labels are read):
   the sensor windows the worker would build (``offline.features.windows``) -> a small windowed
   autoencoder (``offline.training.train.fit_model``), written as a bundle with its window configuration.
   Calibration scores are cross-fitted: two models, each trained on one half of the probationary
   windows, score the other half, so every calibration score is out of sample.
2. **Replay** the whole series as JSON events, in batches, through ``pipeline.process_batch`` -- the
   worker's own per-batch code: decode, validate, per-sensor windows kept in the partition state,
   one forward pass, conformal p-values, adaptive per-key thresholds, the alert budget per key per
   hour -- and collect which events alerted.
3. **Baseline**: river ``HalfSpaceTrees`` (a bundle too) through the same replay (same windows, same p-values,
   thresholds and budget), learning online as river models do (``score_one`` then ``learn_one``),
   after a first pass over the probationary windows; its calibration scores are its prequential
   scores on the probationary period.
4. **Score** with window-level precision / recall / F1 and detection delay
   (``offline.evaluation.suites.nab``), one CSV row per (model, series, threshold rule), appended to ``benchmarks/results/nab.csv``; the tables in ``benchmarks/README.md`` and one figure
   per NAB category (series, windows, alerts) are regenerated.

By default the events go through the same functions the batch scorer calls, in batches of 256,
with the same state, which makes the replay deterministic and lets the drift -> retrain loop run
on event time. ``--transport kafka`` (models ``ae-window`` and ``hst``) replays the same series
through a broker and the worker process instead (``nab_kafka.py``); the tables compare the two.
HST bundles store the windows HST learnt, and loading relearns them (no pickle).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import click
import numpy as np
import orjson
import pandas as pd
from tqdm.auto import tqdm

from offline import bundle as bundles
from offline.evaluation.benchmark import FIGURES_DIR, RESULTS_DIR, ResultsFile, regenerate_readme
from offline.bundle import Bundle
from offline.data.nab import SERIES, NABSeries, load_nab
from offline.detectors import make_detector
from offline.features.schema import FeatureSchema
from offline.evaluation.suites.nab import EXTRA_COLUMNS, KAFKA_PROTOCOL, PROTOCOL, overall, window_metrics
from offline.training.train import fit_model
from offline.features.windows import MANIFEST_KEY, STATS_KEY, WindowConfig, fit_sensor_stats, window_frame
from streamdetect import pipeline
from streamdetect.feeds import get_feed
from benchmarks.nab_kafka import events_of, replay_series_through_kafka
from streamdetect.pipeline import InputRecord
from streamdetect.state import PartitionState

log = logging.getLogger("benchmarks.nab_replay")
FEED = get_feed("sensor-readings")

#: chosen before looking at any NAB label; the same for every series and both models
WINDOW = WindowConfig(size=16, memory=1000, warmup=16)
AE_PARAMS = {
    "quick": {"hidden": [32], "latent_dim": 4, "epochs": 15, "batch_size": 64, "patience": 3, "lr": 3e-3},
    "full": {"hidden": [64, 32], "latent_dim": 4, "epochs": 80, "batch_size": 64, "patience": 8, "lr": 1e-3},
}
HST_PARAMS = {"n_trees": 10, "height": 8, "window_size": 250}  # river's defaults
TARGET_RATE = 0.01
#: threshold rules: p < target rate, then at most this many alerts per sensor per hour (token bucket)
BUDGETS = {"p<0.01+budget-0.25/h": 0.25, "p<0.01+budget-1/h": 1.0}
DEFAULT_RULE = "p<0.01+budget-0.25/h"
BATCH = 256


def _probation_windows(series: NABSeries) -> tuple[pd.DataFrame, dict]:
    """The probationary period's windows, standardised with its robust per-sensor statistics."""
    ids, values = [series.sensor_id] * series.probation, series.values[: series.probation]
    stats = fit_sensor_stats(ids, values)
    frame, ready = window_frame(ids, values, WINDOW, stats=stats)
    return frame[ready].reset_index(drop=True), stats


def train_ae(series: NABSeries, preset: str, seed: int, registry: Path) -> tuple[Bundle, float]:
    """Windowed AE on the probationary windows, cross-fitted calibration, saved as a bundle."""
    windows, stats = _probation_windows(series)
    names = WINDOW.names()
    params = {**AE_PARAMS[preset], "seed": seed, "progress": False}
    half = len(windows) // 2
    first, second = windows.iloc[:half], windows.iloc[half:]
    started = time.perf_counter()
    calibration = []
    for train_part, held_out in ((first, second), (second, first)):
        fitted = fit_model("ae", params, train_part, held_out, numeric=names)
        calibration.append(fitted.calibration_scores)
    # the served model: all probationary windows (the last tenth held out for early stopping)
    cut = int(len(windows) * 0.9)
    final = fit_model("ae", params, windows.iloc[:cut], windows.iloc[cut:], numeric=names)
    train_seconds = time.perf_counter() - started
    directory = bundles.next_version_dir(registry, series.sensor_id)
    bundles.save_bundle(
        directory, detector=final.detector, schema=final.schema, calibration_scores=np.concatenate(calibration),
        feed=FEED.name, dataset=f"nab:{series.name}",
        score_definition="squared reconstruction error of the sensor window (per-sensor standardised)",
        training_fingerprint=final.training_fingerprint,
        metrics={"train_windows": len(windows), "calibration": "cross-fitted on two halves of the probationary windows"},
        extra={MANIFEST_KEY: WINDOW.to_dict(), STATS_KEY: stats, "target_false_alarm_rate": TARGET_RATE, "seed": seed},
    )
    return bundles.load_bundle(directory), train_seconds


def hst_bundle(series: NABSeries, seed: int, registry: Path) -> tuple[Bundle, float]:
    """river HalfSpaceTrees learning while it scores, after a first pass over the probationary
    windows; its calibration scores are its prequential scores there. Saved as a bundle, which
    stores the windows it learnt (``HalfSpaceTreesDetector``): loading relearns them."""
    windows, stats = _probation_windows(series)
    started = time.perf_counter()
    # river's reference window must fill before HST scores anything: short probations get a shorter one
    params = {**HST_PARAMS, "window_size": min(HST_PARAMS["window_size"], max(10, len(windows) // 3))}
    detector = make_detector("hst", **params, seed=seed, learn_while_scoring=True, progress=False)
    detector.fit(windows.to_numpy(np.float32))
    names = WINDOW.names()
    schema = FeatureSchema(numeric=names, mean=[0.0] * len(names), std=[1.0] * len(names))
    directory = bundles.next_version_dir(registry, series.sensor_id)
    bundles.save_bundle(
        directory, detector=detector, schema=schema, calibration_scores=detector.prequential,
        feed=FEED.name, dataset=f"nab:{series.name}",
        score_definition="HalfSpaceTrees anomaly score of the sensor window (per-sensor standardised, min-max scaled)",
        training_fingerprint=bundles.array_fingerprint(windows.to_numpy(np.float32)),
        metrics={"train_windows": len(windows), "calibration": "prequential scores on the probationary windows"},
        extra={MANIFEST_KEY: WINDOW.to_dict(), STATS_KEY: stats, "target_false_alarm_rate": TARGET_RATE, "seed": seed},
    )
    return bundles.load_bundle(directory), time.perf_counter() - started


def replay(series: NABSeries, bundle: Bundle, *, budget_per_hour: float | None, settings,
           adapt: bool = False, work_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Every event of ``series`` through ``pipeline.process_batch``; returns (alerted, p_values, loop steps).

    ``adapt``: run the worker's drift -> retrain -> shadow -> promote loop (``streamdetect.retrain``) as the
    worker would: drift detectors on the p-values; after a drift, the next ``probation`` events
    (as many as the first model learnt from) are the training window (minus alerted events), the
    ``probation // 2`` after them the shadow window; the candidate replaces the model in service
    from the next batch on when ``promotion_decision`` says so. Bundles go to ``work_dir``.
    """
    from offline import bundle as bundles
    from streamdetect.retrain.candidate import shadow_compare, train_candidate
    from streamdetect.retrain.policy import promotion_decision

    scoring = settings.scoring
    states: dict[int, PartitionState] = {}
    window = max(series.probation, 150)
    shadow_n = max(window // 2, 100)
    drift = {"detector": "adwin", "delta": 0.001, "min_events": 200, "cooldown": window + shadow_n} if adapt else None

    def new_state() -> PartitionState:
        return PartitionState(window=scoring.threshold_window, warmup=scoring.threshold_warmup,
                              budget_per_hour=budget_per_hour, drift=drift)

    messages = events_of(series)
    alerted = np.zeros(len(messages), dtype=bool)
    p = np.ones(len(messages))
    steps: list[dict] = []
    pending: int | None = None  # row of the drift point whose retrain is waiting for its events
    if adapt:
        registry = Path(work_dir)
        shutil.rmtree(registry / FEED.name, ignore_errors=True)
        directory = bundles.feed_dir(registry, FEED.name) / "v0001"
        shutil.copytree(bundle.path, directory)
        bundles.promote(registry, FEED.name, "v0001")
        bundle = bundles.load_bundle(directory)
    topic = settings.topics.sensor_readings
    for start in range(0, len(messages), BATCH):
        stop = min(start + BATCH, len(messages))
        records = [InputRecord(topic, 0, offset, messages[offset]) for offset in range(start, stop)]
        output = pipeline.process_batch(
            records, feed=FEED, bundle=bundle, states=states, new_state=new_state, rate=TARGET_RATE,
            max_event_bytes=scoring.max_event_bytes, top_k=3, publish_scores=True, max_scores_per_record=BATCH,
        )
        if output.dead_letters:
            raise RuntimeError(f"{series.name}: dead letters in the replay: {output.dead_letters[:2]}")
        for _, value in output.scores:
            record = orjson.loads(value)
            rows = [int(i.rsplit("-", 1)[1]) for i in record["event_ids"]]
            p[rows] = record["p_values"]
        for key, _ in output.alerts:
            alerted[int(key.decode().rsplit("-", 1)[1])] = True
        if not adapt:
            continue
        if pending is None and output.drift_events:
            when = np.datetime64(output.drift_events[0]["event_time"].replace("+00:00", ""), "ns")
            pending = int(np.searchsorted(series.timestamps, when))
            steps.append({"action": "drift", "row": pending, "version": bundle.version, "evidence": output.drift_events[0]["evidence"]})
        if pending is not None and stop >= pending + window + shadow_n:
            train_rows = range(pending, pending + window)
            shadow_rows = range(pending + window, pending + window + shadow_n)
            events = [orjson.loads(messages[i]) for i in train_rows]
            events_path = registry / "events.jsonl"
            events_path.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
            alerted_ids = [events[i - pending]["event_id"] for i in train_rows if alerted[i]]
            try:
                summary = train_candidate({
                    "feed": FEED.name, "registry": str(registry), "current_bundle": str(bundle.path), "events_path": str(events_path),
                    "alerted": alerted_ids, "confirmed": [], "min_train_rows": 100, "calibration_fraction": 0.25,
                    "params": {}, "trigger": "drift",
                })
            except ValueError as exc:  # too few usable rows: keep the model in service
                steps.append({"action": "retrain_failed", "row": pending, "error": str(exc)})
                pending = None
                continue
            candidate_dir = bundles.feed_dir(registry, FEED.name) / summary["version"]
            shadow = [orjson.loads(messages[i]) for i in shadow_rows]
            current_stats, candidate_stats = shadow_compare(FEED.name, str(bundle.path), str(candidate_dir), events, shadow, [], TARGET_RATE)
            decision = promotion_decision(current_stats, candidate_stats, target_rate=TARGET_RATE, min_events=min(100, shadow_n))
            steps.append({"action": "shadow_result", "row": pending, "candidate": summary["version"], "promote": decision.promote,
                          "reason": decision.reason})
            if decision.promote:
                bundles.promote(registry, FEED.name, summary["version"])
                bundle = bundles.load_bundle(candidate_dir)
                steps.append({"action": "promote", "row": stop, "version": bundle.version})
            pending = None
    return alerted, p, steps


def plot_category(category: str, corpus: dict[str, NABSeries], alerts: dict[tuple[str, str], np.ndarray], models: list[str],
                  rule: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in corpus if n.startswith(category + "/")]
    fig, axes = plt.subplots(len(names), 1, figsize=(12, 2.2 * len(names)), squeeze=False)
    colors = {"ae-window+retrain": "tab:red", "ae-window": "tab:orange", "hst": "tab:green"}
    for ax, name in zip(axes[:, 0], names):
        series = corpus[name]
        ax.plot(series.timestamps, series.values, lw=0.6, color="tab:blue")
        ax.axvspan(series.timestamps[0], series.timestamps[series.probation], color="0.85", lw=0)
        for start, end in series.windows:
            ax.axvspan(start, end, color="gold", alpha=0.4, lw=0)
        low, high = np.nanmin(series.values), np.nanmax(series.values)
        for j, model in enumerate(models):
            mask = alerts.get((model, name))
            if mask is None:
                continue
            y = high + (high - low) * (0.05 + 0.07 * j)
            ax.scatter(series.timestamps[mask], np.full(mask.sum(), y), marker="v", s=14, color=colors.get(model, "k"), label=model)
        ax.set_title(name, fontsize=8, loc="left")
        ax.tick_params(labelsize=6)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=7)
    fig.suptitle(f"NAB {category}: series, labelled windows (gold), probation (grey), alerts ({rule})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", type=click.Choice(["quick", "full"]), default="full", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--series", "only", multiple=True, help="NAB series (<category>/<file>.csv), repeatable; default all 31")
@click.option("--models", default="ae-window+retrain,ae-window,hst", show_default=True,
              help="ae-window+retrain: the worker with its drift/retrain loop; ae-window: the first model only; hst: river HalfSpaceTrees")
@click.option("--transport", type=click.Choice(["in-process", "kafka"]), default="in-process", show_default=True,
              help="in-process: the worker's batch functions; kafka: an embedded broker and the worker process "
                   "(nab_kafka.py; models ae-window and hst)")
@click.option("--results-dir", type=click.Path(path_type=Path), default=RESULTS_DIR, show_default=True)
@click.option("--figures-dir", type=click.Path(path_type=Path), default=FIGURES_DIR, show_default=True)
@click.option("--registry", type=click.Path(path_type=Path), default=Path("runs/nab-registry"), show_default=True,
              help="where the per-series bundles are written")
def main(preset, seed, only, models, transport, results_dir, figures_dir, registry):
    """Replay NAB through the worker's batch code; window-level metrics per series and overall."""
    import torch

    from streamdetect.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    settings = get_settings()
    store = settings.data.store()
    corpus = load_nab(store, list(only) or list(SERIES))
    results = ResultsFile(Path(results_dir) / "nab.csv", EXTRA_COLUMNS)
    model_names = [m.strip() for m in models.split(",") if m.strip()]
    alerts_for_plots: dict[str, dict] = {rule: {} for rule in BUDGETS}
    rows_by_model: dict[tuple[str, str], list[dict]] = {}
    existing = pd.read_csv(results.path) if results.path.exists() else pd.DataFrame()
    protocol = PROTOCOL if transport == "in-process" else KAFKA_PROTOCOL
    if transport == "kafka" and "ae-window+retrain" in model_names:
        raise click.UsageError("the drift/retrain loop replays in-process only (it runs on event time): "
                               "use --models ae-window,hst with --transport kafka")
    trained_ae: dict[str, tuple[Bundle, float]] = {}  # one AE per series, shared by the threshold rules
    for model in model_names:
        for rule, budget in BUDGETS.items():
            todo = {}
            for name, series in corpus.items():
                identity = dict(dataset="nab", protocol=protocol, model=model, target_class=name, seed=seed, preset=preset)
                if results.has(**identity, threshold_rule=rule):
                    done = existing[(existing["protocol"] == protocol) & (existing["model"] == model)
                                    & (existing["target_class"] == name) & (existing["threshold_rule"] == rule)
                                    & (existing["preset"] == preset) & (existing["seed"] == seed)]
                    rows_by_model.setdefault((model, rule), []).append(done.iloc[-1].to_dict())
                else:
                    todo[name] = identity
            trained = {}
            for name in tqdm(todo, desc=f"nab {model} {rule}: models", unit="series"):
                series = corpus[name]
                if model.startswith("ae-window"):
                    if name not in trained_ae:
                        trained_ae[name] = train_ae(series, preset, seed, Path(registry) / preset)
                    trained[name] = trained_ae[name]
                else:  # HST learns while it scores: a fresh one per replay
                    trained[name] = hst_bundle(series, seed, Path(registry) / f"{preset}-hst")
            through_kafka = {}
            if transport == "kafka" and todo:
                through_kafka = replay_series_through_kafka(
                    {name: corpus[name] for name in todo}, {name: trained[name][0] for name in todo},
                    budget_per_hour=budget, target_rate=TARGET_RATE, batch_size=BATCH, base=settings,
                    workdir=Path(registry) / "kafka", log_name=f"worker-{model}-{rule}".replace("/", "_"))
            for name, identity in tqdm(todo.items(), desc=f"nab {model} {rule}: replay", unit="series"):
                series = corpus[name]
                bundle, train_seconds = trained[name]
                steps: list[dict] = []
                if transport == "kafka":
                    alerted, replay_seconds = through_kafka[name]
                else:
                    started = time.perf_counter()
                    alerted, _, steps = replay(series, bundle, budget_per_hour=budget, settings=settings,
                                               adapt=model == "ae-window+retrain",
                                               work_dir=Path(registry) / f"{preset}-loop" / series.sensor_id)
                    replay_seconds = time.perf_counter() - started
                m = window_metrics(series.timestamps, alerted, series.windows, probation=series.probation)
                alerts_for_plots[rule][(model, name)] = alerted
                row = {
                    **identity, "threshold_rule": rule, "auroc": "", "auprc": "",
                    "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
                    "epochs": (AE_PARAMS[preset]["epochs"] if model.startswith("ae-window") else ""),
                    "train_seconds": round(train_seconds, 2), "series": name, "category": series.category,
                    "tp": m["tp"], "fp": m["fp"], "fn": m["fn"], "windows": m["windows"], "alerts": m["alerts"],
                    "delay_hours": m["delay_hours"], "delay_fraction": m["delay_fraction"],
                    "target_rate": TARGET_RATE, "budget_per_hour": budget, "events": len(series),
                    "replay_seconds": round(replay_seconds, 2),
                    "drifts": sum(st["action"] == "drift" for st in steps),
                    "promotions": sum(st["action"] == "promote" for st in steps),
                }
                results.append(row)
                rows_by_model.setdefault((model, rule), []).append(row)
                log.info("%s %s %s: P %.3f R %.3f F1 %.3f (tp %d fp %d fn %d)", model, name, rule,
                         m["precision"], m["recall"], m["f1"], m["tp"], m["fp"], m["fn"])
    for (model, rule), rows in rows_by_model.items():
        o = overall(pd.DataFrame(rows))
        click.echo(f"{model:10s} {rule:24s} overall: P {o['precision']:.3f} R {o['recall']:.3f} F1 {o['f1']:.3f} "
                   f"(tp {o['tp']} fp {o['fp']} fn {o['fn']}), mean delay {o['delay_hours']:.1f} h")
    rule = DEFAULT_RULE
    if alerts_for_plots[rule]:
        for category in sorted({s.category for s in corpus.values()}):
            plot_category(category, corpus, alerts_for_plots[rule], model_names, rule, Path(figures_dir) / f"nab_{'kafka_' if transport == 'kafka' else ''}{category}.png")
    if Path(results_dir) == RESULTS_DIR:
        regenerate_readme("nab", results.path)
    click.echo(f"results: {results.path}")


if __name__ == "__main__":
    main()
