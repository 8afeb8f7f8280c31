"""``python -m offline.data fetch creditcard ...``: fetch and verify dataset files into the cache."""

from __future__ import annotations

import click

from offline.data import DATASET_FILES, DataError, dataset_files


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Dataset files: cache, mirror (STREAMDETECT_DATA__MIRROR_DIR) or canonical download, verified by sha256."""


@cli.command()
@click.argument("datasets", nargs=-1, required=True, type=click.Choice(sorted(DATASET_FILES) + ["all"]))
def fetch(datasets):
    """Fetch and verify DATASETS (or 'all') into the data directory."""
    from offline.data.settings import data_store

    store = data_store()
    names = sorted(DATASET_FILES) if "all" in datasets else datasets
    for name in names:
        for file in dataset_files(name):
            try:
                click.echo(f"{name}: {store.path(file)} ok (sha256 {file.sha256[:12]}...)")
            except DataError as exc:
                raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    cli()
