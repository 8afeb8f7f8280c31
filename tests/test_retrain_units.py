"""The retrain loop's plain parts: training data selection, candidate training, shadow comparison, decision."""

from __future__ import annotations

import datetime as dt

import numpy as np
import orjson
import pytest

from offline import bundle as bundles
from offline.training.train import fit_model
from offline.features.windows import MANIFEST_KEY, STATS_KEY, WindowConfig, fit_sensor_stats, window_frame
from streamdetect.retrain.candidate import shadow_compare, train_candidate
from streamdetect.retrain.policy import ShadowStats, drop_rows, promotion_decision, shadow_stats

CONFIG = WindowConfig(size=8, warmup=16, memory=5000)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def sensor_events(n: int, *, level: float, start: int = 0, sensors=("s0", "s1"), seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        sensor = sensors[i % len(sensors)]
        value = level + np.sin(i / 10) + rng.normal(0, 0.3)
        when = (T0 + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append({"event_id": f"{sensor}-{i}", "sensor_id": sensor, "event_time": when, "value": round(float(value), 5)})
    return out


@pytest.fixture(scope="module")
def sensor_registry(tmp_path_factory):
    """v0001: a small windowed AE trained on level-0 readings of two sensors."""
    import torch

    torch.set_num_threads(1)
    events = sensor_events(1200, level=0.0)
    ids, values = [e["sensor_id"] for e in events], [e["value"] for e in events]
    stats = fit_sensor_stats(ids, values)
    frame, ready = window_frame(ids, values, CONFIG, stats=stats)
    frame = frame[ready]
    fitted = fit_model("ae", {"hidden": [16], "latent_dim": 3, "epochs": 8, "progress": False}, frame.iloc[:800], frame.iloc[800:],
                       numeric=CONFIG.names())
    registry = tmp_path_factory.mktemp("registry")
    directory = bundles.next_version_dir(registry, "sensor-readings")
    bundles.save_bundle(directory, detector=fitted.detector, schema=fitted.schema, calibration_scores=fitted.calibration_scores,
                        feed="sensor-readings", dataset="synthetic", score_definition="window recon",
                        training_fingerprint=fitted.training_fingerprint, extra={MANIFEST_KEY: CONFIG.to_dict(), STATS_KEY: stats})
    bundles.promote(registry, "sensor-readings", directory.name)
    return registry


def test_promotion_needs_better_calibration_and_no_lost_detection():
    target = 0.01
    current = ShadowStats("v1", events=500, alerts=200, known_anomalies=3, known_detected=3)
    assert promotion_decision(current, ShadowStats("v2", 500, 6, 3, 3), target_rate=target).promote
    assert not promotion_decision(current, ShadowStats("v2", 500, 6, 3, 2), target_rate=target).promote
    assert not promotion_decision(current, ShadowStats("v2", 500, 300, 3, 3), target_rate=target).promote
    assert not promotion_decision(current, ShadowStats("v2", 50, 0, 3, 3), target_rate=target).promote  # too few events
    stats = shadow_stats("v", np.array([0.001, 0.5, 0.2, 0.004]), 0.01, np.array([0.001, 0.9]))
    assert (stats.events, stats.alerts, stats.known_anomalies, stats.known_detected) == (4, 2, 2, 1)
    assert drop_rows(["a", "b", "c"], {"b"}, {"c"}).tolist() == [True, False, False]


def test_candidate_trained_on_shifted_events_is_promoted_over_the_old_model(sensor_registry, tmp_path):
    current_dir = bundles.feed_dir(sensor_registry, "sensor-readings") / "v0001"
    history = sensor_events(300, level=0.0, seed=1) + sensor_events(900, level=4.0, start=300, seed=2)  # level shift
    alerted = {history[310]["event_id"], history[311]["event_id"]}
    confirmed = {history[1100]["event_id"]}
    events_path = tmp_path / "events.jsonl"
    events_path.write_bytes(b"\n".join(orjson.dumps(e) for e in history))
    summary = train_candidate({
        "feed": "sensor-readings", "registry": str(sensor_registry), "current_bundle": str(current_dir),
        "events_path": str(events_path), "alerted": sorted(alerted), "confirmed": sorted(confirmed),
        "min_train_rows": 200, "calibration_fraction": 0.25, "params": {"epochs": 8}, "trigger": "drift",
    })
    assert summary["version"] == "v0002" and summary["dropped_alerted_or_confirmed"] == 3
    candidate = bundles.load_bundle(bundles.feed_dir(sensor_registry, "sensor-readings") / "v0002")
    assert candidate.manifest["extra"][MANIFEST_KEY] == CONFIG.to_dict() and candidate.manifest["extra"]["retrained_from"] == "v0001"
    shadow = sensor_events(600, level=4.0, start=1200, seed=3)
    cur, cand = shadow_compare("sensor-readings", str(current_dir), str(candidate.path), history, shadow, [], 0.01)
    assert cur.events == cand.events == 600
    assert cur.alert_rate > 0.5, cur  # the old model's sensor statistics: the new level looks anomalous
    assert abs(candidate.manifest["extra"][STATS_KEY]["s0"]["center"][0] - 4.0) < 1.0
    decision = promotion_decision(cur, cand, target_rate=0.01)
    assert decision.promote, decision
    assert cand.alert_rate < 0.05


def test_training_window_after_the_drift_point_is_contiguous_per_partition():
    from dataclasses import dataclass

    from streamdetect.retrain.policy import after_time, choose_window, parse_time

    @dataclass
    class Rec:
        partition: int
        offset: int
        value: bytes

    records = [Rec(p, o, orjson.dumps({"event_time": (T0 + dt.timedelta(minutes=o)).isoformat()})) for p in (0, 1) for o in range(10)]
    since = parse_time((T0 + dt.timedelta(minutes=4)).isoformat().replace("+00:00", "Z"))
    post = after_time(records, since)
    assert len(post) == 12 and min(r.offset for r in post) == 4
    chosen, ends = choose_window(post, 6, latest=False)
    assert sorted((r.partition, r.offset) for r in chosen) == [(p, o) for p in (0, 1) for o in (4, 5, 6)] and ends == {0: 7, 1: 7}
    latest, ends = choose_window(records, 4, latest=True)
    assert ends == {0: 10, 1: 10} and {r.offset for r in latest} == {8, 9}


def test_pipeline_scores_sensor_windows_with_state_budget_and_drift(sensor_registry):
    import json

    from streamdetect import pipeline
    from streamdetect.feeds import get_feed
    from streamdetect.pipeline import InputRecord
    from streamdetect.state import PartitionState

    feed = get_feed("sensor-readings")
    bundle = bundles.load_current(sensor_registry, "sensor-readings")
    drift = {"delta": 0.001, "min_events": 50, "cooldown": 10_000}
    states: dict[int, PartitionState] = {}

    def new_state():
        return PartitionState(window=100, warmup=20, budget_per_hour=1.0, drift=drift)

    def run(events, offset):
        records = [InputRecord("sensor-readings", 0, offset + i, orjson.dumps(e)) for i, e in enumerate(events)]
        return pipeline.process_batch(records, feed=feed, bundle=bundle, states=states, new_state=new_state, rate=0.01,
                                      max_event_bytes=65536, top_k=3)

    normal = sensor_events(400, level=0.0, start=1200, seed=5)
    out = run(normal, 0)
    assert out.warming == 2 * (CONFIG.size - 1) and out.scored == 400 - out.warming and not out.dead_letters
    # restart: the state goes through its JSON checkpoint and comes back
    states = {0: PartitionState.from_dict(json.loads(json.dumps(states[0].to_dict())), window=100, warmup=20)}
    assert states[0].budget.per_hour == 1.0 and states[0].drift is not None
    shifted = sensor_events(600, level=4.0, start=1600, seed=6)
    bad = {**shifted[0], "event_id": "wrong-shape", "value": [1.0, 2.0]}
    out = run(shifted + [bad], 400)
    assert out.warming == 0 and out.scored == 600  # the windows came back with the state
    assert [orjson.loads(d)["reason"] for d in out.dead_letters] == ["featurize_error"]
    assert out.suppressed > 0 and len(out.alerts) <= 2 * (600 / 60 + 1)  # 1 alert per sensor per hour: 10 h of event time
    alert = orjson.loads(out.alerts[0][1])
    assert alert["top_features"][0]["name"].startswith("value[t-") and alert["key"] in ("s0", "s1")
    assert out.drift_events and out.drift_events[0]["action"] == "drift" and out.drift_events[0]["evidence"]["direction"] == "down"
    assert states[0].drift.outbox  # what the worker publishes on model-control
