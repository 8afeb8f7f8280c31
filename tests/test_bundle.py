"""Bundles: round trip, registry pointer, tamper and malformed-manifest refusal."""

import json

import numpy as np
import pandas as pd
import pytest

from offline import bundle as bundles
from offline.detectors import make_detector
from offline.features.schema import FeatureSchema


@pytest.fixture()
def trained(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(1500, 4)), columns=list("abcd"))
    frame["proto"] = rng.choice(["tcp", "udp"], size=len(frame))
    schema = FeatureSchema.fit(frame, numeric=list("abcd"), categorical=["proto"])
    X, _ = schema.transform(frame)
    detector = make_detector("vae", epochs=2, progress=False).fit(X)
    directory = bundles.save_bundle(
        bundles.next_version_dir(tmp_path, "transactions"),
        detector=detector, schema=schema, calibration_scores=detector.score(X[:500]),
        feed="transactions", dataset="synthetic", score_definition="test", training_fingerprint=bundles.array_fingerprint(X),
    )
    return directory, detector, X


def test_round_trip_gives_identical_scores(trained):
    directory, detector, X = trained
    loaded = bundles.load_bundle(directory)
    assert loaded.model_name == "vae" and loaded.version == "v0001"
    np.testing.assert_allclose(loaded.detector.score(X[:100]), detector.score(X[:100]), rtol=1e-5)
    assert loaded.schema.output_names == ["a", "b", "c", "d", "proto=tcp", "proto=udp", "proto=<other>"]
    assert np.all(np.diff(loaded.calibration_scores) >= 0)
    assert loaded.manifest["weights_sha256"] == bundles.file_sha256(directory / "model.safetensors")


def test_tampered_weights_are_refused(trained):
    directory, _, _ = trained
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(bundles.BundleError, match="does not match the manifest"):
        bundles.load_bundle(directory)


@pytest.mark.parametrize("damage", ["not json", "[]", "drop-calibration", "bad-format"])
def test_malformed_manifest_is_refused(trained, damage):
    directory, _, _ = trained
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    if damage == "drop-calibration":
        del manifest["calibration_scores"]
        text = json.dumps(manifest)
    elif damage == "bad-format":
        manifest["format_version"] = 99
        text = json.dumps(manifest)
    else:
        text = damage
    path.write_text(text)
    with pytest.raises(bundles.BundleError, match="malformed manifest"):
        bundles.load_bundle(directory)


def test_registry_promote_and_rollback(trained, tmp_path):
    directory, _, _ = trained
    second = bundles.next_version_dir(tmp_path, "transactions")
    assert second.name == "v0002"
    second.mkdir()
    assert bundles.current_version(tmp_path, "transactions") is None
    with pytest.raises(bundles.BundleError, match="no bundle in service"):
        bundles.load_current(tmp_path, "transactions")
    bundles.promote(tmp_path, "transactions", "v0001")
    bundles.promote(tmp_path, "transactions", "v0002")
    assert bundles.read_pointer(tmp_path, "transactions") == {"current": "v0002", "history": ["v0001", "v0002"]}
    assert bundles.rollback(tmp_path, "transactions")["current"] == "v0001"
    with pytest.raises(bundles.BundleError, match="nothing to roll back"):
        bundles.rollback(tmp_path, "transactions")
    with pytest.raises(bundles.BundleError, match="no such bundle"):
        bundles.promote(tmp_path, "transactions", "v0042")


def test_code_version_is_the_commit_or_the_setting(monkeypatch):
    monkeypatch.delenv("STREAMDETECT_CODE_VERSION", raising=False)
    assert not bundles.code_version().endswith("+gpu")  # <package>+<git commit> in a checkout
    monkeypatch.setenv("STREAMDETECT_CODE_VERSION", "0.1.0+abc1234+gpu")
    assert bundles.code_version() == "0.1.0+abc1234+gpu"
