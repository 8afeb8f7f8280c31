"""PyOD peers on the credit-card time split, with PyOD's own defaults, as rows of creditcard.csv.

Fits PyOD's ``DeepSVDD``, ``AutoEncoder`` and ``LOF`` (``pip install -e '.[peers]'``) on exactly
the matrix our detectors get: the suite's time-ordered split (``split_dataset``) and the
``FeatureSchema`` fitted on the training period's normal rows (log1p Amount, standardised, hour
of day). Each keeps its library defaults; only the seed (``random_state``, where the model has
one) changes per run, and ``verbose=0`` silences the per-epoch print. The calibration scores of
the held-out normal rows give the label-free ``val-fpr-R`` thresholds and the rows are written by
the suite's own ``record``, so the peers are thresholded and measured exactly as our models are:

    python -m benchmarks.pyod_peer --seeds 0,1,2

Rows go to ``benchmarks/results/creditcard.csv`` (resumable: a run already there is skipped),
named ``pyod-deepsvdd``, ``pyod-autoencoder``, ``pyod-lof``, preset ``full``; then the
credit-card table of ``benchmarks/README.md`` is regenerated, where they are listed as peers.
``--keep-dir`` also saves each fitted PyOD DeepSVDD network (safetensors) for inspection.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
import numpy as np
import torch

from offline import bundle as bundles
from offline.data import DataStore, load_tabular
from offline.detectors.base import Detector, as_float32
from offline.detectors.training import seed_everything
from offline.evaluation.benchmark import RESULTS_DIR, ResultsFile, regenerate_readme
from offline.evaluation.suites import creditcard as suite
from offline.features.schema import FeatureSchema
from offline.training.train import FittedModel, split_dataset

log = logging.getLogger("pyod_peer")


def _deepsvdd(n_features: int, seed: int):
    from pyod.models.deep_svdd import DeepSVDD

    return DeepSVDD(n_features=n_features, random_state=seed, verbose=0)


def _autoencoder(n_features: int, seed: int):
    from pyod.models.auto_encoder import AutoEncoder

    return AutoEncoder(random_state=seed, verbose=0)


def _lof(n_features: int, seed: int):
    from pyod.models.lof import LOF

    return LOF()  # deterministic: the seed changes nothing


#: model name -> (constructor with PyOD's defaults, epochs column)
PEERS = {
    "pyod-deepsvdd": (_deepsvdd, 100),
    "pyod-autoencoder": (_autoencoder, 10),
    "pyod-lof": (_lof, ""),
}
assert set(PEERS) == suite.PEERS


class PyODPeer(Detector):
    """Our protocol around a fitted PyOD estimator: ``score`` is its ``decision_function``."""

    def __init__(self, *, estimator):
        self.estimator = estimator
        self.name = "pyod"

    def fit(self, X, *, X_val=None) -> "PyODPeer":
        self.estimator.fit(as_float32(X))
        return self

    def score(self, X) -> np.ndarray:
        return np.asarray(self.estimator.decision_function(as_float32(X)), dtype=np.float64)


def fit_peer(model: str, seed: int, data, split) -> FittedModel:
    """As ``offline.training.train.fit_model``, with a PyOD estimator in place of a registry detector."""
    train_frame, calibration_frame = data.features.iloc[split.train], data.features.iloc[split.calibration]
    schema = FeatureSchema.fit(train_frame, numeric=list(data.numeric), log_scale=list(data.log_scale))
    X_train, _ = schema.transform(train_frame)
    X_cal, _ = schema.transform(calibration_frame)
    make, _ = PEERS[model]
    seed_everything(seed)  # PyOD also draws from numpy's and torch's global generators
    started = time.perf_counter()
    detector = PyODPeer(estimator=make(X_train.shape[1], seed)).fit(X_train)
    train_seconds = time.perf_counter() - started
    return FittedModel(detector, schema, detector.score(X_cal), bundles.array_fingerprint(X_train), train_seconds)


def keep_network(estimator, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in estimator.model_.state_dict().items()}
    tensors["center"] = estimator.c_.detach().cpu().contiguous()
    tensors["scaler_mean"] = torch.as_tensor(estimator.scaler_.mean_, dtype=torch.float64)
    tensors["scaler_scale"] = torch.as_tensor(estimator.scaler_.scale_, dtype=torch.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seeds", default="0,1,2", show_default=True, help="comma-separated seeds")
@click.option("--models", default=",".join(PEERS), show_default=True, help="comma-separated subset of the peers")
@click.option("--results-dir", type=click.Path(path_type=Path), default=RESULTS_DIR, show_default=True)
@click.option("--keep-dir", type=click.Path(path_type=Path), default=None, help="save fitted PyOD DeepSVDD networks here")
@click.option("--threads", type=int, default=1, show_default=True, help="torch CPU threads")
def main(seeds, models, results_dir, keep_dir, threads):
    """Fit PyOD peers with their defaults on the credit-card time split; append rows to creditcard.csv."""
    from streamdetect.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise click.BadParameter(f"unknown peers {unknown}; known: {', '.join(PEERS)}", param_hint="--models")
    settings = get_settings().data
    data = load_tabular("creditcard", DataStore(settings.data_dir, settings.mirror_dir, settings.allow_download))
    results_path = Path(results_dir) / "creditcard.csv"
    results = ResultsFile(results_path, suite.EXTRA_COLUMNS)
    curves_path = results_path.with_name("creditcard_curves.json")
    for model in names:
        for seed in [int(s) for s in seeds.split(",") if s.strip()]:
            if suite.done(results, model, seed, "full"):
                log.info("%s seed %d: already in %s", model, seed, results_path)
                continue
            split = split_dataset(data, "full", seed)
            log.info("%s seed %d: fitting on %d normal rows", model, seed, len(split.train))
            fitted = fit_peer(model, seed, data, split)
            metrics = suite.record(results, curves_path, model, seed, "full", fitted, data, split, epochs=PEERS[model][1])
            log.info("%s seed %d: %.0f s, AUROC %.4f AUPRC %.4f", model, seed, fitted.train_seconds, metrics["auroc"], metrics["auprc"])
            if keep_dir is not None and model == "pyod-deepsvdd":
                keep_network(fitted.detector.estimator, Path(keep_dir) / f"{model}-seed{seed}.safetensors")
    if Path(results_dir) == RESULTS_DIR:
        regenerate_readme("creditcard", results_path)
    click.echo(f"results: {results_path}")


if __name__ == "__main__":
    main()
