"""Sensor windows, alert budget, drift detection and NAB window metrics: plain functions, no broker."""

import json

import numpy as np
import pytest

from offline.evaluation.suites.nab import overall, window_metrics
from offline.features.windows import STATE_KEY, WindowConfig, fold_windows, window_frame
from streamdetect.budget import AlertBudget
from streamdetect.drift import DriftMonitor, PValueDrift
from streamdetect.feeds import get_feed
from streamdetect.feeds.sensors import SensorEvent, featurize_windows
from streamdetect.state import plain


def _events(values, sensor="s1"):
    return [SensorEvent.model_validate({"sensor_id": sensor, "event_time": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z", "value": v})
            for i, v in enumerate(values)]


def test_sensor_event_validation_and_default_id():
    feed = get_feed("sensor-readings")
    event = feed.event_model.model_validate({"sensor_id": "pump-7", "event_time": "2024-01-01T00:00:00Z", "value": [1, 2.5]})
    assert event.values == [1.0, 2.5] and event.event_id.startswith("pump-7@2024-01-01") and feed.key_of(event) == "pump-7"
    for bad in ({"value": float("nan")}, {"value": []}, {"value": 1.0, "extra": 1}, {"value": "x"}):
        with pytest.raises(ValueError):
            SensorEvent.model_validate({"sensor_id": "p", "event_time": "2024-01-01T00:00:00Z", **bad})


def test_windows_split_across_batches_equal_one_pass_and_survive_json():
    rng = np.random.default_rng(0)
    values = rng.normal(10, 2, size=300).tolist()
    config = WindowConfig(size=8, warmup=20, memory=100)
    whole, ready_whole = featurize_windows(_events(values), {}, config)
    state: dict = {}
    parts = []
    for chunk in (slice(0, 37), slice(37, 150), slice(150, 300)):
        state = json.loads(json.dumps(plain(state)))  # a checkpoint round trip between batches (a restart)
        columns, ready = featurize_windows(_events(values)[chunk], state, config)
        parts.append((np.column_stack([columns[n] for n in config.names()]), ready))
    X = np.concatenate([p[0] for p in parts])
    ready = np.concatenate([p[1] for p in parts])
    np.testing.assert_array_equal(ready, ready_whole)
    np.testing.assert_allclose(X[ready], np.column_stack([whole[n] for n in config.names()])[ready_whole])
    assert ready.sum() == 300 - 20 and abs(X[ready].mean()) < 0.3 and 0.6 < X[ready].std() < 1.4


def test_windows_are_per_sensor_and_normalised_per_sensor():
    config = WindowConfig(size=4, warmup=10)
    rng = np.random.default_rng(1)
    ids = ["hot", "cold"] * 100
    values = np.where(np.array(ids) == "hot", rng.normal(1000, 50, 200), rng.normal(1, 0.05, 200))
    frame, ready = window_frame(ids, values, config)
    z = frame[ready].to_numpy()
    assert np.abs(z).max() < 6  # both sensors in their own standard units
    state: dict = {}
    fold_windows(ids, values[:, None].tolist(), state, config)
    assert set(state[STATE_KEY]) == {"hot", "cold"} and len(state[STATE_KEY]["hot"]["window"]) == 4
    # a spike is measured against the sensor's past, and named by its window position
    columns, ready = fold_windows(["cold"], [[2.0]], state, config)
    assert ready[0] and columns["value[t-0]"][0] > 10 and abs(columns["value[t-1]"][0]) < 5
    # wrong channel count: not ready (not scored), state untouched
    _, ready = fold_windows(["cold"], [[1.0, 2.0]], state, config)
    assert not ready[0]


def test_alert_budget_token_bucket_per_key_in_event_time():
    budget = AlertBudget(per_hour=2.0)
    t = 1_700_000_000.0
    keys = ["a", "a", "a", "b", "a"]
    allowed = budget.allow(keys, [True] * 5, [t, t + 1, t + 2, t + 3, t + 1800 + 2])
    assert allowed.tolist() == [True, True, False, True, True]
    restored = AlertBudget(per_hour=2.0).load(json.loads(json.dumps(budget.to_dict())))
    assert restored.allow(["a"], [True], [t + 1800 + 3]).tolist() == [False] and restored.suppressed == 2
    assert AlertBudget(per_hour=None).allow(["a"] * 3, [True, False, True], [t] * 3).tolist() == [True, False, True]


def test_drift_on_p_values_detects_a_shift_and_not_uniform_noise():
    rng = np.random.default_rng(3)
    monitor = DriftMonitor("sensor-readings", delta=0.001, min_events=100, cooldown=300)
    quiet = monitor.update_batch(["k"] * 3000, rng.uniform(size=3000), model_version="v0001")
    assert quiet == []
    events = monitor.update_batch(["k"] * 400, rng.uniform(size=400) * 0.02, model_version="v0001",
                                  event_times=[f"t{i}" for i in range(400)], partition=2)
    assert len(events) == 1 and events[0].evidence["direction"] == "down"
    message = events[0].to_message()
    assert message["action"] == "drift" and message["key"] == "k" and message["partition"] == 2
    assert message["evidence"]["mean_recent"] < 0.2 and json.dumps(message)
    # restored from its JSON checkpoint it keeps counting (cooldown continues)
    restored = DriftMonitor("sensor-readings", delta=0.001, min_events=100, cooldown=300).load(json.loads(json.dumps(monitor.to_dict())))
    assert restored.keys["k"].count == 3400 and restored.keys["k"].quiet_until == monitor.keys["k"].quiet_until


def test_kswin_variant():
    rng = np.random.default_rng(4)
    watch = PValueDrift(detector="kswin", min_events=100)
    hits = []
    for i, p in enumerate(np.r_[rng.uniform(size=600), rng.uniform(size=300) * 0.1]):
        watch.update(float(p))
        hits += [i] if watch.drift_detected else []
    assert hits and hits[0] >= 600


def test_window_metrics_and_micro_average():
    t = np.arange(0, 200).astype("datetime64[h]")
    alerts = np.zeros(200, bool)
    alerts[[3, 50, 51, 120]] = True  # 3 is in probation; 50, 51 in window 1; 120 outside
    m = window_metrics(t, alerts, [(t[45], t[55]), (t[150], t[160])], probation=30)
    assert (m["tp"], m["fp"], m["fn"], m["alerts"]) == (1, 1, 1, 3)
    assert m["delay_hours"] == 5.0 and m["delay_fraction"] == 0.5 and m["f1"] == 0.5
    none = window_metrics(t, alerts, [], probation=30)
    assert none["fp"] == 3 and np.isnan(none["f1"])
    import pandas as pd

    o = overall(pd.DataFrame([m, none]))
    assert (o["tp"], o["fp"], o["fn"]) == (1, 4, 1) and o["precision"] == 0.2 and o["recall"] == 0.5
