"""Does bf16 autocast change what an image model detects? ``python -m benchmarks.image_precision``.

The cost run (``benchmarks.image_cost``) measured bf16 autocast at x1.22-x1.58 per training epoch
on this CPU (``benchmarks/results/image_cost_bf16.csv``); before it can become the default of the grid, its effect on AUROC must be known. Each
``--runs`` entry (``dataset:model:class``) is one ``full`` one-class run of the images suite
(:func:`offline.evaluation.suites.images.run_one`, the grid's own code), in float32, under bf16
autocast around training and scoring (``bf16``, as the cost run's ``bf16-autocast`` lever) and
around training only (``bf16-train``, float32 scores).

The float32 arm is taken from ``benchmarks/results/images.csv`` when that file holds the run's
``full`` row (``--reuse-fp32``, the default): on the CPU at one thread a run is deterministic (the
twodisc Fashion-MNIST class 0 row came out at the same AUROC in two sessions), so rerunning it
only costs time; its ``train_seconds`` then come from another machine load and are not a timing
A/B (the cost run is). Rows go to ``benchmarks/results/image_precision.csv`` (resumable: an arm
already there is not rerun); the table in ``benchmarks/README.md`` (section ``image-precision``)
is generated from them.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import click
import pandas as pd
import torch

from offline.bundle import code_version
from offline.data.images import load_images
from offline.data.settings import data_store
from offline.evaluation.benchmark import write_readme_section
from offline.evaluation.suites.images import LABEL_FREE_RULE, PRECISIONS, run_one

log = logging.getLogger("benchmarks.image_precision")

RESULTS = Path("benchmarks/results/image_precision.csv")
GRID_RESULTS = Path("benchmarks/results/images.csv")
COMMAND = "python -m benchmarks.image_precision"
DEFAULT_RUNS = "mnist:ae:0,fashion-mnist:twodisc:0"

KEEP = ["auroc", "auprc", "epochs", "train_seconds", "score_seconds", "preset", "code_version"]


def parse_runs(text: str) -> list[tuple[str, str, int]]:
    runs = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        try:
            dataset, model, target_class = entry.split(":")
            runs.append((dataset, model, int(target_class)))
        except ValueError:
            raise click.BadParameter(f"{entry!r}: write each run as dataset:model:class, e.g. mnist:ae:0", param_hint="--runs") from None
    return runs


def grid_row(dataset: str, model: str, target_class: int, seed: int, grid: Path = GRID_RESULTS) -> dict | None:
    """The grid's ``full`` float32 one-class row of this run at the label-free threshold, if it has one."""
    if not grid.exists():
        return None
    rows = pd.read_csv(grid, dtype={"target_class": str})
    match = rows[(rows["dataset"] == dataset) & (rows["protocol"] == "one-class") & (rows["model"] == model)
                 & (rows["target_class"] == str(target_class)) & (rows["seed"] == seed) & (rows["preset"] == "full")
                 & (rows["threshold_rule"] == LABEL_FREE_RULE)
                 & rows.get("compute_precision", pd.Series("", index=rows.index)).fillna("").isin(["", "fp32"])]
    return None if match.empty else match.iloc[0][KEEP].to_dict()


def measure(data, model: str, target_class: int, seed: int, precision: str, **limits) -> dict:
    rows, _ = run_one(data, "one-class", model, target_class, seed, "full", compute_precision=precision, **limits)
    row = next(r for r in rows if r["threshold_rule"] == LABEL_FREE_RULE)
    return {key: row[key] for key in KEEP if key in row} | {"code_version": code_version()}


def readme_table(table: pd.DataFrame) -> str:
    lines = ["## Does bf16 autocast change the AUROC?", "",
             f"Command: `{COMMAND}` (rows in `benchmarks/results/image_precision.csv`). One `full` one-class run per line "
             "(the grid's code), float32, bf16 autocast around training and scoring (*bf16*), and bf16 autocast around training only with float32 scores (*bf16-train*); rows labelled `reduced` come from a slice (`--train-limit`), not a full run. A float32 arm marked *grid row* "
             "is the run's row of `benchmarks/results/images.csv` (deterministic on this CPU at one thread), so its seconds "
             "were measured under another machine load: the timing A/B is the cost table above.", "",
             "| dataset | model | class | seed | AUROC fp32 | AUROC bf16 | AUROC bf16-train | train s fp32 | train s bf16 | train s bf16-train | fp32 arm |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, model, target_class, seed), block in table.groupby(["dataset", "model", "target_class", "seed"], sort=False):
        by = block.set_index("precision")

        def arm(precision: str, column: str, form: str) -> str:
            return format(by.loc[precision, column], form) if precision in by.index else ""

        source = "grid row" if "fp32" in by.index and by.loc["fp32", "source"] == "images.csv" else "this run"
        lines.append(f"| {dataset} | {model} | {target_class} | {seed} | "
                     + " | ".join(arm(p, "auroc", ".4f") for p in PRECISIONS) + " | "
                     + " | ".join(arm(p, "train_seconds", ".0f") for p in PRECISIONS) + f" | {source} |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runs", default=DEFAULT_RUNS, show_default=True, help="comma-separated dataset:model:class runs")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--reuse-fp32/--no-reuse-fp32", default=True, show_default=True,
              help="take the float32 arm from the grid's full row in benchmarks/results/images.csv when it has one")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads")
@click.option("--train-limit", type=click.IntRange(min=16), default=None,
              help="train on this many images only (a check of the command: its rows are preset=reduced and no grid row is reused)")
@click.option("--test-limit", type=click.IntRange(min=16), default=None, help="score this many test images only (likewise reduced)")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--readme/--no-readme", default=True, show_default=True, help="regenerate the image-precision section of benchmarks/README.md")
def main(runs, seed, reuse_fp32, threads, train_limit, test_limit, output, readme):
    """AUROC of full image runs in float32 and under bf16 autocast, side by side."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    chosen = parse_runs(runs)
    limits = {"train_limit": train_limit, "test_limit": test_limit}
    reuse_fp32 = reuse_fp32 and not (train_limit or test_limit)
    torch.set_num_threads(threads)
    table = pd.read_csv(output, dtype={"target_class": str}) if output.exists() else pd.DataFrame()
    store, loaded = data_store(), {}
    for dataset, model, target_class in chosen:
        for precision in PRECISIONS:
            done = not table.empty and ((table["dataset"] == dataset) & (table["model"] == model) & (table["target_class"] == str(target_class))
                                        & (table["seed"] == seed) & (table["precision"] == precision)).any()
            if done:
                continue
            row = grid_row(dataset, model, target_class, seed) if precision == "fp32" and reuse_fp32 else None
            source = "images.csv" if row is not None else "this run"
            if row is None:
                if dataset not in loaded:
                    loaded[dataset] = load_images(dataset, store)
                log.info("%s %s class %d seed %d, %s: training", dataset, model, target_class, seed, precision)
                row = measure(loaded[dataset], model, target_class, seed, precision, **limits)
            record = {"dataset": dataset, "model": model, "target_class": str(target_class), "seed": seed, "precision": precision,
                      **row, "source": source, "measured_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
            log.info("%s %s class %d, %s (%s): AUROC %.4f, train %.0f s", dataset, model, target_class, precision, source,
                     record["auroc"], record["train_seconds"])
            table = pd.concat([table, pd.DataFrame([record])], ignore_index=True)
            output.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(output, index=False)  # after every arm: a stopped run keeps what it finished
    text = readme_table(table)
    click.echo(text)
    if readme:
        write_readme_section("image-precision", text)


if __name__ == "__main__":
    main()
