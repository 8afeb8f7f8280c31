"""Exploratory look at an image dataset: ``python -m offline.figures.eda --dataset mnist``.

Writes, under ``benchmarks/figures/`` (or ``--out``): a grid of random samples per class
(one row per class), the class-count table (``eda-<dataset>-counts.csv`` and printed as
markdown) and its bar chart.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd

from offline.data.images import IMAGE_DATASETS, ImageData, load_images
from offline.figures.images import save_class_counts, save_grid


def class_counts(data: ImageData) -> pd.DataFrame:
    rows = []
    for index, name in enumerate(data.class_names):
        rows.append({"class": index, "name": name, "train": int((data.y_train == index).sum()), "test": int((data.y_test == index).sum())})
    frame = pd.DataFrame(rows)
    frame["total"] = frame["train"] + frame["test"]
    return frame


def samples_per_class(data: ImageData, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = []
    for index in range(len(data.class_names)):
        members = np.flatnonzero(data.y_train == index)
        picks.append(data.x_train[rng.choice(members, min(per_class, len(members)), replace=False)])
    return np.concatenate(picks)


def run_eda(data: ImageData, out: Path, *, per_class: int = 10, seed: int = 0) -> dict[str, Path]:
    out = Path(out)
    counts = class_counts(data)
    table = out / f"eda-{data.name}-counts.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    counts.to_csv(table, index=False)
    grid = save_grid(samples_per_class(data, per_class, seed), out / f"eda-{data.name}-samples.png", ncol=per_class,
                     title=f"{data.name}: {per_class} random training images per class", row_labels=list(data.class_names))
    chart = save_class_counts(
        {"train": dict(zip(counts["name"], counts["train"])), "test": dict(zip(counts["name"], counts["test"]))},
        out / f"eda-{data.name}-counts.png", title=f"{data.name}: images per class",
    )
    return {"table": table, "grid": grid, "chart": chart}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", required=True, type=click.Choice(IMAGE_DATASETS))
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/figures"), show_default=True)
@click.option("--per-class", type=int, default=10, show_default=True, help="images per class in the sample grid")
@click.option("--seed", type=int, default=0, show_default=True)
def main(dataset, out, per_class, seed):
    """Sample grid per class, class-count table and bar chart for an image DATASET."""
    from offline.data.settings import data_store

    data = load_images(dataset, data_store())
    paths = run_eda(data, out, per_class=per_class, seed=seed)
    click.echo(class_counts(data).to_markdown(index=False) if _has_tabulate() else class_counts(data).to_string(index=False))
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
