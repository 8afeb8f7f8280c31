"""Benchmarks are data: ``python -m offline.benchmark --suite creditcard``.

Each suite (a module ``offline.evaluation.suites.<name>``) runs models under a published protocol and
appends one CSV row per (run, threshold rule) to ``benchmarks/results/<suite>.csv`` with the
leading columns of DESIGN.md. A row already present is not recomputed, so an interrupted run
resumes where it stopped. The suite's tables in ``benchmarks/README.md`` are regenerated from
the rows (between ``<!-- suite:NAME -->`` markers), each naming the command that made it.

A suite module offers ``run(ctx: SuiteContext)`` and ``tables(rows: pandas.DataFrame) -> str``.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import click
import pandas as pd

from offline.bundle import code_version
from offline.data import DataStore

COLUMNS = [
    "dataset", "protocol", "model", "target_class", "seed", "auroc", "auprc", "precision", "recall", "f1",
    "threshold_rule", "epochs", "train_seconds", "preset", "code_version",
]
#: columns that identify a run; a row with the same identity is not recomputed
IDENTITY = ["dataset", "protocol", "model", "target_class", "seed", "threshold_rule", "preset"]
SUITES = {
    "images": "offline.evaluation.suites.images",
    "creditcard": "offline.evaluation.suites.creditcard",
    "nab": "offline.evaluation.suites.nab",  # rows come from python -m benchmarks.nab_replay
    "kdd": "offline.evaluation.suites.kdd",
    "nsl-kdd": "offline.evaluation.suites.nsl_kdd",
}
RESULTS_DIR = Path("benchmarks/results")
FIGURES_DIR = Path("benchmarks/figures")
README = Path("benchmarks/README.md")


class ResultsFile:
    """Append-only CSV of benchmark rows with the DESIGN.md leading columns (more may follow)."""

    def __init__(self, path: Path, extra_columns: list[str] = ()):
        self.path = Path(path)
        self.columns = COLUMNS + [c for c in extra_columns if c not in COLUMNS]
        self._done: set[tuple] = set()
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                existing = reader.fieldnames or []
                if existing[: len(COLUMNS)] != COLUMNS:
                    raise click.ClickException(f"{self.path}: header does not start with the DESIGN.md columns; move it aside")
                rows = list(reader)
                self._done = {self._identity(row) for row in rows}
            added = [c for c in self.columns if c not in existing]
            self.columns = existing + added
            if added:  # a column newer than the file: rewrite it once with the wider header, old rows blank there
                self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    @staticmethod
    def _identity(row: dict, **overrides) -> tuple:
        merged = {**row, **overrides}
        return tuple(str(merged.get(k, "")) for k in IDENTITY)

    def has(self, **identity) -> bool:
        return self._identity({}, **identity) in self._done

    def append(self, row: dict) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"columns {sorted(unknown)} are not in {self.path}'s header")
        row = {**row, "code_version": row.get("code_version") or code_version()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerow({k: _format(row.get(k, "")) for k in self.columns})
        self._done.add(self._identity(row))


def merge_new_rows(source: Path, target: Path, extra_columns: list[str] = (), *, preset: str | None = None) -> int:
    """Append the rows of ``source`` whose identity ``target`` lacks (e.g. a parallel worker's file); returns how many."""
    results = ResultsFile(target, extra_columns)
    added = 0
    with open(source, newline="") as handle:
        for row in csv.DictReader(handle):
            if (preset is None or row.get("preset") == preset) and not results.has(**{k: row.get(k, "") for k in IDENTITY}):
                results.append({k: v for k, v in row.items() if k in results.columns})
                added += 1
    return added


def _format(value):
    return f"{value:.6g}" if isinstance(value, float) else value


@dataclass
class SuiteContext:
    suite: str
    results: ResultsFile
    store: DataStore
    preset: str
    seeds: list[int]
    models: list[str] | None
    figures_dir: Path
    options: dict = field(default_factory=dict)


def regenerate_readme(suite: str, results_path: Path, readme: Path = README) -> None:
    """Rewrite this suite's section of benchmarks/README.md from its result rows."""
    if not results_path.exists():
        return
    rows = pd.read_csv(results_path, dtype={"target_class": str})
    write_readme_section(suite, import_module(SUITES[suite]).tables(rows), readme)


def write_readme_section(name: str, body: str, readme: Path = README) -> None:
    """Replace (or append) the ``<!-- suite:NAME -->`` section of benchmarks/README.md with ``body``."""
    section = f"<!-- suite:{name} -->\n{body.strip()}\n<!-- /suite:{name} -->"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n\nEvery table below is generated from `benchmarks/results/*.csv` by the command it names; do not edit between the markers.\n"
    pattern = re.compile(rf"<!-- suite:{re.escape(name)} -->.*?<!-- /suite:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    readme.write_text(text)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--suite", required=True, type=click.Choice(sorted(SUITES)), help="which benchmark suite")
@click.option("--preset", type=click.Choice(["quick", "full"]), default="full", show_default=True)
@click.option("--seeds", default="0", show_default=True, help="comma-separated seeds")
@click.option("--models", default=None, help="comma-separated subset of the suite's models")
@click.option("--results-dir", type=click.Path(path_type=Path), default=RESULTS_DIR, show_default=True)
@click.option("--figures-dir", type=click.Path(path_type=Path), default=FIGURES_DIR, show_default=True)
@click.option("--tables-only", is_flag=True, help="only regenerate benchmarks/README.md from existing rows")
@click.option("--option", "options", multiple=True, help="suite-specific key=value (JSON value), repeatable")
def main(suite, preset, seeds, models, results_dir, figures_dir, tables_only, options):
    """Run a benchmark SUITE, append rows to benchmarks/results/<suite>.csv, regenerate its tables."""
    from offline.training.train import parse_params
    from offline.data.settings import data_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results_path = Path(results_dir) / f"{suite}.csv"
    if not tables_only:
        module = import_module(SUITES[suite])
        ctx = SuiteContext(
            suite=suite,
            results=ResultsFile(results_path, getattr(module, "EXTRA_COLUMNS", [])),
            store=data_store(),
            preset=preset,
            seeds=[int(s) for s in seeds.split(",") if s.strip()],
            models=[m.strip() for m in models.split(",")] if models else None,
            figures_dir=Path(figures_dir),
            options=parse_params(options),
        )
        module.run(ctx)
    if Path(results_dir) == RESULTS_DIR:  # tables describe the committed results only
        regenerate_readme(suite, results_path)
    click.echo(f"results: {results_path}")


if __name__ == "__main__":
    main()
