"""A fleet of synthetic sensors for the stream bench's sensor-readings run (``stream_bench --feed sensor-readings``).

Every sensor reads once a minute: a slow sine around its own level, at its own scale, plus noise;
readings of all sensors interleave in time order (reading ``i`` of every sensor before reading
``i + 1`` of any), as a plant's gateway would send them. The bench bundle is a small windowed
autoencoder trained on the fleet's first readings, with per-sensor statistics for every sensor,
so each sensor is scored as soon as its window is full (``WindowConfig.size`` readings).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np

from offline.features.windows import MANIFEST_KEY, STATS_KEY, WindowConfig, fit_sensor_stats, window_frame

log = logging.getLogger("benchmarks.sensor_fleet")
FEED = "sensor-readings"
CONFIG = WindowConfig()  # the worker's default window: 16 readings
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def sensor_ids(n_sensors: int) -> list[str]:
    return [f"plant-{s // 100:03d}/sensor-{s % 100:02d}" for s in range(n_sensors)]


def fleet_readings(n_sensors: int, per_sensor: int, *, start: int = 0, seed: int = 0) -> tuple[list[str], np.ndarray, list[int]]:
    """(sensor id, value, minute) of ``per_sensor`` readings of each sensor from minute ``start``, interleaved."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(-50, 50, n_sensors)
    scales = rng.uniform(0.5, 5.0, n_sensors)
    phases = rng.uniform(0, 2 * np.pi, n_sensors)
    minutes = np.arange(start, start + per_sensor)[:, None]
    values = levels + scales * (np.sin(minutes / 30.0 + phases) + rng.normal(0, 0.2, (per_sensor, n_sensors)))
    ids = sensor_ids(n_sensors)
    return ids * per_sensor, np.round(values.ravel(), 4), np.repeat(minutes.ravel(), n_sensors).tolist()


def fleet_events(n_sensors: int, per_sensor: int, *, start: int = 0, prefix: str = "fleet") -> list[dict]:
    """Sensor-readings events of the fleet (ids ``<prefix>-<minute>-<sensor>``), interleaved in time order."""
    ids, values, minutes = fleet_readings(n_sensors, per_sensor, start=start)
    stamp = {m: (T0 + dt.timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ") for m in set(minutes)}
    return [{"event_id": f"{prefix}-{m}-{s}", "sensor_id": s, "event_time": stamp[m], "value": float(v)}
            for s, v, m in zip(ids, values.tolist(), minutes)]


def ensure_sensor_bundle(workdir: Path, n_sensors: int) -> Path:
    """A registry (under ``workdir``) whose sensor-readings bundle knows all ``n_sensors`` sensors."""
    from offline import bundle as bundles

    registry = Path(workdir) / f"sensor-registry-{n_sensors}"
    try:
        bundles.load_current(registry, FEED)
        return registry
    except bundles.BundleError:
        pass
    import torch

    from offline.training.train import fit_model

    torch.set_num_threads(1)
    log.info("training the bench's sensor bundle for %d sensors into %s", n_sensors, registry)
    # training readings come before the bench's (negative minutes), so the bench replays unseen readings
    per_sensor = 48
    ids, values, _ = fleet_readings(n_sensors, per_sensor, start=-per_sensor, seed=0)
    stats = fit_sensor_stats(ids, values)
    frame, ready = window_frame(ids, values, CONFIG, stats=stats)
    frame = frame[ready].sample(n=min(int(ready.sum()), 50_000), random_state=0).reset_index(drop=True)
    cut = int(len(frame) * 0.8)
    fitted = fit_model("ae", {"hidden": [32], "latent_dim": 4, "epochs": 3, "progress": False},
                       frame.iloc[:cut], frame.iloc[cut:], numeric=CONFIG.names())
    directory = bundles.next_version_dir(registry, FEED)
    bundles.save_bundle(directory, detector=fitted.detector, schema=fitted.schema, calibration_scores=fitted.calibration_scores,
                        feed=FEED, dataset=f"synthetic fleet of {n_sensors} sensors (benchmarks.sensor_fleet)",
                        score_definition="sensor window reconstruction error (bench bundle)",
                        training_fingerprint=fitted.training_fingerprint,
                        extra={MANIFEST_KEY: CONFIG.to_dict(), STATS_KEY: stats})
    bundles.promote(registry, FEED, directory.name)
    return registry
