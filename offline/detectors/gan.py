"""GAN-family detectors for images (N, C, H, W) and tabular rows (n, d).

The architecture follows the input: 4-D (or 3-D (N, H, W)) images in [0, 1] get the conv
networks of ``models/images.py`` (generator outputs through a sigmoid); 2-D standardised rows get
the MLPs of ``models/gan_tabular.py`` (linear outputs). Every detector follows the one protocol
(``fit`` on normal data, ``score`` higher = more anomalous, ``explain`` per feature/pixel) and
keeps its state as tensors only (``state_tensors``/``from_state``), so it can go into a bundle.

- ``dcgan``: DCGAN with BCE adversarial losses; score = the discriminator's "fake" logit.
- ``anogan``: the DCGAN plus AnoGAN's test-time latent search (Schlegl et al. 2017): z is
  optimised for ``search_steps`` Adam steps to minimise (1-lambda)*|x-G(z)| + lambda*|f(x)-f(G(z))|;
  the final loss is the score.
- ``egbad``: BiGAN with an encoder learnt jointly (Zenati et al. 2018); score =
  alpha*|x-G(E(x))| + (1-alpha)*|f(x,E(x)) - f(G(E(x)),E(x))| (feature matching in D).
- ``ganomaly``: encoder-decoder-encoder generator (Akcay et al. 2018), losses w_adv*feature
  matching + w_con*L1 + w_enc*latent L2; score = ||E(G(x)) - G_E(x)||^2.
- ``fanogan``: WGAN-GP, then the izi_f encoder trained with G and D frozen (Schlegl et al. 2019);
  score = ||x-G(E(x))||^2/n + kappa*||f(x)-f(G(E(x)))||^2/n_f.
- ``twodisc``: Kim et al., "GAN-based Anomaly Detection in Imbalance Problems": a U-Net generator
  and a normal and an anomaly discriminator, each with an image-level and a patch-level output.
- ``cgan``/``cvae``: class-conditional GAN and VAE, for class-specific sampling (``fit(X, y=...)``).

>>> import numpy as np
>>> rows = np.random.default_rng(0).normal(size=(256, 6)).astype("float32")
>>> det = EGBADDetector(epochs=1, progress=False).fit(rows)
>>> det.score(rows[:4]).shape
(4,)
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from offline.detectors.base import Detector
from offline.detectors.training import batches, predict_in_chunks, seed_everything

SHAPE_KEY = "meta.input_shape"


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def as_model_input(X) -> np.ndarray:
    """Rows stay (n, d); (N, H, W) becomes (N, 1, H, W); everything float32, contiguous."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[:, None]
    elif X.ndim == 3:
        X = X[:, None]
    if X.ndim not in (2, 4):
        raise ValueError(f"expected rows (n, d) or images (N, C, H, W), got an array of shape {X.shape}")
    return np.ascontiguousarray(X)


class GenerativeDetector(Detector):
    """Shared machinery: input shape -> networks, minibatch epochs with tqdm, tensor state."""

    explains: ClassVar[bool] = True
    net_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        latent_dim: int | None = None,
        base_channels: int = 32,
        hidden: tuple[int, ...] = (128, 64),
        epochs: int = 25,
        batch_size: int = 64,
        lr: float = 2e-4,
        beta1: float = 0.5,
        max_steps: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.latent_dim, self.base_channels, self.hidden = latent_dim, base_channels, tuple(hidden)
        self.epochs, self.batch_size, self.lr, self.beta1 = epochs, batch_size, lr, beta1
        self.max_steps, self.seed, self.device, self.progress = max_steps, seed, device, progress
        self.nets: dict[str, nn.Module] = {}
        self.history: list[dict] = []
        self.input_shape: tuple[int, ...] | None = None
        #: optional ``callback(detector, history_row)`` after every epoch (networks in eval mode); not a hyperparameter
        self.on_epoch_end: Callable[["GenerativeDetector", dict], None] | None = None

    # -- hyperparameters over the class hierarchy ------------------------------------------
    def get_params(self) -> dict:
        names: list[str] = []
        for klass in reversed(type(self).__mro__):
            if "__init__" in vars(klass) and issubclass(klass, GenerativeDetector):
                for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
                    if p.kind is p.KEYWORD_ONLY and p.name not in names:
                        names.append(p.name)
        return {name: getattr(self, name) for name in names}

    # -- shapes and network factories ------------------------------------------------------
    @property
    def is_image(self) -> bool:
        return self.input_shape is not None and len(self.input_shape) == 3

    @property
    def latent(self) -> int:
        return int(self.latent_dim) if self.latent_dim else (64 if self.is_image else 32)

    def _set_shape(self, X: np.ndarray) -> None:
        shape = tuple(int(s) for s in X.shape[1:])
        if len(shape) == 3 and (shape[1] != shape[2] or shape[1] > 32):
            raise ValueError(f"images must be square and at most 32x32, got {shape[1]}x{shape[2]}")
        self.input_shape = shape

    def _check(self, X) -> np.ndarray:
        X = as_model_input(X)
        if self.input_shape is None:
            raise RuntimeError(f"{self.name}: call fit() first")
        if tuple(X.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name} was trained on inputs of shape {self.input_shape}, got {tuple(X.shape[1:])}")
        return X

    def _kw(self) -> dict:
        return {"image_size": self.input_shape[-1], "base": self.base_channels}

    def make_generator(self) -> nn.Module:
        if self.is_image:
            from offline.models.images import ConvDecoder

            return ConvDecoder(self.latent, self.input_shape[0], **self._kw())
        from offline.models.gan_tabular import MLPGenerator

        return MLPGenerator(self.latent, self.input_shape[0], tuple(reversed(self.hidden)))

    def make_encoder(self, out_dim: int | None = None) -> nn.Module:
        out_dim = out_dim or self.latent
        if self.is_image:
            from offline.models.images import ConvEncoder

            return ConvEncoder(self.input_shape[0], out_dim, **self._kw())
        from offline.models.gan_tabular import MLPEncoder

        return MLPEncoder(self.input_shape[0], out_dim, self.hidden)

    def make_discriminator(self, norm: str = "batch") -> nn.Module:
        if self.is_image:
            from offline.models.images import ConvDiscriminator

            return ConvDiscriminator(self.input_shape[0], norm=norm, **self._kw())
        from offline.models.gan_tabular import MLPDiscriminator

        return MLPDiscriminator(self.input_shape[0], self.hidden, dropout=0.0 if norm == "layer" else 0.2)

    def _out(self, raw: torch.Tensor) -> torch.Tensor:
        """Generator output -> data space (sigmoid for pixels, identity for standardised rows)."""
        return torch.sigmoid(raw) if self.is_image else raw

    def _build(self) -> None:
        raise NotImplementedError

    def _adam(self, *modules: nn.Module, lr: float | None = None, betas: tuple[float, float] | None = None):
        params = [p for m in modules for p in m.parameters()]
        return torch.optim.Adam(params, lr=lr or self.lr, betas=betas or (self.beta1, 0.999))

    def _mean_dims(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(dim=1)

    # -- training glue ---------------------------------------------------------------------
    def _start(self, X) -> tuple[np.ndarray, torch.Generator]:
        X = as_model_input(X)
        if len(X) < 2:
            raise ValueError(f"{self.name}: need at least 2 training rows, got {len(X)}")
        generator = seed_everything(self.seed)
        self._set_shape(X)
        self._build()
        for net in self.nets.values():
            net.to(self.device)
        self.history = []
        return X, generator

    def _epochs(self, X: np.ndarray, step: Callable[[torch.Tensor], dict], generator: torch.Generator, *, epochs: int | None = None, desc: str | None = None) -> list[dict]:
        """Runs ``step`` over shuffled minibatches for ``epochs`` epochs (or ``max_steps`` steps)."""
        data = torch.from_numpy(X)
        epochs = self.epochs if epochs is None else epochs
        history, steps = [], 0
        bar = tqdm(range(epochs), desc=desc or self.name, unit="epoch", disable=not self.progress, leave=False)
        for epoch in bar:
            for net in self.nets.values():
                net.train()
            sums: dict[str, float] = defaultdict(float)
            count = 0
            for index in batches(len(data), self.batch_size, generator):
                if len(index) < 2:  # batch norm needs two rows
                    continue
                logs = step(data[index].to(self.device))
                for key, value in logs.items():
                    sums[key] += float(value)
                count += 1
                steps += 1
                if self.max_steps is not None and steps >= self.max_steps:
                    break
            row = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()}}
            history.append(row)
            if self.on_epoch_end is not None:  # e.g. the GAN-vs-VAE harness measures every epoch
                for net in self.nets.values():
                    net.eval()
                self.on_epoch_end(self, row)
                for net in self.nets.values():
                    net.train()
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "epoch"})
            if self.max_steps is not None and steps >= self.max_steps:
                break
        for net in self.nets.values():
            net.eval()
        return history

    def _predict(self, fn: Callable[[torch.Tensor], torch.Tensor], X: np.ndarray) -> np.ndarray:
        return predict_in_chunks(fn, X, chunk=512 if self.is_image else 8192, device=self.device)

    # -- protocol extras -------------------------------------------------------------------
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} gives no reconstruction")

    def expected(self, X) -> np.ndarray:
        return self._predict(self.reconstruct, self._check(X))

    def explain(self, X) -> np.ndarray:
        """Per-feature (per-pixel) absolute residual between the input and its reconstruction."""
        X = self._check(X)
        return np.abs(X - self.expected(X))

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` samples from the generator (pixels in [0, 1] for images)."""
        if "G" not in self.nets:
            raise NotImplementedError(f"{self.name} has no generator to sample from")
        z = torch.randn(n, self.latent, generator=torch.Generator().manual_seed(seed)).numpy()
        return self._predict(lambda t: self._out(self.nets["G"](t)), z)

    # -- bundle state ----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, net in self.nets.items() for k, v in net.state_dict().items()}
        tensors[SHAPE_KEY] = torch.tensor(self.input_shape, dtype=torch.int64)
        return tensors

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int | None = None) -> "GenerativeDetector":
        detector = cls(**params)
        shape = tensors.get(SHAPE_KEY)
        detector.input_shape = tuple(int(s) for s in shape.tolist()) if shape is not None else (int(n_features),)
        detector._build()
        for name, net in detector.nets.items():
            prefix = f"{name}."
            net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            net.to(detector.device).eval()
        return detector


# ------------------------------------------------------------------------------------------------
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
            loss_d = _bce(real_logit, 1.0) + _bce(fake_logit, 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = _bce(D(fake)[0], 1.0)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            return {"d_loss": loss_d.item(), "g_loss": loss_g.item(), "d_real": torch.sigmoid(real_logit).mean().item(),
                    "d_fake": torch.sigmoid(fake_logit).mean().item()}

        self.history = self._epochs(X, step, generator)
        return self

    def score(self, X) -> np.ndarray:
        return self._predict(lambda x: -self.nets["D"](x)[0], self._check(X))


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
        residual = self._mean_dims((x - generated).abs())
        discrimination = (self.nets["D"](generated)[1] - target_features).abs().mean(dim=1)
        return (1 - self.feature_weight) * residual + self.feature_weight * discrimination

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
            loss_d = _bce(real_logit, 1.0) + _bce(fake_logit, 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_ge = _bce(D(fake, z)[0], 1.0) + _bce(D(x, z_enc)[0], 0.0)
            opt_ge.zero_grad(set_to_none=True)
            loss_ge.backward()
            opt_ge.step()
            return {"d_loss": loss_d.item(), "ge_loss": loss_ge.item()}

        self.history = self._epochs(X, step, generator)
        return self

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.nets["G"](self.nets["E"](x)))

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        z = self.nets["E"](x)
        rec = self._out(self.nets["G"](z))
        residual = self._mean_dims((x - rec).abs())
        feature = (self.nets["D"](x, z)[1] - self.nets["D"](rec, z)[1]).abs().mean(dim=1)
        return self.alpha * residual + (1 - self.alpha) * feature

    def score(self, X) -> np.ndarray:
        return self._predict(self._score_tensor, self._check(X))

    def encode(self, X) -> np.ndarray:
        return self._predict(self.nets["E"], self._check(X))


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
            feat_real = D(x)[1].detach()
            adv = F.mse_loss(D(x_hat)[1], feat_real)
            con = F.l1_loss(x_hat, x)
            enc = F.mse_loss(z_hat, z)
            loss_g = self.w_adv * adv + self.w_con * con + self.w_enc * enc
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            loss_d = _bce(D(x)[0], 1.0) + _bce(D(x_hat.detach())[0], 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if loss_d.item() < 1e-5:  # as in the reference implementation: restart a collapsed D
                for module in D.modules():
                    if hasattr(module, "reset_parameters") and module is not D:
                        module.reset_parameters()
            return {"g_loss": loss_g.item(), "adv": adv.item(), "con": con.item(), "enc": enc.item(), "d_loss": loss_d.item()}

        self.history = self._epochs(X, step, generator)
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


class FAnoGANDetector(GenerativeDetector):
    """f-AnoGAN: a WGAN-GP (critic without batch norm, ``n_critic`` critic steps per generator
    step, gradient penalty ``gp_weight``; Adam betas (0, 0.9)), then the izi_f encoder: E is
    trained with G and D frozen for ``encoder_epochs`` on ||x - G(E(x))||^2/n + ``kappa`` *
    ||f(x) - f(G(E(x)))||^2/n_f. The same quantity per input is the score.
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

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        shape = (len(real),) + (1,) * (real.dim() - 1)
        eps = torch.rand(shape, device=real.device)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        grad = torch.autograd.grad(self.nets["D"](mix)[0].sum(), mix, create_graph=True)[0]
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def fit(self, X, *, X_val=None) -> "FAnoGANDetector":
        X, generator = self._start(X)
        G, D, E = self.nets["G"], self.nets["D"], self.nets["E"]
        betas = (self.beta1, 0.9)
        opt_g, opt_d = self._adam(G, betas=betas), self._adam(D, betas=betas)
        counter = {"n": 0}

        def gan_step(x: torch.Tensor) -> dict:
            z = torch.randn(len(x), self.latent, device=x.device)
            fake = self._out(G(z)).detach()
            wasserstein = D(fake)[0].mean() - D(x)[0].mean()
            loss_d = wasserstein + self.gp_weight * self._gradient_penalty(x, fake)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            counter["n"] += 1
            logs = {"d_loss": loss_d.item(), "w_distance": -wasserstein.item()}
            if counter["n"] % self.n_critic == 0:
                loss_g = -D(self._out(G(torch.randn(len(x), self.latent, device=x.device))))[0].mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
            return logs

        history = [{"phase": "wgan-gp", **row} for row in self._epochs(X, gan_step, generator, desc=f"{self.name} wgan-gp")]
        # izi_f encoder training: G and D frozen, in eval mode
        for p in list(G.parameters()) + list(D.parameters()):
            p.requires_grad_(False)
        opt_e = self._adam(E, betas=(0.5, 0.999))

        def encoder_step(x: torch.Tensor) -> dict:
            G.eval(), D.eval()
            loss = self._izif(x).mean()
            opt_e.zero_grad(set_to_none=True)
            loss.backward()
            opt_e.step()
            return {"izif_loss": loss.item()}

        epochs = self.epochs if self.encoder_epochs is None else self.encoder_epochs
        history += [{"phase": "encoder", **row} for row in self._epochs(X, encoder_step, generator, epochs=epochs, desc=f"{self.name} izif")]
        for p in list(G.parameters()) + list(D.parameters()):
            p.requires_grad_(True)
        self.history = history
        return self

    def _izif(self, x: torch.Tensor) -> torch.Tensor:
        rec = self._out(self.nets["G"](self.nets["E"](x)))
        D = self.nets["D"]
        return self._mean_dims((x - rec) ** 2) + self.kappa * ((D(x)[1] - D(rec)[1]) ** 2).mean(dim=1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.nets["G"](self.nets["E"](x)))

    def score(self, X) -> np.ndarray:
        return self._predict(self._izif, self._check(X))

    def encode(self, X) -> np.ndarray:
        return self._predict(self.nets["E"], self._check(X))


# ------------------------------------------------------------------------------------------------
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
    one loss (BCE over both levels). The generator minimises six weighted losses:

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

    @staticmethod
    def _d_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], target: float) -> torch.Tensor:
        image, patch, _ = outputs
        return _bce(image, target) + _bce(patch, target)

    def fit(self, X, *, X_val=None, X_anomalous=None) -> "TwoDiscriminatorDetector":
        X, generator = self._start(X)
        anomalies = None
        if X_anomalous is not None and len(X_anomalous):
            anomalies = torch.from_numpy(as_model_input(X_anomalous))
            if tuple(anomalies.shape[1:]) != self.input_shape:
                raise ValueError(f"X_anomalous has shape {tuple(anomalies.shape[1:])}, X has {self.input_shape}")
        self.saw_anomalies = anomalies is not None
        G, Dn, Da = self.nets["G"], self.nets["Dn"], self.nets["Da"]
        opt_g, opt_dn, opt_da = self._adam(G), self._adam(Dn), self._adam(Da)

        def step(x_n: torch.Tensor) -> dict:
            if anomalies is not None:
                pick = torch.randint(0, len(anomalies), (len(x_n),), generator=generator)
                x_a = anomalies[pick].to(x_n.device)
            else:
                x_a = pseudo_anomalies(x_n, generator)
            rec_n, rec_a = self._out(G(x_n)), self._out(G(x_a))
            recs = torch.cat([rec_n, rec_a])
            # discriminators: one loss each
            loss_dn = self._d_loss(Dn(x_n), 1.0) + 0.5 * (self._d_loss(Dn(recs.detach()), 0.0) + self._d_loss(Dn(x_a), 0.0))
            opt_dn.zero_grad(set_to_none=True)
            loss_dn.backward()
            opt_dn.step()
            loss_da = self._d_loss(Da(x_a), 1.0) + 0.5 * (self._d_loss(Da(recs.detach()), 0.0) + self._d_loss(Da(x_n), 0.0))
            opt_da.zero_grad(set_to_none=True)
            loss_da.backward()
            opt_da.step()
            # generator: six losses
            dn_image, dn_patch, dn_feat = Dn(recs)
            da_image, da_patch, _ = Da(recs)
            losses = {
                "adv": _bce(dn_image, 1.0),
                "patch": _bce(dn_patch, 1.0),
                "con": F.l1_loss(rec_n, x_n),
                "lat": F.mse_loss(dn_feat[: len(x_n)], Dn(x_n)[2].detach()),
                "anomaly_adv": _bce(da_image, 0.0),
                "anomaly_patch": _bce(da_patch, 0.0),
            }
            weights = {"adv": self.w_adv, "patch": self.w_patch, "con": self.w_con, "lat": self.w_lat,
                       "anomaly_adv": self.w_anomaly_adv, "anomaly_patch": self.w_anomaly_patch}
            loss_g = sum(weights[k] * v for k, v in losses.items())
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            return {"g_loss": loss_g.item(), "dn_loss": loss_dn.item(), "da_loss": loss_da.item(), **{k: v.item() for k, v in losses.items()}}

        self.history = self._epochs(X, step, generator)
        return self

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.nets["G"](x))

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.reconstruct(x)
        Dn = self.nets["Dn"]
        feature = ((Dn(x)[2] - Dn(rec)[2]) ** 2).mean(dim=1)
        return self._mean_dims((x - rec).abs()) + self.score_feature_weight * feature

    def score(self, X) -> np.ndarray:
        return self._predict(self._score_tensor, self._check(X))

    def anomaly_probability(self, X) -> np.ndarray:
        """D_a's image-level probability that an input is anomalous (meaningful after the
        imbalanced protocol, where D_a has seen real anomalies)."""
        return self._predict(lambda x: torch.sigmoid(self.nets["Da"](x)[0]), self._check(X))


# ------------------------------------------------------------------------------------------------
class _Conditional(GenerativeDetector):
    """Class-conditional models: ``fit(X, y=labels)``; ``sample(n, labels=...)``."""

    def __init__(self, *, n_classes: int = 10, **common):
        super().__init__(**common)
        self.n_classes = n_classes
        self.classes_seen: list[int] = []

    def _labels(self, X: np.ndarray, y) -> np.ndarray:
        y = np.zeros(len(X), np.int64) if y is None else np.asarray(y, dtype=np.int64)
        if len(y) != len(X) or y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"{self.name}: need one label in [0, {self.n_classes}) per input")
        return y

    def _with_labels(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Packs labels into the data tensor for the shared epoch loop (last flat column)."""
        flat = X.reshape(len(X), -1)
        return np.ascontiguousarray(np.concatenate([flat, y[:, None].astype(np.float32)], axis=1))

    def _unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return packed[:, :-1].reshape(-1, *self.input_shape), packed[:, -1].long()

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
        X = as_model_input(X)
        y = self._labels(X, y)
        self.classes_seen = sorted(int(c) for c in np.unique(y))
        _, generator = self._start(X)
        G, D = self.nets["G"], self.nets["D"]
        opt_g, opt_d = self._adam(G), self._adam(D)

        def step(packed: torch.Tensor) -> dict:
            x, labels = self._unpack(packed)
            z = torch.randn(len(x), self.latent, device=x.device)
            fake = self._out(G(z, labels))
            loss_d = _bce(D(x, labels)[0], 1.0) + _bce(D(fake.detach(), labels)[0], 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = _bce(D(fake, labels)[0], 1.0)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            return {"d_loss": loss_d.item(), "g_loss": loss_g.item()}

        self.history = self._epochs(self._with_labels(X, y), step, generator)
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
        X = as_model_input(X)
        y = self._labels(X, y)
        self.classes_seen = sorted(int(c) for c in np.unique(y))
        _, generator = self._start(X)
        V = self.nets["V"]
        opt = self._adam(V, betas=(0.9, 0.999))

        def step(packed: torch.Tensor) -> dict:
            x, labels = self._unpack(packed)
            logits, mu, logvar = V(x, labels)
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
            loss = (recon + self.beta * kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss.item(), "kl": kl.mean().item()}

        self.history = self._epochs(self._with_labels(X, y), step, generator)
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
