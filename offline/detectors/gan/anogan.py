"""AnoGAN (Schlegl et al. 2017): the DCGAN plus a test-time latent search per input."""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.gan.dcgan import DCGANDetector
from offline.detectors.gan.losses import anogan_search_loss


class AnoGANDetector(DCGANDetector):
    """AnoGAN: a DCGAN on normal data, then per test input a latent search.

    z starts at N(0, I) draws and takes ``search_steps`` Adam steps (lr ``search_lr``) on
    (1 - ``feature_weight``) * mean|x - G(z)| + ``feature_weight`` * mean|f(x) - f(G(z))|, f the
    discriminator's last hidden layer. The final loss is the score; G(z*) the reconstruction.
    """

    name = "anogan"
    explains = True

    def __init__(self, *, search_steps: int = 100, search_lr: float = 0.05, feature_weight: float = 0.1, **common):
        super().__init__(**common)
        self.search_steps, self.search_lr, self.feature_weight = search_steps, search_lr, feature_weight

    def _search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        z = torch.randn(len(x), self.latent, generator=gen).to(x.device).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=self.search_lr)
        with torch.no_grad():
            target_features = D(x)[1]
        for _ in range(max(self.search_steps, 0)):
            loss = self._search_loss(x, target_features, z)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
        with torch.no_grad():
            return self._search_loss(x, target_features, z), self._out(G(z))

    def _search_loss(self, x, target_features, z) -> torch.Tensor:
        generated = self._out(self.nets["G"](z))
        return anogan_search_loss(x, generated, target_features, self.nets["D"](generated)[1], feature_weight=self.feature_weight)

    def _searched(self, X: np.ndarray, which: int) -> np.ndarray:
        for net in self.nets.values():
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
        try:
            chunk = 512 if self.is_image else 4096
            out = []
            for start in range(0, len(X), chunk):
                with torch.enable_grad():
                    result = self._search(torch.from_numpy(X[start : start + chunk]).to(self.device))
                out.append(result[which].detach().cpu().numpy())
            return np.concatenate(out) if out else np.empty((0,), np.float32)
        finally:
            for net in self.nets.values():
                for p in net.parameters():
                    p.requires_grad_(True)

    def score(self, X) -> np.ndarray:
        return self._searched(self._check(X), 0)

    def expected(self, X) -> np.ndarray:
        return self._searched(self._check(X), 1)
