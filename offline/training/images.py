"""Training image models: ``python -m offline.train --model vae --dataset mnist --class 2``.

``offline.training.train`` hands image datasets to :func:`train_image_model`: train on the normal class
(one-class protocol: the train split of that class, a tenth held out for calibration), score the
whole test split, write the model as ``model.safetensors`` + ``manifest.json`` (tensors only, the
weights' sha256 in the manifest, like a bundle) and sample grids / reconstructions as PNG.

Presets: ``quick`` (tests, seconds: a few hundred images, a few dozen steps, small nets) and
``full`` (the whole class; AE/VAE stop early on the held-out loss, at most 50 epochs; the GAN family
runs the epoch counts its convergence curves chose). Only the numbers differ.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from offline.data.images import ImageData, class_label, load_images
from offline.data.store import DataStore
from offline.detectors import Detector, detector_class, make_detector
from offline.metrics import ranking_metrics, threshold_at_false_alarm_rate, thresholded_metrics

log = logging.getLogger("offline.training.images")

FULL_EPOCHS = 50  # the classic recipe: the cap of early-stopped models, and cgan/cvae
GAN_MODELS = ("dcgan", "anogan", "egbad", "ganomaly", "fanogan", "twodisc", "cgan", "cvae")
CALIBRATION_FRACTION = 0.1
#: models whose ``full`` preset stops early on the held-out normal images' loss (patience, at most FULL_EPOCHS)
EARLY_STOPPED = ("ae", "vae")
#: models that get the held-out normal images as ``X_val`` (early stop or a recorded validation loss)
#: fusion needs the held-out images too: its members' p-values are calibrated on them
HELD_OUT_LOSS = (*EARLY_STOPPED, "geom", "fusion")
FALSE_ALARM_RATE = 0.05

_QUICK: dict[str, dict] = {
    "ae": {"epochs": 3, "batch_size": 32, "base_channels": 16, "latent_dim": 16},
    "vae": {"epochs": 3, "batch_size": 32, "base_channels": 16, "latent_dim": 16},
    "dcgan": {"max_steps": 40, "batch_size": 32, "base_channels": 16},
    "anogan": {"max_steps": 100, "batch_size": 32, "base_channels": 16, "search_steps": 10},
    "egbad": {"max_steps": 100, "batch_size": 32, "base_channels": 16},
    "ganomaly": {"max_steps": 40, "batch_size": 32, "base_channels": 16},
    "fanogan": {"max_steps": 100, "batch_size": 32, "base_channels": 16},
    "twodisc": {"max_steps": 40, "batch_size": 32, "base_channels": 16},
    "cgan": {"max_steps": 40, "batch_size": 32, "base_channels": 16},
    "cvae": {"max_steps": 40, "batch_size": 32, "base_channels": 16},
    "geom": {"max_steps": 60, "batch_size": 128, "base_channels": 16},
}
#: the GAN family's ``full`` epoch counts, chosen once from per-epoch Frechet curves on Fashion-MNIST
#: class 0 (``python -m benchmarks.image_convergence`` -> benchmarks/results/image_epochs.json; that
#: class is excluded from any tuning claim). tests/test_image_grid.py checks they match the file.
CONVERGED_EPOCHS: dict[str, dict] = {
    "dcgan": {"epochs": 15},
    "anogan": {"epochs": 15},
    "egbad": {"epochs": 12},
    "ganomaly": {"epochs": 12},
    "twodisc": {"epochs": 16},
    "fanogan": {"epochs": 17, "encoder_epochs": 34},
}
_FULL: dict[str, dict] = {
    "ae": {"epochs": FULL_EPOCHS, "latent_dim": 16, "batch_size": 64, "patience": 5},
    "vae": {"epochs": FULL_EPOCHS, "latent_dim": 16, "batch_size": 64, "patience": 5},
    **CONVERGED_EPOCHS,
    "anogan": {**CONVERGED_EPOCHS["anogan"], "search_steps": 100},
    # GEOM's own budget: 200 passes over the normal images spread over its 72 transformations,
    # ceil(200 / 72) = 3 epochs of (image, transformation) pairs; the held-out loss is recorded
    "geom": {"epochs": 3, "batch_size": 128},
}
#: quick runs train on this many normal images and test on this many
QUICK_TRAIN_IMAGES, QUICK_TEST_IMAGES = 512, 1000


def image_preset_params(model: str, preset: str) -> dict:
    if model == "fusion":  # each member trains its own recipe of the preset
        from offline.detectors.fusion import DEFAULT_MEMBERS

        return {"members": list(DEFAULT_MEMBERS), "member_params": {m: image_preset_params(m, preset) for m in DEFAULT_MEMBERS}}
    if preset == "quick":
        return dict(_QUICK.get(model, {"epochs": 2}))
    if preset == "full":
        return dict(_FULL.get(model, {"epochs": FULL_EPOCHS}))
    raise ValueError(f"unknown preset {preset!r}: use 'quick' or 'full'")


def detector_params(model: str, preset: str, seed: int, overrides: dict | None = None) -> dict:
    params = {**image_preset_params(model, preset), **(overrides or {}), "seed": seed}
    if "epochs" in params and params["epochs"] is None:
        params.pop("epochs")
    params.setdefault("progress", True)
    return params


@dataclass
class OneClassSplit:
    x_train: np.ndarray
    x_calibration: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray  # 1 = anomalous
    classes: tuple[int, ...]


def one_class_split(data: ImageData, classes: tuple[int, ...], *, seed: int, train_limit: int | None = None, test_limit: int | None = None) -> OneClassSplit:
    """Train split of ``classes`` (a tenth held out for calibration); the whole test split, others anomalous."""
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(np.isin(data.y_train, classes)))
    if train_limit:
        normal = normal[: int(train_limit / (1 - CALIBRATION_FRACTION))]
    n_cal = max(int(len(normal) * CALIBRATION_FRACTION), 1)
    test = np.arange(len(data.y_test))
    if test_limit and test_limit < len(test):
        test = np.sort(rng.choice(test, test_limit, replace=False))
    return OneClassSplit(
        data.x_train[normal[n_cal:]], data.x_train[normal[:n_cal]], data.x_test[test],
        (~np.isin(data.y_test[test], classes)).astype(np.int64), tuple(classes),
    )


def fit_detector(model: str, params: dict, x_train: np.ndarray, **fit_kwargs) -> tuple[Detector, float]:
    detector = make_detector(model, **params)
    start = time.perf_counter()
    detector.fit(x_train, **fit_kwargs)
    return detector, time.perf_counter() - start


# -- saving and loading ------------------------------------------------------------------------
WEIGHTS, MANIFEST = "model.safetensors", "manifest.json"


def save_image_model(directory: Path, detector: Detector, *, dataset: str, classes: tuple[int, ...], calibration_scores: np.ndarray,
                     metrics: dict, extra: dict | None = None) -> Path:
    """``model.safetensors`` (tensors only) + ``manifest.json`` with the weights' sha256."""
    from safetensors.torch import save_file

    from offline.bundle import _jsonable, code_version, file_sha256

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(detector.state_tensors(), str(directory / WEIGHTS))
    manifest = {
        "kind": "image-model",
        "model": {"name": detector.name, "params": _jsonable(detector.get_params())},
        "dataset": dataset,
        "normal_classes": list(classes),
        "input_shape": list(getattr(detector, "input_shape", None) or []),
        "score": {"definition": (type(detector).__doc__ or "").strip().split("\n")[0], "higher_is_anomalous": True},
        "calibration_scores": np.sort(np.asarray(calibration_scores, dtype=np.float64)).tolist(),
        "metrics": _jsonable(metrics),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "weights_sha256": file_sha256(directory / WEIGHTS),
        **({"extra": _jsonable(extra)} if extra else {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return directory


def load_image_model(directory: Path) -> tuple[Detector, dict]:
    """Verify the weights' hash against the manifest, then rebuild the detector from tensors."""
    from safetensors.torch import load_file

    from offline.bundle import BundleError, file_sha256

    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    actual = file_sha256(directory / WEIGHTS)
    if actual != manifest["weights_sha256"]:
        raise BundleError(f"{directory / WEIGHTS}: sha256 {actual} does not match the manifest ({manifest['weights_sha256']}); refusing to load")
    tensors = load_file(str(directory / WEIGHTS))
    params = {**manifest["model"]["params"], "progress": False}
    detector = detector_class(manifest["model"]["name"]).from_state(params, tensors, n_features=None)
    return detector, manifest


# -- the command's work ------------------------------------------------------------------------
def train_image_model(*, dataset: str, model: str, target_class, preset: str, epochs: int | None, seed: int, out_dir: Path,
                      store: DataStore, params: dict | None = None, threads: int | None = 1) -> dict:
    """Train ``model`` on the normal class ``target_class`` of ``dataset``; save it and its figures.

    Returns a summary: where it was written, AUROC/AUPRC on the test split (one-class protocol),
    precision/recall/F1 at the label-free threshold (5% false alarms on held-out normal images).
    """
    from offline.figures.images import save_grid

    if threads:
        torch.set_num_threads(threads)
    data = load_images(dataset, store)
    classes = data.resolve_class(target_class)
    overrides = dict(params or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    hyper = detector_params(model, preset, seed, overrides)
    limits = {"train_limit": QUICK_TRAIN_IMAGES, "test_limit": QUICK_TEST_IMAGES} if preset == "quick" else {}
    split = one_class_split(data, classes, seed=seed, **limits)
    log.info("%s on %s class %s: %d train, %d calibration, %d test images", model, dataset, class_label(dataset, classes),
             len(split.x_train), len(split.x_calibration), len(split.x_test))
    fit_kwargs = {"y": np.zeros(len(split.x_train), np.int64)} if model in ("cgan", "cvae") else {}
    if model in HELD_OUT_LOSS:
        fit_kwargs["X_val"] = split.x_calibration
    detector, seconds = fit_detector(model, hyper, split.x_train, **fit_kwargs)
    calibration = detector.score(split.x_calibration)
    scores = detector.score(split.x_test)
    threshold = threshold_at_false_alarm_rate(calibration, FALSE_ALARM_RATE)
    metrics = {**ranking_metrics(scores, split.y_test), **thresholded_metrics(scores, split.y_test, threshold),
               "threshold_rule": f"val-fpr-{FALSE_ALARM_RATE:g}", "train_seconds": round(seconds, 2)}
    name = f"{dataset}-{class_label(dataset, classes)}-{model}-seed{seed}-{preset}"
    directory = save_image_model(Path(out_dir) / name, detector, dataset=dataset, classes=classes, calibration_scores=calibration,
                                 metrics=metrics, extra={"history": getattr(detector, "history", [])[-5:], "preset": preset})
    figures = []
    if hasattr(detector, "sample"):
        try:
            figures.append(save_grid(detector.sample(25, seed=seed), directory / "samples.png", ncol=5,
                                     title=f"{model} samples ({dataset}, class {class_label(dataset, classes)})"))
        except NotImplementedError:
            pass
    try:
        normal = split.x_test[split.y_test == 0][:8]
        anomalous = split.x_test[split.y_test == 1][:8]
        rows = np.concatenate([normal, detector.expected(normal), anomalous, detector.expected(anomalous)])
        figures.append(save_grid(rows, directory / "reconstructions.png", ncol=8,
                                 title="rows: normal, reconstruction, anomalous, reconstruction"))
    except NotImplementedError:
        pass
    return {"directory": str(directory), "model": model, "dataset": dataset, "normal_classes": list(classes),
            "train_images": len(split.x_train), "test_images": len(split.x_test), "epochs_run": len(getattr(detector, "history", [])),
            **{k: metrics[k] for k in ("auroc", "auprc", "precision", "recall", "f1", "threshold_rule", "train_seconds")},
            "figures": [str(f) for f in figures]}
