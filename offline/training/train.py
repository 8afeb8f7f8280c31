"""Train a detector and write it as a bundle: ``python -m offline.train --model vae --dataset creditcard``.

Tabular datasets follow their benchmark protocol's split (credit-card: time-ordered), train on
normal rows only, calibrate on held-out normal rows, evaluate on the test rows, and write a
bundle into ``<registry>/<feed>/vNNNN/`` that the worker can load (promoted unless
``--no-promote``). Image datasets (``--class``) go to ``offline.training.images``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd

from offline import bundle as bundles
from offline.data import DataStore, TabularData, load_tabular, TABULAR_LOADERS
from offline.detectors import REGISTRY, Detector, detector_class, keyword_params, make_detector
from offline.detectors.sensor_likelihood import StreamingLikelihoodDetector
from offline.detectors.streaming_likelihood import Config
from offline.metrics import (
    oracle_best_f1_threshold,
    ranking_metrics,
    threshold_at_false_alarm_rate,
    thresholded_metrics,
)
from offline.features.schema import FeatureSchema
from offline.features.sensor_likelihood import COLUMN as LIKELIHOOD_COLUMN, MANIFEST_KEY as LIKELIHOOD_KEY, THRESHOLD_KEY
from offline.training.presets import max_train_rows, preset_params
from offline.training.protocols import Split, kdd_normal_traffic_split, nsl_kdd_split, time_ordered_split

log = logging.getLogger("offline.training.train")

#: the feed whose worker serves a model of each tabular dataset
DATASET_FEEDS = {"creditcard": "transactions", "kddcup99": "access-logs", "nsl-kdd": "access-logs", "nab": "sensor-readings"}
#: how each tabular dataset is split for training and evaluation (DESIGN.md, "Benchmarks are data")
PROTOCOL_SPLITS = {
    "creditcard": time_ordered_split,
    "kddcup99": kdd_normal_traffic_split,  # deployable reading (attacks anomalous); the benchmark uses dagmm_split
    "nsl-kdd": nsl_kdd_split,
}
IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10")
#: the worker's default target false-alarm rate (streamdetect.settings.ScoringSettings)
DEFAULT_TARGET_RATE = 0.01


@dataclass
class FittedModel:
    detector: Detector
    schema: FeatureSchema
    calibration_scores: np.ndarray
    training_fingerprint: str
    train_seconds: float
    calibration_rows: np.ndarray | None = None  # the featurized held-out normals behind calibration_scores


def fit_model(
    model: str,
    params: dict,
    train_frame: pd.DataFrame,
    calibration_frame: pd.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str] = (),
    log_scale: list[str] = (),
) -> FittedModel:
    """Fit schema and detector on normal rows; score held-out normal rows for calibration.

    This is the training API the worker's retrainer calls too, with frames of recent events.
    """
    schema = FeatureSchema.fit(train_frame, numeric=list(numeric), categorical=list(categorical), log_scale=list(log_scale))
    X_train, _ = schema.transform(train_frame)
    X_cal, _ = schema.transform(calibration_frame)
    started = time.perf_counter()
    detector = make_detector(model, **params).fit(X_train, X_val=X_cal)
    train_seconds = time.perf_counter() - started
    return FittedModel(detector, schema, detector.score(X_cal), bundles.array_fingerprint(X_train), train_seconds, X_cal)


def evaluate(fitted: FittedModel, frame: pd.DataFrame, labels: np.ndarray, *, target_rates: Sequence[float]) -> dict:
    """Offline metrics on labelled test rows. The operating thresholds (``val-fpr-R``) come from
    calibration scores only; ``oracle-best-f1`` looks at the labels and is reported only beside them."""
    X, _ = fitted.schema.transform(frame)
    scores = fitted.detector.score(X)
    report = {**ranking_metrics(scores, labels), "test_rows": int(len(labels)), "test_anomalies": int(labels.sum())}
    for rate in target_rates:
        label_free = threshold_at_false_alarm_rate(fitted.calibration_scores, rate)
        report[f"val-fpr-{rate:g}"] = thresholded_metrics(scores, labels, label_free)
    report["oracle-best-f1"] = thresholded_metrics(scores, labels, oracle_best_f1_threshold(scores, labels))
    report["scores"] = scores
    return report


def split_dataset(data: TabularData, preset: str, seed: int) -> Split:
    try:
        split = PROTOCOL_SPLITS[data.name](data)
    except KeyError:
        raise click.UsageError(f"no training protocol for dataset {data.name!r}; known: {', '.join(PROTOCOL_SPLITS)}") from None
    cap = max_train_rows(preset)
    if cap is not None and len(split.train) > cap:  # quick preset: a random sample of the training rows
        split.train = np.sort(np.random.default_rng(seed).choice(split.train, cap, replace=False))
    return split


def train_tabular(
    *,
    dataset: str,
    model: str,
    store: DataStore,
    registry: Path,
    feed: str | None = None,
    preset: str = "full",
    seed: int = 0,
    params: dict | None = None,
    target_rate: float = 0.01,
    promote: bool = True,
    progress: bool = True,
) -> tuple[Path, dict]:
    data = load_tabular(dataset, store)
    split = split_dataset(data, preset, seed)
    hyper = {**preset_params(model, dataset, preset), "seed": seed, **(params or {})}
    if "progress" in keyword_params(model):
        hyper.setdefault("progress", progress)
    log.info("%s: %s", dataset, split.description)
    fitted = fit_model(
        model, hyper,
        data.features.iloc[split.train], data.features.iloc[split.calibration],
        numeric=data.numeric, categorical=data.categorical, log_scale=data.log_scale,
    )
    report = evaluate(fitted, data.features.iloc[split.test], data.labels[split.test], target_rates=[target_rate])
    report.pop("scores")
    report.update(train_rows=int(len(split.train)), calibration_rows=int(len(split.calibration)),
                  train_seconds=round(fitted.train_seconds, 2), preset=preset, protocol=split.description)
    feed = feed or DATASET_FEEDS.get(dataset, dataset)
    directory = bundles.next_version_dir(registry, feed)
    bundles.save_bundle(
        directory,
        detector=fitted.detector, schema=fitted.schema, calibration_scores=fitted.calibration_scores,
        calibration_rows=fitted.calibration_rows, feed=feed, dataset=dataset,
        score_definition=_score_definition(fitted.detector),
        training_fingerprint=fitted.training_fingerprint,
        metrics=report,
        extra={"target_false_alarm_rate": target_rate, "seed": seed},
    )
    if promote:
        bundles.promote(registry, feed, directory.name)
    return directory, report



def _score_definition(detector: Detector) -> str:
    doc = (type(detector).__doc__ or detector.name).strip().splitlines()[0]
    mode = getattr(detector, "score_mode", None)
    return f"{doc}" + (f" (score_mode={mode})" if mode else "")


def parse_params(pairs: tuple[str, ...]) -> dict:
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r}: expected key=value, e.g. --param latent_dim=16", param_hint="--param")
        key, value = pair.split("=", 1)
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", required=True, type=click.Choice(sorted(REGISTRY)), help="detector to train")
@click.option("--dataset", required=True, type=click.Choice(sorted([*TABULAR_LOADERS, *IMAGE_DATASETS])), help="dataset to train on")
@click.option("--class", "target_class", default=None, help="image datasets: the normal class (index, name or alias like 'shoe')")
@click.option("--preset", type=click.Choice(["quick", "full"]), default="full", show_default=True, help="quick runs in seconds")
@click.option("--epochs", type=int, default=None, help="override the preset's epochs")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--param", "params", multiple=True, help="hyperparameter as key=value (JSON value), repeatable")
@click.option("--feed", default=None, help="feed whose registry gets the bundle (default: the dataset's feed)")
@click.option("--registry", type=click.Path(path_type=Path), default=None, help="bundle registry (default: settings.registry_dir)")
@click.option("--target-rate", type=float, default=DEFAULT_TARGET_RATE, show_default=True,
              help="false-alarm rate of the label-free threshold (the worker's STREAMDETECT_SCORING__TARGET_FALSE_ALARM_RATE default)")
@click.option("--promote/--no-promote", default=True, show_default=True, help="put the new bundle in service")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True, help="image models: output directory")
def main(model, dataset, target_class, preset, epochs, seed, params, feed, registry, target_rate, promote, out):
    """Train MODEL on DATASET (normal rows only) and write a bundle the worker can serve."""
    from offline.settings import OfflineSettings  # the command reads the environment; the library takes arguments

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = OfflineSettings()
    store = settings.data.store()
    hyper = parse_params(params)
    if epochs is not None:
        hyper["epochs"] = epochs
    if model == "streaming-likelihood":
        if dataset != "nab":
            raise click.UsageError("streaming-likelihood runs one detector per sensor of the sensor-readings feed: use --dataset nab")
        directory = likelihood_bundle_from_nab(store, registry or settings.registry_dir, promote=promote)
        click.echo(f"bundle: {directory}{' (promoted)' if promote else ''} (nothing trained: each sensor's detector "
                   "learns from its own readings; calibration = the emitted scores of NAB's probationary periods)")
        return
    if dataset in IMAGE_DATASETS:
        from offline.training.images import train_image_model

        if target_class is None:
            raise click.UsageError("image datasets need --class (the normal class), e.g. --class 2 or --class shoe")
        summary = train_image_model(
            dataset=dataset, model=model, target_class=target_class, preset=preset, epochs=epochs,
            seed=seed, out_dir=out, store=store, params=hyper,
        )
        click.echo(json.dumps(summary, indent=1, default=str))
        return
    if detector_class(model).images_only:
        raise click.UsageError(f"{model} works on images only: use --dataset {' or '.join(sorted(IMAGE_DATASETS))}")
    directory, report = train_tabular(
        dataset=dataset, model=model, store=store, registry=registry or settings.registry_dir, feed=feed,
        preset=preset, seed=seed, params=hyper,
        target_rate=target_rate, promote=promote,
    )
    click.echo(f"bundle: {directory}{' (promoted)' if promote else ''}")
    for key in ("auroc", "auprc"):
        click.echo(f"  {key}: {report[key]:.4f}")
    for rule in [k for k in report if k.startswith("val-fpr") or k == "oracle-best-f1"]:
        m = report[rule]
        click.echo(f"  {rule}: precision {m['precision']:.3f} recall {m['recall']:.3f} f1 {m['f1']:.3f} (threshold {m['threshold']:.4g})")


def likelihood_bundle_from_nab(store: DataStore | None, registry: Path, *, promote: bool = True, config: Config | None = None,
                               corpus: dict | None = None) -> Path:
    """A streaming-likelihood bundle in ``registry``: calibration scores are the detector's emitted scores
    over each NAB series' probationary period after its warm-up (no labels read). ``corpus``: those
    series already loaded (default: every series of ``store``)."""
    from offline.data.nab import load_nab, probationary_length
    from offline.detectors.streaming_likelihood import WARMUP, StreamingLikelihood

    config = config or Config()
    corpus = corpus if corpus is not None else load_nab(store)
    calibration = []
    for series in corpus.values():
        probation = probationary_length(len(series))
        scores, _ = StreamingLikelihood(config).run(series.values[:probation], series.timestamps[:probation])
        calibration.append(scores[WARMUP:])
    directory = bundles.next_version_dir(registry, "sensor-readings")
    save_likelihood_bundle(directory, np.concatenate(calibration), config,
                           dataset=f"NAB probationary periods ({len(corpus)} series), no labels")
    if promote:
        bundles.promote(registry, "sensor-readings", directory.name)
    return directory


def save_likelihood_bundle(directory: Path, calibration_scores: np.ndarray, config: Config, *, dataset: str) -> Path:
    """A sensor-readings bundle serving the streaming likelihood with ``config`` (nothing to train:
    ``calibration_scores`` are emitted scores of normal readings, for the worker's p-values)."""
    calibration = np.asarray(calibration_scores, dtype=np.float64)
    schema = FeatureSchema(numeric=[LIKELIHOOD_COLUMN], mean=[0.0], std=[1.0])  # the emitted score, unchanged
    bundles.save_bundle(directory, detector=StreamingLikelihoodDetector(threshold=config.threshold), schema=schema,
                        calibration_scores=calibration, feed="sensor-readings", dataset=dataset,
                        score_definition="streaming likelihood of the sensor's readings (alert: score >= threshold)",
                        training_fingerprint=bundles.array_fingerprint(calibration[:, None]),
                        extra={LIKELIHOOD_KEY: config.to_dict(), THRESHOLD_KEY: config.threshold})
    return Path(directory)


if __name__ == "__main__":
    main()
