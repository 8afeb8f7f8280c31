"""Autoencoder and VAE detectors: anomaly score = reconstruction error.

2-D input (rows x features) builds the fully connected networks of ``models/tabular.py`` with a
Gaussian (squared-error) likelihood. 4-D input (N, C, H, W) images in [0, 1] (3-D (N, H, W) is
read as one channel) builds the convolutional networks of ``models/images.py`` with the classic
Bernoulli likelihood: binary cross-entropy summed over pixels (+ beta * KL for the VAE). Either
way the score is the squared error of the reconstruction (the decoder mean at z = mu), summed
over features or pixels, and ``explain`` gives it per feature or per pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from offline.detectors.base import Detector, as_float32
from offline.detectors.training import adam_step, place, predict_in_chunks, seed_everything, train_loop
from offline.models.tabular import MLPAutoencoder, MLPVAE

IMAGE_SHAPE_KEY = "meta.input_shape"  # present in the state of image models only


class _TabularReconstruction(Detector):
    explains: ClassVar[bool] = True
    module: torch.nn.Module | None

    input_shape: tuple[int, ...] | None = None  # (C, H, W) for image models, None for rows
    #: optional ``callback(detector, history_row)`` after every epoch (network in eval mode); not a hyperparameter
    on_epoch_end: Callable[["_TabularReconstruction", dict], None] | None = None

    def _build(self, n_features: int) -> torch.nn.Module:
        raise NotImplementedError

    def _build_for(self, X: np.ndarray) -> torch.nn.Module:
        if X.ndim == 4:
            self.input_shape = tuple(int(s) for s in X.shape[1:])
            return self._build_image(self.input_shape)
        self.input_shape = None
        return self._build(X.shape[1])

    def _build_image(self, shape: tuple[int, int, int]) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def is_image(self) -> bool:
        return self.input_shape is not None

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _chunk(self) -> int:
        return 1024 if self.is_image else 8192

    def expected(self, X) -> np.ndarray:
        return predict_in_chunks(self._reconstruct, as_float32(X), chunk=self._chunk(), device=self.device)

    def explain(self, X) -> np.ndarray:
        """Per-feature (per-pixel) squared reconstruction error; for the AE it sums to the score."""
        X = as_float32(X)
        return (X - self.expected(X)) ** 2

    def _recon_loss(self, logits_or_values: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Per-row loss: BCE summed over pixels (images) or squared error summed over features."""
        if self.is_image:
            return F.binary_cross_entropy_with_logits(logits_or_values, batch, reduction="none").flatten(1).sum(dim=1)
        return F.mse_loss(logits_or_values, batch, reduction="none").sum(dim=1)

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean training loss of a minibatch."""
        raise NotImplementedError

    def _train(self, X, X_val) -> np.ndarray:
        """Seed, build the network for ``X``'s shape and train it (one Adam on ``_loss``, early stop
        on ``X_val``); returns the coerced ``X``."""
        X = as_float32(X)
        generator = seed_everything(self.seed)
        self.module = place(self._build_for(X), self.device)
        on_epoch = None if self.on_epoch_end is None else (lambda row: self.on_epoch_end(self, row))
        self.history = train_loop(
            self.module, adam_step(self.module, self._loss, lr=self.lr, weight_decay=self.weight_decay), X,
            X_val=None if X_val is None else as_float32(X_val), val_loss=self._loss, patience=self.patience,
            epochs=self.epochs, batch_size=self.batch_size, generator=generator, desc=self.name, device=self.device,
            progress=self.progress, on_epoch=on_epoch,
        )
        return X

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        if self.is_image:
            tensors[IMAGE_SHAPE_KEY] = torch.tensor(self.input_shape, dtype=torch.int64)
        return tensors

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "Detector":
        detector = cls(**params)
        tensors = dict(tensors)
        shape = tensors.pop(IMAGE_SHAPE_KEY, None)
        if shape is not None:
            detector.input_shape = tuple(int(s) for s in shape.tolist())
            detector.module = detector._build_image(detector.input_shape)
        else:
            detector.module = detector._build(n_features)
        detector.module.load_state_dict(tensors)
        place(detector.module, detector.device).eval()
        return detector


class AutoencoderDetector(_TabularReconstruction):
    """Deterministic autoencoder (MLP for rows, conv for images); score = squared reconstruction
    error summed over features. Images train with BCE over pixels; ``base_channels`` sizes the
    conv networks and is ignored for rows.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> normal = rng.normal(size=(512, 4)).astype("float32")
    >>> ae = AutoencoderDetector(epochs=2, progress=False).fit(normal)
    >>> ae.score(normal[:3]).shape
    (3,)
    """

    name = "ae"

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (64, 32),
        latent_dim: int = 8,
        epochs: int = 30,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        patience: int = 5,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
        base_channels: int = 32,
    ):
        self.hidden, self.latent_dim = tuple(hidden), latent_dim
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.patience, self.seed, self.device, self.progress = patience, seed, device, progress
        self.base_channels = base_channels
        self.module = None
        self.history: list[dict] = []

    def _build(self, n_features: int) -> torch.nn.Module:
        return MLPAutoencoder(n_features, self.hidden, self.latent_dim)

    def _build_image(self, shape: tuple[int, int, int]) -> torch.nn.Module:
        from offline.models.images import ConvAutoencoder

        return ConvAutoencoder(shape[0], self.latent_dim, image_size=shape[-1], base=self.base_channels)

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return torch.sigmoid(out) if self.is_image else out

    def encode(self, X) -> np.ndarray:
        """Latent codes (the bottleneck)."""
        return predict_in_chunks(self.module.encoder, as_float32(X), chunk=self._chunk(), device=self.device)

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self._recon_loss(self.module(batch), batch).mean()

    def fit(self, X, *, X_val=None) -> "AutoencoderDetector":
        self._train(X, X_val)
        return self

    def score(self, X) -> np.ndarray:
        return predict_in_chunks(
            lambda x: ((self._reconstruct(x) - x) ** 2).flatten(1).sum(dim=1), as_float32(X), chunk=self._chunk(), device=self.device
        )


class VAEDetector(_TabularReconstruction):
    """Variational autoencoder (Gaussian encoder, reparameterisation, reconstruction + beta*KL).

    Rows: MLP, squared-error reconstruction term. Images (4-D input): conv encoder/decoder,
    Bernoulli likelihood (BCE summed over pixels) + beta * KL, the classic formulation
    (beta = 1 is the plain VAE, beta > 1 the beta-VAE). ``sample(n)`` draws images/rows from the
    prior, ``encode(X)`` gives latent means.

    ``score_mode="recon"``: squared error of the decoder mean at z = mu (no sampling noise);
    ``score_mode="recon+latent"`` adds ``latent_weight`` times the squared Mahalanobis distance of
    mu from the training rows' latent profile (diagonal), which catches rows the decoder can
    reconstruct but that the encoder places far from where normal rows live.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> normal = rng.normal(size=(512, 4)).astype("float32")
    >>> vae = VAEDetector(epochs=2, progress=False).fit(normal)
    >>> bool(vae.score(normal[:1] + 10) > np.median(vae.score(normal)))
    True
    """

    name = "vae"

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (64, 32),
        latent_dim: int = 8,
        beta: float = 1.0,
        epochs: int = 30,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        patience: int = 5,
        score_mode: str = "recon",
        latent_weight: float = 1.0,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
        base_channels: int = 32,
    ):
        if score_mode not in ("recon", "recon+latent"):
            raise ValueError(f"score_mode must be 'recon' or 'recon+latent', not {score_mode!r}")
        self.hidden, self.latent_dim, self.beta = tuple(hidden), latent_dim, beta
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.patience, self.score_mode, self.latent_weight = patience, score_mode, latent_weight
        self.seed, self.device, self.progress = seed, device, progress
        self.base_channels = base_channels
        self.module = None
        self.history: list[dict] = []

    def _build(self, n_features: int) -> torch.nn.Module:
        return MLPVAE(n_features, self.hidden, self.latent_dim)

    def _build_image(self, shape: tuple[int, int, int]) -> torch.nn.Module:
        from offline.models.images import ConvVAE

        return ConvVAE(shape[0], self.latent_dim, image_size=shape[-1], base=self.base_channels)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.module.decoder(z)
        return torch.sigmoid(out) if self.is_image else out

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._decode(self.module.encode(x)[0])

    def encode(self, X) -> np.ndarray:
        """Latent means mu(x)."""
        return predict_in_chunks(lambda x: self.module.encode(x)[0], as_float32(X), chunk=self._chunk(), device=self.device)

    def decode(self, Z) -> np.ndarray:
        return predict_in_chunks(self._decode, np.asarray(Z, dtype=np.float32), chunk=self._chunk(), device=self.device)

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` draws from the prior pushed through the decoder (decoder means)."""
        z = torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed)).numpy()
        return self.decode(z)

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        reconstruction, mu, logvar = self.module(batch)
        recon = self._recon_loss(reconstruction, batch)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        return (recon + self.beta * kl).mean()

    def fit(self, X, *, X_val=None) -> "VAEDetector":
        X = self._train(X, X_val)
        mu = self.encode(X)
        self.module.latent_mean.copy_(torch.from_numpy(mu.mean(axis=0)))
        self.module.latent_var.copy_(torch.from_numpy(mu.var(axis=0) + 1e-6))
        return self

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.module.encode(x)
        score = ((self._decode(mu) - x) ** 2).flatten(1).sum(dim=1)
        if self.score_mode == "recon+latent":
            deviation = ((mu - self.module.latent_mean) ** 2 / self.module.latent_var).sum(dim=1)
            score = score + self.latent_weight * deviation
        return score

    def score(self, X) -> np.ndarray:
        return predict_in_chunks(self._score_tensor, as_float32(X), chunk=self._chunk(), device=self.device)
