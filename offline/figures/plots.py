"""Figures, drawn from result files (never from numbers typed by hand). matplotlib, Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def curve_points(scores: np.ndarray, labels: np.ndarray, *, max_points: int = 400) -> dict:
    """Down-sampled ROC and precision-recall curves plus a log-binned score histogram per class,
    small enough to keep in a JSON result file and redraw the figures from."""
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    keep_roc = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).round().astype(int))
    keep_pr = np.unique(np.linspace(0, len(recall) - 1, min(max_points, len(recall))).round().astype(int))
    positive = np.asarray(scores, dtype=np.float64) - min(0.0, float(np.min(scores))) + 1e-6  # log bins need > 0
    edges = np.geomspace(positive.min(), positive.max() * 1.0001, 61)
    return {
        "roc": {"fpr": fpr[keep_roc].round(5).tolist(), "tpr": tpr[keep_roc].round(5).tolist()},
        "pr": {"recall": recall[keep_pr].round(5).tolist(), "precision": precision[keep_pr].round(5).tolist()},
        "histogram": {
            "edges": edges.tolist(),
            "normal": np.histogram(positive[labels == 0], edges)[0].tolist(),
            "anomaly": np.histogram(positive[labels == 1], edges)[0].tolist(),
        },
    }


def plot_score_histogram(histogram: dict, path: Path, *, title: str, anomaly_label: str = "anomaly") -> None:
    edges = np.asarray(histogram["edges"])
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key, label, color in (("normal", "normal", "tab:blue"), ("anomaly", anomaly_label, "tab:red")):
        counts = np.asarray(histogram[key], dtype=float)
        ax.stairs(counts / max(counts.sum(), 1), edges, label=f"{label} (n={int(counts.sum())})", color=color, fill=True, alpha=0.45)
    ax.set_xscale("log")
    ax.set_xlabel("anomaly score (reconstruction error), log scale")
    ax.set_ylabel("fraction of rows")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def plot_roc(curves: dict[str, dict], path: Path, *, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, c in curves.items():
        ax.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_precision_recall(curves: dict[str, dict], path: Path, *, title: str, base_rate: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, c in curves.items():
        ax.plot(c["pr"]["recall"], c["pr"]["precision"], label=name)
    if base_rate is not None:
        ax.axhline(base_rate, color="grey", linestyle=":", label=f"random ({base_rate:.4f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="upper right")
    _save(fig, path)


def draw_seed0_curves(curves_path: Path, figures_dir: Path, *, preset: str, prefix: str, title: str) -> dict[str, dict]:
    """ROC and precision-recall figures of every model's seed-0 run from a suite's curves JSON file
    (``<model>/seed<k>/<preset>`` -> ``curve_points``). Returns those curves for further figures."""
    import json

    curves = json.loads(Path(curves_path).read_text()) if Path(curves_path).exists() else {}
    seed0 = {key.split("/")[0]: c for key, c in curves.items() if key.endswith(f"/seed0/{preset}")}
    if seed0:
        suffix = "" if preset == "full" else f"-{preset}"
        plot_roc(seed0, Path(figures_dir) / f"{prefix}-roc{suffix}.png", title=f"{title}: ROC, seed 0")
        plot_precision_recall(seed0, Path(figures_dir) / f"{prefix}-pr{suffix}.png", title=f"{title}: precision-recall, seed 0")
    return seed0


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
