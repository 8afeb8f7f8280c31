"""Deep SVDD and the copula distance on a slice of the real credit-card data: they rank frauds
above normal rows, explain per feature, and survive a bundle round trip unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from offline import bundle as bundles
from offline.detectors import make_detector
from offline.features.schema import FeatureSchema
from offline.training.presets import preset_params


@pytest.fixture(scope="module")
def card_slice(creditcard):
    """Train on 20k normal rows of the first half of the training period; judge 4k later normal
    rows and every fraud of the training period (all frauds are rows never trained on)."""
    labels = creditcard.labels
    cut = int(len(labels) * 0.6)
    normals = np.flatnonzero(labels[:cut] == 0)
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(normals[: len(normals) // 2], 20_000, replace=False))
    later = rng.choice(normals[len(normals) // 2 :], 4_000, replace=False)
    judge = np.concatenate([later, np.flatnonzero(labels[:cut] == 1)])
    schema = FeatureSchema.fit(creditcard.features.iloc[train], numeric=creditcard.numeric, log_scale=creditcard.log_scale)
    X_train, _ = schema.transform(creditcard.features.iloc[train])
    X_judge, _ = schema.transform(creditcard.features.iloc[judge])
    return schema, X_train, X_judge, labels[judge]


def _round_trip(tmp_path, detector, schema, X):
    directory = bundles.save_bundle(
        tmp_path / detector.name, detector=detector, schema=schema, calibration_scores=detector.score(X[:64]),
        feed="transactions", dataset="creditcard", score_definition="test", training_fingerprint="test",
    )
    return bundles.load_bundle(directory).detector


@pytest.mark.parametrize("model", ["deepsvdd", "copula"])
def test_ranks_frauds_explains_and_round_trips(model, card_slice, tmp_path):
    schema, X_train, X_judge, labels = card_slice
    params = {**preset_params(model, "creditcard", "quick"), **({"progress": False} if model == "deepsvdd" else {})}
    detector = make_detector(model, **params).fit(X_train[:-2000], X_val=X_train[-2000:])
    scores = detector.score(X_judge)
    assert scores.shape == (len(X_judge),) and np.isfinite(scores).all()
    assert roc_auc_score(labels, scores) > 0.8

    explained = detector.explain(X_judge[:50])
    assert explained.shape == (50, schema.n_features) and np.isfinite(explained).all()
    assert detector.expected(X_judge[:3]).shape == (3, schema.n_features)

    again = _round_trip(tmp_path, detector, schema, X_train)
    np.testing.assert_array_equal(again.score(X_judge), scores)
    np.testing.assert_allclose(again.explain(X_judge[:50]), explained, rtol=1e-6, atol=1e-6)


def test_explanations_add_up(card_slice):
    """Copula shares sum to the score exactly; Deep SVDD's integrated gradients to score(x) - score(mean)."""
    _, X_train, X_judge, _ = card_slice
    copula = make_detector("copula").fit(X_train)
    np.testing.assert_allclose(copula.explain(X_judge[:200]).sum(axis=1), copula.score(X_judge[:200]), rtol=1e-3, atol=1e-3)
    deep = make_detector("deepsvdd", epochs=1, lr=1e-3, explain_steps=64, progress=False).fit(X_train[:5000])
    rows = X_judge[:200]
    gap = deep.score(rows) - deep.score(deep.baseline[None, :])[0]
    error = np.abs(deep.explain(rows).sum(axis=1) - gap)
    assert error.mean() < 0.05 * np.abs(gap).mean()


def test_copula_stage_and_ensemble_round_trip(card_slice, tmp_path):
    schema, X_train, X_judge, _ = card_slice
    detector = make_detector("deepsvdd", input_stage="copula", n_ensemble=2, epochs=1, progress=False).fit(X_train[:5000])
    assert len(detector.module) == 2
    again = _round_trip(tmp_path, detector, schema, X_train)
    np.testing.assert_array_equal(again.score(X_judge), detector.score(X_judge))
