"""The losses of the GAN-family detectors as named functions (after anomalib's ``ganomaly/loss.py``).

Each takes network outputs (or, where a loss needs several forward passes, the networks as
callables) and returns a tensor, so each can be checked on its own. The detectors' training
steps (``gan/<model>.py``) only call networks, these functions and optimizers. All adversarial
losses are BCE with logits against a constant target (1 = real, 0 = fake).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def bce(logits: Tensor, target: float) -> Tensor:
    """Mean BCE with logits against a constant ``target``."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def mean_per_row(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: (N, ...) -> (N,)."""
    return x.flatten(1).mean(dim=1)


# -- standard (DCGAN) adversarial losses ----------------------------------------------------------
def discriminator_loss(real_logit: Tensor, fake_logit: Tensor) -> Tensor:
    """D calls real inputs real and generated ones fake."""
    return bce(real_logit, 1.0) + bce(fake_logit, 0.0)


def generator_loss(fake_logit: Tensor) -> Tensor:
    """Non-saturating generator loss: G wants D to call its output real."""
    return bce(fake_logit, 1.0)


def bigan_generator_encoder_loss(fake_logit: Tensor, real_logit: Tensor) -> Tensor:
    """EGBAD/BiGAN, G and E together: D(G(z), z) should read real and D(x, E(x)) fake (the labels
    swapped, so that G and E are pushed to make the two joint distributions agree)."""
    return bce(fake_logit, 1.0) + bce(real_logit, 0.0)


# -- GANomaly -------------------------------------------------------------------------------------
def ganomaly_generator_loss(x: Tensor, x_hat: Tensor, z: Tensor, z_hat: Tensor, features_real: Tensor, features_fake: Tensor,
                            *, w_adv: float = 1.0, w_con: float = 50.0, w_enc: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Akcay et al. 2018: ``w_adv`` * feature matching ||f(x) - f(x_hat)||^2 + ``w_con`` * |x - x_hat|
    + ``w_enc`` * ||G_E(x) - E(x_hat)||^2 (all means). ``features_real`` is detached by the caller.
    Returns (weighted total, the three parts)."""
    adv = F.mse_loss(features_fake, features_real)
    con = F.l1_loss(x_hat, x)
    enc = F.mse_loss(z_hat, z)
    return w_adv * adv + w_con * con + w_enc * enc, {"adv": adv, "con": con, "enc": enc}


# -- WGAN-GP and f-AnoGAN -------------------------------------------------------------------------
def wasserstein_critic_loss(real_score: Tensor, fake_score: Tensor) -> Tensor:
    """The critic's loss, the negative Wasserstein estimate: mean C(fake) - mean C(real)."""
    return fake_score.mean() - real_score.mean()


def wgan_generator_loss(fake_score: Tensor) -> Tensor:
    return -fake_score.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """Gulrajani et al. 2017: (||grad C(x_mix)|| - 1)^2 at random mixes of real and fake rows
    (one uniform weight per row, drawn from torch's global generator)."""
    shape = (len(real),) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, device=real.device)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)[0]
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def izif_loss(x: Tensor, reconstruction: Tensor, features_x: Tensor, features_reconstruction: Tensor, *, kappa: float = 1.0) -> Tensor:
    """f-AnoGAN's izi_f, per row: ||x - G(E(x))||^2 / n + ``kappa`` * ||f(x) - f(G(E(x)))||^2 / n_f.
    The encoder's training loss (mean over rows) and the anomaly score."""
    return mean_per_row((x - reconstruction) ** 2) + kappa * ((features_x - features_reconstruction) ** 2).mean(dim=1)


# -- AnoGAN ---------------------------------------------------------------------------------------
def anogan_search_loss(x: Tensor, generated: Tensor, features_x: Tensor, features_generated: Tensor, *, feature_weight: float = 0.1) -> Tensor:
    """Schlegl et al. 2017, per row: (1 - lambda) * mean|x - G(z)| + lambda * mean|f(x) - f(G(z))|."""
    residual = mean_per_row((x - generated).abs())
    discrimination = (features_generated - features_x).abs().mean(dim=1)
    return (1 - feature_weight) * residual + feature_weight * discrimination


# -- two discriminators (Kim et al.) --------------------------------------------------------------
PatchOutputs = tuple[Tensor, Tensor, Tensor]  # image-level logit, patch-level logits, features


def patch_discriminator_loss(outputs: PatchOutputs, target: float) -> Tensor:
    """BCE of both the image-level and the patch-level logits against ``target``."""
    image, patch, _ = outputs
    return bce(image, target) + bce(patch, target)


def two_discriminator_losses(Dn: Callable[[Tensor], PatchOutputs], Da: Callable[[Tensor], PatchOutputs], x_n: Tensor, x_a: Tensor,
                             reconstructions: Tensor) -> tuple[Tensor, Tensor]:
    """One loss per discriminator. D_n: real = normal images; fake = reconstructions and
    anomalous images (half weight each). D_a: real = anomalous images; fake = reconstructions and
    normal images. ``reconstructions`` are G's outputs for ``x_n`` then ``x_a``; they are detached here."""
    fake = reconstructions.detach()
    loss_dn = patch_discriminator_loss(Dn(x_n), 1.0) + 0.5 * (patch_discriminator_loss(Dn(fake), 0.0) + patch_discriminator_loss(Dn(x_a), 0.0))
    loss_da = patch_discriminator_loss(Da(x_a), 1.0) + 0.5 * (patch_discriminator_loss(Da(fake), 0.0) + patch_discriminator_loss(Da(x_n), 0.0))
    return loss_dn, loss_da


TWO_DISCRIMINATOR_TERMS = ("adv", "patch", "con", "lat", "anomaly_adv", "anomaly_patch")


def two_discriminator_generator_losses(Dn: Callable[[Tensor], PatchOutputs], Da: Callable[[Tensor], PatchOutputs], x_n: Tensor,
                                       reconstruction_n: Tensor, reconstructions: Tensor) -> dict[str, Tensor]:
    """The generator's six terms (unweighted); ``reconstruction_n`` = G(x_n), ``reconstructions`` =
    G(x_n) then G(x_a):

    ``adv``/``patch``: D_n calls every reconstruction real (image level / every patch);
    ``con``: L1 between a normal image and its reconstruction; ``lat``: squared distance of D_n's
    features of a normal image and of its reconstruction; ``anomaly_adv``/``anomaly_patch``: D_a
    calls every reconstruction not anomalous.
    """
    dn_image, dn_patch, dn_features = Dn(reconstructions)
    da_image, da_patch, _ = Da(reconstructions)
    return {
        "adv": bce(dn_image, 1.0),
        "patch": bce(dn_patch, 1.0),
        "con": F.l1_loss(reconstruction_n, x_n),
        "lat": F.mse_loss(dn_features[: len(x_n)], Dn(x_n)[2].detach()),
        "anomaly_adv": bce(da_image, 0.0),
        "anomaly_patch": bce(da_patch, 0.0),
    }


# -- conditional VAE ------------------------------------------------------------------------------
def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


def bernoulli_vae_loss(logits: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, *, beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Mean over rows of BCE summed over pixels + ``beta`` * KL; returns (loss, per-row KL)."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = gaussian_kl(mu, logvar)
    return (recon + beta * kl).mean(), kl
