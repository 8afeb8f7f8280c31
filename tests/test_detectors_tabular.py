"""Every tabular detector under the one protocol: anomalies score higher where that must hold."""

import numpy as np
import pytest

from offline.data import DataStore, load_tabular
from offline.detectors import REGISTRY, make_detector
from offline.metrics import ranking_metrics
from offline.features.schema import FeatureSchema
from offline.training.presets import preset_params
from streamdetect.settings import Settings

TABULAR = ["ae", "vae", "iforest", "hst"]


@pytest.fixture(scope="module")
def creditcard_slice():
    """A real slice of the credit-card data: 6,000 normal training rows, a test set with 150 frauds."""
    settings = Settings()
    data = load_tabular("creditcard", DataStore(settings.data.data_dir, settings.data.mirror_dir, allow_download=False))
    rng = np.random.default_rng(0)
    normal = np.flatnonzero(data.labels == 0)
    fraud = np.flatnonzero(data.labels == 1)
    picked = rng.choice(normal, 9_000, replace=False)
    train, test_normal = picked[:6_000], picked[6_000:]
    test = np.concatenate([test_normal, rng.choice(fraud, 150, replace=False)])
    schema = FeatureSchema.fit(data.features.iloc[train], numeric=data.numeric, log_scale=data.log_scale)
    X_train, _ = schema.transform(data.features.iloc[train])
    X_test, _ = schema.transform(data.features.iloc[test])
    return X_train, X_test, data.labels[test]


@pytest.mark.parametrize("name", TABULAR)
def test_frauds_score_higher_than_normal_rows(name, creditcard_slice):
    X_train, X_test, y = creditcard_slice
    params = preset_params(name, "creditcard", "quick")
    if name in ("ae", "vae"):
        params.update(epochs=5, progress=False)
    detector = make_detector(name, **params).fit(X_train[:3000] if name == "hst" else X_train)
    scores = detector.score(X_test)
    assert scores.shape == (len(X_test),) and np.isfinite(scores).all()
    assert ranking_metrics(scores, y)["auroc"] > 0.85, name


@pytest.mark.parametrize("name", ["ae", "vae"])
def test_explain_points_at_the_perturbed_feature(name):
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(4000, 3))
    X = np.concatenate([latent, latent @ rng.normal(size=(3, 5))], axis=1).astype("float32")  # correlated columns
    detector = make_detector(name, epochs=15, progress=False, latent_dim=3).fit(X)
    row = X[:1].copy()
    row[0, 6] += 6.0
    contributions = detector.explain(row)
    assert contributions.shape == (1, 8)
    assert int(np.argmax(contributions[0])) == 6
    assert detector.expected(row).shape == (1, 8)


def test_vae_latent_score_mode_adds_latent_deviation():
    X = np.random.default_rng(2).normal(size=(2000, 6)).astype("float32")
    recon = make_detector("vae", epochs=3, progress=False).fit(X)
    both = make_detector("vae", epochs=3, progress=False, score_mode="recon+latent").fit(X)
    assert np.all(both.score(X[:50]) > recon.score(X[:50]))  # same seed, same weights, plus a positive term
    with pytest.raises(ValueError, match="score_mode"):
        make_detector("vae", score_mode="latent-only")


def test_registry_names_resolve_and_unknown_name_is_clear():
    for name in TABULAR:
        assert name in REGISTRY
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        make_detector("nope")
