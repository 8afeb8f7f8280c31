"""Check ``offline.evaluation.nab_scorer`` against NAB's published results.

For every detector NAB ships results for (``results/<detector>/<category>/<detector>_<series>.csv``,
with NAB's ``anomaly_score`` per row), and every profile: threshold the scores at the detector's
``config/thresholds.json`` threshold, score the 58 series of NAB's corpus with our scorer against
``labels/combined_windows.json`` (timestamps from the results CSVs), normalise, and compare with

- ``results/final_results.json`` (the scoreboard figure),
- NAB's own scoring output at that threshold, ``results/<detector>/<detector>_<profile>_scores.csv``
  (raw score and row counts per series and in total),
- and, with our copy of NAB's sweeper, the corpus-optimal ("NAB convention") threshold beside the
  one ``thresholds.json`` records.

``--nab-dir`` is a checkout of numenta/NAB, or a bare git directory of it (read with
``git cat-file``; the mirror the workbench fetches has no work tree). Usage:

    python -m benchmarks.nab_scorer_check --nab-dir /tmp/nab [--detectors numenta,random,null]

It writes ``benchmarks/results/nab_scorer_validation.json`` and prints a table.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import click
import numpy as np
import pandas as pd

from offline.evaluation.nab_scorer import PROFILES, corpus_score, optimise_threshold, score_corpus_at, score_series_at

OUTPUT = Path("benchmarks/results/nab_scorer_validation.json")
#: a gap above this (normalised points) is reported as not reproduced; NAB prints two decimals
TOLERANCE = 0.005


class NabFiles:
    """Files of a NAB checkout, or of a bare git directory of one (read at HEAD)."""

    def __init__(self, root: Path):
        self.root = root
        self.git = (root / "HEAD").is_file() and (root / "objects").is_dir()

    def read(self, path: str) -> bytes:
        if self.git:
            return subprocess.run(["git", f"--git-dir={self.root}", "cat-file", "blob", f"HEAD:{path}"],
                                  check=True, capture_output=True).stdout
        return (self.root / path).read_bytes()

    def exists(self, path: str) -> bool:
        if self.git:
            return subprocess.run(["git", f"--git-dir={self.root}", "cat-file", "-e", f"HEAD:{path}"],
                                  capture_output=True).returncode == 0
        return (self.root / path).is_file()

    def listing(self, folder: str) -> list[str]:
        if self.git:
            out = subprocess.run(["git", f"--git-dir={self.root}", "ls-tree", "-r", "--name-only", "HEAD", folder],
                                 check=True, capture_output=True, text=True).stdout
            return sorted(out.split())
        return sorted(str(p.relative_to(self.root)) for p in (self.root / folder).rglob("*") if p.is_file())

    def describe(self) -> dict:
        info = {"path": str(self.root), "kind": "git" if self.git else "folder"}
        if self.git:
            info["commit"] = subprocess.run(["git", f"--git-dir={self.root}", "rev-parse", "HEAD"],
                                            check=True, capture_output=True, text=True).stdout.strip()
        return info

    def json(self, path: str) -> dict:
        return json.loads(self.read(path))


def detector_series(nab: NabFiles, detector: str, windows: dict) -> tuple[dict, list[str]]:
    """``{"<category>/<series>.csv": (timestamps, windows, anomaly_scores)}`` and any problems."""
    series, problems = {}, []
    prefix = f"results/{detector}/"
    for path in nab.listing(prefix.rstrip("/")):
        if not path.endswith(".csv") or path.endswith("_scores.csv"):
            continue
        category, name = path[len(prefix):].split("/")
        key = f"{category}/{name.removeprefix(detector + '_')}"
        if key not in windows:
            problems.append(f"{path}: no entry {key} in labels/combined_windows.json")
            continue
        try:
            frame = pd.read_csv(io.BytesIO(nab.read(path)), usecols=["timestamp", "anomaly_score"])
        except (subprocess.CalledProcessError, FileNotFoundError, ValueError) as error:
            problems.append(f"{path}: unreadable ({error.__class__.__name__}); a snapshot may list it without its content")
            continue
        timestamps = pd.to_datetime(frame["timestamp"]).to_numpy("datetime64[ns]")
        pairs = [(np.datetime64(pd.Timestamp(a), "ns"), np.datetime64(pd.Timestamp(b), "ns")) for a, b in windows[key]]
        series[key] = (timestamps, pairs, frame["anomaly_score"].to_numpy(float))
    missing = sorted(set(windows) - set(series))
    if missing:
        problems.append(f"{len(missing)} labelled series without results: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return series, problems


def nab_scores_file(nab: NabFiles, detector: str, profile: str) -> pd.DataFrame | None:
    path = f"results/{detector}/{detector}_{profile}_scores.csv"
    if not nab.exists(path):
        return None
    return pd.read_csv(io.BytesIO(nab.read(path)))


def check_profile(series: dict, profile_name: str, threshold: float, nab_final: float | None,
                  nab_file: pd.DataFrame | None, recorded: dict, optimise: bool) -> dict:
    """Our score of one detector under one profile, beside NAB's three records of it."""
    profile = PROFILES[profile_name]
    per_series = {key: score_series_at(t, w, s, threshold, profile) for key, (t, w, s) in series.items()}
    total = corpus_score(per_series.values())
    row = {
        "threshold": threshold,
        "ours": total.normalised,
        "nab_final_results": nab_final,
        "difference": None if nab_final is None else total.normalised - nab_final,
        "raw_ours": total.score, "null_raw": total.null, "perfect_raw": total.perfect,
        "counts_ours": {"tp": total.tp, "fp": total.fp, "fn": total.fn, "tn": total.tn},
        "windows_detected": total.windows_detected, "windows": total.windows, "series": len(per_series),
        "thresholds_json_raw": recorded.get("score"),
    }
    if nab_file is not None:
        totals = nab_file[nab_file["Detector"] == "Totals"].iloc[-1]
        files = nab_file[nab_file["Detector"] != "Totals"].set_index("File")
        common = [k for k in per_series if k in files.index]
        diffs = [abs(per_series[k].score - float(files.loc[k, "Score"])) for k in common]
        count_mismatch = [k for k in common if (per_series[k].tp, per_series[k].tn, per_series[k].fp, per_series[k].fn)
                          != tuple(int(files.loc[k, c]) for c in ("TP", "TN", "FP", "FN"))]
        row["nab_scores_file"] = {
            "threshold": float(files["Threshold"].iloc[0]),
            "raw": float(totals["Score"]),
            "raw_difference": total.score - float(totals["Score"]),
            "normalised": 100 * (float(totals["Score"]) - total.null) / (total.perfect - total.null),
            "counts": {c.lower(): int(totals[c]) for c in ("TP", "FP", "FN", "TN")},
            "series_compared": len(common),
            "max_series_raw_difference": max(diffs) if diffs else None,
            "series_with_other_counts": count_mismatch,
        }
    if optimise:
        best_threshold, best_raw = optimise_threshold(series.values(), profile)
        rescored = score_corpus_at(series.values(), best_threshold, profile)
        row["nab_convention_optimum"] = {
            "threshold": best_threshold, "raw": best_raw, "raw_rescored_at_threshold": rescored.score,
            "normalised": 100 * (best_raw - total.null) / (total.perfect - total.null),
            "thresholds_json_threshold": threshold,
        }
    return row


def explain(detector: str, profile: str, row: dict) -> tuple[list[str], list[str]]:
    """Gaps to final_results.json, and NAB's other records (scores file, thresholds.json) that disagree."""
    gaps, notes = [], []
    if row["difference"] is None:
        notes.append(f"{detector}/{profile}: not in final_results.json (ours {row['ours']:.2f})")
    elif abs(row["difference"]) > TOLERANCE:
        gaps.append(f"{detector}/{profile}: ours {row['ours']:.4f} vs final_results {row['nab_final_results']:.4f}")
    nab_file = row.get("nab_scores_file")
    if nab_file and abs(nab_file["raw_difference"]) > 1e-6:
        notes.append(f"{detector}/{profile}: NAB's {detector}_{profile}_scores.csv totals {nab_file['raw']:.4f} raw "
                     f"({nab_file['normalised']:.2f}), ours {row['raw_ours']:.4f}; of the {nab_file['series_compared']} series it "
                     f"shares with the labels, {len(nab_file['series_with_other_counts'])} have other counts: "
                     "it was not written from the committed results CSVs")
    recorded = row["thresholds_json_raw"]
    if recorded is not None and abs(recorded - row["raw_ours"]) > 1e-6:
        notes.append(f"{detector}/{profile}: thresholds.json records raw score {recorded:.4f} at its threshold, "
                     f"the committed results give {row['raw_ours']:.4f}")
    best = row.get("nab_convention_optimum")
    if best and best["raw"] > row["raw_ours"] + 1e-6:
        notes.append(f"{detector}/{profile}: NAB's sweep finds {best['normalised']:.2f} at threshold {best['threshold']:.6g}, "
                     f"above the published {row['ours']:.2f} at thresholds.json's {row['threshold']:.6g}")
    return gaps, notes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--nab-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="numenta/NAB checkout (config/, labels/, results/) or its bare git directory")
@click.option("--detectors", default="", help="comma-separated; default every detector with results and a threshold")
@click.option("--profiles", default=",".join(PROFILES), show_default=True)
@click.option("--optimise/--no-optimise", default=True, show_default=True,
              help="also run NAB's threshold sweep (corpus-optimal threshold, the NAB-convention figure)")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=OUTPUT, show_default=True)
def main(nab_dir: Path, detectors: str, profiles: str, optimise: bool, output: Path) -> None:
    """Score NAB's own detector results with our scorer and compare with final_results.json."""
    nab = NabFiles(nab_dir)
    windows = nab.json("labels/combined_windows.json")
    thresholds = nab.json("config/thresholds.json")
    final = nab.json("results/final_results.json")
    nab_profiles = nab.json("config/profiles.json")
    for name, profile in PROFILES.items():  # our constants must be NAB's numbers
        cost = nab_profiles[name]["CostMatrix"]
        if (profile.tp_weight, profile.fn_weight, profile.fp_weight) != (cost["tpWeight"], cost["fnWeight"], cost["fpWeight"]):
            raise click.ClickException(f"profile {name} differs from config/profiles.json: {cost}")
    available = sorted({p.split("/")[1] for p in nab.listing("results") if p.count("/") >= 2})
    chosen = [d.strip() for d in detectors.split(",") if d.strip()] or [d for d in available if d in thresholds]
    profile_names = [p.strip() for p in profiles.split(",") if p.strip()]

    report = {"nab": nab.describe(), "tolerance": TOLERANCE, "detectors": {}, "problems": [], "gaps": [], "notes": []}
    for detector in chosen:
        if detector not in available or detector not in thresholds:
            report["problems"].append(f"{detector}: no results folder or no thresholds.json entry")
            continue
        series, problems = detector_series(nab, detector, windows)
        report["problems"] += problems
        if not series:
            continue
        report["detectors"][detector] = rows = {}
        for profile in profile_names:
            rows[profile] = check_profile(series, profile, thresholds[detector][profile]["threshold"],
                                          final.get(detector, {}).get(profile), nab_scores_file(nab, detector, profile),
                                          thresholds[detector][profile], optimise)
            gaps, notes = explain(detector, profile, rows[profile])
            report["gaps"] += gaps
            report["notes"] += notes
        click.echo(f"scored {detector} ({len(series)} series)", err=True)

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(table(report))
    click.echo(f"{sum(len(r) for r in report['detectors'].values())} detector/profile pairs scored; "
               f"{len(report['gaps'])} differ from final_results.json by more than {TOLERANCE}")
    for line in report["problems"] + report["gaps"] + report["notes"]:
        click.echo(f"- {line}")
    click.echo(f"written: {output}")


def table(report: dict) -> str:
    lines = ["| detector | profile | threshold | ours | NAB final_results | difference | NAB scores file | oracle threshold | oracle score |",
             "|---|---|---|---|---|---|---|---|---|"]
    for detector, rows in report["detectors"].items():
        for profile, row in rows.items():
            nab = "" if row["nab_final_results"] is None else f"{row['nab_final_results']:.2f}"
            diff = "" if row["difference"] is None else f"{row['difference']:+.4f}"
            file_ = row.get("nab_scores_file", {}).get("normalised")
            best = row.get("nab_convention_optimum", {})
            lines.append(f"| {detector} | {profile} | {row['threshold']:.4f} | {row['ours']:.2f} | {nab} | {diff} | "
                         f"{'' if file_ is None else f'{file_:.2f}'} | "
                         f"{'' if not best else format(best['threshold'], '.4f')} | {'' if not best else format(best['normalised'], '.2f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
