"""The NAB benchmark's Kafka transport: two NAB series through an embedded broker and the worker
process, each scored by its own bundle (the second swapped in without a restart), give the alerts
of the in-process replay; and an HST bundle (stored as the rows it learnt) reloads to the same model."""

from __future__ import annotations

import numpy as np
import pytest

from offline import bundle as bundles
from offline.data import DataStore
from offline.data.nab import load_nab
from benchmarks import nab_replay
from benchmarks.nab_kafka import replay_series_through_kafka

SERIES = ["artificialWithAnomaly/art_daily_jumpsup.csv", "realAdExchange/exchange-3_cpm_results.csv"]
BUDGET = 1.0


@pytest.fixture(scope="module")
def corpus(settings):
    store = DataStore(settings.data.data_dir, settings.data.mirror_dir, allow_download=False)
    return load_nab(store, SERIES)


def test_hst_bundle_reloads_to_the_model_it_saved(corpus, tmp_path):
    series = corpus[SERIES[0]]
    saved, _ = nab_replay.hst_bundle(series, 0, tmp_path)
    again = bundles.load_bundle(saved.path)
    windows, _ = nab_replay._probation_windows(series)
    probe = windows.to_numpy(np.float32)[:50] + 0.5
    np.testing.assert_array_equal(saved.detector.score(probe), again.detector.score(probe))
    np.testing.assert_array_equal(saved.calibration_scores, again.calibration_scores)


@pytest.mark.integration
def test_kafka_replay_gives_the_in_process_alerts(corpus, settings, tmp_path):
    trained = {name: nab_replay.train_ae(corpus[name], "quick", 0, tmp_path / "bundles")[0] for name in SERIES}
    through_kafka = replay_series_through_kafka(corpus, trained, budget_per_hour=BUDGET, target_rate=nab_replay.TARGET_RATE,
                                                batch_size=nab_replay.BATCH, base=settings, workdir=tmp_path / "kafka",
                                                log_name="worker")
    assert set(through_kafka) == set(SERIES)
    for name in SERIES:
        in_process, _, _ = nab_replay.replay(corpus[name], trained[name], budget_per_hour=BUDGET, settings=settings)
        kafka_alerts, _ = through_kafka[name]
        assert in_process.any() and kafka_alerts.any(), f"{name}: the quick model alerts somewhere at budget {BUDGET}/h"
        # the per-key level moves once per batch, and Kafka's batches are not the replay's: allow a few alerts to differ
        differ = int((kafka_alerts != in_process).sum())
        assert differ <= max(2, 0.1 * in_process.sum()), f"{name}: {differ} alerts differ of {int(in_process.sum())}"


@pytest.mark.integration
def test_the_streaming_likelihood_through_kafka_alerts_on_the_readings_it_alerts_on_in_process(corpus, settings, tmp_path):
    """One streaming-likelihood bundle for both series (nothing trained): the worker process, fed
    through the broker in its own batches, alerts on exactly the readings the detector alerts on."""
    from offline.training.train import save_likelihood_bundle
    from offline.detectors.streaming_likelihood import Config, StreamingLikelihood

    bundle = bundles.load_bundle(save_likelihood_bundle(tmp_path / "v0001", np.linspace(0, 0.3, 500), Config(),
                                                        dataset="test"))
    through_kafka = replay_series_through_kafka(corpus, {name: bundle for name in SERIES}, budget_per_hour=None,
                                                target_rate=0.01, batch_size=nab_replay.BATCH, base=settings,
                                                workdir=tmp_path / "kafka", log_name="worker")
    for name in SERIES:
        _, in_process = StreamingLikelihood().run(corpus[name].values, corpus[name].timestamps)
        kafka_alerts, _ = through_kafka[name]
        assert in_process.any(), name
        np.testing.assert_array_equal(kafka_alerts, in_process, err_msg=name)
