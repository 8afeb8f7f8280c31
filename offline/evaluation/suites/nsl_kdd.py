"""NSL-KDD: ``python -m offline.benchmark --suite nsl-kdd``.

Fit on the normal rows of KDDTrain+ (a random tenth held out per seed for calibration), test on
all of KDDTest+ with the attacks as the anomalies (~57% of KDDTest+, including attack types that
KDDTrain+ never shows). AUROC and AUPRC, and precision/recall/F1 at label-free thresholds:
``val-fpr-R`` is the score exceeded by a fraction R of the held-out normal rows. The oracle
best-F1 threshold, which looks at test labels, is reported beside them and named as such.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from offline.evaluation.benchmark import SuiteContext
from offline.data import load_tabular
from offline.metrics import oracle_best_f1_threshold, ranking_metrics, threshold_at_false_alarm_rate, thresholded_metrics
from offline.figures.plots import curve_points, draw_seed0_curves
from offline.training.protocols import nsl_kdd_split
from offline.evaluation.suites.kdd import MODELS, available_models, cap_train, fit_on, model_params, sample_rows, score_rows

log = logging.getLogger("offline.evaluation.suites.nsl_kdd")

RATES = [0.01, 0.05]
PROTOCOL = "train+-test+"
EXTRA_COLUMNS = ["threshold", "flagged", "test_rows", "test_anomalies", "train_rows"]
COMMAND = "python -m offline.benchmark --suite nsl-kdd --seeds 0,1,2,3,4"


def run(ctx: SuiteContext) -> None:
    data = sample_rows(load_tabular("nsl-kdd", ctx.store), ctx.options.get("sample_rows"))
    rules = [f"val-fpr-{r:g}" for r in RATES] + ["oracle-best-f1"]
    curves_path = ctx.results.path.with_name("nsl-kdd_curves.json")
    curves = json.loads(curves_path.read_text()) if curves_path.exists() else {}
    models = available_models(ctx.models or MODELS)
    for seed, model in tqdm([(s, m) for s in ctx.seeds for m in models], desc="nsl-kdd", unit="run"):
        identity = dict(dataset="nsl-kdd", protocol=PROTOCOL, model=model, target_class="", seed=seed, preset=ctx.preset)
        if all(ctx.results.has(**identity, threshold_rule=rule) for rule in rules):
            continue
        split = cap_train(nsl_kdd_split(data, seed=seed), model, ctx.preset, seed)
        fitted = fit_on(data, model, model_params(model, "nsl-kdd", ctx.preset, seed), split)
        scores, labels = score_rows(fitted, data.features.iloc[split.test]), data.labels[split.test]
        thresholds = {f"val-fpr-{r:g}": threshold_at_false_alarm_rate(fitted.calibration_scores, r) for r in RATES}
        thresholds["oracle-best-f1"] = oracle_best_f1_threshold(scores, labels)
        ranking = ranking_metrics(scores, labels)
        for rule in rules:
            metrics = thresholded_metrics(scores, labels, thresholds[rule])
            ctx.results.append({
                **identity, "threshold_rule": rule, **ranking,
                "precision": metrics["precision"], "recall": metrics["recall"], "f1": metrics["f1"],
                "epochs": len(getattr(fitted.detector, "history", [])) or "",
                "train_seconds": round(fitted.train_seconds, 2),
                "threshold": metrics["threshold"], "flagged": metrics["flagged"],
                "test_rows": len(labels), "test_anomalies": int(labels.sum()), "train_rows": len(split.train),
            })
        log.info("nsl-kdd %s seed %d: AUROC %.4f AUPRC %.4f", model, seed, ranking["auroc"], ranking["auprc"])
        curves[f"{model}/seed{seed}/{ctx.preset}"] = curve_points(scores, labels)
        curves_path.write_text(json.dumps(curves))
    draw_figures(curves_path, ctx.figures_dir, preset=ctx.preset)


def draw_figures(curves_path: Path, figures_dir: Path, *, preset: str) -> None:
    draw_seed0_curves(curves_path, figures_dir, preset=preset, prefix="nsl-kdd", title="NSL-KDD, train on normal KDDTrain+, test KDDTest+")


def tables(rows: pd.DataFrame) -> str:
    rows = rows[(rows["dataset"] == "nsl-kdd") & (rows["preset"] == "full")]
    lines = [
        "## NSL-KDD (train on normal KDDTrain+, test on KDDTest+)",
        "",
        f"Command: `{COMMAND}` (rows in `benchmarks/results/nsl-kdd.csv`). Fitted on the normal rows of "
        "KDDTrain+ (a random 10% held out per seed), tested on all 22,544 rows of KDDTest+ with attacks as the "
        "anomalies. Mean ± std over seeds. `val-fpr-R`: threshold exceeded by a fraction R of held-out normal rows "
        "(no test label used); `oracle-best-f1` looks at test labels and is shown only for reference.",
        "",
    ]
    if rows.empty:
        return "\n".join(lines + ["No full-preset rows yet."])
    lines += ["| model | seeds | AUROC | AUPRC | rule | precision | recall | F1 |", "|---|---|---|---|---|---|---|---|"]
    order = rows.groupby("model", sort=False)["auroc"].mean().sort_values(ascending=False).index
    for model in order:
        for rule, group in rows[rows["model"] == model].groupby("threshold_rule", sort=False):
            fmt = lambda c: f"{group[c].mean():.4f} ± {group[c].std(ddof=0):.4f}"  # noqa: E731
            lines.append(f"| {model} | {group['seed'].nunique()} | {fmt('auroc')} | {fmt('auprc')} | {rule} | {fmt('precision')} | {fmt('recall')} | {fmt('f1')} |")
    lines += ["", "Figures: `benchmarks/figures/nsl-kdd-roc.png`, `nsl-kdd-pr.png` (seed 0)."]
    return "\n".join(lines)
