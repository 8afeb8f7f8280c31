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
