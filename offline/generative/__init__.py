"""Generative models trained on every class of an image dataset, and how to judge them.

``measures`` trains them (kept under ``runs/generative/``) and measures them in a classifier's
feature space; the commands ``python -m offline.generative.sample`` (sample grids),
``python -m offline.generative.latent`` (t-SNE/PCA of latent codes) and
``python -m offline.generative.gan_vs_vae`` (the measured comparison, a table in
``benchmarks/README.md``) use them. This folder sits above ``training``, ``evaluation`` and
``figures``; nothing below imports it.
"""
