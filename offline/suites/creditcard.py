"""Credit-card fraud under the time-ordered protocol (DESIGN.md).

Train on normal rows of the earliest 60%, calibrate on the latest 15% of those, test on the last
40%. Thresholds are chosen from calibration scores only (``val-fpr-R``: the score exceeded by a
fraction R of held-out normal rows); the oracle best-F1 threshold is reported beside them and
named as such. Curves and histograms go to ``creditcard_curves.json`` and figures are drawn from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from offline.benchmark import SuiteContext
from offline.data import load_tabular
from offline.plots import curve_points, draw_seed0_curves, plot_score_histogram
from offline.presets import preset_params
from offline.train import evaluate, fit_model, split_dataset

MODELS = ["vae", "ae", "iforest", "hst"]
RATES = [0.01, 0.001]
PROTOCOL = "time-60-40"
EXTRA_COLUMNS = ["threshold", "flagged", "test_anomalies"]
COMMAND = "python -m offline.benchmark --suite creditcard --seeds 0,1,2"


def run(ctx: SuiteContext) -> None:
    data = load_tabular("creditcard", ctx.store)
    rules = [f"val-fpr-{r:g}" for r in RATES] + ["oracle-best-f1"]
    curves_path = ctx.results.path.with_name("creditcard_curves.json")
    curves = json.loads(curves_path.read_text()) if curves_path.exists() else {}
    jobs = [(m, s) for m in (ctx.models or MODELS) for s in ctx.seeds]
    for model, seed in tqdm(jobs, desc="creditcard", unit="run"):
        identity = dict(dataset="creditcard", protocol=PROTOCOL, model=model, target_class="", seed=seed, preset=ctx.preset)
        if all(ctx.results.has(**identity, threshold_rule=rule) for rule in rules):
            continue
        split = split_dataset(data, ctx.preset, seed)
        params = {**preset_params(model, "creditcard", ctx.preset), "seed": seed}
        fitted = fit_model(
            model, params, data.features.iloc[split.train], data.features.iloc[split.calibration],
            numeric=data.numeric, log_scale=data.log_scale,
        )
        labels = data.labels[split.test]
        metrics = evaluate(fitted, data.features.iloc[split.test], labels, target_rates=RATES)
        for rule in rules:
            ctx.results.append({
                **identity, "threshold_rule": rule,
                "auroc": metrics["auroc"], "auprc": metrics["auprc"],
                "precision": metrics[rule]["precision"], "recall": metrics[rule]["recall"], "f1": metrics[rule]["f1"],
                "epochs": len(getattr(fitted.detector, "history", [])) or "",
                "train_seconds": round(fitted.train_seconds, 2),
                "threshold": metrics[rule]["threshold"], "flagged": metrics[rule]["flagged"],
                "test_anomalies": int(labels.sum()),
            })
        curves[f"{model}/seed{seed}/{ctx.preset}"] = curve_points(metrics["scores"], labels)
        curves_path.write_text(json.dumps(curves))
    draw_figures(curves_path, ctx.figures_dir, preset=ctx.preset)


def draw_figures(curves_path: Path, figures_dir: Path, *, preset: str) -> None:
    seed0 = draw_seed0_curves(curves_path, figures_dir, preset=preset, prefix="creditcard", title="Credit-card fraud, time split")
    suffix = "" if preset == "full" else f"-{preset}"
    for model in ("vae", "ae"):
        if model in seed0:
            plot_score_histogram(seed0[model]["histogram"], figures_dir / f"creditcard-{model}-score-histogram{suffix}.png",
                                 title=f"Credit-card, {model.upper()} reconstruction error (test split)", anomaly_label="fraud")


def tables(rows: pd.DataFrame) -> str:
    rows = rows[(rows["dataset"] == "creditcard") & (rows["preset"] == "full")]
    if rows.empty:
        return "## Credit-card fraud\n\nNo full-preset rows yet."
    lines = [
        "## Credit-card fraud (time-ordered split)",
        "",
        f"Command: `{COMMAND}` (rows in `benchmarks/results/creditcard.csv`). Train on normal rows of the "
        "earliest 60% of transactions, test on the last 40%. Mean ± std over seeds; `val-fpr-R` thresholds "
        "come from held-out normal rows only, `oracle-best-f1` looks at test labels and is shown only for reference.",
        "",
        "| model | seeds | AUROC | AUPRC | rule | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (model, rule), group in rows.groupby(["model", "threshold_rule"], sort=False):
        fmt = lambda c: f"{group[c].mean():.3f} ± {group[c].std(ddof=0):.3f}"  # noqa: E731
        lines.append(f"| {model} | {group['seed'].nunique()} | {fmt('auroc')} | {fmt('auprc')} | {rule} | {fmt('precision')} | {fmt('recall')} | {fmt('f1')} |")
    lines += ["", "Figures: `benchmarks/figures/creditcard-roc.png`, `creditcard-pr.png`, `creditcard-vae-score-histogram.png`."]
    return "\n".join(lines)
