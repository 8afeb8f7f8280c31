"""Tabular autoencoder and VAE detectors: anomaly score = reconstruction error."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from offline.detectors.base import Detector, as_float32
from offline.detectors.training import predict_in_chunks, seed_everything, train_loop
from offline.models.tabular import MLPAutoencoder, MLPVAE


class _TabularReconstruction(Detector):
    explains: ClassVar[bool] = True
    module: torch.nn.Module | None

    def _build(self, n_features: int) -> torch.nn.Module:
        raise NotImplementedError

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def expected(self, X) -> np.ndarray:
        return predict_in_chunks(self._reconstruct, as_float32(X), device=self.device)

    def explain(self, X) -> np.ndarray:
        """Per-feature squared reconstruction error; for the AE it sums to the score."""
        X = as_float32(X)
        return (X - self.expected(X)) ** 2

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int) -> "Detector":
        detector = cls(**params)
        detector.module = detector._build(n_features)
        detector.module.load_state_dict(tensors)
        detector.module.eval()
        return detector


class AutoencoderDetector(_TabularReconstruction):
    """Deterministic MLP autoencoder; score = squared reconstruction error summed over features.

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
    ):
        self.hidden, self.latent_dim = tuple(hidden), latent_dim
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.patience, self.seed, self.device, self.progress = patience, seed, device, progress
        self.module = None
        self.history: list[dict] = []

    def _build(self, n_features: int) -> torch.nn.Module:
        return MLPAutoencoder(n_features, self.hidden, self.latent_dim)

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def fit(self, X, *, X_val=None) -> "AutoencoderDetector":
        X = as_float32(X)
        generator = seed_everything(self.seed)
        self.module = self._build(X.shape[1])
        self.history = train_loop(
            self.module,
            lambda batch: F.mse_loss(self.module(batch), batch, reduction="none").sum(dim=1).mean(),
            X,
            X_val=None if X_val is None else as_float32(X_val),
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            patience=self.patience, generator=generator, desc=self.name, device=self.device, progress=self.progress,
        )
        return self

    def score(self, X) -> np.ndarray:
        return predict_in_chunks(lambda x: ((self.module(x) - x) ** 2).sum(dim=1), as_float32(X), device=self.device)


class VAEDetector(_TabularReconstruction):
    """Variational autoencoder (Gaussian encoder, reparameterisation, reconstruction + beta*KL).

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
    ):
        if score_mode not in ("recon", "recon+latent"):
            raise ValueError(f"score_mode must be 'recon' or 'recon+latent', not {score_mode!r}")
        self.hidden, self.latent_dim, self.beta = tuple(hidden), latent_dim, beta
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.patience, self.score_mode, self.latent_weight = patience, score_mode, latent_weight
        self.seed, self.device, self.progress = seed, device, progress
        self.module = None
        self.history: list[dict] = []

    def _build(self, n_features: int) -> torch.nn.Module:
        return MLPVAE(n_features, self.hidden, self.latent_dim)

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.decoder(self.module.encode(x)[0])

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        reconstruction, mu, logvar = self.module(batch)
        recon = F.mse_loss(reconstruction, batch, reduction="none").sum(dim=1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        return (recon + self.beta * kl).mean()

    def fit(self, X, *, X_val=None) -> "VAEDetector":
        X = as_float32(X)
        generator = seed_everything(self.seed)
        self.module = self._build(X.shape[1])
        self.history = train_loop(
            self.module, self._loss, X,
            X_val=None if X_val is None else as_float32(X_val),
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            patience=self.patience, generator=generator, desc=self.name, device=self.device, progress=self.progress,
        )
        mu = predict_in_chunks(lambda x: self.module.encode(x)[0], X, device=self.device)
        self.module.latent_mean.copy_(torch.from_numpy(mu.mean(axis=0)))
        self.module.latent_var.copy_(torch.from_numpy(mu.var(axis=0) + 1e-6))
        return self

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.module.encode(x)
        score = ((self.module.decoder(mu) - x) ** 2).sum(dim=1)
        if self.score_mode == "recon+latent":
            deviation = ((mu - self.module.latent_mean) ** 2 / self.module.latent_var).sum(dim=1)
            score = score + self.latent_weight * deviation
        return score

    def score(self, X) -> np.ndarray:
        return predict_in_chunks(self._score_tensor, as_float32(X), device=self.device)
