"""Fully connected autoencoder and VAE for tabular rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], *, final_activation: bool = False, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        last = i == len(sizes) - 2
        if not last or final_activation:
            layers.append(nn.LeakyReLU(0.2))
            if dropout and not last:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPAutoencoder(nn.Module):
    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 32), latent_dim: int = 8):
        super().__init__()
        self.encoder = mlp([n_features, *hidden, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), n_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class GaussianVAE(nn.Module):
    """What every VAE here shares: ``encode(x) -> (mu, logvar)`` is the subclass's; sampling
    z = mu + sigma * eps in training and z = mu at inference, then ``decoder(z)``."""

    decoder: nn.Module

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decoder(z), mu, logvar


class MLPVAE(GaussianVAE):
    """Gaussian encoder q(z|x) = N(mu, diag(exp(logvar))), Gaussian decoder mean, N(0, I) prior.

    The buffers ``latent_mean``/``latent_var`` hold the profile of the training rows' latent means,
    so that a detector can score latent deviation from the normal profile after loading weights.
    """

    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 32), latent_dim: int = 8):
        super().__init__()
        self.body = mlp([n_features, *hidden], final_activation=True)
        self.to_mu = nn.Linear(hidden[-1], latent_dim)
        self.to_logvar = nn.Linear(hidden[-1], latent_dim)
        self.decoder = mlp([latent_dim, *reversed(hidden), n_features])
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_var", torch.ones(latent_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.to_mu(h), self.to_logvar(h).clamp(-10.0, 10.0)
