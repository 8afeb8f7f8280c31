"""Latent space pictures: ``python -m offline.generative.latent --dataset mnist --dataset fashion-mnist``.

t-SNE and PCA (scikit-learn) of latent codes of test images, coloured by class: VAE latent
means, the EGBAD encoder E(x) and the GANomaly encoder G_E(x), each trained on all classes
(``offline.generative.measures``; trained on first use, reused from ``runs/generative/``). Figures:
``benchmarks/figures/latent-<dataset>-<model>-{tsne,pca}.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from offline.figures.images import save_scatter

log = logging.getLogger("offline.generative.latent")
MODELS = ("vae", "egbad", "ganomaly")


def latent_figures(data, out: Path, *, models=MODELS, epochs: int, train_limit: int | None, points: int = 2000, seed: int = 0,
                   progress: bool = True) -> list[Path]:
    from offline.generative.measures import train_all_classes

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data.y_test), min(points, len(data.y_test)), replace=False))
    x, y = data.x_test[pick], data.y_test[pick]
    paths = []
    for model in models:
        detector, _ = train_all_classes(data, model, seed=seed, epochs=epochs, train_limit=train_limit, progress=progress)
        codes = detector.encode(x)
        what = {"vae": "VAE latent means", "egbad": "EGBAD encoder E(x)", "ganomaly": "GANomaly encoder G_E(x)"}[model]
        pca = PCA(n_components=2, random_state=seed).fit(codes)
        paths.append(save_scatter(pca.transform(codes), y, data.class_names, Path(out) / f"latent-{data.name}-{model}-pca.png",
                                  title=f"{data.name}: PCA of {what} ({codes.shape[1]}-d; {pca.explained_variance_ratio_.sum():.0%} of variance)"))
        embedded = TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(codes)
        paths.append(save_scatter(embedded, y, data.class_names, Path(out) / f"latent-{data.name}-{model}-tsne.png",
                                  title=f"{data.name}: t-SNE of {what}, {len(y)} test images"))
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", "datasets", multiple=True, default=["mnist", "fashion-mnist"], show_default=True,
              type=click.Choice(["mnist", "fashion-mnist"]))
@click.option("--model", "models", multiple=True, default=list(MODELS), show_default=True, type=click.Choice(MODELS))
@click.option("--epochs", type=int, default=50, show_default=True)
@click.option("--train-limit", type=int, default=None)
@click.option("--points", type=int, default=2000, show_default=True, help="test images embedded")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/figures"), show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
def main(datasets, models, epochs, train_limit, points, seed, out, threads):
    """t-SNE and PCA of latent codes coloured by class."""
    import torch

    from offline.data.images import load_images
    from offline.data.settings import data_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    store = data_store()
    for dataset in datasets:
        for path in latent_figures(load_images(dataset, store), out, models=models, epochs=epochs, train_limit=train_limit,
                                   points=points, seed=seed):
            click.echo(str(path))


if __name__ == "__main__":
    main()
