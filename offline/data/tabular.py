"""The container every tabular dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class TabularData:
    """Raw feature columns, labels (1 = anomaly under the dataset's usual reading) and column kinds.

    ``features`` keeps the columns as they come from the source (no scaling): the bundle's
    ``FeatureSchema`` is fitted on them, so the worker can featurize raw events the same way.
    """

    name: str
    features: pd.DataFrame
    labels: np.ndarray
    numeric: list[str]
    categorical: list[str] = field(default_factory=list)
    log_scale: list[str] = field(default_factory=list)  # numeric columns fed through log1p
    extra: pd.DataFrame | None = None  # columns that are not features (time, raw label, ...)

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.features)} feature rows but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "TabularData":
        return TabularData(
            name=self.name,
            features=self.features.iloc[index].reset_index(drop=True),
            labels=self.labels[index],
            numeric=self.numeric,
            categorical=self.categorical,
            log_scale=self.log_scale,
            extra=None if self.extra is None else self.extra.iloc[index].reset_index(drop=True),
        )
