"""``GenerativeDetector``: what every GAN-family detector shares.

The input's shape picks the networks (conv nets of ``models/images.py`` for (N, C, H, W) images
in [0, 1], generator outputs through a sigmoid; MLPs of ``models/gan_tabular.py`` for (n, d)
standardised rows, linear outputs); training runs the detector's ``step`` through the one loop,
:func:`offline.detectors.training.train_loop`; the state is tensors only (``state_tensors`` /
``from_state``), so a detector can go into a bundle.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from offline.detectors.base import Detector, as_float32
from offline.detectors.training import Step, place, predict_in_chunks, seed_everything, train_loop

SHAPE_KEY = "meta.input_shape"


class GenerativeDetector(Detector):
    """Shared machinery: input shape -> networks, the training loop, tensor state."""

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
        X = as_float32(X)
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

    # -- training glue ---------------------------------------------------------------------
    def _start(self, X) -> tuple[np.ndarray, torch.Generator]:
        """Coerce ``X``, seed, build the networks for its shape; returns (X, the batch generator)."""
        X = as_float32(X)
        if len(X) < 2:
            raise ValueError(f"{self.name}: need at least 2 training rows, got {len(X)}")
        generator = seed_everything(self.seed)
        self._set_shape(X)
        self._build()
        for net in self.nets.values():
            place(net, self.device)
        self.history = []
        return X, generator

    def _train(self, X: np.ndarray | tuple[np.ndarray, ...], step: Step, generator: torch.Generator, *, epochs: int | None = None,
               desc: str | None = None, phase: str | None = None) -> list[dict]:
        """``step`` over shuffled minibatches (of at least 2 rows: batch norm) for ``epochs``
        epochs or ``max_steps`` steps, through the one training loop. ``phase`` names a training
        phase of a multi-phase model in the rows the ``on_epoch_end`` callback sees."""
        tag = {"phase": phase} if phase else {}
        on_epoch = None if self.on_epoch_end is None else (lambda row: self.on_epoch_end(self, {**tag, **row}))
        rows = train_loop(
            self.nets, step, X, epochs=self.epochs if epochs is None else epochs, batch_size=self.batch_size,
            generator=generator, max_steps=self.max_steps, min_batch=2, desc=desc or self.name, device=self.device,
            progress=self.progress, on_epoch=on_epoch,
        )
        return [{**tag, **row} for row in rows]

    @staticmethod
    def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss``."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

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
            place(net, detector.device).eval()
        return detector
