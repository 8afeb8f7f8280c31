"""Generative models on *all* classes of an image dataset, and how to measure them.

Shared by ``offline.generative.sample`` (sample grids), ``offline.generative.latent`` (t-SNE/PCA of latent codes) and
``offline.generative.gan_vs_vae`` (the measured comparison). Models are trained once per
(dataset, model, seed, epochs, train_limit) and kept under ``runs/generative/`` as safetensors +
manifest (see ``offline.training.images.save_image_model``), so the three commands reuse them.

Measures, all in the feature space of a small classifier we train per dataset
(:class:`offline.models.images.SmallClassifier`, its 128-d penultimate layer):

- *Frechet distance in the classifier's feature space* (the FID formula, but NOT Inception FID:
  the numbers are not comparable with published FIDs);
- *class coverage* of generated samples: how many classes get at least 2% of them (uniform is
  10%), and the KL divergence of the predicted class histogram from uniform;
- *linear-probe accuracy* on latent codes: z drawn from the prior, labelled by the classifier's
  reading of the generated image, a logistic regression from z to that label (held-out accuracy);
  same procedure for GAN and VAE. For the VAE, also the probe from encoder means mu(x) to true labels;
- *interpolation smoothness*: along straight lines between two prior draws (16 steps), the
  path length in feature space divided by the endpoint distance (1 = even, straight) and the
  largest single step divided by the mean step (1 = no jumps).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from offline.data.images import ImageData
from offline.detectors import Detector, make_detector
from offline.detectors.training import adam_step, place, predict_in_chunks, seed_everything, train_loop

log = logging.getLogger("offline.generative.measures")

RUNS = Path("runs/generative")


# -- the evaluation classifier ------------------------------------------------------------------
class FeatureClassifier:
    """A small conv classifier trained on the dataset's train split; ``features`` = its 128-d embedding."""

    def __init__(self, data: ImageData, *, epochs: int = 2, train_limit: int | None = None, seed: int = 0, progress: bool = True,
                 device: str = "cpu"):
        from offline.models.images import SmallClassifier

        generator = seed_everything(seed)
        x, y = data.x_train, data.y_train
        if train_limit:
            keep = np.random.default_rng(seed).permutation(len(y))[:train_limit]
            x, y = x[keep], y[keep]
        self.device = device
        self.net = place(SmallClassifier(x.shape[1], len(data.class_names), image_size=x.shape[-1]), device)
        step = adam_step(self.net, lambda batch: F.cross_entropy(self.net(batch[0]), batch[1]), lr=1e-3)
        self.history = train_loop(self.net, step, (x, y), epochs=epochs, batch_size=128, generator=generator, desc="classifier",
                                  progress=progress, device=device)
        self.test_accuracy = float((self.predict(data.x_test) == data.y_test).mean())

    def features(self, X: np.ndarray) -> np.ndarray:
        return predict_in_chunks(self.net.features, np.asarray(X, np.float32), chunk=1024, device=self.device)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return predict_in_chunks(lambda x: self.net(x).argmax(1), np.asarray(X, np.float32), chunk=1024, device=self.device).astype(np.int64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    offset = np.eye(len(cov_a)) * 1e-6  # keeps the square root defined when a covariance is singular (collapsed samples)
    covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def class_coverage(predicted: np.ndarray, n_classes: int, *, min_share: float = 0.02) -> dict:
    share = np.bincount(predicted, minlength=n_classes) / max(len(predicted), 1)
    nonzero = share[share > 0]
    return {"classes_covered": int((share >= min_share).sum()),
            "kl_from_uniform": float((nonzero * np.log(nonzero * n_classes)).sum()),
            "max_class_share": float(share.max())}


# -- generators behind one interface ----------------------------------------------------------
def latent_size(detector: Detector) -> int:
    return int(getattr(detector, "latent", None) or detector.latent_dim)


def decode(detector: Detector, z: np.ndarray) -> np.ndarray:
    if hasattr(detector, "decode"):  # VAE
        return detector.decode(z)
    return predict_in_chunks(lambda t: detector._out(detector.nets["G"](t)), z.astype(np.float32), chunk=512, device=detector.device)


def prior(n: int, dim: int, seed: int) -> np.ndarray:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)).numpy()


def latent_probe(detector: Detector, classifier: FeatureClassifier, *, n: int = 4000, seed: int = 0) -> float:
    z = prior(n, latent_size(detector), seed + 101)
    labels = classifier.predict(decode(detector, z))
    if len(np.unique(labels)) < 2:
        return float("nan")
    z_train, z_test, y_train, y_test = train_test_split(z, labels, test_size=0.25, random_state=seed)
    probe = LogisticRegression(max_iter=500).fit(z_train, y_train)
    return float(probe.score(z_test, y_test))


def encoder_probe(codes: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    c_train, c_test, y_train, y_test = train_test_split(codes, labels, test_size=0.25, random_state=seed, stratify=labels)
    return float(LogisticRegression(max_iter=500).fit(c_train, y_train).score(c_test, y_test))


def interpolation_smoothness(detector: Detector, classifier: FeatureClassifier, *, pairs: int = 64, steps: int = 16, seed: int = 0) -> dict:
    dim = latent_size(detector)
    a, b = prior(pairs, dim, seed + 202), prior(pairs, dim, seed + 303)
    t = np.linspace(0, 1, steps, dtype=np.float32)[None, :, None]
    path = (a[:, None] * (1 - t) + b[:, None] * t).reshape(-1, dim)
    feats = classifier.features(decode(detector, path)).reshape(pairs, steps, -1)
    step = np.linalg.norm(np.diff(feats, axis=1), axis=2)
    ends = np.linalg.norm(feats[:, -1] - feats[:, 0], axis=1)
    return {"interp_path_ratio": float(np.median(step.sum(1) / np.maximum(ends, 1e-8))),
            "interp_max_step_ratio": float(np.median(step.max(1) / np.maximum(step.mean(1), 1e-8)))}


def measure(detector: Detector, classifier: FeatureClassifier, real_features: np.ndarray, n_classes: int, *, n: int = 10_000,
            seed: int = 0) -> dict:
    samples = decode(detector, prior(n, latent_size(detector), seed))
    return {"frechet_classifier": frechet_distance(classifier.features(samples), real_features),
            **class_coverage(classifier.predict(samples), n_classes)}


def conditional_rates(detector: Detector, classifier: FeatureClassifier, n_classes: int, *, per_class: int = 1000,
                      seed: int = 0) -> np.ndarray:
    """For each class c, the share of ``per_class`` samples requested as c that the classifier reads as c."""
    rates = []
    for c in range(n_classes):
        samples = detector.sample(per_class, seed=seed + 1000 * (c + 1), labels=np.full(per_class, c))
        rates.append(float((classifier.predict(samples) == c).mean()))
    return np.asarray(rates)


def class_recall(classifier: FeatureClassifier, data: ImageData) -> np.ndarray:
    """The classifier's recall per class on the real test images: the ceiling of a rate it judges."""
    predicted = classifier.predict(data.x_test)
    return np.asarray([float((predicted[data.y_test == c] == c).mean()) for c in range(len(data.class_names))])


# -- training on all classes, cached ------------------------------------------------------------
def run_dir(dataset: str, model: str, seed: int, epochs: int, train_limit: int | None) -> Path:
    return RUNS / dataset / f"{model}-seed{seed}-e{epochs}-n{train_limit or 'all'}"


def training_images(data: ImageData, train_limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not train_limit:
        return data.x_train, data.y_train
    keep = np.sort(np.random.default_rng(seed).permutation(len(data.y_train))[:train_limit])
    return data.x_train[keep], data.y_train[keep]


GENERATIVE_DEFAULTS = {"vae": {"latent_dim": 16}, "cvae": {"latent_dim": 16}}


def train_all_classes(data: ImageData, model: str, *, seed: int, epochs: int, train_limit: int | None, runs: Path = RUNS,
                      per_epoch: callable | None = None, progress: bool = True, device: str = "cpu") -> tuple[Detector, list[dict]]:
    """Train ``model`` on every class; per-epoch measurements via ``per_epoch(detector) -> dict``
    (the detector's ``on_epoch_end`` callback, called by the training loop after every epoch)."""
    from offline.training.images import load_image_model, save_image_model

    directory = Path(runs) / data.name / f"{model}-seed{seed}-e{epochs}-n{train_limit or 'all'}"
    if (directory / "manifest.json").exists() and per_epoch is None:
        detector, manifest = load_image_model(directory)
        return detector, manifest.get("extra", {}).get("per_epoch", [])
    x, y = training_images(data, train_limit, seed)
    params = {**GENERATIVE_DEFAULTS.get(model, {}), "epochs": epochs, "seed": seed, "progress": progress, "device": device}
    detector = make_detector(model, **params)
    per_epoch_rows: list[dict] = []
    start = time.perf_counter()
    if per_epoch is not None:
        detector.on_epoch_end = lambda det, row: per_epoch_rows.append({**row, **per_epoch(det)})
    kwargs = {"y": y} if model in ("cgan", "cvae") else {}
    detector.fit(x, **kwargs)
    detector.on_epoch_end = None
    seconds = time.perf_counter() - start
    save_image_model(directory, detector, dataset=data.name, classes=tuple(range(len(data.class_names))),
                     calibration_scores=np.zeros(10), metrics={"train_seconds": seconds},
                     extra={"per_epoch": per_epoch_rows, "epochs": epochs, "train_limit": train_limit})
    log.info("%s on all of %s (seed %d, %d epochs): %.0fs", model, data.name, seed, epochs, seconds)
    return detector, per_epoch_rows
