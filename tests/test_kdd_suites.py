"""The one-class SVM under the protocol, and quick-preset runs of the kdd and nsl-kdd suites on small
slices of the real files, writing rows to a temporary results directory."""

import numpy as np
import pandas as pd
import pytest

from offline.evaluation.benchmark import COLUMNS, ResultsFile, SuiteContext
from offline.bundle import load_bundle, save_bundle
from offline.data import DataStore
from offline.detectors import make_detector
from offline.features.schema import FeatureSchema
from offline.evaluation.suites import kdd as kdd_suite
from offline.evaluation.suites import nsl_kdd as nsl_suite
from streamdetect.settings import Settings

FAST_MODELS = ["knn", "ae", "iforest", "ocsvm"]


@pytest.fixture(scope="module")
def store():
    settings = Settings().data
    if settings.mirror_dir is None:
        pytest.skip("STREAMDETECT_DATA__MIRROR_DIR is not set")
    return DataStore(settings.data_dir, settings.mirror_dir, allow_download=False)


def _context(suite, module, store, tmp_path, sample_rows):
    results = ResultsFile(tmp_path / f"{suite}.csv", module.EXTRA_COLUMNS)
    return SuiteContext(
        suite=suite, results=results, store=store, preset="quick", seeds=[0], models=FAST_MODELS,
        figures_dir=tmp_path / "figures", options={"sample_rows": sample_rows},
    )


def test_knn_scores_distance_to_distinct_training_rows_and_explains_by_the_nearest_row():
    rng = np.random.default_rng(1)
    normal = np.repeat(rng.normal(size=(200, 4)).astype("float32"), 5, axis=0)  # every row five times
    detector = make_detector("knn", k=2).fit(normal)
    assert len(detector.rows) == 200  # repeats dropped
    probe = normal[:1] + np.array([[0, 0, 25, 0]], dtype="float32")
    contributions = detector.explain(probe)
    assert contributions.argmax() == 2 and detector.score(probe)[0] > np.quantile(detector.score(normal), 0.99)


def test_ocsvm_follows_the_protocol_and_round_trips_a_bundle(tmp_path):
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(3000, 5)).astype("float32")
    outliers = rng.normal(loc=4.0, size=(50, 5)).astype("float32")
    detector = make_detector("ocsvm", n_components=100, seed=0).fit(normal[:2500], X_val=normal[2500:])
    scores = detector.score(np.concatenate([normal[2500:], outliers]))
    assert scores.shape == (550,) and scores[500:].mean() > np.quantile(scores[:500], 0.95)
    assert detector.get_params()["n_components"] == 100
    frame = pd.DataFrame(normal, columns=[f"x{i}" for i in range(5)])
    schema = FeatureSchema.fit(frame, numeric=list(frame.columns))
    save_bundle(
        tmp_path / "bundle", detector=detector, schema=schema, calibration_scores=detector.score(normal[2500:]),
        feed="access-logs", dataset="synthetic", score_definition="ocsvm", training_fingerprint="x", metrics={},
    )
    loaded = load_bundle(tmp_path / "bundle")
    np.testing.assert_allclose(loaded.detector.score(outliers), detector.score(outliers), rtol=1e-5)


def test_kdd_suite_quick_run_writes_rows_and_the_best_model_is_sane(store, tmp_path):
    ctx = _context("kdd", kdd_suite, store, tmp_path, sample_rows=40_000)
    kdd_suite.run(ctx)
    rows = pd.read_csv(ctx.results.path)
    assert list(rows.columns[: len(COLUMNS)]) == COLUMNS
    assert set(rows["model"]) == set(FAST_MODELS) and set(rows["threshold_rule"]) == {"top-20pct", "oracle-best-f1"}
    assert (rows["dataset"] == "kddcup99").all() and (rows["preset"] == "quick").all()
    top = rows[rows["threshold_rule"] == "top-20pct"]
    # the protocol flags the top 20% of the test half: at most ~4,000 of 20,000 rows (fewer where
    # identical rows tie at the threshold, as the repeated smurf records do)
    assert top["flagged"].le(0.201 * 20_000).all() and top["flagged"].max() >= 0.19 * 20_000
    assert top["f1"].max() > 0.85 and top["auroc"].max() > 0.95
    assert top["val_f1"].notna().all()
    assert not top.set_index("model").loc["iforest", "distinct_train_rows"] and top.set_index("model").loc["knn", "distinct_train_rows"]
    # resumable: a second run computes nothing and appends nothing
    kdd_suite.run(_context("kdd", kdd_suite, store, tmp_path, sample_rows=40_000))
    assert len(pd.read_csv(ctx.results.path)) == len(rows)
    assert "KDD Cup 99" in kdd_suite.tables(rows.assign(preset="full")) and "0.9486" in kdd_suite.tables(rows.assign(preset="full"))


def test_nsl_kdd_suite_quick_run_writes_rows_with_label_free_thresholds(store, tmp_path):
    ctx = _context("nsl-kdd", nsl_suite, store, tmp_path, sample_rows=40_000)
    nsl_suite.run(ctx)
    rows = pd.read_csv(ctx.results.path)
    assert list(rows.columns[: len(COLUMNS)]) == COLUMNS
    assert set(rows["threshold_rule"]) == {"val-fpr-0.01", "val-fpr-0.05", "oracle-best-f1"}
    assert set(rows["model"]) == set(FAST_MODELS)
    assert rows["auroc"].max() > 0.85
    assert rows[rows["threshold_rule"] == "val-fpr-0.05"]["f1"].max() > 0.7
    assert "oracle-best-f1" in nsl_suite.tables(rows.assign(preset="full"))
