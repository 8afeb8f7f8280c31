"""EGBAD (Zenati et al. 2018): a BiGAN whose encoder is learnt jointly with the generator."""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.gan.base import GenerativeDetector
from offline.detectors.gan.losses import bigan_generator_encoder_loss, discriminator_loss, mean_per_row


class EGBADDetector(GenerativeDetector):
    """EGBAD / BiGAN: generator G(z), encoder E(x) and a joint discriminator D(x, z), trained
    together with BCE losses (D tells (x, E(x)) from (G(z), z)).

    Score (Zenati et al.): ``alpha`` * mean|x - G(E(x))| + (1 - ``alpha``) *
    mean|f(x, E(x)) - f(G(E(x)), E(x))|, f the joint hidden layer of D (feature matching).
    ``encode(X)`` gives E(x).
    """

    name = "egbad"
    net_names = ("G", "E", "D")

    def __init__(self, *, alpha: float = 0.9, **common):
        super().__init__(**common)
        self.alpha = alpha

    def _build(self) -> None:
        if self.is_image:
            from offline.models.images import BiGANDiscriminator

            D = BiGANDiscriminator(self.input_shape[0], self.latent, **self._kw())
        else:
            from offline.models.gan_tabular import MLPBiGANDiscriminator

            D = MLPBiGANDiscriminator(self.input_shape[0], self.latent, hidden=self.hidden[0])
        self.nets = {"G": self.make_generator(), "E": self.make_encoder(), "D": D}

    def fit(self, X, *, X_val=None) -> "EGBADDetector":
        X, generator = self._start(X)
        G, E, D = self.nets["G"], self.nets["E"], self.nets["D"]
        opt_ge, opt_d = self._adam(G, E), self._adam(D)

        def step(x: torch.Tensor) -> dict:
            z = torch.randn(len(x), self.latent, device=x.device)
            fake, z_enc = self._out(G(z)), E(x)
            real_logit, fake_logit = D(x, z_enc.detach())[0], D(fake.detach(), z)[0]
            loss_d = discriminator_loss(real_logit, fake_logit)
            self._update(opt_d, loss_d)
            loss_ge = bigan_generator_encoder_loss(D(fake, z)[0], D(x, z_enc)[0])
            self._update(opt_ge, loss_ge)
            return {"d_loss": loss_d.item(), "ge_loss": loss_ge.item()}

        self.history = self._train(X, step, generator)
        return self

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.nets["G"](self.nets["E"](x)))

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        z = self.nets["E"](x)
        rec = self._out(self.nets["G"](z))
        residual = mean_per_row((x - rec).abs())
        feature = (self.nets["D"](x, z)[1] - self.nets["D"](rec, z)[1]).abs().mean(dim=1)
        return self.alpha * residual + (1 - self.alpha) * feature

    def score(self, X) -> np.ndarray:
        return self._predict(self._score_tensor, self._check(X))

    def encode(self, X) -> np.ndarray:
        return self._predict(self.nets["E"], self._check(X))
