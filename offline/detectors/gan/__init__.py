"""GAN-family detectors for images (N, C, H, W) and tabular rows (n, d), one file per model.

The architecture follows the input: 4-D (or 3-D (N, H, W)) images in [0, 1] get the conv
networks of ``models/images.py`` (generator outputs through a sigmoid); 2-D standardised rows get
the MLPs of ``models/gan_tabular.py`` (linear outputs). Every detector follows the one protocol
(``fit`` on normal data, ``score`` higher = more anomalous, ``explain`` per feature/pixel) and
keeps its state as tensors only (``state_tensors``/``from_state``), so it can go into a bundle.

Layout (after anomalib's ``models/image/ganomaly/``): the networks are pure ``nn.Module`` classes
in ``offline/models/``; ``losses.py`` holds every loss as a named function; ``base.py`` the shared
``GenerativeDetector`` (shapes -> networks, tensor state, the one training loop of
``offline.detectors.training``); each model file holds its detector: the training step and the
score.

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
- ``cgan``/``cvae`` (``conditional.py``): class-conditional GAN and VAE, for class-specific
  sampling (``fit(X, y=...)``).

>>> import numpy as np
>>> rows = np.random.default_rng(0).normal(size=(256, 6)).astype("float32")
>>> det = EGBADDetector(epochs=1, progress=False).fit(rows)
>>> det.score(rows[:4]).shape
(4,)
"""

from offline.detectors.gan.anogan import AnoGANDetector
from offline.detectors.gan.base import GenerativeDetector
from offline.detectors.gan.conditional import ConditionalGANDetector, ConditionalVAEDetector
from offline.detectors.gan.dcgan import DCGANDetector
from offline.detectors.gan.egbad import EGBADDetector
from offline.detectors.gan.fanogan import FAnoGANDetector
from offline.detectors.gan.ganomaly import GANomalyDetector
from offline.detectors.gan.twodisc import TwoDiscriminatorDetector, pseudo_anomalies

__all__ = [
    "AnoGANDetector",
    "ConditionalGANDetector",
    "ConditionalVAEDetector",
    "DCGANDetector",
    "EGBADDetector",
    "FAnoGANDetector",
    "GANomalyDetector",
    "GenerativeDetector",
    "TwoDiscriminatorDetector",
    "pseudo_anomalies",
]
