"""GEOM-style detector (after Golan & El-Yaniv 2018, "Deep Anomaly Detection Using Geometric
Transformations"): a classifier learns which of 72 geometric transformations was applied to a
normal image; on images unlike the normal class it cannot tell. Two scores (``score_mode``):
``"dirichlet"`` (the default), the paper's own: per transformation, a Dirichlet fitted by maximum
likelihood (Minka's fixed point) to the softmax outputs on the normal training images, the score
is minus the summed log-density (up to a constant) of an image's 72 softmax vectors; and
``"cross-entropy"``, the mean cross-entropy of the true transformation over the 72 (the paper's
simplified score). The Dirichlet learns what is normal about the classifier's doubts: a 0 turned
by 180 degrees still looks like a 0, so on that class the true transformation's cross-entropy is
high for normal images too, while the Dirichlet expects exactly that confusion.

Probabilities are floored at ``probability_floor`` (1e-5) before the Dirichlet sees them. Nearly
every fitted concentration is below 1 (the classifier gives the wrong transformations almost no
mass), and a term (alpha - 1) log p with alpha < 1 grows without bound as p -> 0: unfloored, an
image on which the classifier is extremely sure of itself, as it often is on anomalies, scored as
the most normal of all. MNIST digit 1 (rotations and flips of a 1 look alike, so its normal images
leave the classifier unsure) scored AUROC 0.546 so; floored, 0.948. The floor was chosen among
1e-3, 1e-5, 1e-7 and none on Fashion-MNIST class 0, the image class kept for tuning
(``python -m benchmarks.geom_scores``, rows in ``benchmarks/results/geom_scores.csv``).

It is the "one more detector" of issue 16, reported apart from the generative models. What
differs from the paper: a small conv net (``SmallClassifier``) instead of a wide ResNet, cyclic
shifts (see ``GeometricTransforms``).

Training sees every (image, transformation) pair once per epoch, in shuffled minibatches, through
the one training loop; with ``X_val`` the held-out normal images' loss is recorded per epoch and,
with ``patience``, stops training and keeps the best weights (label-free, like the AE/VAE).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from offline.detectors.base import Detector, as_float32
from offline.detectors.training import adam_step, place, predict_in_chunks, seed_everything, train_loop
from offline.models.images import GeometricTransforms, SmallClassifier

SHAPE_KEY = "meta.input_shape"
ALPHA_KEY = "meta.dirichlet_alpha"
SCORE_MODES = ("cross-entropy", "dirichlet")


def inverse_digamma(y: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """x with digamma(x) = y (Minka's initialisation, then Newton steps)."""
    x = torch.where(y >= -2.22, torch.exp(y) + 0.5, -1.0 / (y + 0.5772156649))
    for _ in range(steps):
        x = x - (torch.special.digamma(x) - y) / torch.special.polygamma(1, x)
    return x


def dirichlet_mle(mean_log_p: torch.Tensor, mean_p: torch.Tensor, mean_p2: torch.Tensor, *, iterations: int = 200) -> torch.Tensor:
    """Dirichlet concentrations from sufficient statistics over samples (last dim = categories):
    the mean of log p (what the likelihood needs) and the first two moments of p (the method-of-
    moments start); Minka's fixed point alpha = psi^-1(psi(sum alpha) + mean log p)."""
    precision = ((mean_p[..., :1] - mean_p2[..., :1]) / (mean_p2[..., :1] - mean_p[..., :1] ** 2).clamp_min(1e-12)).clamp(1e-2, 1e4)
    alpha = (mean_p * precision).clamp_min(1e-3)
    for _ in range(iterations):
        alpha = inverse_digamma(torch.special.digamma(alpha.sum(-1, keepdim=True)) + mean_log_p).clamp_min(1e-6)
    return alpha


def floored(log_p: torch.Tensor, floor: float | None) -> torch.Tensor:
    """log p with p floored at ``floor`` (None: as it is); see the module doc for why the Dirichlet needs it."""
    return log_p if floor is None else log_p.clamp_min(float(np.log(floor)))


def dirichlet_sums(log_p: torch.Tensor) -> torch.Tensor:
    """(3, 72, 72): the sums over images of log p, p and p^2, from (n, 72, 72) log-probabilities."""
    log_p = log_p.double().cpu()
    p = log_p.exp()
    return torch.stack([log_p.sum(0), p.sum(0), (p * p).sum(0)])


def dirichlet_from_sums(sums: torch.Tensor, n: int) -> torch.Tensor:
    """(72, 72) concentrations, one Dirichlet per transformation, from :func:`dirichlet_sums` over ``n`` images."""
    mean_log_p, mean_p, mean_p2 = sums / n
    return dirichlet_mle(mean_log_p, mean_p, mean_p2).float()


def transformation_score(log_p: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """Anomaly score of each image from its (n, 72, 72) log-probabilities: the mean cross-entropy of
    the true transformation, or (with ``alpha``) minus the mean Dirichlet log-density, up to a constant,
    sum_j (alpha_kj - 1) log p_kj averaged over the transformations k."""
    if alpha is None:
        return -torch.diagonal(log_p, dim1=1, dim2=2).mean(1)
    return -(log_p * (alpha - 1)).sum(2).mean(1)


class GeometricTransformDetector(Detector):
    """Images only; score = minus the Dirichlet log-density of the 72 softmax vectors (GEOM's
    score), or the mean cross-entropy of the true transformation (``score_mode="cross-entropy"``).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> images = (rng.random((64, 1, 28, 28)) > 0.8).astype("float32")
    >>> geom = GeometricTransformDetector(epochs=1, batch_size=256, base_channels=8, progress=False).fit(images)
    >>> geom.score(images[:3]).shape
    (3,)
    """

    name = "geom"
    images_only = True

    def __init__(
        self,
        *,
        epochs: int = 3,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int | None = None,
        base_channels: int = 32,
        shift: int = 8,
        score_mode: str = "dirichlet",
        probability_floor: float | None = 1e-5,
        max_steps: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.patience, self.base_channels, self.shift, self.max_steps = patience, base_channels, shift, max_steps
        if score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {', '.join(SCORE_MODES)}, not {score_mode!r}")
        self.score_mode = score_mode
        self.probability_floor = probability_floor
        self.seed, self.device, self.progress = seed, device, progress
        self.alpha: torch.Tensor | None = None  # (72 transformations, 72 classes) Dirichlet concentrations
        self.transforms = GeometricTransforms(shift)
        self.module: SmallClassifier | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.history: list[dict] = []

    def _build(self, shape: tuple[int, ...]) -> SmallClassifier:
        if len(shape) != 3:
            raise ValueError(f"geom works on images (N, C, H, W); got rows of shape {shape}")
        self.input_shape = tuple(int(s) for s in shape)
        return SmallClassifier(shape[0], self.transforms.count, image_size=shape[-1], base=self.base_channels)

    def fit(self, X, *, X_val=None) -> "GeometricTransformDetector":
        X = as_float32(X)
        if X.ndim != 4:
            raise ValueError(f"geom works on images (N, C, H, W); got rows of shape {X.shape}")
        generator = seed_everything(self.seed)
        self.module = place(self._build(X.shape[1:]), self.device)
        held_out = as_float32(X_val) if X_val is not None and len(X_val) else X[:0]
        # one tensor of all images; the loop shuffles (image, transformation) index pairs into it
        images = torch.from_numpy(np.concatenate([X, held_out])).to(self.device)
        count = self.transforms.count

        def pairs(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
            return np.repeat(np.arange(start, start + n), count), np.tile(np.arange(count), n)

        def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            index, t = batch
            return F.cross_entropy(self.module(self.transforms(images[index], t)), t)

        self.history = train_loop(
            self.module, adam_step(self.module, loss, lr=self.lr, weight_decay=self.weight_decay), pairs(0, len(X)),
            X_val=pairs(len(X), len(held_out)) if len(held_out) else None, val_loss=loss, patience=self.patience,
            epochs=self.epochs, batch_size=self.batch_size, generator=generator, max_steps=self.max_steps, desc=self.name,
            device=self.device, progress=self.progress,
        )
        if self.score_mode == "dirichlet":
            self.alpha = self.fit_dirichlet(X)
        return self

    @torch.inference_mode()
    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 72, 72): row k is the classifier's log-softmax on each image under transformation k."""
        rows = []
        for k in range(self.transforms.count):
            t = torch.full((len(x),), k, dtype=torch.long, device=x.device)
            rows.append(torch.log_softmax(self.module(self.transforms(x, t)).float(), dim=1))
        return torch.stack(rows, dim=1)

    @torch.inference_mode()
    def fit_dirichlet(self, X: np.ndarray, chunk: int = 1024) -> torch.Tensor:
        """Per transformation, the Dirichlet of the classifier's softmax on the normal images ``X``."""
        sums = torch.zeros(3, self.transforms.count, self.transforms.count, dtype=torch.float64)
        for start in range(0, len(X), chunk):
            log_p = floored(self.log_probs(torch.from_numpy(X[start : start + chunk]).to(self.device)), self.probability_floor)
            sums += dirichlet_sums(log_p)
        return dirichlet_from_sums(sums, len(X))

    def _score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        log_p = self.log_probs(x)
        if self.score_mode != "dirichlet":
            return transformation_score(log_p)
        return transformation_score(floored(log_p, self.probability_floor), self.alpha.to(x.device))

    def score(self, X) -> np.ndarray:
        if self.module is None:
            raise RuntimeError("geom: call fit() before score()")
        if self.score_mode == "dirichlet" and self.alpha is None:
            raise RuntimeError("geom: score_mode='dirichlet' needs the Dirichlet fit of fit() (or fit_dirichlet)")
        return predict_in_chunks(self._score_tensor, as_float32(X), chunk=1024, device=self.device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        tensors[SHAPE_KEY] = torch.tensor(self.input_shape, dtype=torch.int64)
        if self.alpha is not None:
            tensors[ALPHA_KEY] = self.alpha.detach().cpu().contiguous()
        return tensors

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor], *, n_features: int | None) -> "GeometricTransformDetector":
        detector = cls(**params)
        tensors = dict(tensors)
        detector.module = detector._build(tuple(tensors.pop(SHAPE_KEY).tolist()))
        detector.alpha = tensors.pop(ALPHA_KEY, None)
        detector.module.load_state_dict(tensors)
        place(detector.module, detector.device).eval()
        return detector
