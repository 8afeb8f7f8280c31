"""Image anomaly detection: ``python -m offline.benchmark --suite images``.

Models x datasets x classes x seeds under the protocols of DESIGN.md:

- ``one-class``: train on the train split of one class (a tenth held out for calibration), test
  on the whole test split, that class normal, the other nine anomalous;
- ``leave-one-out``: one class anomalous, the other nine normal; train+test pooled, shuffled
  (per seed), 80/20 split; trained on the normal rows of the 80% (a tenth held out), tested on the 20%;
- ``imbalanced`` (``twodisc`` only, after Kim et al.): as one-class, but training also sees
  labelled anomalous images from the train split, ``anomaly_fraction`` of the normal count
  (a column); reported in its own table.

``random`` (uniform scores) is the floor. Precision/recall/F1 use the label-free threshold
``val-fpr-0.05`` (5% false alarms on the held-out normal images); one more row per run gives the
oracle best-F1 threshold, named as such. Per-run wall time: ``train_seconds`` and ``score_seconds``.

Options (``--option key=value``): ``datasets`` (list), ``classes`` (list), ``protocols`` (list),
``epochs`` (int: overrides the preset; a run with fewer than 50 epochs is written with
``preset=reduced``, never ``full``), ``train_limit``/``test_limit`` (ints; also
``reduced``), ``anomaly_fraction`` (float, default 0.05), ``threads`` (torch threads, default 1),
``params`` (JSON object model -> hyperparameter overrides, e.g. ``{"anogan": {"search_steps": 20}}``),
``device`` (torch device, default ``cpu``), ``compute_precision`` (``fp32``, the default; ``bf16``:
bf16 autocast around training and scoring; ``bf16-train``: around training only; a column of every
row, blank in rows made before it, which were all fp32; ``python -m benchmarks.image_precision``
measures what it changes).

The grid as a queue (``--option queue=true``): the runs issue 16 asks for, in priority order
(:func:`grid_queue`: seed 0 of every model one complete table row at a time, twodisc's
imbalanced rows with its one-class ones, Fashion-MNIST first, then seeds 1-2, then leave-one-out), rows already in the results file skipped, so a stopped
queue resumes. ``shard="i/n"`` takes every n-th pending run from the i-th (parallel processes,
each with its own results file: ``python -m benchmarks.image_grid``); ``deadline_s`` starts no
run after that many seconds; a queued run that fails is logged and left pending, and the queue
goes on (the process still ends with an error naming it). ``--models`` keeps only those models' runs of the
queue, in queue order; ``datasets``/``classes``/``protocols``/``--seeds`` do not apply to the queue.

Each run's core is :func:`run_one`, a plain function.

The ``full`` preset: the whole class and the whole test split; AE/VAE stop early on the held-out
loss (at most 50 epochs), the GAN family trains the epoch counts of
``offline.training.images.CONVERGED_EPOCHS``. Its cost per epoch and model is measured by
``python -m benchmarks.image_cost`` (benchmarks/README.md, section ``image-cost``). Shorter runs
are labelled ``preset=reduced`` with their ``epochs`` and ``train_rows``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from offline.data.images import ImageData, load_images
from offline.detectors.training import bf16_autocast
from offline.metrics import oracle_best_f1_threshold, ranking_metrics, threshold_at_false_alarm_rate, thresholded_metrics
from offline.training.images import (
    CALIBRATION_FRACTION,
    FALSE_ALARM_RATE,
    FULL_EPOCHS,
    QUICK_TEST_IMAGES,
    HELD_OUT_LOSS,
    QUICK_TRAIN_IMAGES,
    OneClassSplit,
    detector_params,
    fit_detector,
    one_class_split,
)

log = logging.getLogger("offline.evaluation.suites.images")

MODELS = ["ae", "vae", "dcgan", "anogan", "egbad", "ganomaly", "fanogan", "twodisc", "geom", "fusion", "random"]
#: detectors added beside the seed's generative models (issue 16: "reported apart"): their own table
ADDED_MODELS = ["geom", "fusion"]
DATASETS = ["mnist", "fashion-mnist"]
PROTOCOLS = ["one-class", "leave-one-out", "imbalanced"]
LABEL_FREE_RULE = f"val-fpr-{FALSE_ALARM_RATE:g}"
RULES = [LABEL_FREE_RULE, "oracle-best-f1"]
EXTRA_COLUMNS = ["anomaly_fraction", "train_rows", "test_rows", "test_anomalies", "score_seconds", "threshold", "flagged",
                 "compute_precision"]
COMMAND = "python -m offline.benchmark --suite images --seeds 0,1,2"
DEFAULT_ANOMALY_FRACTION = 0.05
PRECISIONS = ("fp32", "bf16", "bf16-train")


#: seed 0 of the one-class grid runs one model at a time (its row of the table on both datasets);
#: the two-discriminator GAN comes straight after the autoencoders, seed 003's own setting first
#: (Fashion-MNIST, one-class then imbalanced), then its MNIST rows; then the added GEOM-style
#: detector and its fusion with the VAE (Fisher's combination of their calibrated p-values), the
#: candidates for the AUROC targets, before the other GANs, cheapest first (a run on one
#: CPU thread: dcgan, egbad, ganomaly ~4 min, fanogan ~14, anogan ~17, its latent search per test
#: image), so more of their table rows complete per session
QUEUE_ONE_CLASS = ["ae", "vae", "twodisc", "geom", "fusion", "dcgan", "egbad", "ganomaly", "fanogan", "anogan"]
SEED_003_FIRST = [("fashion-mnist", "one-class"), ("fashion-mnist", "imbalanced"), ("mnist", "one-class"), ("mnist", "imbalanced")]
#: seeds 1-2 before leave-one-out, cheapest first again: a leave-one-out run trains on the other nine
#: classes (~45,000 images, ~8x a one-class run's), so its 80 runs cost ~3.5x the 120 runs of seeds 1-2
QUEUE_MORE_SEEDS = (["ae", "vae", "twodisc"], [1, 2])
QUEUE_LEAVE_ONE_OUT = ["ae", "vae", "ganomaly", "egbad"]


def grid_queue() -> list[tuple[str, str, str, int, int]]:
    """Every run of the issue-16 grid as (dataset, protocol, model, class, seed), highest priority first."""
    classes = range(10)
    jobs = []
    for model in QUEUE_ONE_CLASS:
        pairs = SEED_003_FIRST if model == "twodisc" else [(d, "one-class") for d in DATASETS]
        jobs += [(d, protocol, model, c, 0) for d, protocol in pairs for c in classes]
    models, seeds = QUEUE_MORE_SEEDS
    jobs += [(d, "one-class", m, c, s) for s in seeds for m in models for d in DATASETS for c in classes]
    jobs += [(d, "leave-one-out", m, c, 0) for m in QUEUE_LEAVE_ONE_OUT for d in DATASETS for c in classes]
    return jobs


def shard_of(jobs: list, shard: str | None) -> list:
    """``"i/n"``: every n-th job from the i-th (0-based); None: all."""
    if not shard:
        return jobs
    try:
        index, count = (int(part) for part in str(shard).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like 'i/n' (e.g. '0/4'), not {shard!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"shard {shard!r}: need 0 <= i < n")
    return jobs[index::count]


def leave_one_out_split(data: ImageData, anomalous_class: int, *, seed: int, train_limit: int | None = None,
                        test_limit: int | None = None) -> OneClassSplit:
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    normal = train[y[train] != anomalous_class]
    if train_limit:
        normal = normal[: int(train_limit / (1 - CALIBRATION_FRACTION))]
    n_cal = max(int(len(normal) * CALIBRATION_FRACTION), 1)
    if test_limit and test_limit < len(test):
        test = test[:test_limit]
    others = tuple(c for c in range(len(data.class_names)) if c != anomalous_class)
    return OneClassSplit(x[normal[n_cal:]], x[normal[:n_cal]], x[test], (y[test] == anomalous_class).astype(np.int64), others)


def labelled_anomalies(data: ImageData, normal_class: int, n_normal: int, fraction: float, seed: int) -> np.ndarray:
    """``fraction`` * ``n_normal`` anomalous images drawn from the *train* split's other classes."""
    pool = np.flatnonzero(data.y_train != normal_class)
    n = max(1, int(round(fraction * n_normal)))
    return data.x_train[np.random.default_rng(seed + 7919).choice(pool, n, replace=False)]


def is_reduced(preset: str, epochs: int | None, train_limit, test_limit) -> bool:
    return preset == "full" and ((epochs is not None and epochs < FULL_EPOCHS) or bool(train_limit) or bool(test_limit))


def run_one(data: ImageData, protocol: str, model: str, target_class: int, seed: int, preset: str, *, epochs: int | None = None,
            train_limit: int | None = None, test_limit: int | None = None, anomaly_fraction: float = DEFAULT_ANOMALY_FRACTION,
            params: dict | None = None, progress: bool = False, device: str = "cpu",
            compute_precision: str = "fp32") -> tuple[list[dict], dict]:
    """One run -> (CSV rows, one per threshold rule; artefacts: scores, labels, detector, split).

    ``compute_precision``: ``fp32``, ``bf16`` (bf16 autocast around training and scoring) or
    ``bf16-train`` (around training only); ``benchmarks.image_precision`` measures what each costs in AUROC.
    """
    if compute_precision not in PRECISIONS:
        raise ValueError(f"compute_precision must be one of {', '.join(PRECISIONS)}, not {compute_precision!r}")
    if preset == "quick":
        train_limit, test_limit = train_limit or QUICK_TRAIN_IMAGES, test_limit or QUICK_TEST_IMAGES
    if protocol == "leave-one-out":
        split = leave_one_out_split(data, target_class, seed=seed, train_limit=train_limit, test_limit=test_limit)
    else:
        split = one_class_split(data, (target_class,), seed=seed, train_limit=train_limit, test_limit=test_limit)
    fit_kwargs, fraction = {}, ""
    if model in HELD_OUT_LOSS:
        # "full" means trained: AE/VAE stop on the held-out normal images' loss (label-free), geom records it
        fit_kwargs["X_val"] = split.x_calibration
    if protocol == "imbalanced":
        if model != "twodisc":
            raise ValueError("the imbalanced protocol is run for twodisc only")
        fit_kwargs["X_anomalous"] = labelled_anomalies(data, target_class, len(split.x_train), anomaly_fraction, seed)
        fraction = anomaly_fraction
    detector = None
    if model == "random":
        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        calibration, scores = rng.random(len(split.x_calibration)), rng.random(len(split.x_test))
        seconds, score_seconds, epochs_run = 0.0, time.perf_counter() - start, 0
    else:
        overrides = {"progress": progress, "device": device, **({"epochs": epochs} if epochs is not None else {}), **(params or {})}
        params = detector_params(model, preset, seed, overrides)
        with bf16_autocast(device, compute_precision != "fp32"):
            detector, seconds = fit_detector(model, params, split.x_train, **fit_kwargs)
        start = time.perf_counter()
        with bf16_autocast(device, compute_precision == "bf16"):
            calibration, scores = detector.score(split.x_calibration), detector.score(split.x_test)
        score_seconds = time.perf_counter() - start
        history = getattr(detector, "history", [])
        epochs_run = max((row.get("epoch", 0) for row in history if row.get("phase") in (None, "wgan-gp")), default=len(history))
    ranking = ranking_metrics(scores, split.y_test)
    thresholds = {LABEL_FREE_RULE: threshold_at_false_alarm_rate(calibration, FALSE_ALARM_RATE),
                  "oracle-best-f1": oracle_best_f1_threshold(scores, split.y_test)}
    label = "reduced" if is_reduced(preset, epochs, train_limit, test_limit) else preset
    rows = []
    for rule in RULES:
        m = thresholded_metrics(scores, split.y_test, thresholds[rule])
        rows.append({
            "dataset": data.name, "protocol": protocol, "model": model, "target_class": str(target_class), "seed": seed,
            **ranking, "precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "threshold_rule": rule,
            "epochs": epochs_run, "train_seconds": round(seconds, 2), "preset": label,
            "anomaly_fraction": fraction, "train_rows": len(split.x_train), "test_rows": len(split.y_test),
            "test_anomalies": int(split.y_test.sum()), "score_seconds": round(score_seconds, 2),
            "threshold": m["threshold"], "flagged": m["flagged"], "compute_precision": compute_precision,
        })
    return rows, {"scores": scores, "labels": split.y_test, "detector": detector, "split": split, "threshold": thresholds[LABEL_FREE_RULE]}


def twodisc_figures(artefacts: dict, figures_dir: Path, *, dataset: str, protocol: str, target_class: int, suffix: str = "") -> list[Path]:
    """Normal/anomalous inputs with reconstructions, and the confusion matrix at the label-free threshold."""
    from sklearn.metrics import confusion_matrix

    from offline.figures.images import save_confusion, save_grid

    detector, split = artefacts["detector"], artefacts["split"]
    normal = split.x_test[split.y_test == 0][:10]
    anomalous = split.x_test[split.y_test == 1][:10]
    grid = np.concatenate([normal, detector.expected(normal), anomalous, detector.expected(anomalous)])
    stem = f"images-twodisc-{dataset}-{protocol}-class{target_class}{suffix}"
    paths = [save_grid(grid, figures_dir / f"{stem}-reconstructions.png", ncol=10,
                       title=f"twodisc {dataset} {protocol}, normal class {target_class}: normal / recon / anomalous / recon",
                       row_labels=["normal", "recon", "anomalous", "recon"])]
    predicted = (artefacts["scores"] > artefacts["threshold"]).astype(int)
    matrix = confusion_matrix(artefacts["labels"], predicted, labels=[0, 1])
    paths.append(save_confusion(matrix, figures_dir / f"{stem}-confusion.png",
                                title=f"twodisc {dataset} {protocol} class {target_class}\nthreshold {LABEL_FREE_RULE}"))
    return paths


def _jobs(ctx_models, datasets, protocols, classes, seeds) -> list[tuple]:
    models = [m for m in (ctx_models or MODELS)]
    jobs = []
    for dataset in datasets:
        for protocol in protocols:
            for model in models:
                if protocol == "imbalanced" and model != "twodisc":
                    continue
                for target_class in classes:
                    for seed in seeds:
                        jobs.append((dataset, protocol, model, target_class, seed))
    return jobs


def run(ctx) -> None:
    """Suite entry point for ``offline.evaluation.benchmark`` (``ctx``: its SuiteContext)."""
    options = ctx.options
    torch.set_num_threads(int(options.get("threads", 1)))
    datasets = list(options.get("datasets", DATASETS))
    protocols = list(options.get("protocols", ["one-class", "leave-one-out", "imbalanced"]))
    classes = [int(c) for c in options.get("classes", range(10))]
    epochs = options.get("epochs")
    train_limit, test_limit = options.get("train_limit"), options.get("test_limit")
    fraction = float(options.get("anomaly_fraction", DEFAULT_ANOMALY_FRACTION))
    label = "reduced" if is_reduced(ctx.preset, epochs, train_limit, test_limit) else ctx.preset
    queue = bool(options.get("queue", False))
    if queue:  # --models narrows the queue (one process per model family, each at its own pace)
        jobs = [job for job in grid_queue() if ctx.models is None or job[2] in ctx.models]
    else:
        jobs = _jobs(ctx.models, datasets, protocols, classes, ctx.seeds)
    jobs = shard_of([job for job in jobs if not run_done(ctx.results, job, label)], options.get("shard"))
    deadline = options.get("deadline_s")
    device = str(options.get("device", "cpu"))
    precision = str(options.get("compute_precision", "fp32"))
    started = time.monotonic()
    loaded: dict[str, ImageData] = {}
    failed: list[str] = []
    bar = tqdm(jobs, desc="images", unit="run")
    for dataset, protocol, model, target_class, seed in bar:
        if deadline is not None and time.monotonic() - started > float(deadline):
            log.info("deadline of %s s passed: %d runs left for the next start", deadline, len(jobs) - bar.n)
            break
        bar.set_postfix_str(f"{dataset} {protocol} {model} class {target_class} seed {seed}")
        if dataset not in loaded:
            loaded[dataset] = load_images(dataset, ctx.store)
        try:
            rows, artefacts = run_one(loaded[dataset], protocol, model, target_class, seed, ctx.preset, epochs=epochs,
                                      train_limit=train_limit, test_limit=test_limit, anomaly_fraction=fraction,
                                      params=dict(options.get("params", {})).get(model), device=device,
                                      compute_precision=precision)
        except Exception:
            if not queue:
                raise
            # one broken run (a model that fails on this device, say) must not cost the queue its other runs;
            # it writes no row, so it stays pending for the next start
            log.exception("images %s %s %s class %d seed %d failed; the queue goes on", dataset, protocol, model, target_class, seed)
            failed.append(f"{dataset} {protocol} {model} class {target_class} seed {seed}")
            continue
        for row in rows:
            ctx.results.append(row)
        log.info("images %s %s %s class %d seed %d: AUROC %.4f (train %.0fs, score %.0fs)", dataset, protocol, model, target_class,
                 seed, rows[0]["auroc"], rows[0]["train_seconds"], rows[0]["score_seconds"])
        if model == "twodisc" and seed == 0:  # the reconstruction grid and confusion matrix of every class, as Kim et al. show
            twodisc_figures(artefacts, ctx.figures_dir, dataset=dataset, protocol=protocol, target_class=target_class,
                            suffix="" if label == "full" else f"-{label}")
    if failed:
        raise RuntimeError(f"{len(failed)} queued run(s) failed (their tracebacks are in the log above): {'; '.join(failed)}")


def run_done(results, job: tuple, preset: str) -> bool:
    dataset, protocol, model, target_class, seed = job
    identity = dict(dataset=dataset, protocol=protocol, model=model, target_class=str(target_class), seed=seed, preset=preset)
    return all(results.has(**identity, threshold_rule=rule) for rule in RULES)


# -- tables ------------------------------------------------------------------------------------
def _ms(values: pd.Series) -> str:
    if len(values) > 1:
        return f"{values.mean():.4f} ± {values.std(ddof=0):.4f}"
    return f"{values.mean():.4f}"


#: published mean AUROC over the 10 classes under the same protocol, set beside ours in the tables
#: (figures as the papers report them; not rerun here)
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "one-class": {
        "AnoGAN (Schlegl et al. 2017, as reported by Ruff et al. 2018)": {"mnist": 0.913},
        "Deep SVDD (Ruff et al. 2018)": {"mnist": 0.948, "fashion-mnist": 0.928},
        "OCGAN (Perera et al. 2019)": {"mnist": 0.975, "fashion-mnist": 0.924},
        "GEOM (Golan & El-Yaniv 2018)": {"mnist": 0.980, "fashion-mnist": 0.935},
    },
    "imbalanced": {
        "two-discriminator U-Net GAN (Kim et al.)": {"fashion-mnist": 0.9916},
        "AE baseline (as reported beside it)": {"fashion-mnist": 0.8758},
    },
}


def _published_cells(means: dict[str, float], datasets: list[str]) -> str:
    return " | ".join(f"{means[d]:.4f}" if d in means else "" for d in datasets)


def _protocol_table(rows: pd.DataFrame, title: str, published: dict[str, dict[str, float]] | None = None) -> list[str]:
    lines = [f"### {title}", ""]
    if published and (rows.empty or "full" not in set(rows["preset"])):
        datasets = sorted({d for means in published.values() for d in means})
        lines += ["No `full` rows yet. Published means under this protocol:", "", "| | " + " | ".join(datasets) + " |",
                  "|---|" + "---|" * len(datasets)]
        lines += [f"| {name} | {_published_cells(means, datasets)} |" for name, means in published.items()] + [""]
    if rows.empty:
        return lines + ["No rows yet.", ""]
    for preset, block in rows.groupby("preset", sort=True):
        datasets = sorted(block["dataset"].unique())
        lines += [f"Preset `{preset}`. Mean AUROC over the classes run (± std over seeds of the class-mean, where more than one "
                  "seed); in brackets: classes run, training images per run, mean wall seconds per run (train + score). "
                  "`epochs` as trained:", ""]
        lines += ["| model | epochs | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
        order = block.groupby("model")["auroc"].mean().sort_values(ascending=False).index
        for model in order:
            cells = []
            for dataset in datasets:
                g = block[(block["model"] == model) & (block["dataset"] == dataset)]
                if g.empty:
                    cells.append("")
                    continue
                per_seed = g.groupby("seed")["auroc"].mean()
                wall = (g["train_seconds"] + g["score_seconds"].fillna(0)).mean()
                cells.append(f"{_ms(per_seed)} ({g['target_class'].nunique()} cl., {int(g['train_rows'].median())} img, {wall:.0f}s)")
            epochs = ", ".join(str(int(e)) for e in sorted(block[block["model"] == model]["epochs"].unique()))
            lines.append(f"| {model} | {epochs} | " + " | ".join(cells) + " |")
        for name, means in (published or {}).items() if preset == "full" else ():
            lines.append(f"| *published: {name}* | | {_published_cells(means, datasets)} |")
        lines.append("")
        for dataset in datasets:
            d = block[block["dataset"] == dataset]
            pivot = d.groupby(["model", "target_class"])["auroc"].mean().unstack()
            pivot = pivot[sorted(pivot.columns, key=lambda c: int(c))]
            lines += [f"Per class, {dataset} (AUROC, mean over seeds):", "",
                      "| model | " + " | ".join(str(c) for c in pivot.columns) + " |", "|---|" + "---|" * len(pivot.columns)]
            for model in order:
                if model in pivot.index:
                    lines.append(f"| {model} | " + " | ".join("" if pd.isna(v) else f"{v:.3f}" for v in pivot.loc[model]) + " |")
            lines.append("")
    return lines


def tables(rows: pd.DataFrame) -> str:
    rows = rows[rows["threshold_rule"] == LABEL_FREE_RULE].copy()
    rows["target_class"] = rows["target_class"].astype(str).str.replace(r"\.0$", "", regex=True)
    lines = [
        "## Images: MNIST and Fashion-MNIST",
        "",
        f"Command: `{COMMAND}` (rows in `benchmarks/results/images.csv`; reduced runs add e.g. "
        "`--option epochs=3 --option 'classes=[0,1]'` and are written with `preset=reduced`). "
        "One-class: the target class is normal; leave-one-out: the target class is the anomaly. "
        "`random` is the floor. The imbalanced protocol (twodisc with labelled anomalies) is reported apart. "
        "Fashion-MNIST class 0 chose the GAN family's epoch counts (`python -m benchmarks.image_convergence`), so its "
        "one-class GAN rows are not free of tuning; the per-class tables show it apart from the other nine.",
        "",
    ]
    one_class = rows[rows["protocol"] == "one-class"]
    added = one_class["model"].isin(ADDED_MODELS)
    lines += _protocol_table(one_class[~added], "One-class protocol", PUBLISHED["one-class"])
    if added.any():
        lines += _protocol_table(one_class[added], "One-class protocol, added detectors (geom: GEOM-style transformation "
                                 "classifier, `offline/detectors/geometric.py`; fusion: Fisher's combination of geom's and the "
                                 "VAE's p-values calibrated on the held-out normal images, `offline/detectors/fusion.py`; "
                                 "reported apart from the seed's models)", PUBLISHED["one-class"])
    lines += _protocol_table(rows[rows["protocol"] == "leave-one-out"], "Leave-one-out protocol")
    imbalanced = rows[rows["protocol"] == "imbalanced"]
    fractions = ", ".join(f"{f:g}" for f in sorted(imbalanced["anomaly_fraction"].dropna().unique())) if not imbalanced.empty else ""
    lines += _protocol_table(imbalanced, "Imbalanced protocol (twodisc sees labelled anomalies"
                             + (f", anomaly_fraction {fractions}" if fractions else "") + "; never mixed with the above)",
                             PUBLISHED["imbalanced"])
    lines += ["Figures: `benchmarks/figures/images-twodisc-*` (reconstructions and confusion matrix at the label-free threshold)."]
    precision = rows.get("compute_precision", pd.Series(dtype=str)).fillna("").replace("", "fp32")
    if (precision != "fp32").any():
        counts = ", ".join(f"{count} {name}" for name, count in precision.value_counts().items())
        lines += ["", f"Compute precision (column `compute_precision`; bf16: autocast around training and scoring): {counts} "
                  "of the rows above; the A/B of the precisions is the `image-precision` section."]
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - used until offline.evaluation.benchmark lists this suite
    """Stand-alone runner with the same context as ``offline.evaluation.benchmark`` (``python -m offline.evaluation.suites.images``)."""
    import json
    import sys

    from offline.evaluation.benchmark import FIGURES_DIR, RESULTS_DIR, ResultsFile, SuiteContext, regenerate_readme
    from offline.data.settings import data_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    path = RESULTS_DIR / "images.csv"
    ctx = SuiteContext(
        suite="images", results=ResultsFile(path, EXTRA_COLUMNS),
        store=data_store(),
        preset=args.pop("preset", "full"), seeds=[int(s) for s in args.pop("seeds", "0").split(",")],
        models=args.pop("models").split(",") if "models" in args else None, figures_dir=FIGURES_DIR,
        options={k: json.loads(v) for k, v in args.items()},
    )
    run(ctx)
    from offline.evaluation import benchmark

    benchmark.SUITES.setdefault("images", "offline.evaluation.suites.images")
    regenerate_readme("images", path)


if __name__ == "__main__":  # pragma: no cover
    main()
