"""DCGAN (Radford et al. 2016) on normal data; score = the discriminator's "fake" logit."""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.gan.base import GenerativeDetector
from offline.detectors.gan.losses import discriminator_loss, generator_loss


class DCGANDetector(GenerativeDetector):
    """DCGAN (Radford et al.) trained with BCE adversarial losses on normal data.

    Score: the discriminator's logit of "fake" (``-D(x)``); weak on its own, it is the base of
    AnoGAN and the GAN of the GAN-vs-VAE comparison.
    """

    name = "dcgan"
    explains = False
    net_names = ("G", "D")

    def _build(self) -> None:
        self.nets = {"G": self.make_generator(), "D": self.make_discriminator()}

    def fit(self, X, *, X_val=None) -> "DCGANDetector":
        X, generator = self._start(X)
        G, D = self.nets["G"], self.nets["D"]
        opt_g, opt_d = self._adam(G), self._adam(D)

        def step(x: torch.Tensor) -> dict:
            z = torch.randn(len(x), self.latent, device=x.device)
            fake = self._out(G(z))
            real_logit, _ = D(x)
            fake_logit, _ = D(fake.detach())
            loss_d = discriminator_loss(real_logit, fake_logit)
            self._update(opt_d, loss_d)
            loss_g = generator_loss(D(fake)[0])
            self._update(opt_g, loss_g)
            return {"d_loss": loss_d.item(), "g_loss": loss_g.item(), "d_real": torch.sigmoid(real_logit).mean().item(),
                    "d_fake": torch.sigmoid(fake_logit).mean().item()}

        self.history = self._train(X, step, generator)
        return self

    def score(self, X) -> np.ndarray:
        return self._predict(lambda x: -self.nets["D"](x)[0], self._check(X))
