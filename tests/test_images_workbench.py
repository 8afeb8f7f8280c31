"""The image workbench end to end on small slices: training command, suite rows and resumption,
EDA, sample grids, latent plots and the GAN-vs-VAE measurements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from offline.data.store import DataStore


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def store(settings, tmp_path_factory) -> DataStore:
    if settings.data.mirror_dir is None or not (Path(settings.data.mirror_dir) / "mnist").exists():
        pytest.skip("STREAMDETECT_DATA__MIRROR_DIR does not point at the data mirror")
    return DataStore(tmp_path_factory.mktemp("cache"), settings.data.mirror_dir, allow_download=False)


@pytest.fixture(scope="module")
def mnist(store):
    from offline.data.images import load_images

    return load_images("mnist", store, limit=2500)


def test_train_image_model_writes_a_verified_model_and_figures(store, tmp_path):
    from offline.bundle import BundleError
    from offline.training.images import load_image_model, train_image_model

    summary = train_image_model(dataset="mnist", model="vae", target_class="1", preset="quick", epochs=None, seed=0,
                                out_dir=tmp_path, store=store, params={"progress": False})
    directory = Path(summary["directory"])
    assert summary["auroc"] > 0.9 and summary["normal_classes"] == [1]
    assert (directory / "samples.png").exists() and (directory / "reconstructions.png").exists()
    detector, manifest = load_image_model(directory)
    assert manifest["input_shape"] == [1, 28, 28] and manifest["model"]["name"] == "vae"
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match="does not match"):
        load_image_model(directory)


def test_shoe_alias_trains_on_three_classes(store, tmp_path):
    from offline.training.images import train_image_model

    summary = train_image_model(dataset="fashion-mnist", model="ae", target_class="shoe", preset="quick", epochs=1, seed=0,
                                out_dir=tmp_path, store=store, params={"progress": False})
    assert summary["normal_classes"] == [5, 7, 9] and "shoe" in summary["directory"]


def test_run_one_protocols_and_columns(mnist):
    from offline.evaluation.benchmark import COLUMNS
    from offline.evaluation.suites.images import run_one

    rows, art = run_one(mnist, "one-class", "random", 3, 0, "quick")
    assert [r["threshold_rule"] for r in rows] == ["val-fpr-0.05", "oracle-best-f1"]
    assert set(COLUMNS) - {"code_version"} <= set(rows[0])
    assert 0.35 < rows[0]["auroc"] < 0.65  # the floor
    rows, art = run_one(mnist, "leave-one-out", "vae", 1, 0, "full", epochs=1, train_limit=300, test_limit=400)
    assert rows[0]["preset"] == "reduced" and rows[0]["epochs"] == 1  # never called full
    assert rows[0]["test_rows"] == 400 and 0 < rows[0]["test_anomalies"] < 400
    assert art["labels"].sum() == rows[0]["test_anomalies"]
    rows, _ = run_one(mnist, "imbalanced", "twodisc", 1, 0, "quick", anomaly_fraction=0.1, train_limit=300, test_limit=400)
    assert rows[0]["anomaly_fraction"] == 0.1 and rows[0]["auroc"] > 0.8
    with pytest.raises(ValueError, match="twodisc only"):
        run_one(mnist, "imbalanced", "vae", 1, 0, "quick")


def test_a_bf16_fit_learns_like_float32(mnist):
    """One bf16 autocast context spans a whole fit; with autocast's weight-cast cache on, every step
    reused the first step's bf16 weights and the AE did not learn (loss 725 -> 697 against 670 -> 241)."""
    from offline.detectors.training import bf16_autocast
    from offline.training.images import detector_params, fit_detector

    images = mnist.x_train[mnist.y_train == 0][:128]
    losses = {}
    for precision in ("fp32", "bf16"):
        params = detector_params("ae", "quick", 0, {"epochs": 8, "progress": False, "batch_size": 32})
        with bf16_autocast("cpu", precision == "bf16"):
            detector, _ = fit_detector("ae", params, images)
        train = [row["train_loss"] for row in detector.history]
        losses[precision] = (train[0], train[-1])
    (fp32_first, fp32_last), (bf16_first, bf16_last) = losses["fp32"], losses["bf16"]
    assert fp32_last < 0.7 * fp32_first, losses  # the slice is enough to learn on
    assert bf16_last < 0.7 * bf16_first, losses
    assert abs(bf16_last - fp32_last) < 0.15 * fp32_last, losses


def test_suite_appends_resumes_and_draws_tables(store, tmp_path):
    from offline.evaluation.benchmark import ResultsFile, SuiteContext
    from offline.evaluation.suites import images as suite

    def ctx():
        return SuiteContext(suite="images", results=ResultsFile(tmp_path / "images.csv", suite.EXTRA_COLUMNS), store=store,
                            preset="quick", seeds=[0], models=["random", "twodisc"], figures_dir=tmp_path / "fig",
                            options={"datasets": ["mnist"], "classes": [1], "protocols": ["one-class", "imbalanced"],
                                     "train_limit": 256, "test_limit": 300})

    suite.run(ctx())
    rows = pd.read_csv(tmp_path / "images.csv", dtype={"target_class": str})
    assert len(rows) == 6  # (random, twodisc one-class, twodisc imbalanced) x 2 threshold rules
    suite.run(ctx())  # resumable: nothing recomputed
    assert len(pd.read_csv(tmp_path / "images.csv")) == 6
    assert list((tmp_path / "fig").glob("images-twodisc-mnist-one-class-class1-quick-confusion.png"))
    assert list((tmp_path / "fig").glob("images-twodisc-mnist-imbalanced-class1-quick-reconstructions.png"))
    text = suite.tables(rows)
    assert "One-class protocol" in text and "Imbalanced protocol" in text and "| twodisc |" in text
    # quick rows only: the published means stand in their own table, never inside a quick block
    assert "| GEOM (Golan & El-Yaniv 2018) | 0.9350 | 0.9800 |" in text
    assert "| two-discriminator U-Net GAN (Kim et al.) | 0.9916 |" in text
    full = rows.assign(preset="full")
    assert "| *published: OCGAN (Perera et al. 2019)* | | 0.9750 |" in suite.tables(full)
    # an added detector (geom) gets its own table, never a row of the seed models' table
    with_geom = pd.concat([full, full[full["model"] == "twodisc"].assign(model="geom")])
    text = suite.tables(with_geom)
    seed_models, added = text.split("### One-class protocol, added detectors")
    assert "| geom |" not in seed_models.split("### Leave-one-out")[0] and "| geom |" in added.split("###")[0]


def test_eda_writes_grid_counts_and_chart(mnist, tmp_path):
    from offline.figures.eda import class_counts, run_eda

    paths = run_eda(mnist, tmp_path)
    counts = pd.read_csv(paths["table"])
    assert counts["train"].sum() == 2500 and counts["test"].sum() == 2500
    assert counts.equals(class_counts(mnist)) or len(counts) == 10
    assert paths["grid"].stat().st_size > 1000 and paths["chart"].exists()


def test_frechet_distance_and_coverage():
    from offline.generative.measures import class_coverage, frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 8))
    assert frechet_distance(a, rng.normal(size=(2000, 8))) < 0.1
    assert frechet_distance(a, rng.normal(size=(2000, 8)) + 2) > 30
    assert class_coverage(np.zeros(100, int), 10)["classes_covered"] == 1
    assert class_coverage(np.arange(100) % 10, 10)["classes_covered"] == 10


def test_sample_latent_and_gan_vs_vae_on_a_slice(mnist, tmp_path, monkeypatch):
    from offline.generative import gan_vs_vae
    from offline.generative.latent import latent_figures
    from offline.generative.sample import make_samples

    monkeypatch.chdir(tmp_path)  # models are cached under ./runs/generative
    paths = make_samples(mnist, tmp_path / "fig", epochs=1, train_limit=500, recon_epochs=1, progress=False)
    names = {p.name for p in paths}
    assert {"sample-mnist-gan-random.png", "sample-mnist-gan-class.png", "sample-mnist-vae-random.png", "sample-mnist-vae-class.png",
            "sample-mnist-vae-reconstructions.png", "sample-mnist-interpolation.png"} == names
    paths = latent_figures(mnist, tmp_path / "fig", models=("vae",), epochs=1, train_limit=500, points=300, progress=False)
    assert {p.name for p in paths} == {"latent-mnist-vae-pca.png", "latent-mnist-vae-tsne.png"}
    rows = gan_vs_vae.compare(mnist, seeds=[0], epochs=2, train_limit=400, classifier_epochs=1, samples=500,
                              results=tmp_path / "gvv.csv", figures=tmp_path / "fig", progress=False)
    assert set(rows["model"]) == {"dcgan", "vae"}
    assert len(json.loads(rows["per_epoch_frechet_2k"].iloc[0])) == 2
    assert np.isfinite(rows["frechet_classifier"]).all()
    vae = rows[rows["model"] == "vae"].iloc[0]
    # NaN = every generated image read as one class (possible after 2 epochs on 400 images)
    assert np.isnan(vae["latent_probe_accuracy"]) or 0 < vae["latent_probe_accuracy"] <= 1
    assert vae["encoder_probe_accuracy"] > 0.3  # VAE means carry class structure already (chance: 0.1)
    assert "GAN vs VAE" in gan_vs_vae.table(rows) and gan_vs_vae.figures_from(rows, tmp_path / "fig")
    # rows brought back from another machine: only those the file lacks are added, once
    brought = rows.assign(seed=rows["seed"] + 1)
    pd.concat([rows.iloc[:1], brought]).to_csv(tmp_path / "brought.csv", index=False)
    merged, added = gan_vs_vae.merge_rows(tmp_path / "brought.csv", tmp_path / "gvv.csv")
    assert added == 2 and sorted(merged["seed"]) == [0, 0, 1, 1]
    assert gan_vs_vae.merge_rows(tmp_path / "brought.csv", tmp_path / "gvv.csv")[1] == 0


def test_generation_rates_judge_conditional_and_unconditional_models(mnist, tmp_path, monkeypatch):
    from offline.generative.measures import FeatureClassifier, conditional_rates
    from offline.generative.sample import generation_rows, store_rows, table, train_generators

    monkeypatch.chdir(tmp_path)
    generators = train_generators(mnist, epochs=1, train_limit=500, progress=False)
    classifier = FeatureClassifier(mnist, epochs=1, train_limit=2000, progress=False)
    rows = generation_rows(mnist, generators, classifier, epochs=1, train_limit=500, seed=0, per_class=20)
    by_model = {row["model"]: row for row in rows}
    assert set(by_model) == {"dcgan", "vae", "cgan", "cvae"}
    for model in ("cgan", "cvae"):
        rates = json.loads(by_model[model]["rates"])
        assert len(rates) == 10 and all(0 <= r <= 1 for r in rates)
        assert by_model[model]["rate_mean"] == pytest.approx(np.mean(rates), abs=1e-3)
    assert 1 <= by_model["dcgan"]["classes_covered"] <= 10
    # a sampler that returns real test images of the requested class scores the classifier's recall on them
    by_class = {c: mnist.x_test[mnist.y_test == c] for c in range(10)}
    real = type("RealImages", (), {"sample": lambda self, n, seed=0, labels=None: by_class[int(labels[0])][:n]})()
    rates = conditional_rates(real, classifier, 10, per_class=20)
    predicted = {c: classifier.predict(by_class[c][:20]) for c in range(10)}
    np.testing.assert_allclose(rates, [(predicted[c] == c).mean() for c in range(10)])
    assert len(json.loads(by_model["vae"]["classifier_recall"])) == 10
    # a rerun replaces its own rows instead of adding a second copy
    store_rows(rows, tmp_path / "generation.csv")
    stored = store_rows(rows, tmp_path / "generation.csv")
    assert len(stored) == 4
    assert "| mnist | conditional GAN | 1 | 500 |" in table(stored)
