"""Sample grids from the generative models: ``python -m offline.generative.sample --dataset mnist --dataset fashion-mnist``.

Writes under ``benchmarks/figures/`` (or ``--out``), per dataset:

- ``sample-<ds>-gan-random.png``: 10 samples of the DCGAN trained on all classes;
- ``sample-<ds>-gan-class.png``: 5 samples of one class from the class-conditional GAN
  (MNIST: digit 3; Fashion-MNIST: shoes = sandal, sneaker, ankle boot, 10 samples);
- ``sample-<ds>-vae-random.png`` / ``sample-<ds>-vae-class.png``: the same from the VAE and the
  class-conditional VAE (MNIST: digit 2; Fashion-MNIST: shoes);
- ``sample-<ds>-vae-reconstructions.png``: a VAE trained on one class (MNIST 2, Fashion shoes)
  reconstructing normal and anomalous test images;
- ``sample-<ds>-interpolation.png``: latent interpolation strips (VAE between the encodings of
  two test images of different classes; DCGAN between two prior draws).

Models are trained on first use and reused from ``runs/generative/`` (see ``offline.generative.measures``).

The same models are then judged by the classifier ``offline.generative.gan_vs_vae`` trains
(``FeatureClassifier``, same epochs and seed): the unconditional DCGAN's and VAE's class coverage over
10,000 samples, and for the conditional GAN and VAE the share of ``--per-class`` samples requested
as each class that the classifier reads as that class (target >= 90%), beside the classifier's own
recall on that class's real test images. Rows go to ``benchmarks/results/generation.csv`` (one per
dataset, model, seed, epochs, train_limit; a rerun replaces its rows), the table to the
``generation`` section of ``benchmarks/README.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import json

import click
import numpy as np
import pandas as pd

from offline.evaluation.benchmark import write_readme_section
from offline.figures.images import save_grid

log = logging.getLogger("offline.generative.sample")

CLASS_SAMPLES = {"mnist": {"gan": (3,), "vae": (2,)}, "fashion-mnist": {"gan": (5, 7, 9), "vae": (5, 7, 9)}}
RECON_CLASS = {"mnist": (2,), "fashion-mnist": (5, 7, 9)}
GENERATORS = {"dcgan": "DCGAN", "vae": "VAE", "cgan": "conditional GAN", "cvae": "conditional VAE"}
RESULTS = Path("benchmarks/results/generation.csv")
TARGET_RATE = 0.9
KEY = ["dataset", "model", "seed", "epochs", "train_limit"]


def _name(data, classes) -> str:
    from offline.data.images import class_label

    label = class_label(data.name, tuple(classes))
    return f"digit {label}" if data.name == "mnist" else label


def train_generators(data, *, epochs: int, train_limit: int | None, seed: int = 0, progress: bool = True) -> dict:
    from offline.generative.measures import train_all_classes

    return {model: train_all_classes(data, model, seed=seed, epochs=epochs, train_limit=train_limit, progress=progress)[0]
            for model in GENERATORS}


def _trained_on(data, epochs: int, train_limit: int | None) -> str:
    return f"{epochs} epochs on {train_limit or len(data.x_train):,} training images"


def make_samples(data, out: Path, *, epochs: int, train_limit: int | None, recon_epochs: int, seed: int = 0,
                 progress: bool = True, generators: dict | None = None) -> list[Path]:
    from offline.generative.measures import prior
    from offline.training.images import one_class_split
    from offline.detectors import make_detector

    out = Path(out)
    ds = data.name
    paths = []
    models = generators or train_generators(data, epochs=epochs, train_limit=train_limit, seed=seed, progress=progress)
    dcgan, vae = models["dcgan"], models["vae"]
    trained = _trained_on(data, epochs, train_limit)
    paths.append(save_grid(dcgan.sample(10, seed=seed), out / f"sample-{ds}-gan-random.png", ncol=10,
                           title=f"DCGAN ({trained}), {ds}: 10 random samples"))
    paths.append(save_grid(vae.sample(10, seed=seed), out / f"sample-{ds}-vae-random.png", ncol=10,
                           title=f"VAE ({trained}), {ds}: 10 random samples"))
    for kind, model in (("gan", models["cgan"]), ("vae", models["cvae"])):
        classes = CLASS_SAMPLES[ds][kind]
        n = 5 if len(classes) == 1 else 10
        labels = np.resize(np.asarray(classes), n)
        paths.append(save_grid(model.sample(n, seed=seed, labels=labels), out / f"sample-{ds}-{kind}-class.png", ncol=n,
                               title=f"conditional {kind.upper()} ({trained}), {ds}: {n} samples of {_name(data, classes)}"))
    # a VAE of one class reconstructing normal and anomalous inputs
    classes = RECON_CLASS[ds]
    split = one_class_split(data, classes, seed=seed, train_limit=train_limit)
    one_class_vae = make_detector("vae", epochs=recon_epochs, latent_dim=16, batch_size=64, seed=seed, progress=progress).fit(split.x_train)
    rng = np.random.default_rng(seed)
    normal = split.x_test[rng.choice(np.flatnonzero(split.y_test == 0), 10, replace=False)]
    anomalous = split.x_test[rng.choice(np.flatnonzero(split.y_test == 1), 10, replace=False)]
    grid = np.concatenate([normal, one_class_vae.expected(normal), anomalous, one_class_vae.expected(anomalous)])
    paths.append(save_grid(grid, out / f"sample-{ds}-vae-reconstructions.png", ncol=10, row_labels=["normal", "recon", "anomal.", "recon"],
                           title=f"VAE trained on {_name(data, classes)} ({recon_epochs} epochs): normal / anomalous test images and reconstructions"))
    # interpolation strips
    steps = 10
    t = np.linspace(0, 1, steps, dtype=np.float32)[:, None]
    first, second = [np.flatnonzero(data.y_test == c)[0] for c in (1, 7)] if ds == "mnist" else [np.flatnonzero(data.y_test == c)[0] for c in (7, 9)]
    mu = vae.encode(data.x_test[[first, second]])
    vae_strip = vae.decode(mu[0] * (1 - t) + mu[1] * t)
    z = prior(2, dcgan.latent, seed + 11)
    gan_strip = dcgan._predict(lambda v: dcgan._out(dcgan.nets["G"](v)), (z[0] * (1 - t) + z[1] * t).astype(np.float32))
    strip = np.concatenate([data.x_test[[first]], vae_strip, data.x_test[[second]], gan_strip[:1] * 0 + 1, gan_strip, gan_strip[:1] * 0 + 1])
    paths.append(save_grid(strip, out / f"sample-{ds}-interpolation.png", ncol=steps + 2, row_labels=["VAE", "DCGAN"],
                           title=f"{ds}: latent interpolation, VAE and DCGAN ({trained}; VAE: between two test images' encodings; "
                                 "DCGAN: two prior draws)"))
    return paths


def generation_rows(data, generators: dict, classifier, *, epochs: int, train_limit: int | None, seed: int,
                    per_class: int, samples: int = 10_000) -> list[dict]:
    """Judge every generator with ``classifier``: coverage of unconditional samples, per-class rates of conditional ones."""
    from offline.generative.measures import class_coverage, class_recall, conditional_rates

    n_classes = len(data.class_names)
    recall = class_recall(classifier, data)
    rows = []
    for model, detector in generators.items():
        row = {"dataset": data.name, "model": model, "seed": seed, "epochs": epochs, "train_limit": train_limit or 0,
               "train_images": train_limit or len(data.x_train), "classifier_accuracy": classifier.test_accuracy,
               "classifier_recall": json.dumps([round(float(v), 4) for v in recall])}
        if model in ("cgan", "cvae"):
            rates = conditional_rates(detector, classifier, n_classes, per_class=per_class, seed=seed)
            row.update(kind="conditional", samples=per_class * n_classes, rate_mean=float(rates.mean()), rate_min=float(rates.min()),
                       classes_at_target=int((rates >= TARGET_RATE).sum()), rates=json.dumps([round(float(v), 4) for v in rates]))
        else:
            predicted = classifier.predict(detector.sample(samples, seed=seed))
            row.update(kind="unconditional", samples=samples, **class_coverage(predicted, n_classes),
                       class_shares=json.dumps([round(float(v), 4) for v in np.bincount(predicted, minlength=n_classes) / samples]))
        rows.append(row)
    return rows


def store_rows(rows: list[dict], results: Path = RESULTS) -> pd.DataFrame:
    new = pd.DataFrame(rows)
    if Path(results).exists():
        old = pd.read_csv(results)
        replaced = old.set_index(KEY).index.isin(new.set_index(KEY).index)
        new = pd.concat([old[~replaced], new], ignore_index=True)
    Path(results).parent.mkdir(parents=True, exist_ok=True)
    new.to_csv(results, index=False)
    return new


def table(rows: pd.DataFrame) -> str:
    lines = [
        "## Generation: do the samples look like the classes?",
        "",
        "Command: `python -m offline.generative.sample --dataset mnist --dataset fashion-mnist --epochs 10 --threads 1` "
        "(rows in `benchmarks/results/generation.csv`; figures `benchmarks/figures/sample-*.png`). Every model is trained on "
        "the whole training split (all 10 classes) and judged by the small classifier `offline.generative.gan_vs_vae` trains "
        "(same recipe and seed; its test accuracy and per-class recall on real images beside). Unconditional models (DCGAN, "
        "VAE): classes receiving >= 2% of 10,000 samples and the largest share (uniform is 0.10). Conditional models: the share "
        f"of 1,000 samples requested as each class that the classifier reads as that class (target >= {TARGET_RATE:.0%}); "
        "*at target* counts the classes that reach it. A class's rate cannot be judged above the classifier's recall on it.",
        "",
        "| dataset | model | epochs | train images | seed | covered (>=2%) | max share | rate mean | rate min | classes at target | "
        "classifier acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in rows.sort_values(["dataset", "kind", "model", "epochs", "seed"], ascending=[False, False, True, True, True]).iterrows():
        conditional = r["kind"] == "conditional"
        cells = ["", "", f"{r['rate_mean']:.3f}", f"{r['rate_min']:.3f}", f"{int(r['classes_at_target'])} of 10"] if conditional else \
            [str(int(r["classes_covered"])), f"{r['max_class_share']:.3f}", "", "", ""]
        lines.append(f"| {r['dataset']} | {GENERATORS[r['model']]} | {r['epochs']} | {int(r['train_images']):,} | {r['seed']} | "
                     + " | ".join(cells) + f" | {r['classifier_accuracy']:.3f} |")
    lines += ["", "Per-class rates of the conditional models (classifier recall on real test images in brackets):", "",
              "| dataset | model | epochs | " + " | ".join(str(c) for c in range(10)) + " |", "|---|---|---|" + "---|" * 10]
    for _, r in rows[rows["kind"] == "conditional"].sort_values(["dataset", "model", "epochs"], ascending=[False, True, True]).iterrows():
        rates, recall = json.loads(r["rates"]), json.loads(r["classifier_recall"])
        lines.append(f"| {r['dataset']} | {GENERATORS[r['model']]} | {r['epochs']} | "
                     + " | ".join(f"{a:.2f} ({b:.2f})" for a, b in zip(rates, recall)) + " |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", "datasets", multiple=True, default=["mnist", "fashion-mnist"], show_default=True,
              type=click.Choice(["mnist", "fashion-mnist"]))
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="epochs of the all-class generators")
@click.option("--train-limit", type=click.IntRange(min=1), default=None, help="train on a random subset of this many images")
@click.option("--recon-epochs", type=click.IntRange(min=1), default=None, help="epochs of the one-class VAE (default: --epochs)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/figures"), show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--rates/--no-rates", default=True, show_default=True, help="judge the generators with the classifier (generation.csv)")
@click.option("--per-class", type=click.IntRange(min=10), default=1000, show_default=True, help="conditional samples per class")
@click.option("--classifier-epochs", type=click.IntRange(min=1), default=2, show_default=True,
              help="the judging classifier's epochs (as gan_vs_vae)")
@click.option("--results", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
def main(datasets, epochs, train_limit, recon_epochs, seed, out, threads, rates, per_class, classifier_epochs, results):
    """Write sample grids, reconstructions and interpolation strips for the generative models, and judge them."""
    import torch

    from offline.data.images import load_images
    from offline.data.settings import data_store
    from offline.generative.measures import FeatureClassifier

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    store = data_store()
    for dataset in datasets:
        data = load_images(dataset, store)
        generators = train_generators(data, epochs=epochs, train_limit=train_limit, seed=seed)
        for path in make_samples(data, out, epochs=epochs, train_limit=train_limit, recon_epochs=recon_epochs or epochs, seed=seed,
                                 generators=generators):
            click.echo(str(path))
        if rates:
            classifier = FeatureClassifier(data, epochs=classifier_epochs, seed=0)
            rows = store_rows(generation_rows(data, generators, classifier, epochs=epochs, train_limit=train_limit, seed=seed,
                                              per_class=per_class), results)
            if Path(results).resolve() == RESULTS.resolve():
                write_readme_section("generation", table(rows))
            click.echo(table(rows))


if __name__ == "__main__":
    main()
