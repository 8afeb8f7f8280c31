"""ULB credit-card fraud: 284,807 card transactions over two days, 492 frauds.

Columns: ``Time`` (seconds since the first transaction), ``V1``..``V28`` (PCA components),
``Amount`` and ``Class`` (1 = fraud). Canonical home: the ULB Machine Learning Group's release
(Kaggle "creditcardfraud"; OpenML data set 1597). The download URL below serves the same CSV.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offline.data.store import DataStore, RemoteFile
from offline.data.tabular import TabularData

CREDITCARD_CSV = RemoteFile(
    path="creditcard/creditcard.csv.gz",
    sha256="76274b691b16a6c49d3f159c883398e03ccd6d1ee12d9d8ee38f4b4b98551a89",
    urls=("https://storage.googleapis.com/download.tensorflow.org/data/creditcard.csv",),
    homepage="https://www.kaggle.com/datasets/mlg-ulb/creditcardfraud (ULB; OpenML data set 1597)",
)
FILES = (CREDITCARD_CSV,)
PCA_COLUMNS = [f"V{i}" for i in range(1, 29)]
RAW_COLUMNS = PCA_COLUMNS + ["Amount"]
HOUR_COLUMNS = ["hour_sin", "hour_cos"]
FEATURE_COLUMNS = RAW_COLUMNS + HOUR_COLUMNS
EXPECTED_ROWS = 284_807


def hour_of_day_columns(hours: np.ndarray) -> dict[str, np.ndarray]:
    """Time of day on the unit circle, so 23:59 sits next to 00:00. Fraud is more common at night;
    choosing this feature was checked on the training period only (benchmarks/results/creditcard_model_selection.txt)."""
    angle = 2 * np.pi * (np.asarray(hours, dtype=np.float64) % 24.0) / 24.0
    return {"hour_sin": np.sin(angle), "hour_cos": np.cos(angle)}


def load_creditcard(store: DataStore) -> TabularData:
    """Rows in time order; ``extra`` holds ``Time`` (seconds since the first transaction, which the
    release starts at midnight). ``Time`` itself is not a feature; its hour of day is."""
    path = store.path(CREDITCARD_CSV)
    frame = pd.read_csv(path, dtype="float64", engine="c")
    if len(frame) != EXPECTED_ROWS:
        raise ValueError(f"{path}: {len(frame)} rows, expected {EXPECTED_ROWS}")
    if not frame["Time"].is_monotonic_increasing:  # the release is time-ordered; the split relies on it
        frame = frame.sort_values("Time", kind="stable").reset_index(drop=True)
    features = frame[RAW_COLUMNS].astype("float32")
    for name, column in hour_of_day_columns(frame["Time"].to_numpy() / 3600.0).items():
        features[name] = column.astype("float32")
    return TabularData(
        name="creditcard",
        features=features,
        labels=frame["Class"].to_numpy(dtype="int8"),
        numeric=FEATURE_COLUMNS,
        log_scale=["Amount"],
        extra=frame[["Time"]],
    )
