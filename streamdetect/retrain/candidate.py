"""A candidate bundle from recent events (trained in a separate process), and its shadow
comparison with the model in service, featurized and scored as the worker does."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from streamdetect.retrain.policy import ShadowStats, drop_rows, shadow_stats

def event_frame(feed_name: str, events: Sequence[dict], window_config: dict | None, feed_state: dict | None = None,
                stats: dict | None = None):
    """Validated events (dicts, in partition/offset order) -> (feature frame, event ids, ready mask, events)."""
    import pandas as pd

    from streamdetect.feeds import get_feed

    feed = get_feed(feed_name)
    models = [feed.event_model.model_validate(e) for e in events]
    ids = [m.event_id for m in models]
    if window_config is not None:
        from offline.features.windows import WindowConfig, fold_windows

        config = WindowConfig.from_dict(window_config)
        columns, ready = fold_windows([m.sensor_id for m in models], [m.values for m in models],
                                      {} if feed_state is None else feed_state, config, stats)
    else:
        columns, ready = feed.columns_of(models), np.ones(len(models), dtype=bool)
    return pd.DataFrame(columns), ids, ready, models


def train_candidate(job: dict) -> dict:
    """Runs in a worker *process*: recent events -> candidate bundle in the registry. Returns a summary."""
    import torch

    torch.set_num_threads(1)
    from offline import bundle as bundles
    from offline.detectors import keyword_params
    from offline.training.train import fit_model

    started = time.perf_counter()
    current = bundles.load_bundle(Path(job["current_bundle"]))
    extra = current.manifest.get("extra") or {}
    window = extra.get("sensor_windows")
    events = [orjson.loads(line) for line in Path(job["events_path"]).read_bytes().splitlines() if line]
    stats = None
    if window is not None:  # per-sensor statistics of the recent readings that are neither alerted nor confirmed
        from offline.features.windows import STATS_KEY, fit_sensor_stats

        _, ids, _, models = event_frame(job["feed"], events, None)
        normal = drop_rows(ids, set(job["alerted"]), set(job["confirmed"]))
        fresh = fit_sensor_stats([m.sensor_id for m, ok in zip(models, normal) if ok],
                                 [m.values for m, ok in zip(models, normal) if ok])
        stats = {**(extra.get(STATS_KEY) or {}), **fresh}
        extra = {**extra, STATS_KEY: stats}
    frame, ids, ready, _ = event_frame(job["feed"], events, window, stats=stats)
    keep = ready & drop_rows(ids, set(job["alerted"]), set(job["confirmed"]))
    frame = frame[keep].reset_index(drop=True)
    if len(frame) < job["min_train_rows"]:
        raise ValueError(f"only {len(frame)} usable rows after dropping alerted/confirmed events (< {job['min_train_rows']})")
    cut = int(len(frame) * (1 - job["calibration_fraction"]))
    schema = current.schema
    model, params = current.model_name, current.manifest["model"]["params"]
    if model == "labelled":  # a drift retrain refits the unsupervised part; labels teach a new stage later
        model, params = params["base_model"], params["base_params"]
    params = {**params, **job.get("params", {})}
    if "progress" in keyword_params(model):  # deep models: no bars in the worker's log
        params["progress"] = False
    fitted = fit_model(model, params, frame.iloc[:cut], frame.iloc[cut:],
                       numeric=schema.numeric, categorical=schema.categorical, log_scale=schema.log_scale)
    directory = bundles.next_version_dir(Path(job["registry"]), job["feed"])
    bundles.save_bundle(
        directory, detector=fitted.detector, schema=fitted.schema, calibration_scores=fitted.calibration_scores,
        calibration_rows=fitted.calibration_rows, feed=job["feed"], dataset=f"{job['feed']}:recent-events",
        score_definition=current.manifest["score"]["definition"], training_fingerprint=fitted.training_fingerprint,
        metrics={"train_rows": cut, "calibration_rows": len(frame) - cut, "events_read": len(events),
                 "dropped": int((~keep).sum()), "trigger": job.get("trigger")},
        extra={**extra, "retrained_from": current.version},
    )
    return {"version": directory.name, "train_rows": cut, "calibration_rows": len(frame) - cut, "events_read": len(events),
            "dropped_alerted_or_confirmed": int((ready & ~keep).sum()), "seconds": round(time.perf_counter() - started, 2)}


def shadow_compare(feed_name: str, current_dir: str, candidate_dir: str, history: list[dict], shadow: list[dict],
                   known: list[dict], rate: float) -> tuple[ShadowStats, ShadowStats]:
    """Score the shadow events with both bundles (windows continue from ``history``); also the
    known anomalies (scored in their own windows, from the history they were recorded in)."""
    from offline import bundle as bundles
    from streamdetect.scoring import score
    from streamdetect.thresholds import p_values

    from offline.features.windows import stats_of_bundle

    current, candidate = bundles.load_bundle(Path(current_dir)), bundles.load_bundle(Path(candidate_dir))
    window = (current.manifest.get("extra") or {}).get("sensor_windows")
    n_hist = len(history)
    known_ids = {e.get("event_id") for e in known}
    out = []
    for bundle in (current, candidate):  # each with its own sensor statistics, as it would be served
        all_frame, all_ids, all_ready, _ = event_frame(feed_name, history + shadow, window, stats=stats_of_bundle(bundle))
        frame, ready = all_frame.iloc[n_hist:], all_ready[n_hist:]
        known_rows = np.array([i in known_ids and r for i, r in zip(all_ids, all_ready)], dtype=bool)
        X, _ = bundle.schema.transform(frame[ready])
        p = p_values(score(bundle, X), bundle.calibration_scores)
        Xk, _ = bundle.schema.transform(all_frame[known_rows]) if known_rows.any() else (np.empty((0, bundle.schema.n_features)), None)
        pk = p_values(score(bundle, Xk), bundle.calibration_scores) if len(Xk) else np.empty(0)
        out.append(shadow_stats(bundle.version, p, rate, pk))
    return out[0], out[1]
