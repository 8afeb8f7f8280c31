"""Class-conditional GAN and VAE, for class-specific sampling (``fit(X, y=...)``)."""

from __future__ import annotations

import numpy as np
import torch

from offline.detectors.base import as_float32
from offline.detectors.gan.base import GenerativeDetector
from offline.detectors.gan.losses import bernoulli_vae_loss, discriminator_loss, generator_loss


class _Conditional(GenerativeDetector):
    """Class-conditional models: ``fit(X, y=labels)``; ``sample(n, labels=...)``. The training
    step gets ``(images, labels)`` minibatches."""

    def __init__(self, *, n_classes: int = 10, **common):
        super().__init__(**common)
        self.n_classes = n_classes
        self.classes_seen: list[int] = []

    def _labels(self, X: np.ndarray, y) -> np.ndarray:
        y = np.zeros(len(X), np.int64) if y is None else np.asarray(y, dtype=np.int64)
        if len(y) != len(X) or y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"{self.name}: need one label in [0, {self.n_classes}) per input")
        return y

    def _start_labelled(self, X, y) -> tuple[np.ndarray, np.ndarray, torch.Generator]:
        X = as_float32(X)
        y = self._labels(X, y)
        self.classes_seen = sorted(int(c) for c in np.unique(y))
        X, generator = self._start(X)
        return X, y, generator

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = super().state_tensors()
        tensors["meta.classes_seen"] = torch.tensor(self.classes_seen, dtype=torch.int64)
        return tensors

    @classmethod
    def from_state(cls, params, tensors, *, n_features=None):
        tensors = dict(tensors)
        seen = tensors.pop("meta.classes_seen", torch.zeros(0, dtype=torch.int64))
        detector = super().from_state(params, tensors, n_features=n_features)
        detector.classes_seen = [int(c) for c in seen.tolist()]
        return detector

    def _sample_labels(self, n: int, labels) -> torch.Tensor:
        if labels is None:
            pool = torch.tensor(self.classes_seen or list(range(self.n_classes)))
            return pool[torch.arange(n) % len(pool)]
        labels = torch.as_tensor(np.broadcast_to(np.asarray(labels, dtype=np.int64), (n,)).copy())
        return labels


class ConditionalGANDetector(_Conditional):
    """Class-conditional DCGAN (one-hot label into G's input and as planes into D). Mainly a
    sampler; as a detector, score = -max over seen classes of D(x, c)."""

    name = "cgan"
    explains = False
    net_names = ("G", "D")

    def _build(self) -> None:
        if not self.is_image:
            raise ValueError("cgan is an image model")
        from offline.models.images import ConditionalDecoder, ConditionalDiscriminator

        self.nets = {
            "G": ConditionalDecoder(self.latent, self.n_classes, self.input_shape[0], **self._kw()),
            "D": ConditionalDiscriminator(self.input_shape[0], self.n_classes, **self._kw()),
        }

    def fit(self, X, *, X_val=None, y=None) -> "ConditionalGANDetector":
        X, y, generator = self._start_labelled(X, y)
        G, D = self.nets["G"], self.nets["D"]
        opt_g, opt_d = self._adam(G), self._adam(D)

        def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
            x, labels = batch
            z = torch.randn(len(x), self.latent, device=x.device)
            fake = self._out(G(z, labels))
            loss_d = discriminator_loss(D(x, labels)[0], D(fake.detach(), labels)[0])
            self._update(opt_d, loss_d)
            loss_g = generator_loss(D(fake, labels)[0])
            self._update(opt_g, loss_g)
            return {"d_loss": loss_d.item(), "g_loss": loss_g.item()}

        self.history = self._train((X, y), step, generator)
        return self

    def sample(self, n: int, *, seed: int = 0, labels=None) -> np.ndarray:
        z = torch.randn(n, self.latent, generator=torch.Generator().manual_seed(seed))
        lab = self._sample_labels(n, labels)
        with torch.inference_mode():
            return torch.cat([self._out(self.nets["G"](z[i : i + 512], lab[i : i + 512])) for i in range(0, n, 512)]).numpy()

    def score(self, X) -> np.ndarray:
        X = self._check(X)

        def fn(x):
            logits = [self.nets["D"](x, torch.full((len(x),), c, dtype=torch.long))[0] for c in self.classes_seen]
            return -torch.stack(logits, 1).max(dim=1).values

        return self._predict(fn, X)


class ConditionalVAEDetector(_Conditional):
    """Class-conditional VAE (BCE + ``beta`` * KL). Mainly a sampler; as a detector, score = the
    smallest squared reconstruction error over the seen classes."""

    name = "cvae"
    explains = False
    net_names = ("V",)

    def __init__(self, *, beta: float = 1.0, **common):
        common.setdefault("lr", 1e-3)
        super().__init__(**common)
        self.beta = beta

    @property
    def latent(self) -> int:
        return int(self.latent_dim) if self.latent_dim else 16

    def _build(self) -> None:
        if not self.is_image:
            raise ValueError("cvae is an image model")
        from offline.models.images import ConditionalVAE

        self.nets = {"V": ConditionalVAE(self.input_shape[0], self.n_classes, self.latent, **self._kw())}

    def fit(self, X, *, X_val=None, y=None) -> "ConditionalVAEDetector":
        X, y, generator = self._start_labelled(X, y)
        V = self.nets["V"]
        opt = self._adam(V, betas=(0.9, 0.999))

        def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
            x, labels = batch
            logits, mu, logvar = V(x, labels)
            loss, kl = bernoulli_vae_loss(logits, x, mu, logvar, beta=self.beta)
            self._update(opt, loss)
            return {"loss": loss.item(), "kl": kl.mean().item()}

        self.history = self._train((X, y), step, generator)
        return self

    def sample(self, n: int, *, seed: int = 0, labels=None) -> np.ndarray:
        z = torch.randn(n, self.latent, generator=torch.Generator().manual_seed(seed))
        lab = self._sample_labels(n, labels)
        with torch.inference_mode():
            return torch.cat([torch.sigmoid(self.nets["V"].decoder(z[i : i + 512], lab[i : i + 512])) for i in range(0, n, 512)]).numpy()

    def score(self, X) -> np.ndarray:
        X = self._check(X)
        V = self.nets["V"]

        def fn(x):
            errors = []
            for c in self.classes_seen:
                lab = torch.full((len(x),), c, dtype=torch.long)
                rec = torch.sigmoid(V.decoder(V.encode(x, lab)[0], lab))
                errors.append(((rec - x) ** 2).flatten(1).sum(1))
            return torch.stack(errors, 1).min(dim=1).values

        return self._predict(fn, X)
