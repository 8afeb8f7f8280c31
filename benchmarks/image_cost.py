"""What one image run costs here, and which CPU levers lower it: ``python -m benchmarks.image_cost``.

Every image model of the images suite trains one epoch on one class of the one-class protocol
(its ``full`` recipe otherwise: the class's whole train split less the held-out tenth) and scores
test images, once per *lever*, all in one run so that every lever meets the same machine load:

- ``baseline``: float32, NCHW layout, the recipe's batch size (64), one torch thread;
- ``channels-last``: conv nets in channels_last layout (``offline.detectors.training.CHANNELS_LAST``);
- ``bf16-autocast``: ``torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)`` around
  training and scoring (without ``cache_enabled=False`` one context around a whole fit keeps using
  the weights' first bf16 copies: the model does not learn);
- ``threads-2``: two torch threads (meaningful only when nothing else runs on the second core);
- ``batch-256``: four times the batch (a recipe change: fewer, larger steps per epoch);
- ``compile``: ``torch.compile`` on every network (its compile time is counted: one epoch).

The code's default is ``channels-last`` (``training.CHANNELS_LAST``); the rest as the baseline.

The epoch is timed on ``--train-images`` of the class (default 1,024: bf16 and compile are slow
here) and scaled to the whole class; the first fit of each model (kernel set-up) is not counted.

Levers are A/B against ``baseline``, one at a time. The training set is already one in-memory
tensor indexed per batch (``train_loop``), and AnoGAN's latent search is already batched over
512 test images at a time, so neither has a lever here. Rows (seconds per epoch, milliseconds
per scored image, speed-up against the baseline) go to ``benchmarks/results/image_cost.csv``;
the table in ``benchmarks/README.md`` (section ``image-cost``) is generated from them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from offline.data.images import load_images
from offline.data.settings import data_store
from offline.detectors import training
from offline.evaluation.benchmark import write_readme_section
from offline.training.images import EARLY_STOPPED, detector_params, fit_detector, one_class_split

log = logging.getLogger("benchmarks.image_cost")

RESULTS = Path("benchmarks/results/image_cost.csv")
MODELS = ["ae", "vae", "dcgan", "anogan", "egbad", "ganomaly", "fanogan", "twodisc"]
COMMAND = "python -m benchmarks.image_cost"


@dataclass(frozen=True)
class Lever:
    name: str
    threads: int = 1
    batch_size: int = 64
    channels_last: bool = False
    autocast: bool = False
    compile: bool = False


BASELINE = Lever("baseline")
LEVERS = {lever.name: lever for lever in [
    BASELINE,
    replace(BASELINE, name="channels-last", channels_last=True),
    replace(BASELINE, name="bf16-autocast", autocast=True),
    replace(BASELINE, name="threads-2", threads=2),
    replace(BASELINE, name="batch-256", batch_size=256),
    replace(BASELINE, name="compile", compile=True),
]}


@contextlib.contextmanager
def applied(lever: Lever):
    """Set the process-wide knobs of ``lever`` for the duration of one fit + score."""
    threads, channels_last, place = torch.get_num_threads(), training.CHANNELS_LAST, training.place
    torch.set_num_threads(lever.threads)
    training.CHANNELS_LAST = lever.channels_last
    if lever.compile:
        # train_loop places every network it trains; compiling there reaches every model's nets
        training.place = lambda net, device="cpu": place(net, device).compile() or net
    try:
        with training.bf16_autocast("cpu", lever.autocast):
            yield
    finally:
        torch.set_num_threads(threads)
        training.CHANNELS_LAST, training.place = channels_last, place


def one_epoch_params(model: str, lever: Lever) -> dict:
    overrides = {"epochs": 1, "batch_size": lever.batch_size, "progress": False}
    if model == "fanogan":
        overrides["encoder_epochs"] = 1  # its second phase (the encoder) trains one epoch too
    return detector_params(model, "full", 0, overrides)


def measure(model: str, lever: Lever, split, score_images: int, class_images: int) -> dict:
    fit_kwargs = {"X_val": split.x_calibration} if model in EARLY_STOPPED else {}
    with applied(lever):
        detector, train_seconds = fit_detector(model, one_epoch_params(model, lever), split.x_train, **fit_kwargs)
        test = split.x_test[:score_images]
        start = time.perf_counter()
        scores = detector.score(test)
        score_seconds = time.perf_counter() - start
    if not np.isfinite(scores).all():
        raise RuntimeError(f"{model} under {lever.name} gave non-finite scores")
    return {"model": model, "lever": lever.name, "threads": lever.threads, "batch_size": lever.batch_size,
            "channels_last": lever.channels_last, "bf16_autocast": lever.autocast, "compiled": lever.compile,
            "train_images": len(split.x_train), "measured_seconds": round(train_seconds, 3),
            # cost is linear in the images seen: the epoch over the whole class, from the measured share
            "epoch_seconds": round(train_seconds * class_images / len(split.x_train), 3),
            "score_images": len(test), "score_ms_per_image": round(1000 * score_seconds / max(len(test), 1), 4)}


def readme_table(table: pd.DataFrame) -> str:
    """Seconds per epoch (x speed-up against the baseline) and ms per scored image, model by lever."""
    levers = [name for name in LEVERS if name in set(table["lever"])]
    first = table.iloc[0]
    lines = ["## What an image run costs on this machine, and the levers tried", "",
             f"Command: `{COMMAND}` (rows in `benchmarks/results/image_cost.csv`, measured {first['measured_at']} on "
             f"{first['machine']}). One epoch of the `full` recipe on {first['dataset']} class {first['target_class']} "
             f"(timed on {int(first['train_images'])} of its training images, scaled to the whole class), then scoring test images; every lever in the same run, "
             "one at a time against the baseline (float32, NCHW, batch 64, one torch thread). "
             "Cell: seconds per epoch (speed-up against the baseline).", "",
             "| model | " + " | ".join(levers) + " |", "|---|" + "---|" * len(levers)]
    for model, block in table.groupby("model", sort=False):
        by = block.set_index("lever")
        base = by.loc["baseline", "epoch_seconds"]
        cells = [cell(by, lever, f"{by.loc[lever, 'epoch_seconds']:.2f} (x{base / by.loc[lever, 'epoch_seconds']:.2f})")
                 for lever in levers]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "Milliseconds per scored image (AnoGAN: its 100-step latent search):", "",
              "| model | " + " | ".join(levers) + " |", "|---|" + "---|" * len(levers)]
    for model, block in table.groupby("model", sort=False):
        by = block.set_index("lever")
        lines.append(f"| {model} | " + " | ".join(cell(by, lever, f"{by.loc[lever, 'score_ms_per_image']:.3f}") for lever in levers) + " |")
    failed = table[table["error"].notna()] if "error" in table else table.iloc[:0]
    if len(failed):
        lines += ["", "Failed runs: " + "; ".join(f"{r.model} {r.lever}: `{r.error}`" for r in failed.itertuples()) + "."]
    return "\n".join(lines)


def cell(by: pd.DataFrame, lever: str, text: str) -> str:
    if lever not in by.index:
        return ""
    return "failed" if "error" in by and isinstance(by.loc[lever, "error"], str) else text


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default="mnist", show_default=True)
@click.option("--class", "target_class", type=click.IntRange(0, 9), default=0, show_default=True, help="the normal class")
@click.option("--models", default=",".join(MODELS), show_default=True, help="comma-separated image models")
@click.option("--levers", default=",".join(LEVERS), show_default=True, help="comma-separated levers (baseline is always run)")
@click.option("--train-images", type=click.IntRange(min=64), default=1024, show_default=True,
              help="train on this many of the class's images; seconds per epoch are scaled to the whole class")
@click.option("--score-images", type=click.IntRange(min=1), default=1000, show_default=True, help="test images scored per run")
@click.option("--search-images", type=click.IntRange(min=1), default=200, show_default=True,
              help="test images scored by AnoGAN (100 latent-search steps each)")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--readme/--no-readme", default=True, show_default=True, help="regenerate the image-cost section of benchmarks/README.md")
def main(dataset, target_class, models, levers, train_images, score_images, search_images, output, readme):
    """Seconds per epoch and per scored image of every image model, under each CPU lever, in one run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    chosen_models = [m.strip() for m in models.split(",") if m.strip()]
    chosen_levers = ["baseline"] + [name.strip() for name in levers.split(",") if name.strip() and name.strip() != "baseline"]
    unknown = [m for m in chosen_models if m not in MODELS] + [name for name in chosen_levers if name not in LEVERS]
    if unknown:
        raise click.BadParameter(f"unknown: {', '.join(unknown)}; models: {', '.join(MODELS)}; levers: {', '.join(LEVERS)}")
    data = load_images(dataset, data_store())
    split = one_class_split(data, (target_class,), seed=0, train_limit=train_images)
    class_images = len(one_class_split(data, (target_class,), seed=0).x_train)
    stamp, where = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine()
    rows = []
    bar = tqdm([(m, name) for m in chosen_models for name in chosen_levers], desc="image cost", unit="run")
    warmed: set[str] = set()
    for model, name in bar:
        bar.set_postfix_str(f"{model} {name}")
        if model not in warmed:  # the first fit of a model pays one-off kernel set-up: not counted
            measure(model, BASELINE, one_class_split(data, (target_class,), seed=0, train_limit=128), 8, class_images)
            warmed.add(model)
        try:
            row = measure(model, LEVERS[name], split, search_images if model == "anogan" else score_images, class_images)
        except Exception as error:  # a lever this model cannot take (e.g. compile with retain_graph) is a row, not the end
            log.warning("%s %s failed: %s", model, name, error)
            row = {"model": model, "lever": name, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        rows.append({"dataset": dataset, "target_class": target_class, **row, "measured_at": stamp, "machine": where})
        if "error" not in row:
            log.info("%s %s: %.2f s/epoch, %.3f ms per scored image", model, name, row["epoch_seconds"], row["score_ms_per_image"])
    table = pd.DataFrame(rows)
    base = table[table["lever"] == "baseline"].set_index("model")["epoch_seconds"]
    table["epoch_speedup"] = (table["model"].map(base) / table["epoch_seconds"]).round(3)
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    click.echo(readme_table(table))
    if readme:
        write_readme_section("image-cost", readme_table(table))


if __name__ == "__main__":
    main()
