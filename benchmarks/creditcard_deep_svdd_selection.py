"""Deep SVDD / copula-distance model selection for credit-card, on the training period only.

The credit-card protocol trains on the earliest 60% of transactions and tests on the last 40%;
no test label may choose anything. Candidates are judged on two folds cut from the training
period alone, each trained on the normal rows of an earlier stretch (its latest 15% held out
for early stopping and calibration) and judged on the stretch after it:

- fold A (as ``creditcard_model_selection.py``): train rows 0-45%, judge rows 45%-60%
  (100 frauds; hours 21.8-33.4, the night: a high fraud rate);
- fold B: train rows 0-30%, judge rows 30%-45% (56 frauds; hours 16.9-21.8, afternoon and
  evening, a fraud rate like the test period's).

Every candidate runs with ``--seeds`` on both folds; the choice per model is the highest mean
AUPRC over folds and seeds. Features are the suite's (``FeatureSchema`` fitted on each fold's
training normals). ``--diagnose`` adds the measurements behind the choice: why a default Deep
SVDD ranks frauds better than our VAE/AE. That part also scores the test period, under its own
heading, and chooses nothing. Usage:

    python -m benchmarks.creditcard_deep_svdd_selection --seeds 0,1,2 --diagnose \\
        --pyod-nets runs/pyod-nets   # the networks saved by: python -m benchmarks.pyod_peer --keep-dir runs/pyod-nets

Output: ``benchmarks/results/creditcard_deep_svdd_selection.txt``; the chosen settings are in
``offline/training/presets.py``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click
import numpy as np
import torch

from offline.data import DataStore, load_tabular
from offline.metrics import ranking_metrics
from offline.training.presets import preset_params
from offline.training.train import fit_model, split_dataset

log = logging.getLogger("creditcard_deep_svdd_selection")
OUT = Path("benchmarks/results/creditcard_deep_svdd_selection.txt")
FOLDS = {"A": (0.45, 0.60), "B": (0.30, 0.45)}
#: (model, hyperparameters); deepsvdd's defaults are PyOD's network (64 -> 32, ReLU, no bias, lr 1e-4)
CANDIDATES: list[tuple[str, dict]] = [
    ("deepsvdd", {"epochs": 10, "lr": 1e-4}),
    ("deepsvdd", {"epochs": 3, "lr": 1e-3}),
    ("deepsvdd", {"epochs": 10, "lr": 1e-3}),
    ("deepsvdd", {"epochs": 30, "lr": 1e-3, "patience": 5}),
    ("deepsvdd", {"epochs": 10, "lr": 1e-3, "activation": "leaky_relu", "output_activation": False}),
    ("deepsvdd", {"epochs": 3, "lr": 1e-3, "n_ensemble": 5}),
    ("deepsvdd", {"epochs": 3, "lr": 1e-4, "input_stage": "copula"}),
    ("deepsvdd", {"epochs": 3, "lr": 1e-5, "input_stage": "copula"}),
    ("copula", {}),
    ("copula", {"extrapolate": True}),
]
SUMMARY = "# Summary (numbers copied from the lines above)"
DETERMINISTIC = {"copula"}  # no seed changes these: one run per fold
HEAVY = ["V28", "V23", "V8", "V21", "V20", "V27"]
FRAUD_SIDE = ["V14", "V12", "V17", "V10", "V11"]


def fold_indices(labels: np.ndarray, fold: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(labels)
    start, end = (int(n * f) for f in FOLDS[fold])
    normals = np.flatnonzero(labels[:start] == 0)
    held_out = int(len(normals) * 0.15)
    return normals[:-held_out], normals[-held_out:], np.arange(start, end)


def key(model: str, params: dict) -> str:
    return f"{model} {json.dumps(params, sort_keys=True)}"


def run_candidates(data, seeds: list[int], cache: Path | None) -> dict:
    done: dict[tuple, dict] = {}
    if cache is not None and cache.exists():
        for line in cache.read_text().splitlines():
            row = json.loads(line)
            done[(row["candidate"], row["fold"], row["seed"])] = row
    for model, params in CANDIDATES:
        for fold in FOLDS:
            train, calibration, judge = fold_indices(data.labels, fold)
            for seed in [0] if model in DETERMINISTIC else seeds:
                ident = (key(model, params), fold, seed)
                if ident in done:
                    continue
                hyper = {**params, "seed": seed, **({"progress": False} if model == "deepsvdd" else {})}
                started = time.time()
                fitted = fit_model(model, hyper, data.features.iloc[train], data.features.iloc[calibration],
                                   numeric=data.numeric, log_scale=data.log_scale)
                X, _ = fitted.schema.transform(data.features.iloc[judge])
                metrics = ranking_metrics(fitted.detector.score(X), data.labels[judge])
                row = {"candidate": ident[0], "fold": fold, "seed": seed, **metrics,
                       "seconds": round(time.time() - started, 1), "epochs": len(getattr(fitted.detector, "history", []))}
                log.info("%s", row)
                done[ident] = row
                if cache is not None:
                    with open(cache, "a") as handle:
                        handle.write(json.dumps(row) + "\n")
    return done


def summarise(done: dict) -> tuple[list[str], dict[str, tuple[str, dict]]]:
    lines = ["| candidate | fold A AUROC | fold A AUPRC | fold B AUROC | fold B AUPRC | mean AUPRC | runs |", "|---|---|---|---|---|---|---|"]
    best: dict[str, tuple[float, tuple[str, dict]]] = {}
    for model, params in CANDIDATES:
        k = key(model, params)
        cells, means = [], []
        for fold in FOLDS:
            rows = [r for (c, f, _), r in done.items() if c == k and f == fold]
            for metric in ("auroc", "auprc"):
                values = np.array([r[metric] for r in rows])
                cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
            means.append(np.mean([r["auprc"] for r in rows]))
        mean = float(np.mean(means))
        runs = sum(1 for (c, _, _) in done if c == k)
        lines.append(f"| `{k}` | {' | '.join(cells)} | {mean:.3f} | {runs} |")
        if model not in best or mean > best[model][0]:
            best[model] = (mean, (model, params))
    return lines, {m: choice for m, (_, choice) in best.items()}


# -- diagnosis -------------------------------------------------------------------------------
def _scores_for(X: np.ndarray, train: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    from offline.detectors.deep_svdd import CopulaDistanceDetector

    Xr = X[rows]
    return {
        "squared norm of the standardised row": (Xr**2).sum(1),
        "copula distance": CopulaDistanceDetector().fit(X[train]).score(Xr),
    }


def diagnose(data, pyod_nets: Path | None, results_csv: Path) -> list[str]:
    from scipy.stats import kurtosis, spearmanr
    from sklearn.metrics import average_precision_score

    from offline.detectors.deep_svdd import CopulaDistanceDetector
    from offline.features.schema import FeatureSchema

    out: list[str] = []
    names = list(data.numeric)
    periods = {}
    for fold in FOLDS:
        periods[f"fold {fold}"] = fold_indices(data.labels, fold)
    split = split_dataset(data, "full", 0)
    periods["test (diagnosis only)"] = (split.train, split.calibration, split.test)
    for period, (train, calibration, rows) in periods.items():
        schema = FeatureSchema.fit(data.features.iloc[train], numeric=data.numeric, log_scale=data.log_scale)
        X = schema.transform(data.features)[0]
        labels = data.labels[rows]
        out.append(f"## {period}: {len(train)} training normals, {len(rows)} judged rows, {int(labels.sum())} frauds")
        # 1. PyOD's own StandardScaler on our matrix
        Xt = X[train]
        out.append(f"PyOD's StandardScaler on the FeatureSchema matrix: max |mean| {np.abs(Xt.mean(0)).max():.2g}, "
                   f"max |std - 1| {np.abs(Xt.std(0) - 1).max():.2g} (an identity: standardisation is not the difference)")
        # 2. heavy tails
        kurt = dict(zip(names, kurtosis(Xt, axis=0)))
        normal_rows = X[rows][labels == 0]
        squared = normal_rows**2
        top = squared[squared.sum(1) >= np.quantile(squared.sum(1), 0.99)]
        heavy = [names.index(c) for c in HEAVY]
        out.append("excess kurtosis of training normals: " + ", ".join(f"{c} {kurt[c]:.0f}" for c in HEAVY)
                   + " | " + ", ".join(f"{c} {kurt[c]:.0f}" for c in FRAUD_SIDE))
        out.append(f"share of the squared norm of the judged period's top-1% normal rows held by {', '.join(HEAVY)}: "
                   f"{top[:, heavy].sum() / top.sum():.2f} (they are {len(HEAVY)} of {len(names)} features)")
        # 3. simple scores and single features
        for name, s in _scores_for(X, train, rows).items():
            m = ranking_metrics(s, labels)
            out.append(f"{name}: AUROC {m['auroc']:.3f} AUPRC {m['auprc']:.3f}")
        singles = []
        for c in FRAUD_SIDE:
            j = names.index(c)
            singles.append(f"{c} signed {average_precision_score(labels, -X[rows, j] if c != 'V11' else X[rows, j]):.3f} "
                           f"|.| {average_precision_score(labels, np.abs(X[rows, j])):.3f}")
        out.append("single-feature AUPRC (signed: low for V14/V12/V17/V10, high for V11): " + "; ".join(singles))
        # 3b. our autoencoder: where its reconstruction error on the judged normals comes from
        ae = fit_model("ae", {**preset_params("ae", "creditcard", "full"), "seed": 0, "progress": False},
                       data.features.iloc[train], data.features.iloc[calibration], numeric=data.numeric, log_scale=data.log_scale)
        Xa, _ = ae.schema.transform(data.features.iloc[rows])
        error = ae.detector.explain(Xa)
        m = ranking_metrics(error.sum(1), labels)
        normal_error = error[labels == 0]
        worst = normal_error[normal_error.sum(1) >= np.quantile(normal_error.sum(1), 0.99)]
        out.append(f"our ae (full preset, seed 0): AUROC {m['auroc']:.3f} AUPRC {m['auprc']:.3f}; share of the reconstruction "
                   f"error of its top-1% normal rows from {', '.join(HEAVY)}: {worst[:, heavy].sum() / worst.sum():.2f}")
        # 4. Amount and hour of day
        keep = [j for j, c in enumerate(names) if c not in ("Amount", "hour_sin", "hour_cos")]
        m = ranking_metrics(CopulaDistanceDetector().fit(X[train][:, keep]).score(X[rows][:, keep]), labels)
        out.append(f"copula distance without Amount, hour_sin, hour_cos: AUROC {m['auroc']:.3f} AUPRC {m['auprc']:.3f}")
        out.append("")
    # 5. what PyOD's fitted DeepSVDD networks learnt
    if pyod_nets is not None and pyod_nets.exists():
        from safetensors.torch import load_file

        out.append("## PyOD DeepSVDD networks fitted by benchmarks/pyod_peer.py (defaults; test period)")
        split = split_dataset(data, "full", 0)
        schema = FeatureSchema.fit(data.features.iloc[split.train], numeric=data.numeric, log_scale=data.log_scale)
        X = schema.transform(data.features)[0]
        labels = data.labels[split.test]
        kurt = kurtosis(X[split.train], axis=0)
        for path in sorted(pyod_nets.glob("pyod-deepsvdd-seed*.safetensors")):
            t = load_file(str(path))
            weights = [t[k] for k in sorted(k for k in t if k.endswith("weight"))]
            first = [w for w in weights if w.shape[1] == X.shape[1]][0].double()
            gain = first.norm(dim=0).numpy()
            rho = spearmanr(gain, kurt).correlation
            order = np.argsort(gain)
            out.append(f"{path.stem}: input weight norm per feature, smallest: "
                       + ", ".join(f"{names[j]} {gain[j]:.2f}" for j in order[:6]) + "; largest: "
                       + ", ".join(f"{names[j]} {gain[j]:.2f}" for j in order[::-1][:6])
                       + f"; mean norm of {'/'.join(HEAVY)} {np.mean([gain[names.index(c)] for c in HEAVY]):.2f}, "
                       + f"of {'/'.join(FRAUD_SIDE)} {np.mean([gain[names.index(c)] for c in FRAUD_SIDE]):.2f}, "
                       + f"of Amount/hour_sin/hour_cos {np.mean([gain[names.index(c)] for c in ('Amount', 'hour_sin', 'hour_cos')]):.2f}; "
                       + f"Spearman(weight norm, kurtosis) {rho:.2f}; centre coordinates at the eps guard: "
                       + f"{int((t['center'].abs() <= 0.1 + 1e-6).sum())} of {t['center'].numel()}")
    if results_csv.exists():
        import pandas as pd

        rows = pd.read_csv(results_csv)
        rows = rows[(rows["threshold_rule"] == "val-fpr-0.001") & (rows["preset"] == "full")]
        out.append("")
        out.append("## Test-period AUPRC per seed from creditcard.csv (diagnosis only)")
        for model, group in rows.groupby("model", sort=False):
            out.append(f"{model}: " + ", ".join(f"seed {s} {a:.3f}" for s, a in zip(group["seed"], group["auprc"])))
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seeds", default="0,1,2", show_default=True, help="comma-separated seeds per candidate and fold")
@click.option("--out", type=click.Path(path_type=Path), default=OUT, show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="JSON lines of finished runs (resume)")
@click.option("--diagnose", is_flag=True, help="add the measurements of why Deep SVDD beats reconstruction (test rows too)")
@click.option("--pyod-nets", type=click.Path(path_type=Path), default=None, help="PyOD DeepSVDD networks saved by pyod_peer --keep-dir")
@click.option("--threads", type=int, default=1, show_default=True)
def main(seeds, out, cache, diagnose, pyod_nets, threads):
    """Choose deepsvdd / copula settings for credit-card on the training period only."""
    from streamdetect.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    settings = get_settings().data
    data = load_tabular("creditcard", DataStore(settings.data_dir, settings.mirror_dir, settings.allow_download))
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    done = run_candidates(data, seed_list, cache)
    table, chosen = summarise(done)
    lines = [
        "# Credit-card deepsvdd / copula selection on the training period only (no test row chooses anything)",
        f"# Command: python -m benchmarks.creditcard_deep_svdd_selection --seeds {seeds}" + (" --diagnose" if diagnose else "")
        + (f" --pyod-nets {pyod_nets}" if pyod_nets else ""),
        "# Fold A: train on normals of rows 0-45% (latest 15% held out), judge rows 45-60%; "
        "fold B: train on normals of rows 0-30%, judge rows 30-45%. Mean ± std over seeds (copula: deterministic, one run).",
        "",
        *table,
        "",
        "Chosen (highest mean AUPRC over both folds), in offline/training/presets.py:",
        *[f"- {model}: {json.dumps(params, sort_keys=True)}" for model, params in chosen.values()],
    ]
    if diagnose:
        lines += ["", "# Diagnosis: why a default Deep SVDD ranks frauds better than our reconstruction models", ""]
        lines += diagnose_text(data, pyod_nets)
    summary = out.read_text().split(SUMMARY, 1)[1] if out.exists() and SUMMARY in out.read_text() else None
    if summary is not None:  # the hand-written summary of the measurements is kept across reruns
        lines += ["", SUMMARY + summary.rstrip("\n")]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


def diagnose_text(data, pyod_nets):
    return diagnose(data, pyod_nets, Path("benchmarks/results/creditcard.csv"))


if __name__ == "__main__":
    main()
