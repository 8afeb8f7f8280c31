"""NAB's own score for the streaming likelihood detector: ``python -m benchmarks.nab_official``.

Every NAB series in the mirror (31) is replayed in-process, value by value in time order, through
one :class:`offline.detectors.streaming_likelihood.StreamingLikelihood` per series (one
configuration for all, no labels read), through the windowed-Gaussian baseline
(NAB's ``windowedGaussian`` idea: window 6400, step 100) and through river's HalfSpaceTrees
(``replay_hst``: prequential, its default trees). All are scored with the port of NAB's
scorer (``offline.evaluation.nab_scorer``) under the three NAB profiles, at two rules:

- ``label-free``: the operating rule fixed in advance -- ours alerts at log-likelihood >= 0.5
  (tail 1e-5) with its refractory period; the windowed Gaussian at ``1 - Q >= 1 - 1e-5``; HST at a
  conformal p-value < 0.001 against its previous 2,000 scores;
- ``nab-oracle``: NAB's scoreboard convention, the one threshold for the whole corpus that
  maximises the summed raw score (``optimise_threshold``, per profile). It reads the labels: an
  oracle figure, not an operating rule.

NAB's probationary period is ``probationary_length`` (``min(floor(0.15 n), 750)``), not the
loader's uncapped 15%. One CSV row per detector x rule x profile goes to
``benchmarks/results/nab_official.csv``; a table is printed. The scoreboard (standard profile,
NAB's full 58-series corpus, so only indicative for these 31): Numenta HTM 70.1, ARTime 74.9,
CAD OSE 69.9, KNN CAD 58.0, RCF 51.7, Windowed Gaussian 39.6, Skyline 35.7, null 0.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from offline.data.nab import SERIES, load_nab
from offline.data.settings import data_store
from offline.bundle import load_bundle
from offline.detectors.streaming_likelihood import THRESHOLD, WG_THRESHOLD, Config, StreamingLikelihood, WindowedGaussian
from offline.evaluation.benchmark import write_readme_section
from offline.evaluation.nab_scorer import PROFILES, corpus_score, optimise_threshold, probationary_length, score_series

RESULTS = Path(__file__).resolve().parent / "results" / "nab_official.csv"
COLUMNS = ["detector", "rule", "transport", "profile", "score", "threshold", "tp", "fp", "fn", "windows_detected", "windows",
           "series", "series_alerting_as_in_process"]
#: readings per worker batch in the Kafka replay (as ``nab_replay``'s)
KAFKA_BATCH = 256


def replay_ours(values: np.ndarray, timestamps: np.ndarray, config: Config | None = None) -> tuple[np.ndarray, np.ndarray]:
    return StreamingLikelihood(config).run(values, timestamps)


#: river HalfSpaceTrees' label-free rule, fixed before any score: a conformal p-value of each score
#: against the previous HST_HISTORY scores, alert below HST_P once HST_WARMUP values have been seen
HST_HISTORY, HST_P, HST_WARMUP = 2000, 0.001, 200


def replay_hst(values: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """river's HalfSpaceTrees (its defaults: 25 trees of height 15, window 250) prequentially on the
    value and its change, min-max scaled as it needs: (scores ``1 - p``, label-free alerts). The
    score is the conformal one, so NAB's oracle threshold sweeps the same scale the rule cuts."""
    from bisect import bisect_left, insort
    from collections import deque

    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed))
    history, ordered = deque(), []
    scores, alerts = np.zeros(len(values)), np.zeros(len(values), dtype=bool)
    previous = None
    for i, x in enumerate(np.asarray(values, dtype=float).tolist()):
        features = {"value": x, "change": 0.0 if previous is None else x - previous}
        previous = x
        score = model.score_one(features) if i else 0.0  # scored before it is learnt (prequential)
        model.learn_one(features)
        if i >= HST_WARMUP and ordered:
            p_value = (1 + len(ordered) - bisect_left(ordered, score)) / (len(ordered) + 1)
            scores[i], alerts[i] = 1.0 - p_value, p_value < HST_P
        history.append(score)
        insort(ordered, score)
        if len(history) > HST_HISTORY:
            ordered.pop(bisect_left(ordered, history.popleft()))
    return scores, alerts


def kafka_rows(detector: str, corpus: dict, alerts: dict[str, np.ndarray], threshold: float) -> list[dict]:
    """The label-free rule's rows for alerts read back from the worker's alerts topic."""
    rows = []
    for profile in PROFILES.values():
        per_series = [score_series(s.timestamps, s.windows, alerts[n], profile, probation=probationary_length(len(s)))
                      for n, s in corpus.items()]
        rows.append(_row(detector, "label-free", profile.name, corpus_score(per_series), threshold, len(corpus), "kafka"))
    return rows


def score_rows(detector: str, corpus: dict, scores: dict[str, np.ndarray], alerts: dict[str, np.ndarray] | None,
               label_free_threshold: float) -> list[dict]:
    """Rows for one detector: label-free rule (``alerts`` if given, else scores >= threshold) and NAB's oracle."""
    rows = []
    for profile in PROFILES.values():
        per_series = []
        for name, series in corpus.items():
            detections = alerts[name] if alerts is not None else scores[name] >= label_free_threshold
            per_series.append(score_series(series.timestamps, series.windows, detections, profile,
                                           probation=probationary_length(len(series))))
        rows.append(_row(detector, "label-free", profile.name, corpus_score(per_series), label_free_threshold, len(corpus)))
        triples = [(s.timestamps, s.windows, scores[n]) for n, s in corpus.items()]
        threshold, _ = optimise_threshold(triples, profile)
        per_series = [score_series(s.timestamps, s.windows, scores[n] >= threshold, profile,
                                   probation=probationary_length(len(s))) for n, s in corpus.items()]
        rows.append(_row(detector, "nab-oracle", profile.name, corpus_score(per_series), threshold, len(corpus)))
    return rows


def _row(detector, rule, profile, corpus, threshold, n_series, transport="in-process") -> dict:
    return {"detector": detector, "rule": rule, "transport": transport, "profile": profile, "score": round(corpus.normalised, 2),
            "threshold": float(threshold), "tp": corpus.tp, "fp": corpus.fp, "fn": corpus.fn,
            "windows_detected": corpus.windows_detected, "windows": corpus.windows, "series": n_series}


SCOREBOARD = ("Numenta HTM 70.1, ARTime 74.9, CAD OSE 69.9, KNN CAD 58.0, Random Cut Forest 51.7, "
              "Windowed Gaussian 39.6, Etsy Skyline 35.7, random ~11-17, null 0")


def readme_table(table: pd.DataFrame) -> str:
    """The NAB-score table of benchmarks/README.md, from the rows of nab_official.csv."""
    lines = ["## NAB, scored with NAB's own rules", "",
             "Command: `python -m benchmarks.nab_official --transport kafka` (rows in `benchmarks/results/nab_official.csv`). "
             "Every series of the mirror replayed in order through each detector in-process; scored by our port of NAB's scorer "
             "(`offline/evaluation/nab_scorer.py`, which reproduces NAB's `results/final_results.json` for all 45 "
             "detector/profile pairs: `benchmarks/results/nab_scorer_validation.json`), probation "
             "min(floor(0.15 n), 750), normalised against the null and perfect detectors over these series. "
             "`label-free` is the operating rule fixed in advance; `nab-oracle` is NAB's convention, the threshold "
             "optimised over the corpus with its labels, an oracle. The streaming-likelihood configuration was "
             "partly tuned on this same corpus (`TUNING_LOG` in `offline/detectors/streaming_likelihood.py`): "
             "in-sample figures.", "",
             "| detector | rule | transport | standard | reward low FP | reward low FN | windows found (standard) | FP (standard) |",
             "|---|---|---|---|---|---|---|---|"]
    table = table.fillna({"transport": "in-process"})
    for (detector, rule, transport), group in table.groupby(["detector", "rule", "transport"], sort=False):
        by = group.set_index("profile")
        std = by.loc["standard"]
        lines.append(f"| {detector} | {rule} | {transport} | {by.loc['standard', 'score']:.2f} | "
                     f"{by.loc['reward_low_FP_rate', 'score']:.2f} | {by.loc['reward_low_FN_rate', 'score']:.2f} | "
                     f"{int(std['windows_detected'])}/{int(std['windows'])} | {int(std['fp'])} |")
    kafka = table[table["transport"] == "kafka"]
    if len(kafka):
        same = int(kafka["series_alerting_as_in_process"].iloc[0])
        lines += ["", f"Through Kafka (`--transport kafka`: an embedded Tansu broker and the worker process serving the "
                      f"streaming-likelihood bundle, alerts read back from the alerts topic), {same} of "
                      f"{int(kafka['series'].iloc[0])} series alert on exactly the readings the in-process replay alerts on."]
    lines += ["", f"NAB's scoreboard (standard profile, its full 58-series corpus, so only indicative here): {SCOREBOARD}."]
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--series", "only", multiple=True, type=click.Choice(list(SERIES)), metavar="CATEGORY/FILE.csv", help="NAB series (<category>/<file>.csv), repeatable; default all 31")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--per-series", is_flag=True, help="also print ours' standard score per series (label-free rule)")
@click.option("--skip", multiple=True, type=click.Choice(["hst"]), help="leave a baseline out (river HST takes most of the time)")
@click.option("--transport", type=click.Choice(["in-process", "kafka"]), default="in-process", show_default=True,
              help="kafka: also replay every series through a broker and the worker process serving the streaming likelihood")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("runs/nab-official"), show_default=True)
def main(only, output, per_series, skip, transport, workdir):
    """Replay NAB through the streaming likelihood detector, the windowed Gaussian and river HST; NAB scores."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    corpus = load_nab(data_store(), list(only) or list(SERIES))
    started = time.perf_counter()
    ours_scores, ours_alerts, wg_scores, hst_scores, hst_alerts = {}, {}, {}, {}, {}
    for name, series in tqdm(corpus.items(), desc="nab series", unit="series"):
        ours_scores[name], ours_alerts[name] = replay_ours(series.values, series.timestamps)
        wg_scores[name] = WindowedGaussian().run(series.values)
        if "hst" not in skip:
            hst_scores[name], hst_alerts[name] = replay_hst(series.values)
    seconds = time.perf_counter() - started
    rows = score_rows("streaming-likelihood", corpus, ours_scores, ours_alerts, THRESHOLD)
    rows += score_rows("windowed-gaussian", corpus, wg_scores, None, WG_THRESHOLD)
    if "hst" not in skip:
        rows += score_rows("hst", corpus, hst_scores, hst_alerts, 1.0 - HST_P)
    if transport == "kafka":
        from benchmarks.nab_kafka import replay_series_through_kafka
        from streamdetect.settings import get_settings

        shutil.rmtree(workdir, ignore_errors=True)
        from offline.training.train import likelihood_bundle_from_nab

        bundle = load_bundle(likelihood_bundle_from_nab(None, workdir / "bundle", promote=False, corpus=corpus))
        through = replay_series_through_kafka(corpus, {name: bundle for name in corpus}, budget_per_hour=None,
                                              target_rate=0.01, batch_size=KAFKA_BATCH, base=get_settings(),
                                              workdir=workdir, log_name="worker-streaming-likelihood")
        kafka_alerts = {name: mask for name, (mask, _) in through.items()}
        same = [n for n in corpus if np.array_equal(kafka_alerts[n], ours_alerts[n])]
        rows += [{**row, "series_alerting_as_in_process": len(same)}
                 for row in kafka_rows("streaming-likelihood", corpus, kafka_alerts, THRESHOLD)]
        click.echo(f"through Kafka: {len(same)} of {len(corpus)} series alert on exactly the readings of the in-process replay; "
                   f"differ: {sorted(set(corpus) - set(same))}")
    table = pd.DataFrame(rows, columns=COLUMNS)
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        click.echo(table.to_string(index=False))
    n_rows = sum(len(s) for s in corpus.values())
    click.echo(f"{len(corpus)} series, {n_rows} values, replay {seconds:.1f} s; written {output}")
    if output == RESULTS:  # the table describes the committed results only
        write_readme_section("nab-official", readme_table(table))
    if per_series:
        from offline.evaluation.nab_scorer import STANDARD
        for name, series in corpus.items():
            s = score_series(series.timestamps, series.windows, ours_alerts[name], STANDARD,
                             probation=probationary_length(len(series)))
            click.echo(f"{name:60s} raw {s.score:7.3f} null {s.null:5.1f} windows {s.windows_detected}/{s.windows} fp {s.fp}")


if __name__ == "__main__":
    main()
