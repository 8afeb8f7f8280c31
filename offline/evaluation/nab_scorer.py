"""NAB's own score (Lavin & Ahmad 2015), reimplemented with numpy from the rules of numenta/NAB.

The rules below are those of NAB's code (``nab/sweeper.py``, ``nab/scorer.py``,
``nab/optimizer.py`` and ``Runner.normalize`` in ``nab/runner.py``); the module is checked against
NAB's published ``results/final_results.json`` by ``python -m benchmarks.nab_scorer_check``.

Every row of a series gets a *sweep value*, what it would add if it were a detection:

- inside a labelled window of ``w`` rows ending at row ``b``, row ``i`` sits at relative position
  ``p = -(b - i + 1) / w`` (-1 at the window's first row, -1/w at its last) and is worth
  ``tpWeight * sigma(p) / sigma(-1)`` with the scaled sigmoid ``sigma(x) = 2 / (1 + exp(5x)) - 1``
  (``-1`` beyond ``x > 3``): a detection at the first row of a window earns exactly ``tpWeight``,
  one at its end almost nothing, so early detection pays;
- outside every window, before the first window, it is worth ``-fpWeight``; after a window it is
  worth ``fpWeight * sigma(|i - b| / (w - 1))`` with ``b`` and ``w`` the end and length of the
  *preceding* window: an alert just after a window costs little (it may be the same anomaly,
  seen late), one far from it (more than 3 window lengths) costs the full ``fpWeight``.

The score of a series at a set of detections (``anomaly_score >= threshold`` in NAB):

- rows of the probationary period, the first ``min(floor(0.15 * rows), 750)`` rows, are ignored
  entirely (neither true nor false positives, nor counted);
- each window that has a row after the probationary period adds the value of its *earliest*
  detection (later ones add nothing), or ``-fnWeight`` when it has none (a window that lies
  wholly inside the probationary period adds nothing at all: NAB never sees it);
- each detection outside the windows adds its (negative) sweep value.

NAB's ``tp, fp, fn, tn`` are *row* counts over the scored rows (detected rows inside / outside
windows, undetected rows inside / outside); the window counts are given beside them.

Over a corpus, the raw scores ``S`` are summed and normalised as NAB's runner does:
``100 * (S - S_null) / (S_perfect - S_null)``, where the null detector (no detection) scores
``-fnWeight`` per window and the perfect one ``tpWeight`` per window (NAB's runner counts every
window of the label file; none of NAB's windows starts inside a probationary period, so that is
what a detector firing on the first row of every window gets).

NAB's scoreboard thresholds each detector's anomaly scores at the one threshold, for the whole
corpus, that maximises the summed raw score (``nab/optimizer.py`` sweeping every distinct
score): that uses the labels, so it is an oracle figure ("NAB convention"), not an operating rule;
:func:`optimise_threshold` computes it.

>>> import numpy as np
>>> t = np.arange(100)                        # row indices work as well as timestamps
>>> alerts = np.zeros(100, bool); alerts[[5, 40, 45, 51]] = True
>>> s = score_series(t, [(40, 49)], alerts, STANDARD)  # 5: probation; 40: +1; 45: later; 51: -0.11 * 0.505
>>> round(s.score, 4), s.windows_detected, s.tp, s.fp, probationary_length(100)
(0.9445, 1, 2, 1, 15)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# NAB's probationary period (15%, capped at ``probationPercent * 5000`` rows, ``nab/util.py``) lives with the data
from offline.data.nab import PROBATIONARY_CAP_ROWS, PROBATIONARY_FRACTION, probationary_length  # noqa: E402,F401

#: the threshold NAB's sweep starts from, above every anomaly score (no detection)
NO_DETECTION_THRESHOLD = 1.1


@dataclass(frozen=True)
class Profile:
    """A NAB application profile: the cost matrix that weights the score's parts.

    ``tn_weight`` is in NAB's profiles but its score never uses it (true negatives are free).
    """

    name: str
    tp_weight: float
    fn_weight: float
    fp_weight: float
    tn_weight: float = 1.0

    @classmethod
    def from_cost_matrix(cls, name: str, cost_matrix: Mapping[str, float]) -> Profile:
        """From NAB's ``{"tpWeight": .., "fnWeight": .., "fpWeight": .., "tnWeight": ..}``."""
        return cls(name, float(cost_matrix["tpWeight"]), float(cost_matrix["fnWeight"]),
                   float(cost_matrix["fpWeight"]), float(cost_matrix.get("tnWeight", 1.0)))


# numenta/NAB config/profiles.json (commit ea702d7), copied as numbers
STANDARD = Profile("standard", tp_weight=1.0, fn_weight=1.0, fp_weight=0.11, tn_weight=1.0)
REWARD_LOW_FP = Profile("reward_low_FP_rate", tp_weight=1.0, fn_weight=1.0, fp_weight=0.22, tn_weight=1.0)
REWARD_LOW_FN = Profile("reward_low_FN_rate", tp_weight=1.0, fn_weight=2.0, fp_weight=0.11, tn_weight=1.0)
PROFILES: dict[str, Profile] = {p.name: p for p in (STANDARD, REWARD_LOW_FP, REWARD_LOW_FN)}


@dataclass(frozen=True)
class SeriesScore:
    """NAB's score of one series, with what normalisation needs (its null and perfect scores)."""

    score: float
    null: float
    perfect: float
    tp: int  # NAB's counts: scored rows, detected / not, inside / outside windows
    fp: int
    fn: int
    tn: int
    windows: int
    windows_detected: int
    probation: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


@dataclass(frozen=True)
class CorpusScore:
    """Raw scores summed over a corpus and NAB's normalised score (null 0, perfect 100)."""

    score: float
    null: float
    perfect: float
    normalised: float
    tp: int
    fp: int
    fn: int
    tn: int
    windows: int
    windows_detected: int


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's ``2 * sigmoid(-5x) - 1``: ~0.987 at -1 (a window's start), 0 at 0, -1 beyond 3."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore"):
        value = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, value)


def window_indices(timestamps: np.ndarray, windows: Sequence[tuple]) -> np.ndarray:
    """``(k, 2)`` first and last row of each window: rows with ``start <= t <= end``.

    NAB requires window bounds to be timestamps of the series; nearest rows inside the bounds are
    taken here, so a window given in coarser time still maps to the rows it covers. Windows must
    be in time order and not overlap (NAB's label files guarantee both).
    """
    timestamps = np.asarray(timestamps)
    if len(windows) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    bounds = np.asarray(windows)
    if timestamps.dtype.kind == "M":
        bounds = bounds.astype(timestamps.dtype)
    if bounds.ndim != 2 or bounds.shape[1] != 2:
        raise ValueError(f"windows must be (start, end) pairs, got shape {bounds.shape}")
    first = np.searchsorted(timestamps, bounds[:, 0], side="left")
    last = np.searchsorted(timestamps, bounds[:, 1], side="right") - 1
    if np.any(last < first):
        raise ValueError(f"window(s) {np.flatnonzero(last < first).tolist()} cover no row of the series")
    if np.any(first[1:] <= last[:-1]):
        raise ValueError("windows must be in time order and must not overlap")
    return np.stack([first, last], axis=1).astype(np.int64)


def sweep_values(n_rows: int, windows_idx: np.ndarray, profile: Profile = STANDARD) -> tuple[np.ndarray, np.ndarray]:
    """Per row: what a detection there would add (NAB's sweep score) and its window (-1: none).

    See the module docstring for the rule; NAB computes the same value in ``calcSweepScore``.
    """
    rows = np.arange(n_rows)
    value = np.full(n_rows, -profile.fp_weight)  # before the first window: far from any window
    window = np.full(n_rows, -1, dtype=np.int64)
    max_tp = float(scaled_sigmoid(-1.0))
    for k, (first, last) in enumerate(np.asarray(windows_idx).reshape(-1, 2)):
        width = last - first + 1
        inside = rows[first:last + 1]
        value[first:last + 1] = scaled_sigmoid(-(last - inside + 1) / width) * profile.tp_weight / max_tp
        window[first:last + 1] = k
        stop = windows_idx[k + 1][0] if k + 1 < len(windows_idx) else n_rows
        after = rows[last + 1:stop]
        # NAB divides by (width - 1); a one-row window makes every later FP "far" (NAB would raise)
        with np.errstate(divide="ignore"):
            past = (after - last) / float(width - 1) if width > 1 else np.full(len(after), np.inf)
        value[last + 1:stop] = scaled_sigmoid(past) * profile.fp_weight
    return value, window


def score_series(timestamps: np.ndarray, windows: Sequence[tuple], detections: np.ndarray,
                 profile: Profile = STANDARD, *, probation: int | None = None) -> SeriesScore:
    """NAB's raw score of one series at boolean ``detections`` (one per row).

    ``timestamps`` are sorted (datetime64 or row numbers), ``windows`` ``(start, end)`` pairs in
    the same units (strings are parsed when timestamps are datetime64), as in
    ``labels/combined_windows.json``. ``probation`` defaults to :func:`probationary_length`.
    """
    timestamps = np.asarray(timestamps)
    detections = np.asarray(detections, dtype=bool)
    if detections.shape != timestamps.shape:
        raise ValueError(f"{len(detections)} detections for {len(timestamps)} rows")
    n = len(timestamps)
    probation = probationary_length(n) if probation is None else int(probation)
    windows_idx = window_indices(timestamps, windows)
    value, window = sweep_values(n, windows_idx, profile)
    scored = np.arange(n) >= probation
    hit = detections & scored
    inside = window >= 0

    k = len(windows_idx)
    seen = np.zeros(k, dtype=bool)  # windows with at least one scored row; the others are not NAB's
    seen[window[scored & inside]] = True
    earliest = np.full(k, n, dtype=np.int64)
    np.minimum.at(earliest, window[hit & inside], np.flatnonzero(hit & inside))
    detected = earliest < n
    window_part = np.where(detected, value[np.minimum(earliest, n - 1)], -profile.fn_weight)
    score = float(window_part[seen].sum() + value[hit & ~inside].sum())
    return SeriesScore(
        score=score,
        null=-profile.fn_weight * int(seen.sum()),
        perfect=profile.tp_weight * k,
        tp=int((hit & inside).sum()), fp=int((hit & ~inside).sum()),
        fn=int((scored & inside & ~detections).sum()), tn=int((scored & ~inside & ~detections).sum()),
        windows=k, windows_detected=int((detected & seen).sum()), probation=probation,
    )


def score_series_at(timestamps: np.ndarray, windows: Sequence[tuple], anomaly_scores: np.ndarray,
                    threshold: float, profile: Profile = STANDARD, *, probation: int | None = None) -> SeriesScore:
    """:func:`score_series` with NAB's detection rule: ``anomaly_score >= threshold``."""
    return score_series(timestamps, windows, np.asarray(anomaly_scores, dtype=float) >= threshold,
                        profile, probation=probation)


def score_corpus_at(series: Iterable[tuple[np.ndarray, Sequence[tuple], np.ndarray]], threshold: float,
                    profile: Profile = STANDARD) -> CorpusScore:
    """NAB's corpus score at one threshold for every series: ``(timestamps, windows, anomaly_scores)``."""
    return corpus_score(score_series_at(t, w, s, threshold, profile) for t, w, s in series)


def normalised_score(score: float, null: float, perfect: float) -> float:
    """NAB's ``100 * (S - S_null) / (S_perfect - S_null)``: the null detector 0, the perfect 100."""
    return 100.0 * (score - null) / (perfect - null)


def corpus_score(series: Iterable[SeriesScore]) -> CorpusScore:
    """Sum the series' raw, null and perfect scores and counts, then normalise once (as NAB does)."""
    series = list(series)
    total = {f: sum(getattr(s, f) for s in series)
             for f in ("score", "null", "perfect", "tp", "fp", "fn", "tn", "windows", "windows_detected")}
    return CorpusScore(normalised=normalised_score(total["score"], total["null"], total["perfect"]), **total)


def threshold_sweep(series: Iterable[tuple[np.ndarray, Sequence[tuple], np.ndarray]],
                    profile: Profile = STANDARD, *, probation_fraction: float = PROBATIONARY_FRACTION
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The corpus's summed raw score at every threshold NAB's sweeper tries.

    ``series`` yields ``(timestamps, windows, anomaly_scores)``. Thresholds are
    :data:`NO_DETECTION_THRESHOLD` (nothing detected) then every distinct anomaly score of a
    scored row, descending; the score at ``t`` detects the rows with ``anomaly_score >= t``. One
    pass over the rows sorted by anomaly score, as ``Sweeper.calcScoreByThreshold`` does: each row
    switched on adds its sweep value when outside windows, and raises its window's part to its
    value when that beats the window's best so far (``-fnWeight`` before any detection).
    """
    scores, values, windows, base, offset = [], [], [], 0.0, 0
    for timestamps, series_windows, anomaly_scores in series:
        timestamps = np.asarray(timestamps)
        n = len(timestamps)
        windows_idx = window_indices(timestamps, series_windows)
        value, window = sweep_values(n, windows_idx, profile)
        scored = np.arange(n) >= probationary_length(n, probation_fraction)
        seen = np.unique(window[scored & (window >= 0)])
        base -= profile.fn_weight * len(seen)
        scores.append(np.asarray(anomaly_scores, dtype=float)[scored])
        values.append(value[scored])
        windows.append(np.where(window[scored] >= 0, window[scored] + offset, -1))
        offset += len(windows_idx)
    score, value, window = (np.concatenate(a) if a else np.zeros(0) for a in (scores, values, windows))
    window = window.astype(np.int64)

    order = np.argsort(-score, kind="stable")
    score, value, window = score[order], value[order], window[order]
    delta = np.where(window < 0, value, 0.0)
    # per window, in sweep order: running best value (from -fnWeight); the rise is the score's change
    inside = np.flatnonzero(window >= 0)
    if len(inside):
        grouped = inside[np.lexsort((inside, window[inside]))]  # by window, then sweep order
        group = window[grouped]
        cuts = np.flatnonzero(group[1:] != group[:-1]) + 1
        for rows in np.split(grouped, cuts):
            best = np.maximum.accumulate(np.maximum(value[rows], -profile.fn_weight))
            delta[rows] = best - np.r_[-profile.fn_weight, best[:-1]]
    running = base + np.cumsum(delta)
    last_of_tie = np.r_[score[1:] != score[:-1], True] if len(score) else np.zeros(0, dtype=bool)
    top = max(NO_DETECTION_THRESHOLD, float(np.nextafter(score.max(), np.inf))) if len(score) else NO_DETECTION_THRESHOLD
    return np.r_[top, score[last_of_tie]], np.r_[base, running[last_of_tie]]


def optimise_threshold(series: Iterable[tuple[np.ndarray, Sequence[tuple], np.ndarray]],
                       profile: Profile = STANDARD, *, probation_fraction: float = PROBATIONARY_FRACTION
                       ) -> tuple[float, float]:
    """NAB's oracle threshold: ``(threshold, summed raw score)`` maximising the corpus's raw score.

    Ties go to the highest threshold, as NAB's stable sort of the sweep (descending thresholds)
    does. It reads the labels, so it is the "NAB convention" figure, not a label-free rule.
    """
    thresholds, scores = threshold_sweep(series, profile, probation_fraction=probation_fraction)
    best = int(np.argmax(scores))
    return float(thresholds[best]), float(scores[best])
