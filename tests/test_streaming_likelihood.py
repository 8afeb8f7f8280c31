"""Unit tests of the label-free streaming likelihood detector (no network, no data files)."""

from __future__ import annotations

import json

import numpy as np

from offline.detectors.streaming_likelihood import (
    Config, StreamingLikelihood, WindowedGaussian, gaussian_tail, log_likelihood,
)


def noisy_flat(n: int, seed: int = 0) -> np.ndarray:
    return 10.0 + np.random.default_rng(seed).normal(0.0, 0.1, n)


def test_log_likelihood_scale():
    assert abs(log_likelihood(1.0 - 1e-5) - 0.5) < 1e-6
    assert log_likelihood(0.0) < 1e-9
    assert abs(gaussian_tail(0.0) - 0.5) < 1e-12


def test_flat_series_with_one_spike_flags_the_spike_only():
    values = noisy_flat(1500)
    values[1000] += 5.0
    scores, alerts = StreamingLikelihood().run(values)
    assert alerts[1000]
    # after the likelihood's history settles (2 x warm-up; NAB's probation covers it on long series)
    assert np.flatnonzero(alerts[400:]).tolist() == [600], np.flatnonzero(alerts)
    assert scores[1000] >= 0.5


def test_level_shift_alerts_once_then_adapts():
    values = noisy_flat(3000)
    values[1500:] += 3.0  # a level shift, then the new level is normal
    _, alerts = StreamingLikelihood().run(values)
    after = np.flatnonzero(alerts[1500:]) + 1500
    assert len(after) >= 1 and after[0] < 1520  # seen when it happens
    assert len(after) <= 3, after  # no flood
    assert not alerts[1700:].any()  # adapted: the new level is normal


def test_state_round_trip_gives_identical_scores():
    values = noisy_flat(1200, seed=3)
    values[700] -= 4.0
    times = np.arange(1200) * 300.0  # 5-minute readings: the seasonal feature is on
    one = StreamingLikelihood()
    for v, t in zip(values[:600], times[:600]):
        one.update(v, t)
    state = json.loads(json.dumps(one.to_dict()))  # JSON-able
    two = StreamingLikelihood.from_dict(state)
    assert two.to_dict() == one.to_dict()
    rest = [(one.update(v, t), two.update(v, t)) for v, t in zip(values[600:], times[600:])]
    assert all(a == b for a, b in rest)
    assert any(a[1] for a, _ in rest)


def test_refractory_period_holds():
    values = noisy_flat(1500)
    values[1000] += 5.0
    values[1005] += 6.0  # a second spike inside the refractory period
    values[1100] += 7.0  # a third one after it
    config = Config(refractory=20)
    scores, alerts = StreamingLikelihood(config).run(values)
    assert alerts[1000] and not alerts[1001:1021].any()
    assert (scores[1001:1021] == 0).all()
    assert alerts[1100]


def test_windowed_gaussian_scores_the_outlier_highest():
    values = noisy_flat(500)
    values[400] += 5.0
    scores = WindowedGaussian(window=200, step=10).run(values)
    assert int(np.argmax(scores[20:])) + 20 == 400  # the first rows face a one-value window, as in NAB
    assert 0.5 <= scores[1:].min() and scores.max() <= 1.0


def test_rhythmic_spikes_stop_alerting_and_alerts_match_the_threshold():
    values = noisy_flat(3000, seed=5)
    values[300::97] += 6.0  # a regular spike train: a rhythm, not a string of anomalies
    scores, alerts = StreamingLikelihood().run(values)
    assert alerts[1000:].sum() <= 2, np.flatnonzero(alerts)
    assert (alerts == (scores >= Config().threshold)).all()  # the operating rule is the threshold


def test_weekly_feature_state_round_trip_gives_identical_scores():
    rng = np.random.default_rng(7)
    n = 24 * 7 * 5  # five weeks of hourly readings: the day and week ring buffers are both on
    hours = np.arange(n)
    values = 50.0 + 20.0 * np.sin(2 * np.pi * hours / 24) + 10.0 * (hours % 168 >= 120) + rng.normal(0, 1, n)
    values[700:724] -= 10.0  # a weekday that looks like a weekend day
    times = hours * 3600.0
    one = StreamingLikelihood()
    for v, t in zip(values[:400], times[:400]):
        one.update(v, t)
    assert len(one.week) == 168  # a week of hourly values
    state = json.loads(json.dumps(one.to_dict()))  # JSON-able
    two = StreamingLikelihood.from_dict(state)
    assert two.to_dict() == one.to_dict()
    rest = [(one.update(v, t), two.update(v, t)) for v, t in zip(values[400:], times[400:])]
    assert all(a == b for a, b in rest)


def test_daily_pattern_is_explained_and_a_changed_day_alerts():
    rng = np.random.default_rng(1)
    n = 288 * 14  # two weeks of 5-minute readings of a daily square wave with small noise
    phase = np.arange(n) % 288
    values = np.where((phase >= 100) & (phase < 200), 80.0, 20.0) + rng.normal(0.0, 1.0, n)
    times = np.arange(n) * 300.0
    _, alerts = StreamingLikelihood().run(values, times)
    assert not alerts[600:].any(), np.flatnonzero(alerts)  # the daily steps are explained by the day before
    values[3000:3100] = 20.0 + rng.normal(0.0, 1.0, 100)  # the high phase of one day is missing
    _, alerts = StreamingLikelihood().run(values, times)
    hits = np.flatnonzero(alerts[600:]) + 600
    assert len(hits) >= 1 and 3000 <= hits[0] <= 3010, hits


def test_a_new_extreme_alerts_inside_the_refractory_period_of_a_likelihood_alert():
    rng = np.random.default_rng(1)
    values = 10.0 + rng.normal(0.0, 0.1, 1500)
    values[300] += 10.0  # an early excursion makes the range wide
    values[1000:1010] += 2.0  # a burst inside the range: a likelihood alert, not a spatial one
    values[1006] += 25.0  # a new all-time extreme 4 values later
    scores, alerts = StreamingLikelihood().run(values)
    assert alerts[1000:1006].any() and alerts[1006], np.flatnonzero(alerts)
    assert (alerts == (scores >= Config().threshold)).all()
