"""GAN vs VAE, measured: ``python -m offline.generative.gan_vs_vae --dataset mnist --seeds 0,1,2``.

Trains a DCGAN and a conv VAE on all classes of the dataset per seed (``offline.generative.measures``),
measures after every epoch the Frechet distance in our classifier's feature space, and at the
end class coverage of 10,000 samples, a linear probe on latent codes and interpolation
smoothness. Rows go to ``benchmarks/results/gan_vs_vae.csv`` (one per dataset, model, seed,
epochs, train_limit; resumable); the table in ``benchmarks/README.md`` (between the
``gan-vs-vae`` markers) and ``benchmarks/figures/gan-vs-vae-*.png`` are regenerated from it.

Stability: the spread (std) of the final Frechet distance over seeds, the mean over seeds of its
spread over the last 3 epochs, and failed runs (a run fails when its samples cover fewer than 8
of the 10 classes at 2% or more, i.e. mode collapse, or its distance is not finite).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np
import pandas as pd

from offline.evaluation.benchmark import write_readme_section

log = logging.getLogger("offline.generative.gan_vs_vae")

RESULTS = Path("benchmarks/results/gan_vs_vae.csv")
FIGURES = Path("benchmarks/figures")
LAST_EPOCHS = 3
MIN_CLASSES = 8
PER_EPOCH_SAMPLES = 2000


def compare(data, *, seeds: list[int], epochs: int, train_limit: int | None, classifier_epochs: int, samples: int,
            results: Path = RESULTS, figures: Path = FIGURES, progress: bool = True, device: str = "cpu") -> pd.DataFrame:
    from offline.generative.measures import (
        FeatureClassifier,
        encoder_probe,
        interpolation_smoothness,
        latent_probe,
        measure,
        train_all_classes,
    )

    done = pd.read_csv(results) if Path(results).exists() else pd.DataFrame()
    classifier = FeatureClassifier(data, epochs=classifier_epochs, seed=0, progress=progress, device=device)
    log.info("classifier test accuracy on %s: %.4f", data.name, classifier.test_accuracy)
    real = classifier.features(data.x_test)
    rng = np.random.default_rng(0)
    real_small = real[rng.permutation(len(real))[:PER_EPOCH_SAMPLES]]
    n_classes = len(data.class_names)
    rows = []
    for seed in seeds:
        for model in ("dcgan", "vae"):
            key = dict(dataset=data.name, model=model, seed=seed, epochs=epochs, train_limit=train_limit or 0)
            if not done.empty and ((done[KEY] == pd.Series(key)).all(axis=1)).any():
                continue

            def per_epoch(det, seed=seed):
                return {"frechet_classifier_2k": measure(det, classifier, real_small, n_classes, n=PER_EPOCH_SAMPLES, seed=seed)["frechet_classifier"]}

            detector, history = train_all_classes(data, model, seed=seed, epochs=epochs, train_limit=train_limit, per_epoch=per_epoch,
                                                  progress=progress, device=device)
            final = measure(detector, classifier, real, n_classes, n=samples, seed=seed)
            last = [h["frechet_classifier_2k"] for h in history[-LAST_EPOCHS:]]
            row = {**key, **final, "frechet_last_epochs_std": float(np.std(last)) if len(last) > 1 else float("nan"),
                   "latent_probe_accuracy": latent_probe(detector, classifier, seed=seed),
                   **interpolation_smoothness(detector, classifier, seed=seed),
                   "encoder_probe_accuracy": encoder_probe(detector.encode(data.x_test[:4000]), data.y_test[:4000]) if model == "vae" else float("nan"),
                   "classifier_accuracy": classifier.test_accuracy, "samples": samples,
                   "failed": bool(final["classes_covered"] < MIN_CLASSES or not np.isfinite(final["frechet_classifier"])),
                   "per_epoch_frechet_2k": json.dumps([round(v, 3) for v in (h["frechet_classifier_2k"] for h in history)])}
            rows.append(row)
            frame = pd.DataFrame([row])
            frame.to_csv(results, mode="a", header=not Path(results).exists(), index=False)
            log.info("%s %s seed %d: Frechet (classifier) %.2f, classes covered %d", data.name, model, seed, final["frechet_classifier"],
                     final["classes_covered"])
    return pd.read_csv(results)


KEY = ["dataset", "model", "seed", "epochs", "train_limit"]


def merge_rows(source: Path, results: Path = RESULTS) -> tuple[pd.DataFrame, int]:
    """Append the rows of ``source`` whose (dataset, model, seed, epochs, train_limit) ``results`` lacks."""
    new = pd.read_csv(source)
    if missing := set(KEY) - set(new.columns):
        raise click.UsageError(f"{source} is not a gan_vs_vae results file: no column {', '.join(sorted(missing))}")
    done = pd.read_csv(results) if Path(results).exists() else new.iloc[:0]
    have = set(map(tuple, done[KEY].astype(str).values))
    fresh = new[[tuple(row) not in have for row in new[KEY].astype(str).values]]
    if not fresh.empty:
        fresh.to_csv(results, mode="a", header=not Path(results).exists(), index=False)
    return pd.read_csv(results), len(fresh)


def figures_from(rows: pd.DataFrame, figures: Path = FIGURES) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset, block in rows.groupby("dataset"):
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for _, row in block.iterrows():
            curve = json.loads(row["per_epoch_frechet_2k"])
            ax.plot(range(1, len(curve) + 1), curve, marker="o", ms=3, color="C0" if row["model"] == "dcgan" else "C1",
                    label=f"{row['model']} seed {row['seed']}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("Frechet distance (our classifier, 2k samples)")
        ax.set_title(f"{dataset}: GAN vs VAE per epoch (not Inception FID)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(figures) / f"gan-vs-vae-{dataset}-frechet-per-epoch.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def table(rows: pd.DataFrame) -> str:
    lines = [
        "## GAN vs VAE, measured",
        "",
        "Command: `python -m offline.generative.gan_vs_vae --dataset mnist --dataset fashion-mnist --seeds 0,1,2 --epochs N "
        "[--train-limit M]` with N and M the table's epochs and train images (rows in "
        "`benchmarks/results/gan_vs_vae.csv`, figures `benchmarks/figures/gan-vs-vae-*.png`). DCGAN vs conv VAE trained on all "
        "classes. *Frechet (classifier)* is the Frechet distance between 10,000 samples and the test split in the 128-d feature "
        "space of a small classifier trained per dataset (NOT Inception FID; lower is better). *Covered*: classes receiving "
        f">= 2% of the samples (mean over seeds). Stability: std of the final distance over seeds, mean std over the last {LAST_EPOCHS} "
        f"epochs (2,000 samples per epoch), failed runs (< {MIN_CLASSES} classes covered). Latent structure: linear-probe accuracy "
        "from prior draws z to the classifier's label of the generated image (and, VAE only, from encoder means to true labels); "
        "interpolation: median path-length / endpoint distance in feature space (1 = straight) and max step / mean step.",
        "",
        "| dataset | model | epochs | train images | seeds | Frechet (classifier) | std over seeds | std last epochs | covered | failed | "
        "probe z | probe mu(x) | interp path ratio | interp max step | classifier acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, model, epochs, limit), g in rows.groupby(["dataset", "model", "epochs", "train_limit"], sort=True):
        fd = g["frechet_classifier"]
        encoder = "" if g["encoder_probe_accuracy"].isna().all() else f"{g['encoder_probe_accuracy'].mean():.3f}"
        lines.append(
            f"| {dataset} | {model} | {epochs} | {limit or 'all'} | {len(g)} | {fd.mean():.2f} | {fd.std(ddof=0):.2f} | "
            f"{g['frechet_last_epochs_std'].mean():.2f} | {g['classes_covered'].mean():.1f} | {int(g['failed'].sum())} | "
            f"{g['latent_probe_accuracy'].mean():.3f} | {encoder} | "
            f"{g['interp_path_ratio'].mean():.2f} | {g['interp_max_step_ratio'].mean():.2f} | {g['classifier_accuracy'].mean():.3f} |"
        )
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", "datasets", multiple=True, default=["mnist"], show_default=True, type=click.Choice(["mnist", "fashion-mnist"]))
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--epochs", type=int, default=50, show_default=True, help="training epochs of each generator (classic recipe 50)")
@click.option("--train-limit", type=int, default=None, help="train on a random subset of this many images")
@click.option("--classifier-epochs", type=int, default=2, show_default=True)
@click.option("--samples", type=int, default=10_000, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device of the generators and the classifier (cpu, cuda)")
@click.option("--results", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--no-readme", is_flag=True, help="write rows only: no figures, no README table (e.g. on the GPU machine)")
@click.option("--merge", "merge_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="only add the rows of this file (e.g. one brought back from a GPU machine) that --results lacks, then redraw")
def main(datasets, seeds, epochs, train_limit, classifier_epochs, samples, threads, device, results, no_readme, merge_path):
    """Train DCGAN and VAE per seed and measure them in our classifier's feature space."""
    import torch

    from offline.data.images import load_images
    from offline.data.settings import data_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    rows = None
    if merge_path is not None:
        rows, added = merge_rows(merge_path, results)
        click.echo(f"{added} new rows of {merge_path} merged into {results}")
    else:
        store = data_store()
        for dataset in datasets:
            rows = compare(load_images(dataset, store), seeds=[int(s) for s in seeds.split(",")], epochs=epochs,
                           train_limit=train_limit, classifier_epochs=classifier_epochs, samples=samples, results=results,
                           device=device)
    if rows is not None and not rows.empty and not no_readme:
        figures_from(rows)
        write_readme_section("gan-vs-vae", table(rows))
        click.echo(table(rows))


if __name__ == "__main__":
    main()
