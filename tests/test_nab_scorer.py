"""NAB's scoring rules, on cases worked out by hand from numenta/NAB's sweeper (no NAB files needed).

Toy series: 200 rows (probation: floor(0.15 * 200) = 30 rows), one window on rows 100..109
(w = 10). A detection at row i of the window sits at p = -(109 - i + 1) / 10 and earns
sigma(p) / sigma(-1) (tpWeight 1), sigma(x) = 2 / (1 + e^(5x)) - 1; after the window, row i costs
fpWeight * sigma((i - 109) / 9), and -fpWeight beyond 3 window lengths or before any window.
"""

import math

import numpy as np
import pytest

from offline.evaluation.nab_scorer import (
    PROFILES, REWARD_LOW_FN, REWARD_LOW_FP, STANDARD, corpus_score, normalised_score, optimise_threshold,
    probationary_length, score_series, score_series_at,
)

N, WINDOW = 200, (100, 109)
ROWS = np.arange(N)


def sigma(x: float) -> float:
    return 2 / (1 + math.exp(5 * x)) - 1


def alerts(*rows: int) -> np.ndarray:
    detections = np.zeros(N, dtype=bool)
    detections[list(rows)] = True
    return detections


def score(*rows: int, profile=STANDARD, windows=(WINDOW,)) -> float:
    return score_series(ROWS, list(windows), alerts(*rows), profile).score


def test_profiles_are_nabs_numbers():
    # numenta/NAB config/profiles.json
    assert (STANDARD.tp_weight, STANDARD.fn_weight, STANDARD.fp_weight) == (1.0, 1.0, 0.11)
    assert (REWARD_LOW_FP.tp_weight, REWARD_LOW_FP.fn_weight, REWARD_LOW_FP.fp_weight) == (1.0, 1.0, 0.22)
    assert (REWARD_LOW_FN.tp_weight, REWARD_LOW_FN.fn_weight, REWARD_LOW_FN.fp_weight) == (1.0, 2.0, 0.11)
    assert set(PROFILES) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}


@pytest.mark.parametrize("rows, expected", [
    (6, 0), (100, 15), (4032, 604), (4999, 749), (5000, 750), (5001, 750), (15833, 750),
])
def test_probationary_length_is_15_percent_capped_at_750(rows, expected):
    assert probationary_length(rows) == expected


def test_detection_at_window_start_middle_end():
    assert score(100) == pytest.approx(1.0)  # p = -1: the full tpWeight
    assert score(105) == pytest.approx(sigma(-0.5) / sigma(-1.0))  # p = -5/10
    assert score(109) == pytest.approx(sigma(-0.1) / sigma(-1.0))  # p = -1/10, late: ~0.25
    assert score(100) > score(105) > score(109) > 0


def test_only_the_earliest_detection_in_a_window_counts():
    assert score(102, 106) == pytest.approx(sigma(-0.8) / sigma(-1.0))
    assert score(102, 106, 109) == pytest.approx(score(102))


def test_false_positive_just_after_a_window_costs_less_than_far_from_it():
    just_after = score(100, 110) - score(100)
    assert just_after == pytest.approx(0.11 * sigma(1 / 9))  # ~ -0.03
    far = score(100, 150) - score(100)  # (150 - 109) / 9 > 3
    assert far == pytest.approx(-0.11)
    before_any_window = score(100, 50) - score(100)
    assert before_any_window == pytest.approx(-0.11)
    assert score(100, 110, profile=REWARD_LOW_FP) - score(100, profile=REWARD_LOW_FP) == pytest.approx(0.22 * sigma(1 / 9))


def test_detection_in_probation_is_ignored():
    assert score(10) == score() == -1.0
    assert score(10, 100) == pytest.approx(1.0)
    s = score_series(ROWS, [WINDOW], alerts(10, 100, 105, 150), STANDARD)
    # counts are NAB's row counts over the 170 scored rows
    assert (s.tp, s.fp, s.fn, s.tn, s.total, s.probation) == (2, 1, 8, 159, 170, 30)
    assert (s.windows, s.windows_detected) == (1, 1)


def test_missed_window_costs_fn_weight():
    assert score() == -1.0
    assert score(profile=REWARD_LOW_FN) == -2.0
    assert score(150, windows=[(100, 109), (160, 169)]) == pytest.approx(-2 - 0.11)  # both missed, one far FP


def test_window_inside_probation_is_not_scored():
    s = score_series(ROWS, [(10, 19), WINDOW], alerts(), STANDARD)
    assert s.score == -1.0 and s.null == -1.0 and s.perfect == 2.0


def test_timestamps_and_window_strings_as_in_nab_labels():
    t = np.datetime64("2014-04-01T00:00", "ns") + np.arange(N) * np.timedelta64(5, "m")
    windows = [("2014-04-01 08:20:00.000000", "2014-04-01 09:05:00.000000")]  # rows 100..109
    s = score_series_at(t, windows, np.where(ROWS == 105, 0.7, 0.1), threshold=0.7)  # >= threshold detects
    assert s.score == pytest.approx(score(105))
    assert score_series_at(t, windows, np.where(ROWS == 105, 0.7, 0.1), threshold=0.71).score == -1.0


def test_null_and_perfect_detectors_give_0_and_100():
    corpus = [(ROWS, [WINDOW]), (ROWS, [(40, 59), (120, 139)])]
    null = corpus_score(score_series(t, w, np.zeros(N, bool), STANDARD) for t, w in corpus)
    perfect = corpus_score(score_series(t, w, alerts(*[a for a, _ in w]), STANDARD) for t, w in corpus)
    assert (null.normalised, null.score, null.perfect) == (0.0, -3.0, 3.0)
    assert perfect.normalised == pytest.approx(100.0)
    one = corpus_score([score_series(*corpus[0], alerts(100), REWARD_LOW_FN),
                        score_series(*corpus[1], alerts(), REWARD_LOW_FN)])
    assert one.normalised == pytest.approx(normalised_score(1 - 4, -6, 3)) == pytest.approx(100 * 3 / 9)


def test_threshold_sweep_picks_the_best_and_the_highest_of_ties():
    anomaly = np.zeros(N)
    anomaly[[150, 100, 105, 60]] = [0.95, 0.9, 0.8, 0.5]
    # 1.1: -1; 0.95: -1.11; 0.9: 1 - 0.11; 0.8: same (later in the window); 0.5: 0.78; 0: many FPs
    threshold, best = optimise_threshold([(ROWS, [WINDOW], anomaly)], STANDARD)
    assert (threshold, best) == (0.9, pytest.approx(0.89))
    threshold, best = optimise_threshold([(ROWS, [WINDOW], np.zeros(N))], STANDARD)
    assert (threshold, best) == (1.1, -1.0)  # detecting nothing beats detecting everything
