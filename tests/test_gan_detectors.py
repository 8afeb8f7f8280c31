"""Every image model under its quick preset: trains a few steps on MNIST digit 1, scores digit 0
higher (an easy pair), survives a tensors-only round trip, and picks its architecture from the
input's shape (conv for (N, C, H, W), MLP for rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score

from offline.detectors import REGISTRY, make_detector
from offline.training.images import detector_params

IMAGE_MODELS = ["ae", "vae", "dcgan", "anogan", "egbad", "ganomaly", "fanogan", "twodisc", "cgan", "cvae", "geom", "fusion"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: one thread is several times faster than two contended ones
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(settings, tmp_path_factory):
    from offline.data.images import load_images
    from offline.data.store import DataStore

    if settings.data.mirror_dir is None or not (Path(settings.data.mirror_dir) / "mnist").exists():
        pytest.skip("STREAMDETECT_DATA__MIRROR_DIR does not point at the data mirror")
    data = load_images("mnist", DataStore(tmp_path_factory.mktemp("cache"), settings.data.mirror_dir, allow_download=False), limit=6000)
    ones, zeros = data.x_train[data.y_train == 1], data.x_train[data.y_train == 0]
    test = np.concatenate([data.x_test[data.y_test == 1][:100], data.x_test[data.y_test == 0][:100]])
    return {"train": ones[:400], "anomalies": zeros[:40], "test": test, "labels": np.r_[np.zeros(100), np.ones(100)]}


def _fit(model: str, X, **fit_kwargs):
    detector = make_detector(model, **detector_params(model, "quick", seed=0, overrides={"progress": False}))
    if model in ("cgan", "cvae"):
        fit_kwargs.setdefault("y", np.ones(len(X), dtype=np.int64))
    return detector.fit(X, **fit_kwargs)


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_quick_preset_separates_an_easy_pair_and_round_trips(model, digits, tmp_path):
    assert model in REGISTRY
    detector = _fit(model, digits["train"])
    scores = detector.score(digits["test"])
    assert scores.shape == (200,) and np.isfinite(scores).all()
    auroc = roc_auc_score(digits["labels"], scores)
    assert auroc > 0.8, f"{model}: AUROC {auroc:.3f} on digit 1 (normal) vs digit 0"
    # tensors only, through a safetensors file, gives the same scores
    save_file(detector.state_tensors(), str(tmp_path / "m.safetensors"))
    params = {**detector.get_params(), "progress": False}
    loaded = type(detector).from_state(params, load_file(str(tmp_path / "m.safetensors")), n_features=None)
    np.testing.assert_allclose(loaded.score(digits["test"][:20]), scores[:20], rtol=1e-4, atol=1e-5)
    if detector.explains:
        assert detector.explain(digits["test"][:3]).shape == (3, 1, 28, 28)


def test_fusion_is_fishers_combination_of_its_members_calibrated_p_values(digits):
    from offline.detectors.fusion import fisher_statistic
    from offline.detectors.labelled import surprise

    train, held_out = digits["train"][:360], digits["train"][360:]
    fusion = make_detector("fusion", **detector_params("fusion", "quick", 0, {"progress": False})).fit(train, X_val=held_out)
    assert list(fusion.detectors) == ["geom", "vae"] and {row["member"] for row in fusion.history} == {"geom", "vae"}
    # each member is the model it would be on its own (same recipe, same seed)
    alone = make_detector("vae", **detector_params("vae", "quick", 0, {"progress": False})).fit(train, X_val=held_out)
    np.testing.assert_allclose(fusion.detectors["vae"].score(digits["test"]), alone.score(digits["test"]), rtol=1e-5)
    by_hand = fisher_statistic([surprise(fusion.detectors[m].score(digits["test"]), np.sort(fusion.detectors[m].score(held_out)))
                                for m in ("geom", "vae")])
    np.testing.assert_allclose(fusion.score(digits["test"]), by_hand, rtol=1e-6)
    # a row beyond every held-out score gets p = 1/(n+1) under that member, never 0
    assert max(u.max() for u in fusion.surprises(digits["test"]).values()) == pytest.approx(np.log(len(held_out) + 1))
    # without X_val a tenth of the training rows is held out for calibration
    assert len(make_detector("fusion", member_params={"vae": {"epochs": 1}, "geom": {"max_steps": 2}}, progress=False)
               .fit(train).calibration["vae"]) == 36
    with pytest.raises(ValueError, match="two or more known"):
        make_detector("fusion", members=["geom"])
    with pytest.raises(ValueError, match="nosuch unknown"):
        make_detector("fusion", members=["geom", "nosuch"])


def test_fisher_fusion_catches_what_either_member_alone_misses():
    from offline.detectors.fusion import fisher_statistic
    from offline.detectors.labelled import surprise

    # two members, each blind to one kind of anomaly: member a sees kind A only, member b kind B only
    rng = np.random.default_rng(0)
    n = 500
    calibration = rng.normal(size=(2, 1000))
    kind = np.r_[np.zeros(n), np.ones(n), np.full(n, 2)]  # 0 normal, 1 kind A, 2 kind B
    scores_a = rng.normal(size=3 * n) + 3 * (kind == 1)
    scores_b = rng.normal(size=3 * n) + 3 * (kind == 2)
    labels = (kind > 0).astype(int)
    u_a, u_b = surprise(scores_a, np.sort(calibration[0])), surprise(scores_b, np.sort(calibration[1]))
    alone = max(roc_auc_score(labels, u_a), roc_auc_score(labels, u_b))
    assert roc_auc_score(labels, fisher_statistic([u_a, u_b])) > alone + 0.1


def test_twodisc_imbalanced_uses_the_labelled_anomalies(digits):
    detector = _fit("twodisc", digits["train"], X_anomalous=digits["anomalies"])
    assert detector.saw_anomalies
    auroc = roc_auc_score(digits["labels"], detector.score(digits["test"]))
    assert auroc > 0.8
    # D_a has seen zeros as anomalies: it gives them a higher anomaly probability than ones
    p = detector.anomaly_probability(digits["test"])
    assert p[100:].mean() > p[:100].mean()
    grid = detector.expected(digits["test"][:4])
    assert grid.shape == (4, 1, 28, 28) and 0 <= grid.min() and grid.max() <= 1


def test_generators_sample_images_in_range(digits):
    vae = _fit("vae", digits["train"])
    assert vae.sample(6).shape == (6, 1, 28, 28)
    cvae = make_detector("cvae", **detector_params("cvae", "quick", 0, {"progress": False}))
    labels = np.r_[np.ones(200), np.zeros(40)].astype(np.int64)
    cvae.fit(np.concatenate([digits["train"][:200], digits["anomalies"]]), y=labels)
    zeros, ones = cvae.sample(8, labels=0), cvae.sample(8, labels=1)
    assert zeros.shape == (8, 1, 28, 28) and 0 <= zeros.min() and zeros.max() <= 1
    assert zeros.mean() > ones.mean()  # a zero has more ink than a one: the label steers the sample


@pytest.mark.parametrize("model", ["egbad", "ganomaly", "anogan", "fanogan", "dcgan"])
def test_rows_build_mlp_networks(model):
    from offline.models.gan_tabular import MLPGenerator

    rng = np.random.default_rng(0)
    normal = rng.normal(size=(600, 12)).astype(np.float32)
    shifted = (rng.normal(size=(100, 12)) + 4).astype(np.float32)
    params = {"epochs": 4, "progress": False, **({"search_steps": 10} if model == "anogan" else {})}
    detector = make_detector(model, **params).fit(normal)
    generator = detector.nets.get("G", detector.nets.get("GD"))
    assert isinstance(generator, MLPGenerator)
    scores = detector.score(np.concatenate([normal[:100], shifted]))
    assert scores.shape == (200,)
    if model != "dcgan":  # the bare discriminator score is not a reliable detector; the others are
        assert roc_auc_score(np.r_[np.zeros(100), np.ones(100)], scores) > 0.9
    if detector.explains:
        assert detector.explain(normal[:5]).shape == (5, 12)


def test_images_build_conv_networks_and_3d_input_is_one_channel(digits):
    from offline.models.images import ConvEncoder

    detector = make_detector("ganomaly", max_steps=2, base_channels=8, progress=False).fit(digits["train"][:64, 0])
    assert isinstance(detector.nets["GE"], ConvEncoder) and detector.input_shape == (1, 28, 28)
    with pytest.raises(ValueError, match="trained on inputs of shape"):
        detector.score(np.zeros((2, 1, 32, 32), np.float32))


def test_twodisc_refuses_rows():
    with pytest.raises(ValueError, match="image model"):
        make_detector("twodisc", progress=False).fit(np.zeros((8, 4), np.float32))


@pytest.mark.parametrize("model", ["egbad", "ganomaly"])
def test_tabular_gan_detectors_go_into_a_bundle(model, tmp_path):
    import pandas as pd

    from offline import bundle as bundles
    from offline.features.schema import FeatureSchema

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(400, 5)), columns=list("abcde"))
    schema = FeatureSchema.fit(frame, numeric=list("abcde"))
    X, _ = schema.transform(frame)
    detector = make_detector(model, epochs=2, progress=False).fit(X)
    directory = bundles.save_bundle(
        tmp_path / "v0001", detector=detector, schema=schema, calibration_scores=detector.score(X[:100]), feed="access-logs",
        dataset="synthetic", score_definition="test", training_fingerprint=bundles.array_fingerprint(X),
    )
    loaded = bundles.load_bundle(directory)
    np.testing.assert_allclose(loaded.detector.score(X[:20]), detector.score(X[:20]), rtol=1e-4, atol=1e-5)


# -- the named losses and the one training loop, on their own -------------------------------------
def test_adversarial_losses_at_their_limits():
    from offline.detectors.gan import losses

    sure, unsure = torch.full((8,), 20.0), torch.zeros(8)
    assert losses.discriminator_loss(sure, -sure) < 1e-6  # real called real, fake called fake
    assert torch.isclose(losses.discriminator_loss(unsure, unsure), torch.tensor(2 * np.log(2), dtype=torch.float32))
    assert losses.generator_loss(sure) < 1e-6 and losses.generator_loss(-sure) > 19
    assert losses.bigan_generator_encoder_loss(sure, -sure) < 1e-6
    assert losses.wasserstein_critic_loss(torch.ones(4), torch.zeros(4)) == -1.0
    assert losses.wgan_generator_loss(torch.full((4,), 3.0)) == -3.0


def test_gradient_penalty_is_zero_for_a_unit_slope_critic():
    from offline.detectors.gan.losses import gradient_penalty

    w = torch.tensor([0.6, 0.8])  # ||w|| = 1: the gradient of x -> w.x has norm 1 everywhere
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    assert gradient_penalty(lambda x: x @ w, real, fake) < 1e-10
    assert torch.isclose(gradient_penalty(lambda x: x @ (3 * w), real, fake), torch.tensor(4.0))


def test_reconstruction_losses_vanish_on_a_perfect_reconstruction():
    from offline.detectors.gan import losses

    x, f, z = torch.rand(4, 1, 8, 8), torch.randn(4, 5), torch.randn(4, 3)
    assert (losses.izif_loss(x, x, f, f, kappa=2.0) == 0).all()
    assert (losses.anogan_search_loss(x, x, f, f) == 0).all()
    total, parts = losses.ganomaly_generator_loss(x, x, z, z, f, f)
    assert total == 0 and set(parts) == {"adv", "con", "enc"}
    total, parts = losses.ganomaly_generator_loss(x, x + 0.1, z, z, f, f, w_con=50.0)
    assert torch.isclose(total, torch.tensor(5.0)) and torch.isclose(parts["con"], torch.tensor(0.1))


def test_two_discriminator_losses_have_one_term_per_network():
    from offline.detectors.gan.losses import TWO_DISCRIMINATOR_TERMS, two_discriminator_generator_losses, two_discriminator_losses

    def disc(x):  # image logit, 16 patch logits, features
        return x.flatten(1).mean(1), x.flatten(1)[:, :16], x.flatten(1)

    x_n, x_a = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    rec = torch.cat([x_n, x_a]).requires_grad_(True)
    loss_dn, loss_da = two_discriminator_losses(disc, disc, x_n, x_a, rec)
    assert loss_dn.requires_grad is False and loss_da.dim() == 0  # the reconstructions are detached for D
    terms = two_discriminator_generator_losses(disc, disc, x_n, rec[:3], rec)
    assert tuple(terms) == TWO_DISCRIMINATOR_TERMS and terms["con"] == 0 and terms["lat"] == 0


def test_train_loop_early_stops_restores_the_best_weights_and_honours_max_steps():
    from offline.detectors.training import adam_step, train_loop

    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    X = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    seen = []

    def val_loss(batch):  # better while the bias grows towards 1, worse past it
        return (net.bias - 1.0).abs().sum()

    history = train_loop(net, adam_step(net, lambda b: -net.bias.sum(), lr=0.02), X, epochs=50, batch_size=16,
                         X_val=X[:8], val_loss=val_loss, patience=2, progress=False, on_epoch=lambda row: seen.append(dict(row)))
    assert 3 < len(history) < 50 and seen == history and {"epoch", "train_loss", "val_loss"} <= set(history[0])
    best = min(row["val_loss"] for row in history)
    assert abs(abs(net.bias.item() - 1.0) - best) < 1e-6 and not net.training
    steps = []
    history = train_loop(net, lambda b: steps.append(len(b)) or {"n": len(b)}, X, epochs=10, batch_size=10, max_steps=9,
                         min_batch=5, progress=False)
    assert len(steps) == 9 and min(steps) == 10 and len(history) == 2 and history[-1]["n"] == 10  # the 4-row batch skipped
    pairs = train_loop(net, lambda b: {"labels": float(b[1].sum())}, (X, np.arange(64)), epochs=1, batch_size=64, progress=False)
    assert pairs[0]["labels"] == np.arange(64).sum()


def test_train_command_refuses_an_images_only_model_on_rows():
    from click.testing import CliRunner

    from offline.training.train import main

    result = CliRunner().invoke(main, ["--model", "geom", "--dataset", "creditcard", "--preset", "quick", "--no-promote"])
    assert result.exit_code == 2 and "geom works on images only" in result.output
    assert "Traceback" not in result.output


def test_geom_dirichlet_score_fits_concentrations_and_round_trips(digits, tmp_path):
    import torch

    from offline.detectors.geometric import dirichlet_mle

    # the fixed point recovers known concentrations from their sufficient statistics
    alpha = torch.tensor([[2.0, 5.0, 1.0], [0.3, 0.2, 8.0]], dtype=torch.float64)
    p = torch.distributions.Dirichlet(alpha).sample((40000,)).clamp_min(1e-300)
    torch.testing.assert_close(dirichlet_mle(p.log().mean(0), p.mean(0), (p * p).mean(0)), alpha, rtol=0.03, atol=0.01)
    detector = make_detector("geom", **detector_params("geom", "quick", 0, {"progress": False}))
    detector.fit(digits["train"])
    assert detector.score_mode == "dirichlet" and detector.alpha.shape == (72, 72) and bool((detector.alpha > 0).all())
    # the Dirichlet sees probabilities floored at 1e-5 (unfloored, alpha < 1 rewarded an over-sure classifier
    # without bound): the score is the floored one, and the floor bites on these digits
    from offline.detectors.geometric import floored, transformation_score

    scores = detector.score(digits["test"])
    log_p = detector.log_probs(torch.from_numpy(digits["test"][:50]))
    assert float(log_p.min()) < np.log(detector.probability_floor)
    by_hand = transformation_score(floored(log_p, detector.probability_floor), detector.alpha).numpy()
    np.testing.assert_allclose(scores[:50], by_hand, rtol=1e-4, atol=1e-4)
    assert not np.allclose(scores[:50], transformation_score(log_p, detector.alpha).numpy(), rtol=1e-4, atol=1e-4)
    assert roc_auc_score(digits["labels"], scores) > 0.8
    save_file(detector.state_tensors(), str(tmp_path / "g.safetensors"))
    loaded = type(detector).from_state({**detector.get_params(), "progress": False}, load_file(str(tmp_path / "g.safetensors")), n_features=None)
    np.testing.assert_allclose(loaded.score(digits["test"][:20]), scores[:20], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="score_mode"):
        make_detector("geom", score_mode="softmax")
