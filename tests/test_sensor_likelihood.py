"""The streaming likelihood served by the worker: its featurization gives the detector's own scores
across batches and a checkpoint, the pipeline alerts on exactly the readings the detector alerts on
(its bundle's own rule, not the conformal one), and bad readings are dead-lettered."""

from __future__ import annotations

import datetime as dt

import numpy as np
import orjson

from offline import bundle as bundles
from offline.detectors.streaming_likelihood import Config, StreamingLikelihood
from offline.training.train import save_likelihood_bundle
from offline.features.sensor_likelihood import STATE_KEY, fold_likelihood
from streamdetect import pipeline
from streamdetect.feeds import get_feed
from streamdetect.state import PartitionState, checkpoint_value, plain

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def readings(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A daily-ish wave with noise, a spike at 700 and a level shift at 1000; one reading per 5 minutes."""
    rng = np.random.default_rng(seed)
    values = 10 + np.sin(np.arange(n) / 40.0) + rng.normal(0, 0.1, n)
    values[700] += 8.0
    values[1000:] += 5.0
    return values, np.array([(T0 + dt.timedelta(minutes=5 * i)).timestamp() for i in range(n)])


def test_fold_gives_the_detectors_scores_across_batches_and_a_checkpoint():
    values, times = readings()
    scores, alerts = StreamingLikelihood().run(values, times)
    assert alerts[700:705].any() and alerts[1000:1010].any() and alerts.sum() < 20
    state, out = {}, []
    for start, stop in ((0, 333), (333, 800), (800, 1200)):
        out.append(fold_likelihood(["pump"] * (stop - start), values[start:stop].tolist(), times[start:stop].tolist(),
                                   state, Config()))
        state = orjson.loads(checkpoint_value("sensor-readings", 0, {"feed_state": plain(state)}))["feed_state"]  # a restart
        assert isinstance(state[STATE_KEY]["pump"], dict)
    ours = np.concatenate(out)
    np.testing.assert_array_equal(ours >= 0.5, alerts)
    np.testing.assert_array_equal(ours.astype(np.float32) >= 0.5, alerts)  # the worker's precision
    np.testing.assert_allclose(ours[alerts], scores[alerts])


def test_the_pipeline_alerts_where_the_detector_does(tmp_path):
    values, times = readings()
    _, alerts = StreamingLikelihood().run(values, times)
    bundle = bundles.load_bundle(save_likelihood_bundle(tmp_path / "v0001", np.linspace(0, 0.3, 500), Config(),
                                                        dataset="test"))
    feed = get_feed("sensor-readings")
    events = [{"event_id": f"pump-{i}", "sensor_id": "pump", "value": float(v),
               "event_time": dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
              for i, (v, t) in enumerate(zip(values, times))]
    events.insert(500, {"event_id": "pump-wide", "sensor_id": "pump", "value": [1.0, 2.0], "event_time": events[499]["event_time"]})
    records = [pipeline.InputRecord("sensor-readings", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
    states: dict[int, PartitionState] = {}
    alerted, dead = [], []
    for start in range(0, len(records), 256):
        out = pipeline.process_batch(records[start:start + 256], feed=feed, bundle=bundle, states=states,
                                     new_state=lambda: PartitionState(window=100, warmup=50), rate=0.01,
                                     max_event_bytes=1 << 16)
        alerted += [orjson.loads(a) for _, a in out.alerts]
        dead += [orjson.loads(d) for d in out.dead_letters]
    assert sorted(int(a["event_id"].split("-")[1]) for a in alerted) == np.flatnonzero(alerts).tolist()
    assert all(a["threshold"] == 0.5 and a["score"] >= 0.5 for a in alerted)
    assert [d["reason"] for d in dead] == ["featurize_error"] and dead[0]["event_id"] == "pump-wide"


def test_offline_train_writes_a_streaming_likelihood_bundle_for_the_sensor_feed(tmp_path):
    from click.testing import CliRunner

    from offline.training.train import main

    wrong = CliRunner().invoke(main, ["--model", "streaming-likelihood", "--dataset", "creditcard", "--registry", str(tmp_path)])
    assert wrong.exit_code == 2 and "use --dataset nab" in wrong.output
    done = CliRunner().invoke(main, ["--model", "streaming-likelihood", "--dataset", "nab", "--registry", str(tmp_path)])
    assert done.exit_code == 0, done.output
    bundle = bundles.load_current(tmp_path, "sensor-readings")
    assert bundle.model_name == "streaming-likelihood" and bundle.manifest["extra"]["score_threshold"] == 0.5
    assert len(bundle.calibration_scores) > 1000 and (bundle.calibration_scores < 0.5).mean() > 0.99
