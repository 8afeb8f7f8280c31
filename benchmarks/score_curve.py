"""Does a GAN-family model's anomaly score improve as it trains? ``python -m benchmarks.score_curve``.

The grid's first ``full`` DCGAN rows (MNIST classes 0-2, 15 epochs) scored AUROC 0.50-0.57, where
the 3-epoch ``reduced`` rows had 0.75-0.99. This command trains a model with the grid's ``full``
recipe on one class of the one-class protocol and, after every epoch (networks in eval mode),
scores a fixed random subset of the test split (``--test-images``) with the detector's own
``score``: the AUROC per epoch, beside the epoch's losses. The last epoch is the grid's model
(deterministic on the CPU), so its AUROC matches the grid row up to the subset.

It is a diagnosis, read with the anomaly labels: no epoch count or setting is chosen from it (the
GAN family's epochs come from ``python -m benchmarks.image_convergence``, label-free, on
Fashion-MNIST class 0). AnoGAN (minutes of latent search per scoring) and f-AnoGAN (its score
needs the encoder of its second phase) are left out.

Rows (one per model x epoch) are appended to ``benchmarks/results/score_curve.csv`` as they come;
the section ``score-curve`` of ``benchmarks/README.md`` is generated from them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from offline.bundle import code_version
from offline.data.images import load_images
from offline.data.settings import data_store
from offline.detectors import make_detector
from offline.evaluation.benchmark import write_readme_section
from offline.training.images import detector_params, one_class_split

log = logging.getLogger("benchmarks.score_curve")

RESULTS = Path("benchmarks/results/score_curve.csv")
MODELS = ["dcgan", "egbad", "ganomaly", "twodisc"]
COMMAND = "python -m benchmarks.score_curve"


class EpochScorer:
    """The detector's ``on_epoch_end`` callback: AUROC of its score on the test subset, one CSV row per epoch."""

    def __init__(self, x_test: np.ndarray, y_test: np.ndarray, *, output: Path, meta: dict):
        self.x_test, self.y_test, self.output, self.meta = x_test, y_test, output, meta
        self.started = time.perf_counter()

    def __call__(self, detector, row: dict) -> None:
        modes = {name: net.training for name, net in detector.nets.items()}
        for net in detector.nets.values():
            net.eval()
        try:
            auroc = float(roc_auc_score(self.y_test, detector.score(self.x_test)))
        finally:
            for name, net in detector.nets.items():
                net.train(modes[name])
        out = {**self.meta, "epoch": int(row["epoch"]), "auroc": round(auroc, 4),
               "elapsed_seconds": round(time.perf_counter() - self.started, 1),
               "losses": json.dumps({k: round(float(v), 4) for k, v in row.items() if k not in ("epoch", "phase")})}
        pd.DataFrame([out]).to_csv(self.output, mode="a", header=not self.output.exists(), index=False)
        log.info("%s epoch %d: AUROC %.4f", self.meta["model"], out["epoch"], auroc)


def curve(model: str, dataset: str, target_class: int, *, seed: int, test_images: int, output: Path,
          train_images: int | None = None):
    """Train ``model``'s full recipe on the class, scoring after every epoch; returns the trained detector."""
    data = load_images(dataset, data_store())
    split = one_class_split(data, (target_class,), seed=seed, train_limit=train_images)
    subset = np.random.default_rng(seed).choice(len(split.x_test), min(test_images, len(split.x_test)), replace=False)
    detector = make_detector(model, **detector_params(model, "full", seed, {"progress": False}))
    detector.on_epoch_end = EpochScorer(split.x_test[subset], split.y_test[subset], output=output,
                                        meta={"model": model, "dataset": dataset, "target_class": target_class, "seed": seed,
                                              "test_images": len(subset), "train_rows": len(split.x_train),
                                              "code_version": code_version()})
    return detector.fit(split.x_train, X_val=split.x_calibration)


def readme_table(rows: pd.DataFrame) -> str:
    rows = rows.drop_duplicates(["model", "dataset", "target_class", "seed", "epoch"], keep="last")
    last = int(rows["epoch"].max())
    lines = ["## Does a GAN's anomaly score improve as it trains?", "",
             f"Command: `{COMMAND}` (rows in `benchmarks/results/score_curve.csv`). Each model trains with the grid's `full` "
             "recipe on one class (one-class protocol, seed 0); after every epoch its own score is measured on a fixed random "
             "subset of the test split (AUROC). A diagnosis read with the labels: no setting is chosen from it. The last "
             "epoch is the grid's model.", "",
             "| model | dataset | class | train images | test images | " + " | ".join(str(e) for e in range(1, last + 1)) + " |",
             "|---|---|---|---|---|" + "---|" * last]
    for (model, dataset, target_class), block in rows.groupby(["model", "dataset", "target_class"], sort=False):
        cells = dict(zip(block["epoch"], block["auroc"]))
        lines.append(f"| {model} | {dataset} | {target_class} | {int(block['train_rows'].iloc[0])} | {int(block['test_images'].iloc[0])} | "
                     + " | ".join(f"{cells[e]:.3f}" if e in cells else "" for e in range(1, last + 1)) + " |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default="mnist", show_default=True)
@click.option("--class", "target_class", type=click.IntRange(0, 9), default=0, show_default=True, help="the normal class")
@click.option("--models", default="dcgan", show_default=True, help=f"comma-separated, of {', '.join(MODELS)}")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--test-images", type=click.IntRange(min=100), default=2000, show_default=True, help="test images scored per epoch")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads")
@click.option("--train-images", type=click.IntRange(min=64), default=None, help="train on fewer images (smoke runs only)")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--readme/--no-readme", default=True, show_default=True, help="regenerate the score-curve section of benchmarks/README.md")
def main(dataset, target_class, models, seed, test_images, threads, train_images, output, readme):
    """Train GAN-family models on one class; the AUROC of their score after every epoch."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    chosen = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or not chosen:
        raise click.BadParameter(f"{', '.join(unknown) or 'none given'}: choose from {', '.join(MODELS)}", param_hint="--models")
    torch.set_num_threads(threads)
    output.parent.mkdir(parents=True, exist_ok=True)
    for model in chosen:
        curve(model, dataset, target_class, seed=seed, test_images=test_images, output=output, train_images=train_images)
    if readme:
        write_readme_section("score-curve", readme_table(pd.read_csv(output)))
    click.echo(f"rows in {output}")


if __name__ == "__main__":
    main()
