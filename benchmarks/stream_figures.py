"""Figures of the streaming bench, drawn from its result files: ``python -m benchmarks.stream_figures``.

``stream-latency-by-window.png``: p99 latency and the broker's CPU share per 5 s of each 30 s run
at the offered rate: the worker (send -> scores record, two hops) and the bare consumer of the same
bench run (``benchmarks/results/stream.json``), and the bare consumer of the broker probe
(``benchmarks/results/broker_probe.json``, no worker on the broker at all). On the embedded Tansu
broker both climb as the topics grow, which a run's overall p99 does not show.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

RESULTS = Path("benchmarks/results")
FIGURES = Path("benchmarks/figures")


def latency_series(stream: dict, probe: dict | None) -> list[tuple[str, list[dict]]]:
    """(label, windows) of every run that has per-window figures."""
    series = []
    worker = (stream.get("latency_run") or {}).get("by_window")
    if worker:
        series.append(("worker: feed -> scores record (bench)", worker))
    plain = (stream.get("plain_consumer_latency_ms") or {}).get("by_window")
    if plain:
        series.append(("bare consumer, one hop (bench)", plain))
    growth = ((probe or {}).get("growth") or {}).get("by_window")
    if growth:
        series.append(("bare consumer, one hop (broker probe)", growth))
    return series


def plot_latency_windows(stream: dict, probe: dict | None, out: Path, *, target_ms: float = 50.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = latency_series(stream, probe)
    if not series:
        raise click.ClickException("no per-window latency in the result files: run `python -m benchmarks.stream_bench` "
                                   "(and `python -m benchmarks.broker_probe`) with this version first")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for label, windows in series:
        starts = [w["from_s"] for w in windows]
        top.plot(starts, [w["p99"] for w in windows], marker="o", label=label)
        if all("cpu_share" in w for w in windows):
            bottom.plot(starts, [w["cpu_share"] for w in windows], marker="o", label=label)
    top.axhline(target_ms, color="grey", linestyle="--", linewidth=1, label=f"target p99 {target_ms:g} ms")
    top.set_ylabel("p99 latency (ms)")
    top.set_title(f"{stream.get('offered_eps', '?')} events/s offered, {stream.get('broker', {}).get('kind', '?')} "
                  f"({stream.get('date', '?')})")
    top.legend(fontsize=8)
    bottom.set_ylabel("broker CPU (cores)")
    bottom.set_xlabel("seconds into the run (start of each 5 s window)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--stream", "stream_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=RESULTS / "stream.json", show_default=True, help="result of python -m benchmarks.stream_bench")
@click.option("--probe", "probe_path", type=click.Path(dir_okay=False, path_type=Path),
              default=RESULTS / "broker_probe.json", show_default=True,
              help="result of python -m benchmarks.broker_probe (left out if missing)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=FIGURES / "stream-latency-by-window.png", show_default=True)
def main(stream_path: Path, probe_path: Path, out: Path) -> None:
    """Draw the streaming bench's latency-by-window figure from its result files."""
    stream = json.loads(stream_path.read_text())
    probe = json.loads(probe_path.read_text()) if probe_path.exists() else None
    click.echo(f"-> {plot_latency_windows(stream, probe, out)}")


if __name__ == "__main__":
    main()
