"""The image workbench's cost, convergence and grid tools on small slices of the real MNIST files:
the timing command, the epoch-count rule, the priority queue with shards and deadline, merging
a worker's rows, and conv nets in channels_last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from offline.data.store import DataStore
from offline.training.images import CONVERGED_EPOCHS, image_preset_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(settings, tmp_path_factory) -> DataStore:
    if settings.data.mirror_dir is None or not (Path(settings.data.mirror_dir) / "mnist").exists():
        pytest.skip("STREAMDETECT_DATA__MIRROR_DIR does not point at the data mirror")
    return DataStore(tmp_path_factory.mktemp("cache"), settings.data.mirror_dir, allow_download=False)


def test_flattening_epoch_finds_where_the_fall_ends():
    from benchmarks.image_convergence import flattening_epoch

    assert flattening_epoch([10, 5, 3, 2.1, 2.0, 2.05, 2.0, 1.98]) == 4
    # a single noisy epoch does not move the choice (3-epoch median), a late rise is not "still to come"
    assert flattening_epoch([30, 20, 12, 40, 10, 9.9, 10.1, 14, 15]) == 5
    assert flattening_epoch([5, 5, 5]) == 1


def test_grid_queue_order_shards_and_bad_shard():
    from offline.evaluation.suites.images import grid_queue, shard_of

    queue = grid_queue()
    assert len(queue) == len(set(queue)) == 420
    assert queue[0] == ("mnist", "one-class", "ae", 0, 0)
    # one model's row on both datasets before the next model
    assert queue[19] == ("fashion-mnist", "one-class", "ae", 9, 0) and queue[20][2] == "vae"
    # the two-discriminator GAN straight after them, seed 003's setting (Fashion-MNIST) first
    assert queue[40] == ("fashion-mnist", "one-class", "twodisc", 0, 0) and queue[50] == ("fashion-mnist", "imbalanced", "twodisc", 0, 0)
    assert queue[60][:3] == ("mnist", "one-class", "twodisc")
    # then the added GEOM-style detector and its fusion with the VAE, then the other GANs, AnoGAN (the slowest) last
    assert queue[80] == ("mnist", "one-class", "geom", 0, 0) and queue[100] == ("mnist", "one-class", "fusion", 0, 0)
    assert queue[120][1:3] == ("one-class", "dcgan")
    assert queue[219][2] == queue[200][2] == "anogan" and queue[199][2] == "fanogan"
    # then seeds 1-2 of ae, vae and twodisc, and leave-one-out (~8x the training images per run) last
    assert {job[4] for job in queue[:220]} == {0} and queue[220] == ("mnist", "one-class", "ae", 0, 1)
    assert queue[339][4] == 2 and all(job[1] == "leave-one-out" for job in queue[340:])
    assert queue[340] == ("mnist", "leave-one-out", "ae", 0, 0) and queue[-1] == ("fashion-mnist", "leave-one-out", "egbad", 9, 0)
    shards = [shard_of(queue, f"{i}/3") for i in range(3)]
    assert sorted(job for shard in shards for job in shard) == sorted(queue)
    with pytest.raises(ValueError, match="i/n"):
        shard_of(queue, "two")
    with pytest.raises(ValueError, match="0 <= i < n"):
        shard_of(queue, "3/3")


def test_queue_runs_the_first_pending_run_then_stops_at_its_deadline(store, tmp_path):
    from offline.evaluation.benchmark import ResultsFile, SuiteContext, merge_new_rows
    from offline.evaluation.suites import images as suite

    def ctx(path, models=None, **options):
        return SuiteContext(suite="images", results=ResultsFile(path, suite.EXTRA_COLUMNS), store=store, preset="quick",
                            seeds=[0], models=models, figures_dir=tmp_path / "fig", options={"queue": True, **options})

    first = tmp_path / "first.csv"
    suite.run(ctx(first, deadline_s=0.01))  # the first run starts, the deadline has passed before the second
    rows = pd.read_csv(first, dtype={"target_class": str})
    assert set(zip(rows["model"], rows["dataset"], rows["target_class"])) == {("ae", "mnist", "0")}
    # the next process resumes: shard 1 of 2 of what is pending starts at the queue's second pending run
    second = tmp_path / "second.csv"
    second.write_text(first.read_text())
    suite.run(ctx(second, deadline_s=0.01, shard="1/2"))
    rows = pd.read_csv(second, dtype={"target_class": str})
    assert ("mnist", "2") in set(zip(rows["dataset"], rows["target_class"])) and len(rows) == 4
    # merging a worker's file takes only the rows the target lacks
    assert merge_new_rows(second, first, suite.EXTRA_COLUMNS, preset="quick") == 2
    assert merge_new_rows(second, first, suite.EXTRA_COLUMNS, preset="quick") == 0
    assert len(pd.read_csv(first)) == 4
    # --models narrows the queue: a process of its own for one model starts at that model's first run
    narrowed = tmp_path / "narrowed.csv"
    suite.run(ctx(narrowed, models=["vae"], deadline_s=0.01))
    rows = pd.read_csv(narrowed, dtype={"target_class": str})
    assert set(zip(rows["model"], rows["dataset"], rows["target_class"])) == {("vae", "mnist", "0")}


def test_a_failing_queued_run_is_logged_left_pending_and_the_queue_goes_on(store, tmp_path):
    from offline.evaluation.benchmark import ResultsFile, SuiteContext
    from offline.evaluation.suites import images as suite

    path = tmp_path / "images.csv"
    results = ResultsFile(path, suite.EXTRA_COLUMNS)
    broken, healthy = ("mnist", "one-class", "geom", 3, 0), ("mnist", "one-class", "ae", 4, 1)  # the broken one comes first
    for dataset, protocol, model, target_class, seed in suite.grid_queue():  # every other run of the grid is done
        if (dataset, protocol, model, target_class, seed) not in (broken, healthy):
            for rule in suite.RULES:
                results.append(dict(dataset=dataset, protocol=protocol, model=model, target_class=str(target_class), seed=seed,
                                    threshold_rule=rule, preset="quick"))
    ctx = SuiteContext(suite="images", results=ResultsFile(path, suite.EXTRA_COLUMNS), store=store, preset="quick", seeds=[0],
                       models=None, figures_dir=tmp_path / "fig",
                       options={"queue": True, "params": {"geom": {"no_such_setting": 1}}, "compute_precision": "bf16"})
    with pytest.raises(RuntimeError, match="1 queued run.*geom class 3 seed 0"):
        suite.run(ctx)
    rows = pd.read_csv(path, dtype={"target_class": str})
    ran = rows[rows["auroc"].notna()]
    assert set(zip(ran["model"], ran["target_class"], ran["seed"], ran["compute_precision"])) == {("ae", "4", 1, "bf16")}
    assert suite.run_done(ResultsFile(path, suite.EXTRA_COLUMNS), healthy, "quick")
    assert not suite.run_done(ResultsFile(path, suite.EXTRA_COLUMNS), broken, "quick")  # pending for the next start


def test_a_results_file_older_than_a_column_is_rewritten_with_it(tmp_path):
    from offline.evaluation.benchmark import COLUMNS, ResultsFile, merge_new_rows

    path = tmp_path / "images.csv"
    old = ResultsFile(path, ["train_rows"])
    old.append({"dataset": "mnist", "model": "ae", "seed": 0, "auroc": 0.9, "train_rows": 10})
    wider = ResultsFile(path, ["train_rows", "compute_precision"])  # the new column joins the header once
    wider.append({"dataset": "mnist", "model": "vae", "seed": 0, "auroc": 0.8, "train_rows": 12, "compute_precision": "bf16"})
    rows = pd.read_csv(path, keep_default_na=False)
    assert list(rows.columns) == [*COLUMNS, "train_rows", "compute_precision"]
    assert list(rows["model"]) == ["ae", "vae"] and list(rows["compute_precision"]) == ["", "bf16"]
    assert list(rows["train_rows"]) == [10, 12] and wider.has(dataset="mnist", model="ae", seed=0)
    # a worker's file in the older layout still merges into the wider one
    worker = tmp_path / "worker.csv"
    ResultsFile(worker, ["train_rows"]).append({"dataset": "mnist", "model": "dcgan", "seed": 0, "auroc": 0.7, "train_rows": 9})
    assert merge_new_rows(worker, path, ["train_rows", "compute_precision"]) == 1
    assert list(pd.read_csv(path)["model"]) == ["ae", "vae", "dcgan"]


def test_a_killed_grid_keeps_its_workers_finished_rows_at_the_next_start(tmp_path):
    from benchmarks.image_grid import take_in_stopped_workers
    from offline.evaluation.benchmark import ResultsFile
    from offline.evaluation.suites.images import EXTRA_COLUMNS

    results, workdir = tmp_path / "images.csv", tmp_path / "image-grid"
    ResultsFile(results, EXTRA_COLUMNS).append({"dataset": "mnist", "model": "ae", "seed": 0, "auroc": 0.9, "preset": "full"})
    for index, model in enumerate(["dcgan", "egbad"]):  # each worker finished one run before the kill
        (workdir / f"worker-{index}").mkdir(parents=True)
        ResultsFile(workdir / f"worker-{index}" / "images.csv", EXTRA_COLUMNS).append(
            {"dataset": "mnist", "model": model, "seed": 0, "auroc": 0.6, "preset": "full"})
    assert take_in_stopped_workers(results, workdir) == 2
    assert list(pd.read_csv(results)["model"]) == ["ae", "dcgan", "egbad"]
    assert take_in_stopped_workers(results, workdir) == 0  # taken once


def test_grid_trains_in_bf16_only_where_the_cpu_has_it(tmp_path):
    from benchmarks.image_grid import auto_precision, worker_command

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    without.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert auto_precision("cpu", with_bf16) == "bf16" and auto_precision("cpu", without) == "fp32"
    assert auto_precision("cuda", with_bf16) == "fp32"
    command = worker_command(0, 2, directory=tmp_path, device="cpu", threads=1, deadline_s=None, precision="bf16")
    assert 'compute_precision="bf16"' in command


def test_image_cost_times_levers_in_one_run(store, tmp_path, monkeypatch):
    from benchmarks import image_cost

    monkeypatch.setenv("STREAMDETECT_DATA__MIRROR_DIR", str(store.mirror_dir))
    out = tmp_path / "cost.csv"
    result = CliRunner().invoke(image_cost.main, ["--models", "ae,ganomaly", "--levers", "channels-last,batch-256", "--train-images", "128",
                                                  "--score-images", "16", "--output", str(out), "--no-readme"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert set(zip(rows["model"], rows["lever"])) == {(m, lever) for m in ("ae", "ganomaly") for lever in ("baseline", "channels-last", "batch-256")}
    assert (rows["epoch_seconds"] > rows["measured_seconds"]).all()  # scaled from 128 images to the whole class
    assert np.allclose(rows[rows["lever"] == "baseline"]["epoch_speedup"], 1.0)
    assert "| ae |" in result.output
    bad = CliRunner().invoke(image_cost.main, ["--levers", "turbo", "--no-readme", "--output", str(out)])
    assert bad.exit_code == 2 and "turbo" in bad.output


def test_image_precision_runs_three_arms_resumes_and_refuses_a_bad_run(store, tmp_path, monkeypatch):
    from benchmarks import image_precision

    monkeypatch.setenv("STREAMDETECT_DATA__MIRROR_DIR", str(store.mirror_dir))
    out = tmp_path / "precision.csv"
    args = ["--runs", "mnist:dcgan:1", "--train-limit", "128", "--test-limit", "200", "--output", str(out), "--no-readme"]
    result = CliRunner().invoke(image_precision.main, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert list(rows["precision"]) == ["fp32", "bf16", "bf16-train"]
    assert (rows["preset"] == "reduced").all() and (rows["source"] == "this run").all()  # a slice never reuses a grid row
    assert rows["auroc"].between(0, 1).all() and "| mnist | dcgan | 1 | 0 |" in result.output
    again = CliRunner().invoke(image_precision.main, args)  # every arm is done: nothing is retrained
    assert again.exit_code == 0 and len(pd.read_csv(out)) == 3
    bad = CliRunner().invoke(image_precision.main, ["--runs", "mnist-ae-0", "--no-readme", "--output", str(out)])
    assert bad.exit_code == 2 and "dataset:model:class" in bad.output


def test_image_convergence_writes_curves_and_chooses_counts(store, tmp_path, monkeypatch):
    from benchmarks import image_convergence

    monkeypatch.setenv("STREAMDETECT_DATA__MIRROR_DIR", str(store.mirror_dir))
    out = tmp_path / "curves.csv"
    args = ["--dataset", "mnist", "--models", "dcgan,fanogan", "--max-epochs", "3", "--train-images", "128", "--samples", "100",
            "--classifier-images", "1000", "--output", str(out), "--figure", str(tmp_path / "curves.png"), "--no-readme"]
    result = CliRunner().invoke(image_convergence.main, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert sorted(set(zip(rows["model"], rows["phase"]))) == [("dcgan", "train"), ("fanogan", "encoder"), ("fanogan", "wgan-gp")]
    assert len(rows) == 9 and rows["frechet"].notna().all()
    assert rows[rows["phase"] == "encoder"]["heldout_l1"].notna().all()
    chosen = json.loads((tmp_path / "image_epochs.json").read_text())["models"]
    assert 1 <= chosen["dcgan"]["epochs"] <= 3 and 1 <= chosen["fanogan"]["encoder_epochs"] <= 3
    assert chosen["anogan"]["epochs"] == chosen["dcgan"]["epochs"]
    assert (tmp_path / "curves.png").stat().st_size > 0
    again = CliRunner().invoke(image_convergence.main, args)  # complete curves are not retrained
    assert again.exit_code == 0 and len(pd.read_csv(out)) == 9


def test_score_curve_measures_each_epoch_without_changing_the_model(store, tmp_path, monkeypatch):
    from sklearn.metrics import roc_auc_score

    from benchmarks.score_curve import curve, readme_table
    from offline.data.images import load_images
    from offline.detectors import make_detector
    from offline.training.images import detector_params, one_class_split

    monkeypatch.setenv("STREAMDETECT_DATA__MIRROR_DIR", str(store.mirror_dir))
    out = tmp_path / "curve.csv"
    detector = curve("dcgan", "mnist", 0, seed=0, test_images=300, output=out, train_images=64)
    rows = pd.read_csv(out)
    assert rows["epoch"].tolist() == list(range(1, CONVERGED_EPOCHS["dcgan"]["epochs"] + 1))
    scorer = detector.on_epoch_end
    assert rows["auroc"].iloc[-1] == pytest.approx(roc_auc_score(scorer.y_test, detector.score(scorer.x_test)), abs=1e-4)
    # scoring between epochs leaves training as it was: the same model as the grid's, trained without the callback
    split = one_class_split(load_images("mnist", store), (0,), seed=0, train_limit=64)
    plain = make_detector("dcgan", **detector_params("dcgan", "full", 0, {"progress": False})).fit(split.x_train, X_val=split.x_calibration)
    np.testing.assert_allclose(plain.score(scorer.x_test), detector.score(scorer.x_test), rtol=1e-5, atol=1e-5)
    assert "| dcgan | mnist | 0 | 64 | 300 |" in readme_table(rows)


def test_conv_nets_run_channels_last_and_round_trip(store):
    from offline.data.images import load_images
    from offline.detectors import detector_class, make_detector

    x = load_images("mnist", store, limit=200).x_train[:128]
    detector = make_detector("ae", epochs=1, batch_size=32, base_channels=8, latent_dim=4, progress=False).fit(x)
    conv = next(m for m in detector.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    tensors = detector.state_tensors()
    assert all(t.is_contiguous() for t in tensors.values())  # safetensors needs plain contiguous tensors
    again = detector_class("ae").from_state(detector.get_params(), tensors, n_features=None)
    np.testing.assert_allclose(again.score(x[:16]), detector.score(x[:16]), rtol=1e-5)


def test_full_gan_epochs_are_the_ones_the_convergence_run_chose():
    chosen = json.loads((REPO / "benchmarks/results/image_epochs.json").read_text())["models"]
    for model, counts in CONVERGED_EPOCHS.items():
        assert counts == {key: chosen[model][key] for key in counts}, model
        assert image_preset_params(model, "full")["epochs"] == chosen[model]["epochs"]
    assert image_preset_params("fanogan", "full")["encoder_epochs"] == chosen["fanogan"]["encoder_epochs"]


def test_geom_scores_floor_stops_an_over_sure_classifier_reading_as_normal():
    """Synthetic log-probabilities: normal images leave the classifier torn between the true
    transformation and one look-alike; anomalies get an over-sure answer. Unfloored, the Dirichlet
    (concentrations < 1 on the other 70) ranks the anomalies as the most normal; floored it does not."""
    from sklearn.metrics import roc_auc_score

    from benchmarks.geom_scores import parse_runs, readme_table, score_variants

    rng = np.random.default_rng(0)

    def log_probs(n, true, lookalike, rest):
        logits = torch.from_numpy(rng.normal(size=(n, 72, 72))).float() + rest
        index = torch.arange(72)
        logits[:, index, index] = true + torch.from_numpy(rng.normal(size=(n, 72))).float()
        logits[:, index, (index + 36) % 72] = lookalike + torch.from_numpy(rng.normal(size=(n, 72))).float()
        return torch.log_softmax(logits, dim=2)

    train = log_probs(300, 5.0, 4.6, -13.0)
    test = torch.cat([log_probs(100, 5.0, 4.6, -13.0), log_probs(100, 10.0, -20.0, -60.0)])
    labels = np.r_[np.zeros(100), np.ones(100)]
    auroc = {name: roc_auc_score(labels, s.numpy()) for name, s in score_variants(train, test).items()}
    assert auroc["dirichlet, unfloored"] < 0.1 and auroc["dirichlet, p floored at 1e-05"] > 0.9, auroc
    assert parse_runs("fashion-mnist:0, mnist:1") == [("fashion-mnist", 0), ("mnist", 1)]
    with pytest.raises(Exception, match="dataset:class"):
        parse_runs("mnist")
    rows = pd.DataFrame([{"dataset": "fashion-mnist", "target_class": 0, "score": name, "auroc": a} for name, a in auroc.items()])
    assert "| dirichlet, unfloored |" in readme_table(rows) and "(tuning)" in readme_table(rows)
