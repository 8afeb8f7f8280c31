"""Per-sensor streaming likelihood as the sensor feed's featurization (the worker and the benchmarks share it).

A bundle whose manifest carries ``extra.sensor_likelihood`` (a ``streaming_likelihood.Config``)
is served by running one :class:`~offline.detectors.streaming_likelihood.StreamingLikelihood` per
sensor over its readings in arrival order; the one feature of a reading is the detector's emitted
score (``likelihood``), which the bundle's model passes through (``streaming-likelihood``). The
detectors live in the partition's feed state (``feed_state[STATE_KEY][sensor]``): live objects while
the worker runs, their ``to_dict()`` in a checkpoint (``PartitionState.to_dict``), turned back into
detectors when a sensor is next seen.

The detector's own operating rule (``alert == score >= threshold``) travels in the bundle as
``extra.score_threshold``. A non-alerting score is kept below the threshold in float32, the
precision the worker scores in, so that the worker alerts on exactly the readings the in-process
replay alerts on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from offline.detectors.streaming_likelihood import Config, StreamingLikelihood

MANIFEST_KEY = "sensor_likelihood"  # manifest["extra"][MANIFEST_KEY] = Config.to_dict()
THRESHOLD_KEY = "score_threshold"  # manifest["extra"][THRESHOLD_KEY]: alert when score >= it
STATE_KEY = "likelihood"  # feed_state[STATE_KEY] = {sensor_id: StreamingLikelihood (or its to_dict())}
COLUMN = "likelihood"


def config_of_manifest(manifest: Mapping) -> Config | None:
    """The bundle's streaming-likelihood configuration, None for a bundle of another featurization."""
    saved = (manifest.get("extra") or {}).get(MANIFEST_KEY)
    return None if saved is None else Config.from_dict(saved)


def below(threshold: float) -> float:
    """The largest float32 value below ``threshold`` (a non-alerting score never rounds up to it)."""
    return float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))


def fold_likelihood(sensor_ids: Sequence[str], values: Sequence[float], times: Sequence[float | None], feed_state: dict,
                    config: Config) -> np.ndarray:
    """Each reading's emitted score, its sensor's detector updated in place (readings in arrival order)."""
    sensors: dict = feed_state.setdefault(STATE_KEY, {})
    ceiling = below(config.threshold)
    out = np.empty(len(sensor_ids), dtype=np.float64)
    for i, (key, value, when) in enumerate(zip(sensor_ids, values, times)):
        detector = sensors.get(key)
        if detector is None:
            detector = sensors[key] = StreamingLikelihood(config)
        elif not isinstance(detector, StreamingLikelihood):  # restored from a checkpoint
            detector = sensors[key] = StreamingLikelihood.from_dict(detector)
        score, alert = detector.update(value, when)
        out[i] = score if alert else min(score, ceiling)
    return out
