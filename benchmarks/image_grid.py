"""The image grid of issue 16 as a resumable queue in parallel processes: ``python -m benchmarks.image_grid``.

The queue is the images suite's (:func:`offline.evaluation.suites.images.grid_queue`: seed 0 of
every model, one complete table row at a time, imbalanced twodisc with its one-class rows, then
seeds 1-2, then leave-one-out), ``full`` preset, rows already in ``benchmarks/results/images.csv`` skipped. Each of
``--workers`` processes runs ``python -m offline.benchmark --suite images --option queue=true``
on its shard of the pending runs, with its own copy of the results file under
``runs/image-grid/worker-<i>/`` (so no two processes append to one file); when they end, their
new rows are merged into ``benchmarks/results/images.csv`` and the tables regenerated. A stopped
grid loses only the runs in flight: start it again and it first merges what its workers had
finished (even if the grid was killed before its own merge), then resumes.

- Here (2 CPU cores): ``--workers 2 --threads 1`` in the background; ``--precision auto`` trains in
  bf16 on a CPU with native bf16, float32 elsewhere (see :func:`auto_precision`), each row says which in ``compute_precision``.
- On a lent GPU machine (16 cores, one GPU, one call of at most 10 minutes):
  ``benchmarks/device_images.sh`` runs ``--workers 15 --device cuda --deadline-s 400`` and hands
  the merged file back; ``--merge PATH`` then takes its new rows into this checkout.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from offline.evaluation.benchmark import RESULTS_DIR, ResultsFile, merge_new_rows, regenerate_readme
from offline.evaluation.suites.images import EXTRA_COLUMNS, grid_queue, run_done

log = logging.getLogger("benchmarks.image_grid")

RESULTS = RESULTS_DIR / "images.csv"
WORKDIR = Path("runs/image-grid")


def pending_runs(results: Path = RESULTS) -> list[tuple]:
    """The queue's runs that have no ``full`` rows in ``results`` yet, in priority order."""
    existing = ResultsFile(results, EXTRA_COLUMNS)
    return [job for job in grid_queue() if not run_done(existing, job, "full")]


def auto_precision(device: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """bf16 autocast (training and scoring) on a CPU that computes bf16 natively, fp32 elsewhere.

    Here (avx512_bf16) bf16 autocast trains x1.2-1.6 faster per epoch (cost table) and moved AUROC by
    +0.001 on both runs of the A/B in ``benchmarks/results/image_precision.csv``; a CPU without the flag ran it 10-20x slower
    (session 10), and on a GPU these small nets are launch-bound (not measured), so both stay fp32.
    """
    if device.split(":")[0] != "cpu" or not cpuinfo.exists():
        return "fp32"
    return "bf16" if re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo.read_text()) else "fp32"


def worker_command(index: int, workers: int, *, directory: Path, device: str, threads: int, deadline_s: float | None,
                   precision: str = "fp32") -> list[str]:
    command = [sys.executable, "-m", "offline.benchmark", "--suite", "images", "--preset", "full",
               "--results-dir", str(directory), "--figures-dir", str(directory / "figures"),
               "--option", "queue=true", "--option", f'shard="{index}/{workers}"', "--option", f'device="{device}"',
               "--option", f"threads={threads}", "--option", f'compute_precision="{precision}"']
    if deadline_s is not None:
        command += ["--option", f"deadline_s={deadline_s}"]
    return command


def merge_worker(directory: Path, results: Path = RESULTS, figures: Path = Path("benchmarks/figures")) -> int:
    """Take a worker's new ``full`` rows (and twodisc figures) into ``results``."""
    source = directory / "images.csv"
    if not source.exists():
        return 0
    added = merge_new_rows(source, results, EXTRA_COLUMNS, preset="full")
    for png in (directory / "figures").glob("images-twodisc-*.png"):
        shutil.copy2(png, figures / png.name)
    return added


def take_in_stopped_workers(results: Path = RESULTS, workdir: Path = WORKDIR) -> int:
    """Merge the rows of workers a killed grid left behind, before their files are reset for a new start."""
    return sum(merge_worker(directory, results) for directory in sorted(workdir.glob("worker-*")) if directory.is_dir())


def _tables(results: Path) -> None:
    if results == RESULTS:  # the README's tables describe the committed results only
        regenerate_readme("images", results)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="parallel processes")
@click.option("--device", default="cpu", show_default=True, help="torch device of every worker (cpu, cuda)")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads per worker")
@click.option("--deadline-s", type=click.FloatRange(min=0), default=None, help="no worker starts a run after this many seconds")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="compute precision (autocast around training and scoring); auto: bf16 on a CPU with native bf16 (avx512_bf16/amx_bf16), else fp32")
@click.option("--nice", "niceness", type=click.IntRange(0, 19), default=0, show_default=True, help="run the workers at this niceness")
@click.option("--results", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--dry-run", is_flag=True, help="print the pending runs in queue order and stop")
@click.option("--merge", "merge_from", type=click.Path(exists=True, path_type=Path), default=None,
              help="only merge the new full rows of this images.csv (e.g. one brought back from a GPU machine)")
def main(workers, device, threads, deadline_s, precision, niceness, results, dry_run, merge_from):
    """Run the pending runs of the image grid in priority order, in parallel processes; merge their rows."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if merge_from is not None:
        added = merge_new_rows(merge_from, results, EXTRA_COLUMNS, preset="full")
        _tables(results)
        click.echo(f"{added} new rows from {merge_from} merged into {results}")
        return
    if not dry_run and (kept := take_in_stopped_workers(results)):
        click.echo(f"{kept} rows of an earlier, stopped grid merged into {results}")
    pending = pending_runs(results)
    click.echo(f"{len(pending)} of {len(grid_queue())} runs of the grid are pending")
    if dry_run:
        for job in pending:
            click.echo(" ".join(str(part) for part in job))
        return
    if not pending:
        return
    precision = auto_precision(device) if precision == "auto" else precision
    click.echo(f"compute precision: {precision}")
    processes = []
    for index in range(min(workers, len(pending))):
        directory = WORKDIR / f"worker-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy2(results, directory / "images.csv")  # the worker skips what is done and resumes its own rows
        log_path = directory / "worker.log"
        command = worker_command(index, workers, directory=directory, device=device, threads=threads, deadline_s=deadline_s,
                                 precision=precision)
        processes.append((directory, subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                                                      preexec_fn=(lambda: os.nice(niceness)) if niceness else None)))
        log.info("worker %d: %s (log %s)", index, " ".join(command[1:]), log_path)
    started = time.monotonic()
    try:
        for directory, process in processes:
            process.wait()
    finally:  # also on Ctrl-C: keep every row a worker finished
        for _, process in processes:
            if process.poll() is None:
                process.terminate()
        added = sum(merge_worker(directory, results) for directory, _ in processes)
        _tables(results)
        click.echo(f"{added} new rows merged into {results} after {time.monotonic() - started:.0f} s; "
                   f"{len(pending_runs(results))} runs still pending")
    failed = [str(directory) for directory, process in processes if process.returncode not in (0, None, -15)]
    if failed:
        raise click.ClickException(f"worker(s) failed, see worker.log in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
