"""GANomaly (Akcay et al. 2018): encoder-decoder-encoder generator, score = latent distance."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from offline.detectors.gan.base import GenerativeDetector
from offline.detectors.gan.losses import discriminator_loss, ganomaly_generator_loss

#: the discriminator is re-initialised when its loss falls below this (as in the reference implementation)
COLLAPSED_D_LOSS = 1e-5


def reinitialise(module: nn.Module) -> None:
    """Fresh weights for every layer inside ``module`` that can reset itself."""
    for child in module.modules():
        if hasattr(child, "reset_parameters") and child is not module:
            child.reset_parameters()


class GANomalyDetector(GenerativeDetector):
    """GANomaly: generator = encoder G_E -> decoder G_D, then a second encoder E on the output;
    a DCGAN discriminator gives the feature-matching adversarial loss.

    Generator loss: ``w_adv`` * ||f(x) - f(x_hat)||^2 + ``w_con`` * |x - x_hat| + ``w_enc`` *
    ||G_E(x) - E(x_hat)||^2; the discriminator (BCE) is re-initialised when its loss collapses.
    Score: mean squared latent distance ||G_E(x) - E(G(x))||^2. ``encode(X)`` gives G_E(x).
    """

    name = "ganomaly"
    net_names = ("GE", "GD", "E", "D")

    def __init__(self, *, w_adv: float = 1.0, w_con: float = 50.0, w_enc: float = 1.0, **common):
        super().__init__(**common)
        self.w_adv, self.w_con, self.w_enc = w_adv, w_con, w_enc

    def _build(self) -> None:
        self.nets = {"GE": self.make_encoder(), "GD": self.make_generator(), "E": self.make_encoder(), "D": self.make_discriminator()}

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.nets["GE"](x)
        x_hat = self._out(self.nets["GD"](z))
        return z, x_hat, self.nets["E"](x_hat)

    def fit(self, X, *, X_val=None) -> "GANomalyDetector":
        X, generator = self._start(X)
        D = self.nets["D"]
        opt_g, opt_d = self._adam(self.nets["GE"], self.nets["GD"], self.nets["E"]), self._adam(D)

        def step(x: torch.Tensor) -> dict:
            z, x_hat, z_hat = self._forward(x)
            features_real = D(x)[1].detach()
            loss_g, parts = ganomaly_generator_loss(x, x_hat, z, z_hat, features_real, D(x_hat)[1],
                                                    w_adv=self.w_adv, w_con=self.w_con, w_enc=self.w_enc)
            self._update(opt_g, loss_g)
            loss_d = discriminator_loss(D(x)[0], D(x_hat.detach())[0])
            self._update(opt_d, loss_d)
            if loss_d.item() < COLLAPSED_D_LOSS:
                reinitialise(D)
            return {"g_loss": loss_g.item(), **{k: v.item() for k, v in parts.items()}, "d_loss": loss_d.item()}

        self.history = self._train(X, step, generator)
        return self

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[1]

    def score(self, X) -> np.ndarray:
        def latent_distance(x):
            z, _, z_hat = self._forward(x)
            return ((z - z_hat) ** 2).mean(dim=1)

        return self._predict(latent_distance, self._check(X))

    def encode(self, X) -> np.ndarray:
        return self._predict(self.nets["GE"], self._check(X))
