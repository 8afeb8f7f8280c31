"""Benchmark protocols as splits: which rows train, which calibrate, which test.

Every split hands back index arrays into the dataset, so that the training command, the
benchmark and the replay of an evaluation slice all agree on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from offline.data.tabular import TabularData


@dataclass
class Split:
    train: np.ndarray  # normal rows the detector is fitted on
    calibration: np.ndarray  # held-out normal rows: early stopping, thresholds, conformal p-values
    test: np.ndarray  # rows scored for the report (normal and anomalous)
    description: str


def time_ordered_split(
    data: TabularData, *, train_fraction: float = 0.6, calibration_fraction: float = 0.15
) -> Split:
    """Credit-card protocol: the earliest ``train_fraction`` of rows (time order) is the training
    period; its normal rows train the model, except the latest ``calibration_fraction`` of them,
    which are held out for calibration. Every later row is test. No test label is looked at."""
    n = len(data)
    cut = int(round(n * train_fraction))
    period_normals = np.flatnonzero(data.labels[:cut] == 0)
    n_cal = int(round(len(period_normals) * calibration_fraction))
    return Split(
        train=period_normals[: len(period_normals) - n_cal],
        calibration=period_normals[len(period_normals) - n_cal :],
        test=np.arange(cut, n),
        description=f"time-ordered: train on normal rows of the earliest {train_fraction:.0%} "
        f"(latest {calibration_fraction:.0%} of them held out for calibration), test on the last {1 - train_fraction:.0%}",
    )


# -- KDD Cup 99 and NSL-KDD ----------------------------------------------------------------------
KDD_NORMAL_LABEL = "normal."


def dagmm_labels(data: TabularData) -> np.ndarray:
    """The DAGMM/EGBAD reading of KDD Cup 99: the ``normal.`` rows (~20%) are the anomalies (1)."""
    return (data.extra["label"].to_numpy() == KDD_NORMAL_LABEL).astype(np.int8)


def dagmm_split(data: TabularData, *, seed: int = 0, validation_fraction: float = 0.1) -> Split:
    """KDD Cup 99 (10%) under the DAGMM/EGBAD protocol (Zong et al. 2018; Zenati et al. 2018).

    A random 50/50 split of all rows per ``seed``; the detector is fitted only on the attack rows
    (non-``normal.``) of the training half, except a random ``validation_fraction`` of them that is
    held out (early stopping, calibration); the test set is the whole other half, scored with
    ``dagmm_labels`` (``normal.`` = anomaly) and thresholded at its top 20% of scores.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    half = len(data) // 2
    train_half, test = np.sort(order[:half]), np.sort(order[half:])
    attacks = train_half[dagmm_labels(data)[train_half] == 0]
    held_out = rng.random(len(attacks)) < validation_fraction
    return Split(
        train=attacks[~held_out],
        calibration=attacks[held_out],
        test=test,
        description=f"DAGMM/EGBAD: random 50/50 split (seed {seed}); train on the attack rows of the training half "
        f"({validation_fraction:.0%} of them held out), test on the other half with normal. rows as the anomalies",
    )


def dagmm_validation_normals(data: TabularData, *, seed: int = 0) -> np.ndarray:
    """The ``normal.`` rows of the DAGMM training half (never trained on, never test): used only to
    choose hyperparameters and score definitions without looking at test labels."""
    order = np.random.default_rng(seed).permutation(len(data))
    train_half = np.sort(order[: len(data) // 2])
    return train_half[dagmm_labels(data)[train_half] == 1]


def kdd_normal_traffic_split(
    data: TabularData, *, seed: int = 0, test_fraction: float = 0.5, calibration_fraction: float = 0.1
) -> Split:
    """KDD Cup 99 for a deployable access-log model (``python -m offline.train --dataset kddcup99``):
    a random split, fit on the normal rows of the training part, calibrate on a held-out tenth of
    them, test on the rest with attacks as the anomalies (the reading the worker serves). The
    published benchmark protocol is ``dagmm_split``, whose model flags normal traffic instead."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    n_test = int(round(len(data) * test_fraction))
    test, train_part = np.sort(order[:n_test]), np.sort(order[n_test:])
    normals = train_part[data.labels[train_part] == 0]
    held_out = rng.random(len(normals)) < calibration_fraction
    return Split(
        train=normals[~held_out], calibration=normals[held_out], test=test,
        description=f"random {1 - test_fraction:.0%}/{test_fraction:.0%} split (seed {seed}): train on normal rows of the "
        f"training part ({calibration_fraction:.0%} held out for calibration), test on the rest, attacks anomalous",
    )


def nsl_kdd_split(data: TabularData, *, seed: int = 0, calibration_fraction: float = 0.1) -> Split:
    """NSL-KDD: fit on the normal rows of KDDTrain+, a random ``calibration_fraction`` of them held
    out for calibration and label-free thresholds; test on all of KDDTest+ (attacks anomalous)."""
    part = data.extra["part"].to_numpy()
    normals = np.flatnonzero((part == "train") & (data.labels == 0))
    held_out = np.random.default_rng(seed).random(len(normals)) < calibration_fraction
    return Split(
        train=normals[~held_out], calibration=normals[held_out], test=np.flatnonzero(part == "test"),
        description=f"NSL-KDD: train on normal rows of KDDTrain+ ({calibration_fraction:.0%} held out for calibration, "
        f"seed {seed}), test on KDDTest+ (attacks anomalous)",
    )
