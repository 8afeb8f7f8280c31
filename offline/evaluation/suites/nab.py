"""NAB: streaming replay per series, window-level precision / recall / F1 and detection delay.

The replay goes through the worker's own per-batch code (featurize, score, p-values, adaptive
thresholds, alert budget), so it is run from the streamdetect side:
``python -m benchmarks.nab_replay`` (it writes ``benchmarks/results/nab.csv`` with
``offline.evaluation.benchmark.ResultsFile`` and regenerates this suite's tables); ``offline`` never imports
``streamdetect``, so ``python -m offline.benchmark --suite nab`` only regenerates the tables.

Scoring, after NAB (Lavin & Ahmad 2015), without its weighted score:

- alerts inside the probationary period (the first 15% of a series) do not count;
- a labelled window is detected (one true positive) when at least one alert falls inside it;
  a window without an alert is one false negative;
- every alert outside all windows is one false positive;
- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean; "overall" sums
  TP, FP and FN over the series (micro average); series without windows add only FPs;
- detection delay of a detected window: first alert time - window start, in hours and as a
  fraction of the window's length (NAB centres windows on the labelled anomaly, so < 0.5 is an
  alert before the anomaly point).

>>> import numpy as np
>>> t = np.arange(0, 100).astype("datetime64[h]")
>>> alerts = np.zeros(100, bool); alerts[[5, 42, 44, 80]] = True
>>> m = window_metrics(t, alerts, [(t[40], t[50]), (t[60], t[70])], probation=15)
>>> (m["tp"], m["fp"], m["fn"], m["precision"], m["recall"], m["delay_hours"])
(1, 1, 1, 0.5, 0.5, 2.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PROTOCOL = "nab-replay-window"  # in-process, through the worker's batch functions
KAFKA_PROTOCOL = "nab-kafka-window"  # through a broker and the worker process (--transport kafka)
TITLES = {
    PROTOCOL: "NAB (streaming replay through the worker's batch code)",
    KAFKA_PROTOCOL: "NAB through Kafka (embedded broker, the worker process, one bundle per series swapped in without a restart)",
}
EXTRA_COLUMNS = [
    "series", "category", "tp", "fp", "fn", "windows", "alerts", "delay_hours", "delay_fraction",
    "target_rate", "budget_per_hour", "events", "replay_seconds", "drifts", "promotions",
]
COMMAND = "python -m benchmarks.nab_replay"


def window_metrics(timestamps: np.ndarray, alerts: np.ndarray, windows: Sequence[tuple], *, probation: int) -> dict:
    """Window-level counts and delay of one series (see the module docstring)."""
    timestamps = np.asarray(timestamps)
    alerts = np.asarray(alerts, dtype=bool).copy()
    alerts[:probation] = False
    inside_any = np.zeros(len(alerts), dtype=bool)
    tp, delays_h, delays_f = 0, [], []
    for start, end in windows:
        inside = (timestamps >= start) & (timestamps <= end)
        inside_any |= inside
        hits = np.flatnonzero(inside & alerts)
        if len(hits):
            tp += 1
            delay = (timestamps[hits[0]] - start) / np.timedelta64(1, "h")
            delays_h.append(float(delay))
            length = (end - start) / np.timedelta64(1, "h")
            delays_f.append(float(delay / length) if length > 0 else 0.0)
    fp = int((alerts & ~inside_any).sum())
    fn = len(windows) - tp
    return {
        "tp": tp, "fp": fp, "fn": fn, "windows": len(windows), "alerts": int(alerts.sum()),
        **prf(tp, fp, fn),
        "delay_hours": float(np.mean(delays_h)) if delays_h else float("nan"),
        "delay_fraction": float(np.mean(delays_f)) if delays_f else float("nan"),
    }


def prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else float("nan")
    if np.isnan(recall):
        f1 = float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def overall(rows: pd.DataFrame) -> dict:
    """Micro average over series (sums of TP/FP/FN) and mean delay over detected windows."""
    tp, fp, fn = int(rows["tp"].sum()), int(rows["fp"].sum()), int(rows["fn"].sum())
    weights = rows["tp"].to_numpy(dtype=float)
    delay = rows["delay_hours"].to_numpy(dtype=float)
    fraction = rows["delay_fraction"].to_numpy(dtype=float)
    ok = weights > 0
    return {
        "tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn),
        "delay_hours": float(np.average(delay[ok], weights=weights[ok])) if ok.any() else float("nan"),
        "delay_fraction": float(np.average(fraction[ok], weights=weights[ok])) if ok.any() else float("nan"),
    }


def run(ctx) -> None:
    import click

    raise click.ClickException(f"the NAB replay runs through the worker's code: use `{COMMAND}` (this suite only renders its tables)")


def _fmt(x, digits=3) -> str:
    return "" if pd.isna(x) else f"{x:.{digits}f}"


def tables(rows: pd.DataFrame) -> str:
    sections = [_protocol_tables(rows[rows["protocol"] == protocol], protocol) for protocol in TITLES]
    agreement = transport_agreement(rows)
    if agreement:
        sections.append("### Kafka against in-process\n\nSeries whose alert count is the same through Kafka as in "
                        "the in-process replay (same seeds, same rules): " + "; ".join(agreement) + ".\n")
    return "\n".join(s for s in sections if s) or "## NAB\n\n(no rows yet)"


def transport_agreement(rows: pd.DataFrame) -> list[str]:
    """Per (model, rule, preset) run both ways: how many series alerted exactly as often through Kafka
    (the worker's batches are cut by the fetches, the in-process replay's every 256 readings, and a
    key's threshold level moves once per batch, so a few alerts may differ)."""
    keys = ["model", "threshold_rule", "preset", "seed", "series"]
    last = rows.drop_duplicates(["protocol", *keys], keep="last")
    both = last[last["protocol"] == PROTOCOL].merge(last[last["protocol"] == KAFKA_PROTOCOL], on=keys, suffixes=("", "_kafka"))
    out = []
    for (model, rule, preset), group in both.groupby(["model", "threshold_rule", "preset"]):
        same = int((group["alerts"] == group["alerts_kafka"]).sum())
        differ = ", ".join(f"{r.series} {int(r.alerts)} vs {int(r.alerts_kafka)}" for r in group.itertuples()
                           if r.alerts != r.alerts_kafka)
        out.append(f"{model} `{rule}` ({preset}) {same}/{len(group)}" + (f" ({differ})" if differ else ""))
    return out


def _protocol_tables(rows: pd.DataFrame, protocol: str) -> str:
    if rows.empty:
        return ""
    command = COMMAND + (" --transport kafka --models ae-window,hst" if protocol == KAFKA_PROTOCOL else "")
    out = [
        f"## {TITLES[protocol]}",
        "",
        f"Generated from `benchmarks/results/nab.csv`, produced by `{command}` "
        "(then `python -m offline.benchmark --suite nab --tables-only`). Window-level scoring: a window "
        "with at least one alert is a TP, a window without one a FN, every alert outside all windows a FP; "
        "alerts in NAB's probationary period (first 15%) are ignored. Delay: first alert - window start.",
        "",
    ]
    for (preset, rule), group in rows.groupby(["preset", "threshold_rule"]):
        summary = []
        for model, part in group.groupby("model"):
            part = part.drop_duplicates("series", keep="last")
            o = overall(part)
            summary.append((model, o, float(part[part["windows"] > 0]["f1"].mean()), part))
        summary.sort(key=lambda item: -item[1]["f1"])
        n_series = max(len(p) for *_, p in summary)
        out += [
            f"### Overall: `{rule}` ({preset} preset; micro average over {n_series} series)",
            "",
            "| model | precision | recall | F1 | mean F1 per series (with windows) | TP | FP | FN | mean delay (h) | delay / window |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model, o, mean_f1, _ in summary:
            out.append(f"| {model} | {_fmt(o['precision'])} | {_fmt(o['recall'])} | {_fmt(o['f1'])} | {_fmt(mean_f1)} | "
                       f"{o['tp']} | {o['fp']} | {o['fn']} | {_fmt(o['delay_hours'], 1)} | {_fmt(o['delay_fraction'], 2)} |")
        if len(summary) >= 2:
            best = summary[0]
            ratios = [f"{best[0]} / {m}: {best[1]['f1'] / o['f1']:.2f}" for m, o, _, _ in summary[1:] if o["f1"] > 0]
            out += ["", "Overall F1 ratios: " + "; ".join(ratios) + "."]
        models = [m for m, *_ in summary]
        out += ["", f"### Per series: `{rule}` ({preset} preset): F1 (TP/FP/FN)", "",
                "| series | windows | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
        per = {m: p.set_index("series") for m, _, _, p in summary}
        series = sorted(group["series"].unique())
        for name in series:
            cells = []
            for m in models:
                if name not in per[m].index:
                    cells.append("")
                    continue
                r = per[m].loc[name]
                cells.append(f"{_fmt(r['f1'], 2) or '-'} ({int(r['tp'])}/{int(r['fp'])}/{int(r['fn'])})")
            windows = int(per[models[0]].loc[name]["windows"]) if name in per[models[0]].index else ""
            out.append(f"| {name} | {windows} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
