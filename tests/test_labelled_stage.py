"""The second stage learnt from analysts' labels (``offline.detectors.labelled``) and the loop that learns it.

Unit part: a labelled stage over a copula base survives ``save_bundle`` / ``load_bundle`` with identical
scores, and refuses state of the wrong width. Integration part: a real worker serving a quick copula
bundle alerts on replayed credit-card events; the alerts are labelled from the ground truth on the
``feedback`` topic; ``{"action": "learn", "feed": "transactions"}`` on ``model-control`` makes the
worker train a ``labelled`` bundle as the next registry version, check it and promote or reject it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import numpy as np
import orjson
import pandas as pd
import pytest

from offline import bundle as bundles
from offline.detectors import make_detector
from offline.detectors.labelled import LabelledStageDetector, unwrap
from offline.features.schema import FeatureSchema

COLUMNS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def fitted():
    """A copula base on 4 normal features and a labelled stage: frauds far out along ``a``, harmless
    oddities as far out along ``d``. Returns (detector, schema, rows it was not fitted on)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(3000, 4)), columns=COLUMNS)
    schema = FeatureSchema.fit(frame.iloc[:2000], numeric=COLUMNS)
    X, _ = schema.transform(frame)
    base = make_detector("copula").fit(X[:2000])
    detector = LabelledStageDetector(base=base, calibration=base.score(X[2000:2500]), regularization=0.5)
    fraud = X[2500:2540] + np.array([4, 0, 0, 0], dtype=X.dtype)
    odd = X[2540:2580] + np.array([0, 0, 0, 4], dtype=X.dtype)
    detector.fit_labels(np.vstack([fraud, odd]), np.r_[np.ones(40), np.zeros(40)])
    probe = np.vstack([X[2580:], fraud[:5] + 0.1, odd[:5] + 0.1]).astype(np.float32)
    return detector, schema, X, probe


def save(tmp_path, detector, schema, X):
    return bundles.save_bundle(
        tmp_path / "transactions" / "v0001", detector=detector, schema=schema, calibration_scores=detector.score(X[2000:2500]),
        feed="transactions", dataset="synthetic", score_definition="labelled stage (test)",
        training_fingerprint=bundles.array_fingerprint(X[:2000]),
    )


def test_the_stage_ranks_labelled_frauds_above_labelled_oddities(fitted):
    detector, _, _, probe = fitted
    scores = detector.score(probe)
    frauds, odd = scores[-10:-5], scores[-5:]
    assert frauds.min() > odd.max()
    assert (detector.labels, detector.confirmed) == (80, 40)
    assert unwrap(detector) is detector.base and unwrap(detector.base) is detector.base


def test_a_bundle_round_trip_gives_identical_scores(fitted, tmp_path):
    detector, schema, X, probe = fitted
    directory = save(tmp_path, detector, schema, X)
    loaded = bundles.load_bundle(directory)
    assert loaded.model_name == "labelled" and isinstance(loaded.detector, LabelledStageDetector)
    assert loaded.manifest["model"]["params"] == json.loads(json.dumps(detector.get_params()))
    assert loaded.detector.get_params() == detector.get_params()
    np.testing.assert_array_equal(loaded.detector.score(probe), detector.score(probe))
    np.testing.assert_array_equal(loaded.detector.base.score(probe), detector.base.score(probe))
    np.testing.assert_array_equal(loaded.detector.explain(probe), detector.explain(probe))
    np.testing.assert_array_equal(loaded.detector.expected(probe), detector.expected(probe))
    np.testing.assert_array_equal(loaded.calibration_scores, np.sort(detector.score(X[2000:2500])))


def test_from_state_refuses_a_wrong_feature_count(fitted, tmp_path):
    from safetensors.torch import load_file

    detector, schema, X, _ = fitted
    directory = save(tmp_path, detector, schema, X)
    params = bundles.load_bundle(directory).manifest["model"]["params"]
    tensors = load_file(str(directory / bundles.WEIGHTS))
    # a schema of 5 features for state of 4: the stage says so before its base is built
    with pytest.raises(ValueError, match=r"labelled stage: stage.mean has 4 features, the schema 5"):
        LabelledStageDetector.from_state(params, tensors, n_features=5)
    # a stage whose coefficients do not match its base (a damaged or hand-assembled state)
    short = {**tensors, "stage.coef": tensors["stage.coef"][:-1]}
    with pytest.raises(ValueError, match=r"labelled stage: stage.coef has 3 features, the schema 4"):
        LabelledStageDetector.from_state(params, short, n_features=4)


def test_the_stage_needs_both_labels_and_learns_from_labels_only(fitted):
    detector, _, X, _ = fitted
    fresh = LabelledStageDetector(base=detector.base, calibration=detector.base_calibration)
    with pytest.raises(ValueError, match="both confirmed and false-alarm"):
        fresh.fit_labels(X[:20], np.ones(20))
    with pytest.raises(NotImplementedError):
        fresh.fit(X)


# -- integration: labels -> learn -> check -> promote or reject, on a real worker ---------------
@pytest.fixture(scope="module")
def copula_registry(data_store, tmp_path_factory):
    """A registry with a quick copula bundle for the transactions feed, v0001 in service."""
    from offline.training.train import train_tabular

    registry = tmp_path_factory.mktemp("copula-registry")
    directory, _ = train_tabular(dataset="creditcard", model="copula", store=data_store, registry=registry,
                                 feed="transactions", preset="quick", progress=False)
    assert directory.name == "v0001" and bundles.current_version(registry, "transactions") == "v0001"
    return registry


@pytest.fixture(scope="module")
def labelled_worker(embedded_broker, copula_registry, settings, creditcard, creditcard_split, tmp_path_factory):
    """A worker serving the copula bundle after a replay of the first 3000 test rows and every test
    fraud, with every alert labelled from the ground truth (fraud = confirmed) on ``feedback``."""
    from fixtures_worker import slice_with_frauds
    from streamdetect.feedback import new_label
    from streamdetect.feeds import get_feed
    from streamdetect.kafka.collect import collect_outputs
    from streamdetect.replay import key_from_field, send_messages
    from test_feedback import LiveWorker

    root = tmp_path_factory.mktemp("labelled-worker")
    registry = root / "registry"
    shutil.copytree(copula_registry, registry)  # private: the learn flow adds a version and may promote it
    # Tansu only: the page and the learn flow do not depend on the broker; the feedback topic and the
    # labels table's changelog are tested on both brokers in test_feedback.py (make test's time budget)
    worker = LiveWorker.start_new(embedded_broker, registry, settings, root)
    try:
        index = slice_with_frauds(creditcard, creditcard_split, 3000)
        events = get_feed("transactions").events_from_dataset(creditcard, index)
        truth = dict(zip((e["event_id"] for e in events), creditcard.labels[index].tolist()))
        since = int(time.time() * 1000)

        async def replay():
            await send_messages(worker.kafka, worker.settings.topics.transactions, [orjson.dumps(e) for e in events],
                                key=key_from_field(None), progress=False)
            return await collect_outputs(worker.kafka, worker.settings, expected=len(events), since_ms=since, timeout=90,
                                         event_ids=set(truth), progress=False)

        outputs = asyncio.run(replay())
        assert outputs.accounted() == len(events), worker.log_tail()
        labels = {a["event_id"]: "confirmed" if truth[a["event_id"]] == 1 else "false_alarm" for a in outputs.alerts}
        config = worker.settings.labels
        counts = {kind: sum(v == kind for v in labels.values()) for kind in ("confirmed", "false_alarm")}
        assert len(labels) >= config.min_labels and min(counts.values()) >= config.min_per_class, \
            f"the replay must give enough labelled alerts of each kind to learn from: {counts}"
        worker.send(worker.settings.topics.feedback, [new_label(i, label, "ground-truth") for i, label in labels.items()])
        worker.wait_view("review/labels.json", lambda got: set(labels) <= set(got), 30, "every label in the table")
        yield worker, labels, counts, truth
    finally:
        worker.stop()


def control_messages(worker) -> list[dict]:
    return [orjson.loads(r.value) for r in worker.read(worker.settings.topics.model_control) if r.value]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_learn_trains_a_labelled_bundle_and_promotes_or_rejects_it(labelled_worker, creditcard, creditcard_split):
    worker, labels, counts, _ = labelled_worker
    feed = "transactions"
    worker.send(worker.settings.topics.model_control, [orjson.dumps({"action": "learn", "feed": feed})], key_field="feed")

    final = ("promote", "candidate_rejected", "learn_failed", "learn_skipped")
    deadline = time.monotonic() + 120
    while True:
        messages = control_messages(worker)
        ends = [m for m in messages if m.get("action") in final and m.get("feed") == feed]
        if ends or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    actions = [m.get("action") for m in messages]
    assert ends, f"no end of the learn flow on model-control within 120 s: {actions}\n{worker.log_tail()}"
    end = ends[-1]
    assert end["action"] in ("promote", "candidate_rejected"), f"{end}\n{worker.log_tail()}"
    assert actions.count("learn") == 1, "only our request started learning (labels.learn_every = 0)"

    started = next(m for m in messages if m.get("action") == "learn_started")
    assert (started["labels"], started["confirmed"], started["false_alarm"]) == \
        (len(labels), counts["confirmed"], counts["false_alarm"]), started
    assert started["model_version"] == "v0001"
    result = next(m for m in messages if m.get("action") == "shadow_result")
    assert result["stage"] == "labels" and result["candidate"] == end["version"] == "v0002"
    assert result["promote"] == (end["action"] == "promote") and result["reason"] == end["reason"]
    decision = result["summary"]["decision"]
    assert 0 <= decision["candidate_auprc"] <= 1 and 0 <= decision["base_auprc"] <= 1
    assert result["summary"]["labels"] == len(labels) and result["summary"]["confirmed"] == counts["confirmed"]

    # the candidate is the registry's next version: a labelled stage over the copula in service
    registry = worker.registry
    assert bundles.list_versions(registry, feed) == ["v0001", "v0002"]
    candidate = bundles.load_bundle(bundles.feed_dir(registry, feed) / "v0002")
    assert candidate.model_name == "labelled" and isinstance(candidate.detector, LabelledStageDetector)
    assert candidate.manifest["model"]["params"]["base_model"] == "copula"
    assert candidate.manifest["extra"]["labelled_from"] == "v0001"
    assert candidate.manifest["metrics"]["labels"] == len(labels)
    assert candidate.schema.output_names == bundles.load_bundle(bundles.feed_dir(registry, feed) / "v0001").schema.output_names

    if end["action"] == "candidate_rejected":
        assert bundles.current_version(registry, feed) == "v0001"
        assert worker.get("health")["models"][feed] == "v0001"
        return
    # promoted: every worker swaps to it without a restart, and it scores the next events
    worker.wait_view("health", lambda h: h["models"][feed] == "v0002", 30, "the labelled bundle in service")
    assert bundles.current_version(registry, feed) == "v0002"
    from streamdetect.feeds import get_feed
    from streamdetect.kafka.collect import collect_outputs

    events = get_feed(feed).events_from_dataset(creditcard, creditcard_split.test[6000:6200])
    since = int(time.time() * 1000)
    worker.send(worker.settings.topics.transactions, [orjson.dumps(e) for e in events], key_field=None)
    outputs = asyncio.run(collect_outputs(worker.kafka, worker.settings, expected=len(events), since_ms=since, timeout=60,
                                          event_ids={e["event_id"] for e in events}, progress=False))
    assert len(outputs.scores) == len(events), worker.log_tail()
    assert {s["model_version"] for s in outputs.scores.values()} == {"v0002"}
    assert all(np.isfinite(s["score"]) for s in outputs.scores.values())
