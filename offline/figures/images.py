"""Image figures (matplotlib, Agg): sample grids, strips, class-count charts, latent scatters."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one (H', W', C) or (H', W') mosaic."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0, 1)
    if images.ndim == 3:
        images = images[:, None]
    n, c, h, w = images.shape
    nrow = int(np.ceil(n / ncol))
    canvas = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i, image in enumerate(images):
        r, k = divmod(i, ncol)
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = image
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def save_grid(images: np.ndarray, path: Path, *, ncol: int = 10, title: str | None = None, row_labels: list[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mosaic = tile(images, ncol)
    height = max(1.2, mosaic.shape[0] / 40)
    fig, ax = plt.subplots(figsize=(max(2.5, mosaic.shape[1] / 40), height + (0.4 if title else 0)))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if row_labels:
        h = images.shape[-2] + 1
        ax.set_yticks([1 + h * i + h / 2 for i in range(len(row_labels))])
        ax.set_yticklabels(row_labels, fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_class_counts(counts: dict[str, dict[str, int]], path: Path, *, title: str) -> Path:
    """Bar chart of images per class, one bar group per split."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(next(iter(counts.values())).keys())
    x = np.arange(len(names))
    width = 0.8 / len(counts)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for i, (split, per_class) in enumerate(counts.items()):
        ax.bar(x + i * width, [per_class[n] for n in names], width, label=split)
    ax.set_xticks(x + width * (len(counts) - 1) / 2)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_scatter(points: np.ndarray, labels: np.ndarray, names: list[str], path: Path, *, title: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
        mask = labels == c
        ax.scatter(points[mask, 0], points[mask, 1], s=3, color=cmap(int(c) % 10), label=names[int(c)], alpha=0.7)
    ax.legend(markerscale=4, fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_confusion(matrix: np.ndarray, path: Path, *, title: str, labels=("normal", "anomalous")) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3.4, 3))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=9, color="black")
    ax.set_xticks([0, 1])
    ax.set_xticklabels([f"pred {n}" for n in labels], fontsize=7)
    ax.set_yticks([0, 1])
    ax.set_yticklabels([f"true {n}" for n in labels], fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
