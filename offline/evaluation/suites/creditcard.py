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

from offline.evaluation.benchmark import SuiteContext
from offline.data import load_tabular
from offline.figures.plots import curve_points, draw_seed0_curves, plot_score_histogram
from offline.training.presets import preset_params
from offline.training.train import evaluate, fit_model, split_dataset

MODELS = ["vae", "ae", "iforest", "hst", "deepsvdd", "copula"]
RATES = [0.01, 0.001]
PROTOCOL = "time-60-40"
EXTRA_COLUMNS = ["threshold", "flagged", "test_anomalies"]
COMMAND = "python -m offline.benchmark --suite creditcard --seeds 0,1,2"


RULES = [f"val-fpr-{r:g}" for r in RATES] + ["oracle-best-f1"]
#: off-the-shelf peers, with their library's defaults; rows from their own command (not this suite's)
PEERS = {"pyod-deepsvdd", "pyod-autoencoder", "pyod-lof"}
PEER_COMMAND = "python -m benchmarks.pyod_peer --seeds 0,1,2"


def identity(model: str, seed: int, preset: str) -> dict:
    return dict(dataset="creditcard", protocol=PROTOCOL, model=model, target_class="", seed=seed, preset=preset)


def done(results, model: str, seed: int, preset: str) -> bool:
    return all(results.has(**identity(model, seed, preset), threshold_rule=rule) for rule in RULES)


def record(results, curves_path: Path, model: str, seed: int, preset: str, fitted, data, split, *, epochs="") -> dict:
    """Evaluate a fitted model on the split's test rows; append one row per threshold rule and the
    curves. Shared by this suite and the peer runs (``benchmarks/pyod_peer.py``), so that every row
    of the table is thresholded and measured the same way."""
    labels = data.labels[split.test]
    metrics = evaluate(fitted, data.features.iloc[split.test], labels, target_rates=RATES)
    for rule in RULES:
        results.append({
            **identity(model, seed, preset), "threshold_rule": rule,
            "auroc": metrics["auroc"], "auprc": metrics["auprc"],
            "precision": metrics[rule]["precision"], "recall": metrics[rule]["recall"], "f1": metrics[rule]["f1"],
            "epochs": epochs,
            "train_seconds": round(fitted.train_seconds, 2),
            "threshold": metrics[rule]["threshold"], "flagged": metrics[rule]["flagged"],
            "test_anomalies": int(labels.sum()),
        })
    curves = json.loads(curves_path.read_text()) if curves_path.exists() else {}
    curves[f"{model}/seed{seed}/{preset}"] = curve_points(metrics["scores"], labels)
    curves_path.write_text(json.dumps(curves))
    return metrics


def run(ctx: SuiteContext) -> None:
    data = load_tabular("creditcard", ctx.store)
    curves_path = ctx.results.path.with_name("creditcard_curves.json")
    jobs = [(m, s) for m in (ctx.models or MODELS) for s in ctx.seeds]
    for model, seed in tqdm(jobs, desc="creditcard", unit="run"):
        if done(ctx.results, model, seed, ctx.preset):
            continue
        split = split_dataset(data, ctx.preset, seed)
        params = {**preset_params(model, "creditcard", ctx.preset), "seed": seed}
        fitted = fit_model(
            model, params, data.features.iloc[split.train], data.features.iloc[split.calibration],
            numeric=data.numeric, log_scale=data.log_scale,
        )
        record(ctx.results, curves_path, model, seed, ctx.preset, fitted, data, split,
               epochs=len(getattr(fitted.detector, "history", [])) or "")
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
        "come from held-out normal rows only, `oracle-best-f1` looks at test labels and is shown only for reference. "
        f"Peers (`pyod-*`) are PyOD's detectors with PyOD's defaults on the same feature matrix, split and "
        f"threshold rules, from `{PEER_COMMAND}` (PyOD: the `peers` extra); `copula` and `deepsvdd` settings were "
        "chosen on the training period only (`benchmarks/results/creditcard_deep_svdd_selection.txt`); `copula` "
        "and `pyod-lof` have no randomness, so their seeds repeat one result.",
        "",
        "| model | kind | seeds | AUROC | AUPRC | rule | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    is_peer = rows["model"].isin(PEERS)
    for kind, part in (("ours", rows[~is_peer]), ("peer", rows[is_peer])):
        for (model, rule), group in part.groupby(["model", "threshold_rule"], sort=False):
            fmt = lambda c: f"{group[c].mean():.3f} ± {group[c].std(ddof=0):.3f}"  # noqa: E731
            lines.append(f"| {model} | {kind} | {group['seed'].nunique()} | {fmt('auroc')} | {fmt('auprc')} | {rule} | "
                         f"{fmt('precision')} | {fmt('recall')} | {fmt('f1')} |")
    lines += ["", "Figures: `benchmarks/figures/creditcard-roc.png`, `creditcard-pr.png`, `creditcard-vae-score-histogram.png`."]
    return "\n".join(lines)
