"""Kim et al., "GAN-based Anomaly Detection in Imbalance Problems" (ECCV-W 2020): a U-Net
generator and two discriminators (normal and anomaly), images only."""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.base import as_float32
from offline.detectors.gan.base import GenerativeDetector
from offline.detectors.gan.losses import (
    TWO_DISCRIMINATOR_TERMS,
    mean_per_row,
    two_discriminator_generator_losses,
    two_discriminator_losses,
)


def pseudo_anomalies(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Synthetic anomalies from normal images: a square patch (1/4 to 1/2 of the side) of another
    image of the batch, rotated by 90 degrees, pasted at a random place (after CutPaste)."""
    n, _, h, w = x.shape
    source = torch.rot90(x.roll(1, dims=0), 1, dims=(2, 3))
    size = torch.randint(h // 4, h // 2 + 1, (n,), generator=generator)
    top = (torch.rand(n, generator=generator) * (h - size + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - size + 1)).long()
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    mask_r = (rows >= top[:, None]) & (rows < (top + size)[:, None])
    mask_c = (cols >= left[:, None]) & (cols < (left + size)[:, None])
    mask = (mask_r[:, :, None] & mask_c[:, None, :]).float()[:, None].to(x.device)
    return x * (1 - mask) + source * mask


class TwoDiscriminatorDetector(GenerativeDetector):
    """Kim et al., "GAN-based Anomaly Detection in Imbalance Problems" (ECCV-W 2020), images only.

    Generator: a U-Net autoencoder (4 strided convolutions, 4 up-convolutions, no pooling).
    D_n (normal discriminator) learns real = normal images, fake = reconstructions and anomalous
    images; D_a (anomaly discriminator) learns real = anomalous images, fake = normal images and
    reconstructions. Each gives an image-level and a patch-level (4x4) logit; each is trained with
    one loss (BCE over both levels; ``losses.two_discriminator_losses``). The generator minimises
    six weighted losses (``losses.two_discriminator_generator_losses``):

    1. ``w_adv``: D_n image level calls every reconstruction normal (real);
    2. ``w_patch``: D_n patch level does the same for every patch;
    3. ``w_con``: L1 between a normal image and its reconstruction (contextual loss);
    4. ``w_lat``: squared distance of D_n's features of a normal image and its reconstruction;
    5. ``w_anomaly_adv``: D_a image level calls every reconstruction not anomalous;
    6. ``w_anomaly_patch``: D_a patch level does the same for every patch.

    Anomalous images come from ``fit(X, X_anomalous=...)`` under the imbalanced protocol; without
    them (one-class protocol) D_a sees synthetic anomalies (``pseudo_anomalies``: cut-paste of a
    rotated patch), so no real anomaly is ever seen. Score: mean|x - G(x)| + ``score_feature_weight``
    * mean (f_n(x) - f_n(G(x)))^2.
    """

    name = "twodisc"
    net_names = ("G", "Dn", "Da")

    def __init__(
        self,
        *,
        w_adv: float = 1.0,
        w_patch: float = 1.0,
        w_con: float = 50.0,
        w_lat: float = 1.0,
        w_anomaly_adv: float = 1.0,
        w_anomaly_patch: float = 1.0,
        skips: tuple[bool, bool, bool] = (True, True, True),
        score_feature_weight: float = 1.0,
        **common,
    ):
        super().__init__(**common)
        self.w_adv, self.w_patch, self.w_con, self.w_lat = w_adv, w_patch, w_con, w_lat
        self.w_anomaly_adv, self.w_anomaly_patch = w_anomaly_adv, w_anomaly_patch
        self.skips, self.score_feature_weight = tuple(bool(s) for s in skips), score_feature_weight
        self.saw_anomalies = False

    def _build(self) -> None:
        if not self.is_image:
            raise ValueError("twodisc (Kim et al.) is an image model: it needs (N, C, H, W) input")
        from offline.models.images import ImagePatchDiscriminator, UNetGenerator

        self.nets = {
            "G": UNetGenerator(self.input_shape[0], skips=self.skips, **self._kw()),
            "Dn": ImagePatchDiscriminator(self.input_shape[0], **self._kw()),
            "Da": ImagePatchDiscriminator(self.input_shape[0], **self._kw()),
        }

    def _weights(self) -> dict[str, float]:
        return {"adv": self.w_adv, "patch": self.w_patch, "con": self.w_con, "lat": self.w_lat,
                "anomaly_adv": self.w_anomaly_adv, "anomaly_patch": self.w_anomaly_patch}

    def fit(self, X, *, X_val=None, X_anomalous=None) -> "TwoDiscriminatorDetector":
        X, generator = self._start(X)
        anomalies = None
        if X_anomalous is not None and len(X_anomalous):
            anomalies = torch.from_numpy(as_float32(X_anomalous))
            if tuple(anomalies.shape[1:]) != self.input_shape:
                raise ValueError(f"X_anomalous has shape {tuple(anomalies.shape[1:])}, X has {self.input_shape}")
        self.saw_anomalies = anomalies is not None
        G, Dn, Da = self.nets["G"], self.nets["Dn"], self.nets["Da"]
        opt_g, opt_dn, opt_da = self._adam(G), self._adam(Dn), self._adam(Da)
        weights = self._weights()

        def step(x_n: torch.Tensor) -> dict:
            if anomalies is not None:
                pick = torch.randint(0, len(anomalies), (len(x_n),), generator=generator)
                x_a = anomalies[pick].to(x_n.device)
            else:
                x_a = pseudo_anomalies(x_n, generator)
            rec_n, rec_a = self._out(G(x_n)), self._out(G(x_a))
            recs = torch.cat([rec_n, rec_a])
            loss_dn, loss_da = two_discriminator_losses(Dn, Da, x_n, x_a, recs)
            self._update(opt_dn, loss_dn)
            self._update(opt_da, loss_da)
            losses = two_discriminator_generator_losses(Dn, Da, x_n, rec_n, recs)
            loss_g = sum(weights[k] * losses[k] for k in TWO_DISCRIMINATOR_TERMS)
            self._update(opt_g, loss_g)
            return {"g_loss": loss_g.item(), "dn_loss": loss_dn.item(), "da_loss": loss_da.item(), **{k: v.item() for k, v in losses.items()}}

        self.history = self._train(X, step, generator)
        return self

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.nets["G"](x))

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.reconstruct(x)
        Dn = self.nets["Dn"]
        feature = ((Dn(x)[2] - Dn(rec)[2]) ** 2).mean(dim=1)
        return mean_per_row((x - rec).abs()) + self.score_feature_weight * feature

    def score(self, X) -> np.ndarray:
        return self._predict(self._score_tensor, self._check(X))

    def anomaly_probability(self, X) -> np.ndarray:
        """D_a's image-level probability that an input is anomalous (meaningful after the
        imbalanced protocol, where D_a has seen real anomalies)."""
        return self._predict(lambda x: torch.sigmoid(self.nets["Da"](x)[0]), self._check(X))
