"""How many epochs a GAN-family image model needs: ``python -m benchmarks.image_convergence``.

Issue 16's rule for the ``full`` preset: autoencoders stop early on their held-out loss, while
each GAN-family model trains for an epoch count chosen *once*, from a convergence curve on one
class, and that class is then left out of any tuning claim. This command draws those curves.

Each model trains with its ``full`` recipe for up to ``--max-epochs`` on one class of the
one-class protocol (default Fashion-MNIST class 0, T-shirt/top). After every epoch, with the
networks in eval mode, it measures on the class's held-out tenth (never a test image, never an
anomaly label):

- ``frechet``: the Frechet distance, in the feature space of the small classifier the GAN-vs-VAE
  command uses (``offline.generative.measures``: not Inception FID), between what the model
  generates and the held-out images. "Generates" is ``--samples`` draws from the prior for the
  models with a latent generator (dcgan, egbad, the WGAN-GP phase of fanogan) and the
  reconstructions of the held-out images for the others (ganomaly, twodisc, fanogan's encoder
  phase);
- ``heldout_l1``: the mean absolute pixel error of those reconstructions, where there are any.

The epoch count is where the curve flattens (:func:`flattening_epoch`): the first epoch after
which the smoothed Frechet curve has at most ``TOLERANCE`` of its whole fall still to come. Rows
(one per model x phase x epoch) are appended to ``benchmarks/results/image_convergence.csv`` as
they come, so a stopped run resumes at the next model; ``--choose`` (also run at the end) writes
the chosen counts to ``image_epochs.json`` beside the CSV, the curves to
``benchmarks/figures/image-convergence.png`` and the section ``image-convergence`` of
``benchmarks/README.md``. AnoGAN trains exactly as the DCGAN (its search is at test time), so it
takes the DCGAN's count.
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

from offline.data.images import load_images
from offline.data.settings import data_store
from offline.detectors import make_detector
from offline.evaluation.benchmark import write_readme_section
from offline.generative.measures import FeatureClassifier, frechet_distance
from offline.training.images import FULL_EPOCHS, detector_params, one_class_split

log = logging.getLogger("benchmarks.image_convergence")

RESULTS = Path("benchmarks/results/image_convergence.csv")
CHOSEN = Path("benchmarks/results/image_epochs.json")
FIGURE = Path("benchmarks/figures/image-convergence.png")
MODELS = ["dcgan", "ganomaly", "egbad", "fanogan", "twodisc"]
#: models whose generator maps a prior draw to an image (their samples are measured)
SAMPLERS = {"dcgan", "egbad", "fanogan"}
TOLERANCE = 0.05  # share of the curve's whole fall allowed to remain after the chosen epoch
SMOOTHING = 3  # epochs in the centred rolling median that irons out single-epoch GAN noise
COMMAND = "python -m benchmarks.image_convergence"


def flattening_epoch(values: list[float], *, tolerance: float = TOLERANCE, smoothing: int = SMOOTHING) -> int:
    """The first (1-based) epoch after which at most ``tolerance`` of the smoothed curve's fall remains.

    >>> flattening_epoch([10, 5, 3, 2.1, 2.0, 2.05, 2.0, 1.98])
    4
    """
    smooth = pd.Series(values, dtype=float).rolling(smoothing, center=True, min_periods=1).median().to_numpy()
    fall = smooth.max() - smooth.min()
    if not np.isfinite(fall) or fall <= 0:
        return 1
    remaining = smooth - np.minimum.accumulate(smooth[::-1])[::-1]  # what is still to be gained after each epoch
    return int(np.flatnonzero(remaining <= tolerance * fall)[0]) + 1


class EpochMeter:
    """The detector's ``on_epoch_end`` callback: measures the epoch and appends its row to the CSV."""

    def __init__(self, model: str, classifier: FeatureClassifier, heldout: np.ndarray, *, samples: int, output: Path, meta: dict):
        self.model, self.classifier, self.heldout, self.samples, self.output, self.meta = model, classifier, heldout, samples, output, meta
        self.heldout_features = classifier.features(heldout)
        self.started = time.perf_counter()

    def __call__(self, detector, row: dict) -> None:
        phase = row.get("phase", "train")
        if self.model in SAMPLERS and phase != "encoder":
            generated, l1 = detector.sample(self.samples, seed=1), float("nan")
        else:
            generated = detector.expected(self.heldout)
            l1 = float(np.abs(generated - self.heldout).mean())
        out = {**self.meta, "model": self.model, "phase": phase, "epoch": int(row["epoch"]),
               "frechet": round(frechet_distance(self.classifier.features(generated), self.heldout_features), 4),
               "heldout_l1": round(l1, 6), "elapsed_seconds": round(time.perf_counter() - self.started, 1),
               # one JSON column: every model logs different losses, and the CSV keeps one header
               "losses": json.dumps({k: round(float(v), 6) for k, v in row.items() if k not in ("epoch", "phase")})}
        frame = pd.DataFrame([out])
        frame.to_csv(self.output, mode="a", header=not self.output.exists(), index=False)
        log.info("%s %s epoch %d: frechet %.3f heldout_l1 %.4f (%.0f s)", self.model, phase, out["epoch"], out["frechet"], l1,
                 out["elapsed_seconds"])


def done_models(output: Path, max_epochs: int, dataset: str, target_class: int) -> set[str]:
    """Models whose whole curve is already in the CSV (a stopped run resumes after them)."""
    if not output.exists():
        return set()
    rows = pd.read_csv(output)
    rows = rows[(rows["dataset"] == dataset) & (rows["target_class"] == target_class) & (rows["max_epochs"] == max_epochs)]
    done = set()
    for model, block in rows.groupby("model"):
        phases = {"wgan-gp", "encoder"} if model == "fanogan" else {"train"}
        if all((block["phase"] == p).sum() >= max_epochs for p in phases):
            done.add(model)
    return done


def choose(output: Path = RESULTS, *, figure: Path = FIGURE, readme: bool = True) -> dict:
    """Chosen epoch counts from the curves in ``output`` -> image_epochs.json beside it, a figure, a README section."""
    rows = pd.read_csv(output)
    chosen: dict = {}
    for (dataset, target_class, model, phase), block in rows.groupby(["dataset", "target_class", "model", "phase"], sort=False):
        block = block.sort_values("epoch").drop_duplicates("epoch", keep="last")
        epoch = flattening_epoch(block["frechet"].tolist())
        key = "encoder_epochs" if phase == "encoder" else "epochs"
        chosen.setdefault(model, {"dataset": dataset, "target_class": int(target_class), "epochs_measured": int(block["epoch"].max())})[key] = epoch
        chosen[model][f"{key}_frechet_first_best"] = [round(float(block["frechet"].iloc[0]), 3), round(float(block["frechet"].min()), 3)]
    if "dcgan" in chosen:
        chosen["anogan"] = {**chosen["dcgan"], "note": "trains as the DCGAN"}
    result = {"rule": f"first epoch after which at most {TOLERANCE:.0%} of the {SMOOTHING}-epoch-median Frechet curve's fall remains",
              "command": COMMAND, "models": chosen}
    (output.parent / CHOSEN.name).write_text(json.dumps(result, indent=2) + "\n")
    _figure(rows, chosen, figure)
    if readme:
        write_readme_section("image-convergence", readme_table(result))
    return result


def _figure(rows: pd.DataFrame, chosen: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(rows.groupby(["model", "phase"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3), squeeze=False)
    for ax, ((model, phase), block) in zip(axes[0], groups):
        block = block.sort_values("epoch")
        ax.plot(block["epoch"], block["frechet"], marker=".", lw=1)
        epoch = chosen[model]["encoder_epochs" if phase == "encoder" else "epochs"]
        ax.axvline(epoch, color="tab:red", ls="--", lw=1, label=f"chosen: {epoch}")
        ax.set_title(f"{model}" + (f" ({phase})" if phase != "train" else ""), fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("Frechet distance (classifier space)")
    first = rows.iloc[0]
    fig.suptitle(f"Convergence on {first['dataset']} class {int(first['target_class'])}, held-out normal images", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme_table(result: dict) -> str:
    models = result["models"]
    any_model = next(iter(models.values()), {})
    lines = ["## How long the GAN-family image models train", "",
             f"Command: `{COMMAND}` (curves in `benchmarks/results/image_convergence.csv`, chosen counts in "
             f"`benchmarks/results/image_epochs.json`, figure `benchmarks/figures/image-convergence.png`). Each model trains on "
             f"{any_model.get('dataset')} class {any_model.get('target_class')} (its held-out tenth measured after every epoch; "
             "this class is left out of every tuning claim). Rule: the " + result["rule"] + ".", "",
             "| model | epochs measured | chosen epochs | Frechet: epoch 1 -> best | encoder epochs (fanogan) |", "|---|---|---|---|---|"]
    for model, entry in models.items():
        first, best = entry.get("epochs_frechet_first_best", ["", ""])
        lines.append(f"| {model} | {entry['epochs_measured']} | {entry.get('epochs', '')} | {first} -> {best} | "
                     f"{entry.get('encoder_epochs', '')} |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default="fashion-mnist", show_default=True)
@click.option("--class", "target_class", type=click.IntRange(0, 9), default=0, show_default=True, help="the convergence class")
@click.option("--models", default=",".join(MODELS), show_default=True, help="comma-separated GAN-family models")
@click.option("--max-epochs", type=click.IntRange(2, 500), default=FULL_EPOCHS, show_default=True)
@click.option("--samples", type=click.IntRange(min=100), default=1000, show_default=True, help="prior draws measured per epoch")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads")
@click.option("--train-images", type=click.IntRange(min=64), default=None, help="train on fewer images (smoke runs only)")
@click.option("--classifier-images", type=click.IntRange(min=100), default=None,
              help="train the feature classifier on this many images (smoke runs only; default the whole train split)")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--figure", type=click.Path(path_type=Path), default=FIGURE, show_default=True)
@click.option("--readme/--no-readme", default=True, show_default=True, help="regenerate the image-convergence section of benchmarks/README.md")
@click.option("--choose", "only_choose", is_flag=True, help="only recompute the chosen counts, figure and README section from the CSV")
def main(dataset, target_class, models, max_epochs, samples, threads, train_images, classifier_images, output, figure, readme, only_choose):
    """Train each GAN-family model up to --max-epochs on one class; measure every epoch; choose the epoch counts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if only_choose:
        if not output.exists():
            raise click.UsageError(f"{output} does not exist: run without --choose first")
        click.echo(json.dumps(choose(output, figure=figure, readme=readme), indent=2))
        return
    chosen_models = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in chosen_models if m not in MODELS]
    if unknown:
        raise click.BadParameter(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}", param_hint="--models")
    torch.set_num_threads(threads)
    data = load_images(dataset, data_store())
    split = one_class_split(data, (target_class,), seed=0, train_limit=train_images)
    skip = done_models(output, max_epochs, dataset, target_class)
    todo = [m for m in chosen_models if m not in skip]
    if skip:
        log.info("curves already complete in %s: %s", output, ", ".join(sorted(skip)))
    if todo:
        classifier = FeatureClassifier(data, epochs=2, train_limit=classifier_images, progress=False)
        log.info("feature classifier: test accuracy %.4f", classifier.test_accuracy)
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():  # a model whose curve was cut short starts again from epoch 1
            rows = pd.read_csv(output)
            rows[~(rows["model"].isin(todo) & (rows["dataset"] == dataset) & (rows["target_class"] == target_class))].to_csv(output, index=False)
    for model in todo:
        overrides = {"epochs": max_epochs, "progress": True, **({"encoder_epochs": max_epochs} if model == "fanogan" else {})}
        detector = make_detector(model, **detector_params(model, "full", 0, overrides))
        meta = {"dataset": dataset, "target_class": target_class, "max_epochs": max_epochs, "train_images": len(split.x_train)}
        detector.on_epoch_end = EpochMeter(model, classifier, split.x_calibration, samples=samples, output=output, meta=meta)
        detector.fit(split.x_train)
    click.echo(json.dumps(choose(output, figure=figure, readme=readme), indent=2))


if __name__ == "__main__":
    main()
