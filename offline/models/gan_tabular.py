"""Fully connected GAN pieces for tabular rows (standardised features, so outputs are linear).

Used by the GAN-family detectors when their input is a 2-D array (e.g. KDD Cup 99 with the
EGBAD/DAGMM protocol). Same call conventions as the image networks in ``images.py``:
discriminators return ``(logit (N,), features)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from offline.models.tabular import mlp


class MLPGenerator(nn.Module):
    """z -> row (linear output)."""

    def __init__(self, latent_dim: int, n_features: int, hidden: Sequence[int] = (64, 128)):
        super().__init__()
        self.net = mlp([latent_dim, *hidden, n_features])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPEncoder(nn.Module):
    """row -> z."""

    def __init__(self, n_features: int, latent_dim: int, hidden: Sequence[int] = (128, 64)):
        super().__init__()
        self.net = mlp([n_features, *hidden, latent_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDiscriminator(nn.Module):
    def __init__(self, n_features: int, hidden: Sequence[int] = (128, 64), dropout: float = 0.2):
        super().__init__()
        self.body = mlp([n_features, *hidden], final_activation=True, dropout=dropout)
        self.head = nn.Linear(hidden[-1], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(features).flatten(), features


class MLPBiGANDiscriminator(nn.Module):
    """D(x, z) for EGBAD on rows: separate x and z paths, joint dense head."""

    def __init__(self, n_features: int, latent_dim: int, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.x_path = nn.Sequential(nn.Linear(n_features, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.z_path = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.joint = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.joint(torch.cat([self.x_path(x), self.z_path(z)], dim=1))
        return self.head(features).flatten(), features
