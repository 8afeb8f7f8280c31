"""Learn a second stage from analysts' labels: labelled alerts -> candidate bundle -> decision.

``Retrainer.learn`` (``loop.py``) gathers the data: the alerted events of the feed (each alert
carries its event), joined by event id with the labels table, and, only for a bundle without its
own calibration rows, the latest scored events that neither alerted nor were confirmed (the normals
that calibrate the combined score then). This module
runs in the retrain process:

1. ``train_label_stage``: the base detector of the bundle in service (its unsupervised part, when
   the bundle is already a labelled stage) plus a new ``offline.detectors.labelled`` stage fitted on
   every label; calibrated on 75% of the normals -- the bundle's own held-out normal rows
   (``calibration_rows``) where it has them, else the recent unalerted events; written as the next
   registry version, carrying those rows on.
2. Its shadow check (``label_decision``), on what the candidate was not fitted on: the later 25% of
   the normals (its alert rate must stay within twice the target) and the labels by 5-fold
   cross-validation: the stage must rank the labelled alerts at least as well as the unsupervised
   base alone. The bar is the base, not a stage already in service: that stage was fitted on most
   of these same labels, so its AUPRC on them is in-sample and would reject every refit (measured:
   the first run of ``benchmarks.analyst_loop`` with that bar rejected 10 of 13 refits,
   ``benchmarks/results/superseded/analyst_loop-bar-current-stage.json``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from streamdetect.retrain.candidate import event_frame

CHECK_SHARE = 0.25  # of the normals, kept out of calibration to check the alert rate
FOLDS = 5


@dataclass
class LabelDecision:
    promote: bool
    reason: str
    base_auprc: float
    candidate_auprc: float
    candidate_alert_rate: float


def label_decision(base_auprc: float, candidate_auprc: float, alert_rate: float, *, target_rate: float) -> LabelDecision:
    """Promote when the stage ranks the labelled alerts at least as well (cross-validated) as the
    unsupervised base and keeps its false-alarm rate on held-out normals within twice the target."""
    if alert_rate > 2 * target_rate:
        reason = f"alert rate on held-out normals {alert_rate:.4f} > 2 x target {target_rate}"
        return LabelDecision(False, reason, base_auprc, candidate_auprc, alert_rate)
    if candidate_auprc < base_auprc:
        reason = f"labelled AUPRC {candidate_auprc:.3f} (5-fold) < unsupervised base {base_auprc:.3f}"
        return LabelDecision(False, reason, base_auprc, candidate_auprc, alert_rate)
    reason = f"labelled AUPRC {candidate_auprc:.3f} (5-fold) >= unsupervised base {base_auprc:.3f}; alert rate {alert_rate:.4f}"
    return LabelDecision(True, reason, base_auprc, candidate_auprc, alert_rate)


def _features(bundle, feed: str, events: list[dict]) -> np.ndarray:
    frame, _, _, _ = event_frame(feed, events, None)
    X, _ = bundle.schema.transform(frame)
    return X


def cross_validated_scores(stage_factory, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each labelled row scored by a stage fitted on the other folds (stratified)."""
    from sklearn.model_selection import StratifiedKFold

    folds = min(FOLDS, int(y.sum()), int((1 - y).sum()))
    out = np.empty(len(y))
    for fit_rows, held_rows in StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y):
        out[held_rows] = stage_factory().fit_labels(X[fit_rows], y[fit_rows]).score(X[held_rows])
    return out


def train_label_stage(job: dict) -> dict:
    """Runs in the retrain *process*: labelled alerts + recent normals -> candidate bundle and its check."""
    import torch

    torch.set_num_threads(1)
    from sklearn.metrics import average_precision_score

    from offline import bundle as bundles
    from offline.detectors.labelled import LabelledStageDetector, unwrap
    from streamdetect.thresholds import p_values

    started = time.perf_counter()
    current = bundles.load_bundle(Path(job["current_bundle"]))
    if (current.manifest.get("extra") or {}).get("sensor_windows") is not None:
        raise ValueError("label learning needs events that featurize one by one; this feed's bundle uses sensor windows")
    feed = job["feed"]
    labelled = [orjson.loads(line) for line in Path(job["labelled_path"]).read_bytes().splitlines() if line]
    normals = [orjson.loads(line) for line in Path(job["normals_path"]).read_bytes().splitlines() if line]
    X = _features(current, feed, [item["event"] for item in labelled])
    y = np.array([item["label"] == "confirmed" for item in labelled], dtype=int)
    # calibrate on the bundle's own held-out normal rows where it carries them: recent events minus
    # the alerted ones lack exactly the top tail of the normal scores (the false alarms), which would
    # put the threshold too low (measured: 373 alerts instead of 236 over the test period,
    # benchmarks/results/superseded/analyst_loop-recent-event-calibration.json)
    X_normal = bundles.load_calibration_rows(current)
    calibrated_on = "bundle calibration rows"
    if X_normal is None:
        X_normal, calibrated_on = _features(current, feed, normals), "recent unalerted events"
    X_normal = X_normal[np.random.default_rng(0).permutation(len(X_normal))]  # the check share: a random one
    cut = int(len(X_normal) * (1 - CHECK_SHARE))
    base = unwrap(current.detector)
    base_calibration = current.detector.base_calibration if base is not current.detector else current.calibration_scores

    def stage():
        return LabelledStageDetector(base=base, calibration=base_calibration, regularization=job["regularization"])

    candidate = stage().fit_labels(X, y)
    calibration = candidate.score(X_normal[:cut])
    alert_rate = float((p_values(candidate.score(X_normal[cut:]), np.sort(calibration)) < job["target_rate"]).mean())
    candidate_auprc = float(average_precision_score(y, cross_validated_scores(stage, X, y)))
    base_auprc = float(average_precision_score(y, base.score(X)))
    current_auprc = float(average_precision_score(y, current.detector.score(X)))  # in-sample for a stage: reported only
    decision = label_decision(base_auprc, candidate_auprc, alert_rate, target_rate=job["target_rate"])
    directory = bundles.next_version_dir(Path(job["registry"]), feed)
    bundles.save_bundle(
        directory, detector=candidate, schema=current.schema, calibration_scores=calibration, feed=feed,
        dataset=f"{feed}:labelled-alerts+{calibrated_on}", training_fingerprint=bundles.array_fingerprint(X),
        calibration_rows=X_normal if calibrated_on == "bundle calibration rows" else None,
        score_definition="odds(confirmed | features, -log p)^weight / p(base score): a logistic stage on analysts' labels over the base detector",
        metrics={"labels": int(len(y)), "confirmed": int(y.sum()), "calibration_rows": cut, "check_rows": len(X_normal) - cut, "calibrated_on": calibrated_on,
                 "labelled_auprc_cv": candidate_auprc, "base_labelled_auprc": base_auprc,
                 "current_labelled_auprc": current_auprc, "check_alert_rate": alert_rate},
        extra={**(current.manifest.get("extra") or {}), "labelled_from": current.version},
    )
    return {"version": directory.name, "labels": int(len(y)), "confirmed": int(y.sum()), "calibration_rows": cut,
            "decision": decision.__dict__, "seconds": round(time.perf_counter() - started, 2)}
