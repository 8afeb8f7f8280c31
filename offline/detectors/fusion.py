"""Fusion of calibrated detectors: Fisher's combination of their conformal p-values.

Each member is fitted on the same normal rows and scored on held-out normal rows (``X_val``, or a
tenth of ``X`` held out when none is given); a new row's p-value under a member is the share of
those held-out scores at or above its score, ``(1 + #{cal >= s}) / (n_cal + 1)``, and the fused
score is Fisher's statistic ``sum_m -log p_m``. It needs no labels and no weights, and members
whose scores live on unrelated scales (a Dirichlet log-density, a reconstruction error) meet on
one: how unusual the row is for each of them.

Why: on the one-class image protocol the GEOM-style classifier and the VAE fail on different
classes (the VAE is better on MNIST digits 0 and 1, the classifier on most others), so one can
cover the other's blind spot. The default members are ``("geom", "vae")``; the images suite
reports the fusion apart from the seed's models, beside geom.

A row beyond every held-out score gets the smallest p-value, ``1 / (n_cal + 1)``, under that
member: with ~600 held-out images, such rows tie on that member and are ordered by the others.
``history`` holds the members' training rows, each tagged with its ``member``.

The images suite sets its label-free threshold (5% false alarms) on the fused scores of the same
held-out images the p-values were calibrated on. A held-out image's p-value counts the image
itself, so it is 1/(n_cal + 1) larger (~0.002 with 600 images) than a new normal image's with the
same score would be: its fused score is a little lower, and so is the threshold, which errs
towards more false alarms than 5%, not fewer. The VAE also stops early on those images, which
makes them a little more normal to it than unseen ones, with the same sign.
"""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.base import Detector, as_float32
from offline.detectors.labelled import surprise

CALIBRATION_KEY = "meta.calibration"
DEFAULT_MEMBERS = ("geom", "vae")
HELD_OUT_FRACTION = 0.1


def fisher_statistic(surprises: list[np.ndarray]) -> np.ndarray:
    """Fisher's combination ``sum -log p`` of the members' :func:`~offline.detectors.labelled.surprise`
    (``-log`` of each conformal p-value): higher = more anomalous."""
    return np.sum(surprises, axis=0)


class FusionDetector(Detector):
    """Fisher's combination of members' conformal p-values (see the module docstring)."""

    name = "fusion"
    images_only = True

    def __init__(self, *, members: tuple[str, ...] | list[str] = DEFAULT_MEMBERS, member_params: dict | None = None,
                 epochs: int | None = None, seed: int = 0, device: str = "cpu", progress: bool = True):
        from offline.detectors import REGISTRY

        members = tuple(members)
        unknown = [m for m in members if m not in REGISTRY or m == self.name]
        if len(members) < 2 or unknown:
            raise ValueError(f"fusion needs two or more known member models, got {list(members)}"
                             + (f" ({', '.join(unknown)} unknown)" if unknown else ""))
        self.members, self.member_params = members, dict(member_params or {})
        self.epochs, self.seed, self.device, self.progress = epochs, seed, device, progress
        self.detectors: dict[str, Detector] = {}
        self.calibration: dict[str, np.ndarray] = {}
        self.history: list[dict] = []

    def _params(self, member: str) -> dict:
        params = {**self.member_params.get(member, {}), "seed": self.seed, "device": self.device, "progress": self.progress}
        if self.epochs is not None:
            params["epochs"] = self.epochs
        return params

    def fit(self, X, *, X_val=None) -> "FusionDetector":
        from offline.detectors import make_detector

        X = as_float32(X)
        if X_val is None or not len(X_val):
            order = np.random.default_rng(self.seed).permutation(len(X))
            n_held = max(int(len(X) * HELD_OUT_FRACTION), 1)
            X, X_val = X[order[n_held:]], X[order[:n_held]]
        X_val = as_float32(X_val)
        self.detectors, self.calibration, self.history = {}, {}, []
        for member in self.members:
            detector = make_detector(member, **self._params(member)).fit(X, X_val=X_val)
            self.detectors[member] = detector
            self.calibration[member] = np.sort(detector.score(X_val))
            self.history += [{**row, "member": member} for row in getattr(detector, "history", [])]
        return self

    def surprises(self, X) -> dict[str, np.ndarray]:
        """Each member's ``-log`` conformal p-value of every row."""
        if not self.detectors:
            raise RuntimeError("fusion: call fit() before score()")
        X = as_float32(X)
        return {m: surprise(self.detectors[m].score(X), self.calibration[m]) for m in self.members}

    def score(self, X) -> np.ndarray:
        return fisher_statistic(list(self.surprises(X).values()))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for member, detector in self.detectors.items():
            tensors.update({f"{member}.{k}": v for k, v in detector.state_tensors().items()})
            tensors[f"{CALIBRATION_KEY}.{member}"] = torch.from_numpy(np.ascontiguousarray(self.calibration[member]))
        return tensors

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int | None = None) -> "FusionDetector":
        from offline.detectors import detector_class

        fusion = cls(**params)
        for member in fusion.members:
            prefix = f"{member}."
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            fusion.detectors[member] = detector_class(member).from_state(fusion._params(member), own, n_features=n_features)
            fusion.calibration[member] = tensors[f"{CALIBRATION_KEY}.{member}"].numpy()
        return fusion
