"""The feature schema: raw columns -> one float32 array, fitted offline and carried in the bundle.

Numeric columns are (optionally log1p-ed and) standardised with training statistics; categorical
columns are one-hot encoded with the training vocabulary plus an ``<other>`` bucket, so that a
value never seen in training is encoded, counted and explained instead of crashing the worker.
The same object featurizes a pandas DataFrame offline and a dict of columns online.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

OTHER = "<other>"


class FeatureError(ValueError):
    """Raised per row set when values cannot be featurized; carries the offending row indices."""

    def __init__(self, message: str, rows: np.ndarray):
        super().__init__(message)
        self.rows = rows


@dataclass
class FeatureSchema:
    numeric: list[str]
    categorical: list[str] = field(default_factory=list)
    log_scale: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)  # per numeric column, after log1p
    std: list[float] = field(default_factory=list)
    vocabularies: dict[str, list[str]] = field(default_factory=dict)

    # -- fitting and (de)serialisation -------------------------------------------------------
    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
        log_scale: Sequence[str] = (),
        max_categories: int = 100,
    ) -> "FeatureSchema":
        schema = cls(numeric=list(numeric), categorical=list(categorical), log_scale=list(log_scale))
        values = schema._numeric_block({c: frame[c].to_numpy() for c in schema.numeric})
        schema.mean = values.mean(axis=0).astype(float).tolist()
        std = values.std(axis=0)
        schema.std = np.where(std > 1e-8, std, 1.0).astype(float).tolist()  # constant columns stay 0
        for column in schema.categorical:
            counts = frame[column].astype(str).value_counts()
            schema.vocabularies[column] = sorted(counts.index[:max_categories].tolist())
        return schema

    def to_dict(self) -> dict:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "log_scale": self.log_scale,
            "mean": self.mean,
            "std": self.std,
            "vocabularies": self.vocabularies,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "FeatureSchema":
        schema = cls(**{k: data[k] for k in ("numeric", "categorical", "log_scale", "mean", "std", "vocabularies")})
        if len(schema.mean) != len(schema.numeric) or len(schema.std) != len(schema.numeric):
            raise ValueError("feature schema: mean/std do not match the numeric columns")
        missing = [c for c in schema.categorical if c not in schema.vocabularies]
        if missing:
            raise ValueError(f"feature schema: no vocabulary for categorical columns {missing}")
        return schema

    # -- the transform -----------------------------------------------------------------------
    @property
    def input_columns(self) -> list[str]:
        return self.numeric + self.categorical

    @property
    def output_names(self) -> list[str]:
        names = list(self.numeric)
        for column in self.categorical:
            names += [f"{column}={v}" for v in self.vocabularies[column]] + [f"{column}={OTHER}"]
        return names

    @property
    def n_features(self) -> int:
        return len(self.output_names)

    def _numeric_block(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        block = np.empty((len(columns[self.numeric[0]]) if self.numeric else 0, len(self.numeric)), dtype=np.float64)
        for j, name in enumerate(self.numeric):
            column = np.asarray(columns[name], dtype=np.float64)
            if name in self.log_scale:
                with np.errstate(invalid="ignore"):
                    column = np.sign(column) * np.log1p(np.abs(column))
            block[:, j] = column
        return block

    def transform(self, columns: Mapping[str, Sequence] | pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Featurize; returns ``(X float32 (n, n_features), unseen_category_counts (n,))``.

        Raises ``FeatureError`` naming the rows whose numeric values are missing or not finite.
        """
        if isinstance(columns, pd.DataFrame):
            columns = {c: columns[c].to_numpy() for c in self.input_columns}
        missing = [c for c in self.input_columns if c not in columns]
        if missing:
            raise FeatureError(f"missing columns {missing}", rows=np.arange(0))
        numeric = (self._numeric_block(columns) - np.asarray(self.mean)) / np.asarray(self.std)
        bad = ~np.isfinite(numeric).all(axis=1)
        if bad.any():
            raise FeatureError(
                f"{int(bad.sum())} rows have missing or non-finite numeric values", rows=np.flatnonzero(bad)
            )
        blocks = [numeric.astype(np.float32)]
        unseen = np.zeros(len(numeric), dtype=np.int32)
        for column in self.categorical:
            vocabulary = self.vocabularies[column]
            values = np.asarray(columns[column]).astype(str)
            # searchsorted on the sorted vocabulary: one vectorised lookup instead of a dict per row
            position = np.searchsorted(vocabulary, values)
            known = (position < len(vocabulary)) & (np.asarray(vocabulary, dtype=object)[np.minimum(position, len(vocabulary) - 1)] == values) if vocabulary else np.zeros(len(values), bool)
            position = np.where(known, position, len(vocabulary))
            onehot = np.zeros((len(values), len(vocabulary) + 1), dtype=np.float32)
            onehot[np.arange(len(values)), position] = 1.0
            unseen += ~known
            blocks.append(onehot)
        return np.concatenate(blocks, axis=1), unseen

    def numeric_to_raw(self, X: np.ndarray) -> np.ndarray:
        """Map the numeric block of featurized rows (e.g. a reconstruction) back to raw units."""
        values = X[:, : len(self.numeric)].astype(np.float64) * np.asarray(self.std) + np.asarray(self.mean)
        for j, name in enumerate(self.numeric):
            if name in self.log_scale:
                values[:, j] = np.sign(values[:, j]) * np.expm1(np.abs(values[:, j]))
        return values
