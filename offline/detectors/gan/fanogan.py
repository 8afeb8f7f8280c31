"""f-AnoGAN (Schlegl et al. 2019): a WGAN-GP, then an izi_f encoder with G and D frozen."""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.gan.base import GenerativeDetector
from offline.detectors.gan.losses import gradient_penalty, izif_loss, wasserstein_critic_loss, wgan_generator_loss


class FAnoGANDetector(GenerativeDetector):
    """f-AnoGAN: a WGAN-GP (critic without batch norm, ``n_critic`` critic steps per generator
    step, gradient penalty ``gp_weight``; Adam betas (0, 0.9)), then the izi_f encoder: E is
    trained with G and D frozen for ``encoder_epochs`` on ||x - G(E(x))||^2/n + ``kappa`` *
    ||f(x) - f(G(E(x)))||^2/n_f. The same quantity per input is the score.

    History rows carry ``phase``: ``"wgan-gp"`` then ``"encoder"`` (epochs restart at 1).
    """

    name = "fanogan"
    net_names = ("G", "D", "E")

    def __init__(self, *, n_critic: int = 5, gp_weight: float = 10.0, kappa: float = 1.0, encoder_epochs: int | None = None, **common):
        common.setdefault("lr", 1e-4)
        common.setdefault("beta1", 0.0)
        super().__init__(**common)
        self.n_critic, self.gp_weight, self.kappa, self.encoder_epochs = n_critic, gp_weight, kappa, encoder_epochs

    def _build(self) -> None:
        self.nets = {"G": self.make_generator(), "D": self.make_discriminator(norm="layer"), "E": self.make_encoder()}

    def fit(self, X, *, X_val=None) -> "FAnoGANDetector":
        X, generator = self._start(X)
        G, D, E = self.nets["G"], self.nets["D"], self.nets["E"]
        betas = (self.beta1, 0.9)
        opt_g, opt_d = self._adam(G, betas=betas), self._adam(D, betas=betas)
        critic_steps = 0

        def critic(x: torch.Tensor) -> torch.Tensor:
            return D(x)[0]

        def gan_step(x: torch.Tensor) -> dict:
            nonlocal critic_steps
            z = torch.randn(len(x), self.latent, device=x.device)
            fake = self._out(G(z)).detach()
            fake_score = critic(fake)  # the critic sees the fake batch first, then the real one
            wasserstein = wasserstein_critic_loss(critic(x), fake_score)
            loss_d = wasserstein + self.gp_weight * gradient_penalty(critic, x, fake)
            self._update(opt_d, loss_d)
            critic_steps += 1
            logs = {"d_loss": loss_d.item(), "w_distance": -wasserstein.item()}
            if critic_steps % self.n_critic == 0:
                loss_g = wgan_generator_loss(critic(self._out(G(torch.randn(len(x), self.latent, device=x.device)))))
                self._update(opt_g, loss_g)
            return logs

        history = self._train(X, gan_step, generator, desc=f"{self.name} wgan-gp", phase="wgan-gp")
        # izi_f encoder training: G and D frozen, in eval mode
        for p in list(G.parameters()) + list(D.parameters()):
            p.requires_grad_(False)
        opt_e = self._adam(E, betas=(0.5, 0.999))

        def encoder_step(x: torch.Tensor) -> dict:
            G.eval(), D.eval()
            loss = self._izif(x).mean()
            self._update(opt_e, loss)
            return {"izif_loss": loss.item()}

        epochs = self.epochs if self.encoder_epochs is None else self.encoder_epochs
        history += self._train(X, encoder_step, generator, epochs=epochs, desc=f"{self.name} izif", phase="encoder")
        for p in list(G.parameters()) + list(D.parameters()):
            p.requires_grad_(True)
        self.history = history
        return self

    def _izif(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.reconstruct(x)
        D = self.nets["D"]
        features_x = D(x)[1]
        return izif_loss(x, rec, features_x, D(rec)[1], kappa=self.kappa)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.nets["G"](self.nets["E"](x)))

    def score(self, X) -> np.ndarray:
        return self._predict(self._izif, self._check(X))

    def encode(self, X) -> np.ndarray:
        return self._predict(self.nets["E"], self._check(X))
