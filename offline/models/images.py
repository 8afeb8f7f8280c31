"""Convolutional networks for (N, C, H, W) images in [0, 1]: pure modules, no I/O, no loops.

All networks work on a 32 x 32 canvas (DCGAN-style: three stride-2 4x4 convolutions take 32 to 4,
one 4x4 convolution takes 4 to 1). 28 x 28 inputs (MNIST, Fashion-MNIST) are zero-padded to 32 on
the way in and generated images are cropped back to 28 on the way out, so callers always see
their own image size. Decoders return *logits*; apply ``torch.sigmoid`` for pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from offline.models.tabular import GaussianVAE

CANVAS = 32


def pad_to_canvas(x: torch.Tensor) -> torch.Tensor:
    size = x.shape[-1]
    if size == CANVAS:
        return x
    if size > CANVAS:
        raise ValueError(f"images of size {size} are larger than the {CANVAS}x{CANVAS} canvas")
    before = (CANVAS - size) // 2
    after = CANVAS - size - before
    return F.pad(x, (before, after, before, after))


def crop_from_canvas(x: torch.Tensor, size: int) -> torch.Tensor:
    if size == CANVAS:
        return x
    before = (CANVAS - size) // 2
    return x[..., before : before + size, before : before + size]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample normalisation: required by the WGAN-GP gradient penalty
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', not {kind!r}")


def conv_trunk(in_channels: int, base: int, norm: str = "batch") -> nn.Sequential:
    """32x32 -> (4*base) x 4 x 4."""
    return nn.Sequential(
        nn.Conv2d(in_channels, base, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(base, 2 * base, 4, 2, 1), _norm(norm, 2 * base), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(2 * base, 4 * base, 4, 2, 1), _norm(norm, 4 * base), nn.LeakyReLU(0.2, inplace=True),
    )


class ConvEncoder(nn.Module):
    """Image -> vector of ``out_dim``."""

    def __init__(self, in_channels: int, out_dim: int, *, image_size: int = 28, base: int = 32, norm: str = "batch"):
        super().__init__()
        self.image_size = image_size
        self.trunk = conv_trunk(in_channels, base, norm)
        self.head = nn.Conv2d(4 * base, out_dim, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pad_to_canvas(x))).flatten(1)


class ConvDecoder(nn.Module):
    """Vector of ``latent_dim`` -> image logits (N, C, image_size, image_size)."""

    def __init__(self, latent_dim: int, out_channels: int, *, image_size: int = 28, base: int = 32):
        super().__init__()
        self.image_size = image_size
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * base, 4, 1, 0), nn.BatchNorm2d(4 * base), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * base, 2 * base, 4, 2, 1), nn.BatchNorm2d(2 * base), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * base, base, 4, 2, 1), nn.BatchNorm2d(base), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(base, out_channels, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return crop_from_canvas(self.net(z[:, :, None, None]), self.image_size)


class ConvDiscriminator(nn.Module):
    """Image -> (real/fake logit (N,), flattened 4x4 features (N, 64*base)) for feature matching."""

    def __init__(self, in_channels: int, *, image_size: int = 28, base: int = 32, norm: str = "batch"):
        super().__init__()
        self.trunk = conv_trunk(in_channels, base, norm)
        self.head = nn.Conv2d(4 * base, 1, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(pad_to_canvas(x))
        return self.head(features).flatten(), features.flatten(1)


class ConvAutoencoder(nn.Module):
    def __init__(self, in_channels: int, latent_dim: int = 8, *, image_size: int = 28, base: int = 32):
        super().__init__()
        self.encoder = ConvEncoder(in_channels, latent_dim, image_size=image_size, base=base)
        self.decoder = ConvDecoder(latent_dim, in_channels, image_size=image_size, base=base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits."""
        return self.decoder(self.encoder(x))


class ConvVAE(GaussianVAE):
    """q(z|x) = N(mu, diag(exp(logvar))), Bernoulli decoder (logits), N(0, I) prior.

    ``latent_mean``/``latent_var`` hold the profile of the training images' latent means (as in
    the tabular ``MLPVAE``) so that a loaded model can score latent deviation.
    """

    def __init__(self, in_channels: int, latent_dim: int = 8, *, image_size: int = 28, base: int = 32):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(in_channels, 2 * latent_dim, image_size=image_size, base=base)
        self.decoder = ConvDecoder(latent_dim, in_channels, image_size=image_size, base=base)
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_var", torch.ones(latent_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)


class BiGANDiscriminator(nn.Module):
    """D(x, z) of BiGAN/EGBAD: a conv path for x, a dense path for z, a joint dense head.

    Returns (logit (N,), joint features (N, 512)); the features serve the feature-matching score.
    """

    def __init__(self, in_channels: int, latent_dim: int, *, image_size: int = 28, base: int = 32, dropout: float = 0.2):
        super().__init__()
        self.x_path = nn.Sequential(conv_trunk(in_channels, base, "batch"), nn.Flatten(), nn.Dropout(dropout))
        self.z_path = nn.Sequential(nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout))
        self.joint = nn.Sequential(nn.Linear(4 * base * 16 + 256, 512), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout))
        self.head = nn.Linear(512, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.joint(torch.cat([self.x_path(pad_to_canvas(x)), self.z_path(z)], dim=1))
        return self.head(features).flatten(), features


# -- Kim et al.: U-Net generator and image+patch discriminators ---------------------------------
class UNetGenerator(nn.Module):
    """U-Net autoencoder: 4 strided convolutions down (32 -> 2), 4 up-convolutions back, no pooling.

    ``skips`` says which of the three encoder levels (16, 8, 4 pixels) are concatenated into the
    decoder; all three, as in Kim et al., by default. Returns image logits.
    """

    def __init__(self, in_channels: int, *, image_size: int = 28, base: int = 32, skips: tuple[bool, bool, bool] = (True, True, True)):
        super().__init__()
        self.image_size, self.skips = image_size, tuple(bool(s) for s in skips)
        b = base
        self.down1 = nn.Sequential(nn.Conv2d(in_channels, b, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))  # 16
        self.down2 = nn.Sequential(nn.Conv2d(b, 2 * b, 4, 2, 1), nn.BatchNorm2d(2 * b), nn.LeakyReLU(0.2, inplace=True))  # 8
        self.down3 = nn.Sequential(nn.Conv2d(2 * b, 4 * b, 4, 2, 1), nn.BatchNorm2d(4 * b), nn.LeakyReLU(0.2, inplace=True))  # 4
        self.down4 = nn.Sequential(nn.Conv2d(4 * b, 8 * b, 4, 2, 1), nn.ReLU(inplace=True))  # 2: bottleneck
        s16, s8, s4 = self.skips
        self.up1 = nn.Sequential(nn.ConvTranspose2d(8 * b, 4 * b, 4, 2, 1), nn.BatchNorm2d(4 * b), nn.ReLU(inplace=True))  # 4
        self.up2 = nn.Sequential(nn.ConvTranspose2d(4 * b * (1 + s4), 2 * b, 4, 2, 1), nn.BatchNorm2d(2 * b), nn.ReLU(inplace=True))  # 8
        self.up3 = nn.Sequential(nn.ConvTranspose2d(2 * b * (1 + s8), b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))  # 16
        self.up4 = nn.ConvTranspose2d(b * (1 + s16), in_channels, 4, 2, 1)  # 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s16, s8, s4 = self.skips
        d1 = self.down1(pad_to_canvas(x))
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        u = self.up1(self.down4(d3))
        u = self.up2(torch.cat([u, d3], 1) if s4 else u)
        u = self.up3(torch.cat([u, d2], 1) if s8 else u)
        u = self.up4(torch.cat([u, d1], 1) if s16 else u)
        return crop_from_canvas(u, self.image_size)


class ImagePatchDiscriminator(nn.Module):
    """Returns (image-level logit (N,), patch-level logits (N, 16) over a 4x4 grid, features)."""

    def __init__(self, in_channels: int, *, image_size: int = 28, base: int = 32):
        super().__init__()
        self.trunk = conv_trunk(in_channels, base, "batch")
        self.image_head = nn.Conv2d(4 * base, 1, 4, 1, 0)
        self.patch_head = nn.Conv2d(4 * base, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.trunk(pad_to_canvas(x))
        return self.image_head(features).flatten(), self.patch_head(features).flatten(1), features.flatten(1)


# -- class-conditional networks ---------------------------------------------------------------
def one_hot_planes(labels: torch.Tensor, n_classes: int, size: int) -> torch.Tensor:
    return F.one_hot(labels, n_classes).float()[:, :, None, None].expand(-1, -1, size, size)


class ConditionalDecoder(nn.Module):
    """(z, label) -> image logits."""

    def __init__(self, latent_dim: int, n_classes: int, out_channels: int, *, image_size: int = 28, base: int = 32):
        super().__init__()
        self.n_classes = n_classes
        self.decoder = ConvDecoder(latent_dim + n_classes, out_channels, image_size=image_size, base=base)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, F.one_hot(labels, self.n_classes).float()], dim=1))


class ConditionalDiscriminator(nn.Module):
    """(image, label) -> (logit, features); the label enters as one-hot planes."""

    def __init__(self, in_channels: int, n_classes: int, *, image_size: int = 28, base: int = 32):
        super().__init__()
        self.n_classes, self.image_size = n_classes, image_size
        self.net = ConvDiscriminator(in_channels + n_classes, image_size=image_size, base=base)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(torch.cat([x, one_hot_planes(labels, self.n_classes, x.shape[-1])], dim=1))


class ConditionalVAE(nn.Module):
    """CVAE: q(z|x, y), p(x|z, y) with Bernoulli logits."""

    def __init__(self, in_channels: int, n_classes: int, latent_dim: int = 16, *, image_size: int = 28, base: int = 32):
        super().__init__()
        self.n_classes, self.latent_dim = n_classes, latent_dim
        self.encoder = ConvEncoder(in_channels + n_classes, 2 * latent_dim, image_size=image_size, base=base)
        self.decoder = ConditionalDecoder(latent_dim, n_classes, in_channels, image_size=image_size, base=base)

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(torch.cat([x, one_hot_planes(labels, self.n_classes, x.shape[-1])], 1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z, labels), mu, logvar


class SmallClassifier(nn.Module):
    """A small conv classifier: the judge of the GAN-vs-VAE comparison (``features`` is its 128-d
    embedding) and the transformation classifier of the GEOM-style detector."""

    def __init__(self, in_channels: int, n_classes: int = 10, *, image_size: int = 28, base: int = 32):
        super().__init__()
        self.trunk = conv_trunk(in_channels, base, "batch")
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(4 * base * 16, 128), nn.ReLU(inplace=True))
        self.head = nn.Linear(128, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(pad_to_canvas(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class GeometricTransforms(nn.Module):
    """The 72 transformations of GEOM (Golan & El-Yaniv 2018) on the 32 x 32 canvas, by index.

    Index ``t`` = horizontal flip (2) x vertical shift (3) x horizontal shift (3) x rotation by
    a multiple of 90 degrees (4). Shifts are cyclic rolls by ``shift`` pixels: on the black
    border of MNIST-like images a roll is a translation, and it keeps the op a cheap gather.
    ``forward(x, t)`` applies to each image its own transformation (``t``: one index per image).
    """

    def __init__(self, shift: int = 8):
        super().__init__()
        self.shift = shift
        self.count = 2 * 3 * 3 * 4

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = pad_to_canvas(x)
        t = t.to(x.device).long()
        flip, rest = t // 36, t % 36
        dy, rest = rest // 12, rest % 12
        dx, rotation = rest // 4, rest % 4

        def pick(choice: torch.Tensor, options: list[torch.Tensor]) -> torch.Tensor:
            out = options[0]
            for value, option in enumerate(options[1:], start=1):
                out = torch.where((choice == value).view(-1, 1, 1, 1), option, out)
            return out

        x = pick(flip, [x, x.flip(-1)])
        x = pick(dy, [x, x.roll(-self.shift, -2), x.roll(self.shift, -2)])
        x = pick(dx, [x, x.roll(-self.shift, -1), x.roll(self.shift, -1)])
        return pick(rotation, [x.rot90(k, (-2, -1)) for k in range(4)])
