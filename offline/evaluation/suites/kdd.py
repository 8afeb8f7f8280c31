"""KDD Cup 99 (10%) under the DAGMM/EGBAD protocol: ``python -m offline.benchmark --suite kdd``.

The protocol of DAGMM (Zong et al., 2018), EGBAD (Zenati et al., 2018), ALAD and GANomaly's
follow-ups: the ``normal.`` rows (~20% of the 10% file) are the minority and are treated as the
anomalies. Per seed, a random 50/50 split; the detector is fitted only on the attack rows of the
training half (a tenth of them held out for early stopping); the whole other half is the test set;
the top 20% of test scores are flagged (``threshold_rule=top-20pct``) and precision/recall/F1 are
those of the ``normal.`` class. AUROC and AUPRC are reported too, and the oracle best-F1 threshold
beside them, named as such.

Model selection never looks at test labels: every run also scores a validation set drawn from the
training half only (its held-out attack rows plus as many of its ``normal.`` rows as keep the
test's ~20% base rate) and records ``val_auroc``/``val_f1`` (top-20pct on that set). The full
presets for ``kddcup99`` were chosen on those columns for seed 0 (see ``offline/training/presets.py``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from offline.evaluation.benchmark import SuiteContext
from offline.data import TabularData, load_tabular
from offline.detectors import REGISTRY
from offline.metrics import (
    oracle_best_f1_threshold,
    ranking_metrics,
    threshold_top_fraction,
    thresholded_metrics,
)
from offline.figures.plots import curve_points, draw_seed0_curves
from offline.training.presets import max_train_rows, preset_params
from offline.training.protocols import Split, dagmm_labels, dagmm_split, dagmm_validation_normals
from offline.training.train import FittedModel, fit_model

log = logging.getLogger("offline.evaluation.suites.kdd")

MODELS = ["knn", "ae", "ocsvm", "iforest", "vae", "hst", "egbad", "ganomaly"]
PROTOCOL = "dagmm-50-50"
TOP_FRACTION = 0.20
EXTRA_COLUMNS = ["threshold", "flagged", "test_rows", "test_anomalies", "train_rows", "distinct_train_rows", "val_auroc", "val_f1"]
COMMAND = "python -m offline.benchmark --suite kdd --seeds 0,1,2,3,4"
#: HalfSpaceTrees keeps only the mass profile of its last window, so streaming more rows than a
#: few windows into it changes nothing but the run time: it sees a random sample of this size
HST_TRAIN_ROWS = 20_000
#: models fitted on the distinct training rows: the 178k attack rows of a training half are 33k
#: distinct ones (smurf and neptune records repeat thousands of times), and fitting on the distinct
#: rows keeps the rare attack types from drowning. Chosen on the validation columns (seed 0):
#: it lifts val F1 of ae .985 -> .991, ocsvm .927 -> .981, while IsolationForest, whose isolation
#: depth *is* a density estimate, collapses without the repeats (.920 -> .373) and keeps them;
#: HalfSpaceTrees (mass profiles, also density) keeps them too.
KEEP_REPEATS = {"iforest", "hst"}

#: published results on the same protocol (F1 of the ``normal.`` class at the top-20% threshold);
#: precision/recall only where the issue gave them
PUBLISHED = [
    ("EGBAD/BiGAN, survey re-implementation", 0.9412, 0.9562, 0.9486),
    ("GANomaly, survey re-implementation", 0.8303, 0.8411, 0.8356),
    ("EGBAD (Zenati et al. 2018)", None, None, 0.9372),
    ("ALAD (Zenati et al. 2018)", None, None, 0.9501),
    ("DAGMM (Zong et al. 2018)", None, None, 0.9369),
    ("OC-SVM (as reported by DAGMM)", None, None, 0.7954),
    ("GOAD (Bergman & Hoshen 2020), reported", None, None, 0.984),
]
TARGET_TO_BEAT = 0.9486


def available_models(models: list[str]) -> list[str]:
    """Models of the list that the registry knows and can import; the others are skipped, logged."""
    from offline.detectors import detector_class

    ready = []
    for model in models:
        try:
            if model not in REGISTRY:
                raise KeyError(model)
            detector_class(model)
        except (KeyError, ImportError, AttributeError) as exc:
            log.warning("skipping %s: not available in the detector registry yet (%s)", model, exc)
            continue
        ready.append(model)
    return ready


def model_params(model: str, dataset: str, preset: str, seed: int) -> dict:
    from offline.detectors import keyword_params

    params = {**preset_params(model, dataset, preset), "seed": seed}
    if "progress" in keyword_params(model):
        params.setdefault("progress", False)  # the suite's own bar shows progress; nested bars only clutter logs
    return params


def sample_rows(data: TabularData, n: int | None, seed: int = 0) -> TabularData:
    """A random slice of the dataset (smoke runs and tests only: ``--option sample_rows=N``)."""
    if not n or n >= len(data):
        return data
    return data.subset(np.sort(np.random.default_rng(seed).choice(len(data), int(n), replace=False)))


def cap_train(split: Split, model: str, preset: str, seed: int) -> Split:
    cap = max_train_rows(preset)
    if model == "hst":
        cap = min(cap or HST_TRAIN_ROWS, HST_TRAIN_ROWS)
    if cap is not None and len(split.train) > cap:
        split = Split(np.sort(np.random.default_rng(seed).choice(split.train, cap, replace=False)), split.calibration, split.test, split.description)
    return split


def distinct_rows(data: TabularData, rows: np.ndarray) -> np.ndarray:
    """The first of each group of identical feature rows (sorted indices)."""
    keys = pd.util.hash_pandas_object(data.features.iloc[rows], index=False).to_numpy()
    _, first = np.unique(keys, return_index=True)
    return np.sort(rows[first])


def fit_on(data: TabularData, model: str, params: dict, split: Split) -> FittedModel:
    return fit_model(
        model, params, data.features.iloc[split.train], data.features.iloc[split.calibration],
        numeric=data.numeric, categorical=data.categorical, log_scale=data.log_scale,
    )


def score_rows(fitted: FittedModel, frame: pd.DataFrame) -> np.ndarray:
    X, _ = fitted.schema.transform(frame)
    return fitted.detector.score(X)


def validation_rows(data: TabularData, split: Split, seed: int) -> np.ndarray:
    """Training-half rows only: held-out attacks plus ``normal.`` rows at the test's base rate."""
    normals = dagmm_validation_normals(data, seed=seed)
    n_normals = min(len(normals), int(round(len(split.calibration) * TOP_FRACTION / (1 - TOP_FRACTION))))
    picked = np.random.default_rng(seed + 1).choice(normals, n_normals, replace=False)
    return np.concatenate([split.calibration, picked])


def run(ctx: SuiteContext) -> None:
    data = sample_rows(load_tabular("kddcup99", ctx.store), ctx.options.get("sample_rows"))
    labels = dagmm_labels(data)
    rules = ["top-20pct", "oracle-best-f1"]
    curves_path = ctx.results.path.with_name("kdd_curves.json")
    curves = json.loads(curves_path.read_text()) if curves_path.exists() else {}
    models = available_models(ctx.models or MODELS)
    jobs = [(s, m) for s in ctx.seeds for m in models]
    for seed, model in tqdm(jobs, desc="kdd", unit="run"):
        identity = dict(dataset="kddcup99", protocol=PROTOCOL, model=model, target_class="", seed=seed, preset=ctx.preset)
        if all(ctx.results.has(**identity, threshold_rule=rule) for rule in rules):
            continue
        split = dagmm_split(data, seed=seed)
        distinct = ctx.options.get("distinct_train", True) and model not in KEEP_REPEATS
        if distinct:
            split = Split(distinct_rows(data, split.train), split.calibration, split.test, split.description)
        split = cap_train(split, model, ctx.preset, seed)
        fitted = fit_on(data, model, model_params(model, "kddcup99", ctx.preset, seed), split)
        scores, test_labels = score_rows(fitted, data.features.iloc[split.test]), labels[split.test]
        val = validation_rows(data, split, seed)
        val_scores, val_labels = score_rows(fitted, data.features.iloc[val]), labels[val]
        val_f1 = thresholded_metrics(val_scores, val_labels, threshold_top_fraction(val_scores, TOP_FRACTION))["f1"]
        ranking = ranking_metrics(scores, test_labels)
        thresholds = {"top-20pct": threshold_top_fraction(scores, TOP_FRACTION), "oracle-best-f1": oracle_best_f1_threshold(scores, test_labels)}
        for rule in rules:
            metrics = thresholded_metrics(scores, test_labels, thresholds[rule])
            ctx.results.append({
                **identity, "threshold_rule": rule, **ranking,
                "precision": metrics["precision"], "recall": metrics["recall"], "f1": metrics["f1"],
                "epochs": len(getattr(fitted.detector, "history", [])) or "",
                "train_seconds": round(fitted.train_seconds, 2),
                "threshold": metrics["threshold"], "flagged": metrics["flagged"],
                "test_rows": len(test_labels), "test_anomalies": int(test_labels.sum()), "train_rows": len(split.train),
                "distinct_train_rows": bool(distinct), "val_auroc": ranking_metrics(val_scores, val_labels)["auroc"], "val_f1": val_f1,
            })
        log.info("kdd %s seed %d: F1 %.4f (top-20pct), AUROC %.4f", model, seed,
                 thresholded_metrics(scores, test_labels, thresholds["top-20pct"])["f1"], ranking["auroc"])
        curves[f"{model}/seed{seed}/{ctx.preset}"] = curve_points(scores, test_labels)
        curves_path.write_text(json.dumps(curves))
    draw_figures(curves_path, ctx.figures_dir, preset=ctx.preset)


def draw_figures(curves_path: Path, figures_dir: Path, *, preset: str) -> None:
    draw_seed0_curves(curves_path, figures_dir, preset=preset, prefix="kdd", title="KDD Cup 99, DAGMM protocol (normal. = anomaly)")


def _mean_std(group: pd.DataFrame, column: str) -> str:
    return f"{group[column].mean():.4f} ± {group[column].std(ddof=0):.4f}"


def tables(rows: pd.DataFrame) -> str:
    rows = rows[(rows["dataset"] == "kddcup99") & (rows["preset"] == "full")]
    lines = [
        "## KDD Cup 99 (10%), DAGMM/EGBAD protocol",
        "",
        f"Command: `{COMMAND}` (rows in `benchmarks/results/kdd.csv`). Random 50/50 split per seed; fitted only "
        "on the attack rows of the training half; tested on the whole other half with the `normal.` rows (~20%) "
        "as the anomalies; the top 20% of test scores are flagged (`top-20pct`, the protocol's rule) and "
        "precision/recall/F1 are those of the `normal.` class. Mean ± std over seeds. `val F1` is the same rule "
        "on a validation set drawn from the training half only (held-out attacks + its `normal.` rows), the "
        "column hyperparameters and score definitions were chosen on. Models other than iforest and hst are "
        "fitted on the distinct attack rows (`distinct_train_rows`; chosen on val F1, see `offline/evaluation/suites/kdd.py`).",
        "",
    ]
    if rows.empty:
        return "\n".join(lines + ["No full-preset rows yet."])
    main = rows[rows["threshold_rule"] == "top-20pct"]
    summary = main.groupby("model", sort=False).agg(f1=("f1", "mean")).sort_values("f1", ascending=False)
    lines += [
        "| model | seeds | AUROC | AUPRC | precision | recall | F1 (top-20pct) | val F1 | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in summary.index:
        group = main[main["model"] == model]
        lines.append(
            f"| {model} | {group['seed'].nunique()} | {_mean_std(group, 'auroc')} | {_mean_std(group, 'auprc')} | "
            f"{_mean_std(group, 'precision')} | {_mean_std(group, 'recall')} | **{_mean_std(group, 'f1')}** | "
            f"{group['val_f1'].mean():.4f} | {group['train_seconds'].mean():.0f} |"
        )
    best = summary.index[0]
    best_f1 = summary["f1"].iloc[0]
    # the rule flags 20% of the test half while normal. rows are ~19.7% of it: a perfect ranking
    # still flags some attacks, which caps precision (and F1) below 1
    cap_precision = (main["test_anomalies"] / np.ceil(TOP_FRACTION * main["test_rows"])).clip(upper=1.0).mean()
    lines += [
        "",
        f"Best here: `{best}`, F1 {best_f1:.4f} (mean over {main[main['model'] == best]['seed'].nunique()} seed(s)), "
        f"{'above' if best_f1 > TARGET_TO_BEAT else 'below'} the survey's EGBAD/BiGAN {TARGET_TO_BEAT:.4f}. "
        f"A perfect ranking would reach precision {cap_precision:.4f}, recall 1 and F1 {2 * cap_precision / (1 + cap_precision):.4f} "
        "under this rule (20% flagged, fewer than 20% `normal.` rows).",
        "",
        "Published figures on the same protocol (precision / recall / F1 of the `normal.` class):",
        "",
        "| published model | precision | recall | F1 |",
        "|---|---|---|---|",
    ]
    for name, precision, recall, f1 in PUBLISHED:
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {name} | {fmt(precision)} | {fmt(recall)} | {fmt(f1)} |")
    oracle = rows[rows["threshold_rule"] == "oracle-best-f1"]
    if not oracle.empty:
        lines += ["", "For reference only, F1 at the oracle threshold (chosen with test labels): "
                  + ", ".join(f"{m} {g['f1'].mean():.4f}" for m, g in oracle.groupby("model", sort=False)) + "."]
    lines += ["", "Figures: `benchmarks/figures/kdd-roc.png`, `kdd-pr.png` (seed 0)."]
    return "\n".join(lines)
