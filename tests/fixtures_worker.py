"""Fixtures of the online worker's tests: a credit-card bundle registry and a running worker."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def creditcard_split(creditcard):
    from offline.training.protocols import time_ordered_split

    return time_ordered_split(creditcard)


@pytest.fixture(scope="session")
def creditcard_bundles(creditcard, creditcard_split, tmp_path_factory):
    """A registry with two versions of a quick credit-card VAE (v0001 promoted, v0002 not) and a
    tampered v0003 (weights changed after the manifest was written). Returns the registry path."""
    import torch

    from offline import bundle as bundles
    from offline.detectors import make_detector
    from offline.features.schema import FeatureSchema

    torch.set_num_threads(1)
    split = creditcard_split
    train = creditcard.features.iloc[split.train[:20_000]]
    calibration = creditcard.features.iloc[split.calibration[:5_000]]
    schema = FeatureSchema.fit(train, numeric=creditcard.numeric, log_scale=creditcard.log_scale)
    X_train, _ = schema.transform(train)
    X_cal, _ = schema.transform(calibration)
    detector = make_detector("vae", epochs=6, score_mode="recon+latent", progress=False).fit(X_train)
    registry = tmp_path_factory.mktemp("registry")
    for version in ("v0001", "v0002", "v0003"):
        bundles.save_bundle(
            bundles.feed_dir(registry, "transactions") / version,
            detector=detector, schema=schema, calibration_scores=detector.score(X_cal),
            feed="transactions", dataset="creditcard", score_definition="vae recon (test fixture)",
            training_fingerprint=bundles.array_fingerprint(X_train),
            metrics={"auroc": None, "note": "test fixture, not evaluated"},
        )
    weights = bundles.feed_dir(registry, "transactions") / "v0003" / bundles.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: the sha256 no longer matches the manifest
    weights.write_bytes(bytes(data))
    bundles.promote(registry, "transactions", "v0001")
    return registry


@pytest.fixture()
def registry_copy(creditcard_bundles, tmp_path):
    """A private copy of the registry, for tests that move its pointer."""
    target = tmp_path / "registry"
    shutil.copytree(creditcard_bundles, target)
    return target


@pytest.fixture(scope="session")
def creditcard_bundle(creditcard_bundles):
    from offline.bundle import load_current

    return load_current(creditcard_bundles, "transactions")


def isolated_settings(base, registry: Path, web_port: int):
    """Settings of a worker with its own topics, app id and consumer group, so that tests sharing
    one broker never see each other's records. Returns (Settings, env for the worker subprocess)."""
    from streamdetect.settings import Settings

    suffix = uuid.uuid4().hex[:8]
    topics = {name: f"{getattr(base.topics, name)}-{suffix}" for name in
              ("transactions", "access_logs", "sensor_readings", "alerts", "scores", "deadletter", "model_control",
               "feedback", "state")}
    env = {f"STREAMDETECT_TOPICS__{name.upper()}": value for name, value in topics.items()}
    env.update({
        "STREAMDETECT_APP_ID": f"streamdetect-test-{suffix}",
        "STREAMDETECT_KAFKA__CONSUMER_GROUP": f"scorers-{suffix}",
        "STREAMDETECT_REGISTRY_DIR": str(registry),
        "STREAMDETECT_WEB_PORT": str(web_port),
        "STREAMDETECT_SCORING__CHECKPOINT_INTERVAL_S": "0.5",
    })
    settings = Settings(
        topics={**base.topics.model_dump(), **topics},
        app_id=env["STREAMDETECT_APP_ID"],
        kafka={**base.kafka.model_dump(), "consumer_group": env["STREAMDETECT_KAFKA__CONSUMER_GROUP"]},
        registry_dir=registry, web_port=web_port,
        scoring={**base.scoring.model_dump(), "checkpoint_interval_s": 0.5},
        data=base.data.model_dump(),
    )
    return settings, env


def slice_with_frauds(creditcard, split, n_normal_rows: int = 3000) -> np.ndarray:
    """The first rows of the test split plus every fraud of the test split, in time order."""
    frauds = split.test[creditcard.labels[split.test] == 1]
    return np.union1d(split.test[:n_normal_rows], frauds)
