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
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np

from offline.figures.images import save_grid

log = logging.getLogger("offline.generative.sample")

CLASS_SAMPLES = {"mnist": {"gan": (3,), "vae": (2,)}, "fashion-mnist": {"gan": (5, 7, 9), "vae": (5, 7, 9)}}
RECON_CLASS = {"mnist": (2,), "fashion-mnist": (5, 7, 9)}


def _name(data, classes) -> str:
    from offline.data.images import class_label

    label = class_label(data.name, tuple(classes))
    return f"digit {label}" if data.name == "mnist" else label


def make_samples(data, out: Path, *, epochs: int, train_limit: int | None, recon_epochs: int, seed: int = 0,
                 progress: bool = True) -> list[Path]:
    from offline.generative.measures import prior, train_all_classes
    from offline.training.images import one_class_split
    from offline.detectors import make_detector

    out = Path(out)
    ds = data.name
    paths = []
    dcgan, _ = train_all_classes(data, "dcgan", seed=seed, epochs=epochs, train_limit=train_limit, progress=progress)
    vae, _ = train_all_classes(data, "vae", seed=seed, epochs=epochs, train_limit=train_limit, progress=progress)
    cgan, _ = train_all_classes(data, "cgan", seed=seed, epochs=epochs, train_limit=train_limit, progress=progress)
    cvae, _ = train_all_classes(data, "cvae", seed=seed, epochs=epochs, train_limit=train_limit, progress=progress)
    paths.append(save_grid(dcgan.sample(10, seed=seed), out / f"sample-{ds}-gan-random.png", ncol=10, title=f"DCGAN, {ds}: 10 random samples"))
    paths.append(save_grid(vae.sample(10, seed=seed), out / f"sample-{ds}-vae-random.png", ncol=10, title=f"VAE, {ds}: 10 random samples"))
    for kind, model in (("gan", cgan), ("vae", cvae)):
        classes = CLASS_SAMPLES[ds][kind]
        n = 5 if len(classes) == 1 else 10
        labels = np.resize(np.asarray(classes), n)
        paths.append(save_grid(model.sample(n, seed=seed, labels=labels), out / f"sample-{ds}-{kind}-class.png", ncol=n,
                               title=f"conditional {kind.upper()}, {ds}: {n} samples of {_name(data, classes)}"))
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
                           title=f"{ds}: latent interpolation (VAE: between two test images' encodings; DCGAN: two prior draws)"))
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", "datasets", multiple=True, default=["mnist", "fashion-mnist"], show_default=True,
              type=click.Choice(["mnist", "fashion-mnist"]))
@click.option("--epochs", type=int, default=50, show_default=True, help="epochs of the all-class generators (classic recipe 50)")
@click.option("--train-limit", type=int, default=None, help="train on a random subset of this many images")
@click.option("--recon-epochs", type=int, default=None, help="epochs of the one-class VAE (default: --epochs)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/figures"), show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
def main(datasets, epochs, train_limit, recon_epochs, seed, out, threads):
    """Write sample grids, reconstructions and interpolation strips for the generative models."""
    import torch

    from offline.data.images import load_images
    from offline.data.settings import data_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    store = data_store()
    for dataset in datasets:
        for path in make_samples(load_images(dataset, store), out, epochs=epochs, train_limit=train_limit,
                                 recon_epochs=recon_epochs or epochs, seed=seed):
            click.echo(str(path))


if __name__ == "__main__":
    main()
