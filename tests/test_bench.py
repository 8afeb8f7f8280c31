"""``python -m benchmarks.stream_bench``: the command line, the figures it derives, and a quick run.

The quick run goes through the same code as the full one (a real broker, the real worker as a
subprocess) on a few thousand events; its figures are not performance claims (those come from
the full run in benchmarks/results/stream.json), the test checks that every figure is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.measure import latency_windows
from benchmarks.stream_bench import batch_rate, main, stages_per_1k

ROOT = Path(__file__).resolve().parents[1]


def test_help_names_every_part():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--quick", "--events", "--rate", "--pause", "--kill-cycles", "--fuzz", "--skip", "--out"):
        assert option in result.output


def test_batch_rate_leaves_the_last_batch_out():
    records = [  # three batches: t=0 (2 partitions), t=1, t=2
        {"produced_at": 0.0, "event_ids": ["a"] * 60, "dead_letters": 0},
        {"produced_at": 0.0, "event_ids": ["b"] * 40, "dead_letters": 0},
        {"produced_at": 1.0, "event_ids": ["c"] * 99, "dead_letters": 1},
        {"produced_at": 2.0, "event_ids": ["d"] * 500, "dead_letters": 0},
    ]
    rate = batch_rate(records)
    assert rate["eps"] == pytest.approx(200 / 2.0) and rate["events"] == 700 and rate["batches"] == 3


def test_stages_per_1k_events():
    stages = stages_per_1k({"events": 2000, "stage_seconds": {"decode_validate": 0.02, "score": 0.004, "commit": 0.001}})
    assert stages == {"decode_validate": 10.0, "score": 2.0, "commit": 0.5, "total": 12.5}
    assert stages_per_1k({"events": 0}) is None


def test_latency_windows_follow_send_time_and_cpu():
    # 10 s of sends from t=100: 10 ms in the first 5 s, 40 ms in the next; the sampled process used
    # 0.2 of a core until t=105, then 0.8 (0.68 over 104..109)
    sent = [100 + i / 100 for i in range(1000)]
    latency = [10.0 if t < 105 else 40.0 for t in sent]
    cpu = [(100 + t, 0.2 * t if t <= 5 else 1.0 + 0.8 * (t - 5)) for t in range(11)]
    windows = latency_windows(sent, latency, origin=99.0, cpu_samples=cpu)
    assert [w["from_s"] for w in windows] == [0.0, 5.0, 10.0]  # the origin is a second before the first send
    assert [w["events"] for w in windows] == [400, 500, 100]
    assert [w["p99"] for w in windows] == [10.0, 40.0, 40.0]
    assert windows[0]["cpu_share"] == pytest.approx(0.2) and windows[1]["cpu_share"] == pytest.approx(0.68)
    assert "cpu_share" not in latency_windows(sent, latency)[0] and latency_windows([], []) == []


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_quick_run_writes_every_figure(creditcard_bundles, tmp_path):
    out = tmp_path / "stream.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("STREAMDETECT_KAFKA__BOOTSTRAP", None)  # the bench starts its own broker (the soak pauses it)
    command = [sys.executable, "-m", "benchmarks.stream_bench", "--quick", "--events", "3000", "--latency-seconds", "2",
               "--skip", "faust-agent", "--skip", "two-workers", "--kill-cycles", "1", "--fuzz", "300", "--pause", "2",
               "--registry", str(creditcard_bundles), "--workdir", str(tmp_path / "runs"), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("raw_consume_eps", "worker_eps", "ratio", "offered_eps", "latency_ms", "worker_rss_mb",
                "stages_ms_per_1k", "broker", "machine", "date", "load_avg", "reliability"):
        assert result.get(key) is not None, key
    assert result["preset"] == "quick" and result["machine"]["cores"] >= 1
    # rates are measured between batches: the quick run's batch size is shrunk so that it spans several,
    # and the ceiling never reads more records per getmany than the worker scores per batch
    assert result["batch_size"] == 3000 // 8 and result["worker_run"]["batches"] >= 2
    assert result["raw_max_records"] == min(2048, result["batch_size"])
    assert result["worker_run"]["all_scored"] and result["ratio"] == pytest.approx(
        result["worker_eps"] / result["raw_consume_eps"], rel=0.01)
    # one pair in the quick preset: a raw run, then the worker run
    assert result["ratio_pairs_median"] == pytest.approx(result["pair_ratios"][0], abs=0.001) == pytest.approx(
        result["worker_eps"] / result["raw_consume_runs_eps"][0], rel=0.01)
    assert set(result["latency_ms"]) >= {"p50", "p95", "p99"}
    assert {"decode_validate", "featurize", "score", "threshold", "publish"} <= set(result["stages_ms_per_1k"])
    reliability = result["reliability"]
    for key in ("kill_cycles", "events_sent", "events_lost", "duplicate_alerts_after_dedup", "fuzzed_events",
                "fuzzed_in_deadletter", "worker_restarts_needed"):
        assert key in reliability, key
    assert reliability["events_lost"] == 0 and reliability["fuzzed_in_deadletter"] == reliability["fuzzed_events"] == 300


def test_quick_sensor_run_scores_every_reading_past_its_window_and_keeps_the_other_sections(tmp_path):
    """``--feed sensor-readings --section``: a fleet of sensors whose readings interleave, the throughput
    pair only, written beside the transactions run already in the file."""
    out = tmp_path / "stream.json"
    out.write_text(json.dumps({"ratio": 0.5, "worker_eps": 1}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("STREAMDETECT_KAFKA__BOOTSTRAP", None)
    command = [sys.executable, "-m", "benchmarks.stream_bench", "--quick", "--feed", "sensor-readings", "--sensors", "60",
               "--events", "3000", "--workdir", str(tmp_path / "runs"), "--out", str(out), "--section", "sensor_readings"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    whole = json.loads(out.read_text())
    assert whole["ratio"] == 0.5 and whole["sections"] == ["sensor_readings"]
    result = whole["sensor_readings"]
    assert result["feed"] == "sensor-readings" and result["sensors"] == 60
    # each sensor's first window-size - 1 readings fill its window; every reading after that is scored
    size = result["window"]["size"]
    assert result["readings_per_sensor"] == size - 1 + 3000 // 60 and result["events"] == 60 * result["readings_per_sensor"]
    assert result["scored_events"] == 60 * 3000 // 60 and result["worker_run"]["all_scored"]
    assert result["worker_eps"] > 0 and result["ratio"] == pytest.approx(result["worker_eps"] / result["raw_consume_eps"], abs=0.001)
    assert "reliability" not in result and "latency_ms" not in result  # the sensor run is the throughput pair only


@pytest.mark.integration
def test_broker_probe_measures_every_setting_on_a_real_broker(tmp_path):
    """``python -m benchmarks.broker_probe`` on the embedded broker: every offered event arrives in
    each measurement and every figure is written."""
    out = tmp_path / "probe.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.broker_probe", "--seconds", "2", "--backlog", "1500",
                           "--growth-seconds", "3", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = result["fetch_wait"] + [result["backlog"]["one_record_per_batch"], result["backlog"]["bulk_batches"]]
    assert [r["fetch_max_wait_ms"] for r in result["fetch_wait"]] == [50, 10, 5]
    for run in runs:
        assert run["received"] == run["events"] == 4000
        assert 0 <= run["p50"] <= run["p95"] <= run["p99"]
    assert result["backlog"]["events_before"] == 1500
    growth = result["growth"]
    assert growth["received"] == growth["events"] == 6000
    # 3 s of sends, the first second as warm-up: windows from 0 s, each with the broker's CPU share
    assert growth["by_window"][0]["from_s"] == 0.0 and sum(w["events"] for w in growth["by_window"]) >= 3500
    assert all(0 < w["cpu_share"] <= os.cpu_count() for w in growth["by_window"])


def test_latency_figure_from_result_files(tmp_path):
    from benchmarks import stream_figures as bench_figures

    windows = [{"from_s": 0.0, "events": 10, "p50": 5.0, "p99": 9.0, "cpu_share": 0.2},
               {"from_s": 5.0, "events": 10, "p50": 6.0, "p99": 12.0, "cpu_share": 0.4}]
    stream = {"latency_run": {"by_window": windows}, "plain_consumer_latency_ms": {"p99": 9.0, "by_window": windows},
              "offered_eps": 2000, "broker": {"kind": "embedded-tansu"}, "date": "2026-11-23"}
    (tmp_path / "stream.json").write_text(json.dumps(stream))
    out = tmp_path / "figure.png"
    done = CliRunner().invoke(bench_figures.main, ["--stream", str(tmp_path / "stream.json"),
                                                "--probe", str(tmp_path / "missing.json"), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [label for label, _ in bench_figures.latency_series(stream, {"growth": {"by_window": windows}})] == [
        "worker: feed -> scores record (bench)", "bare consumer, one hop (bench)", "bare consumer, one hop (broker probe)"]
    # a result file from before the per-window figures: a clear error, no empty figure
    (tmp_path / "old.json").write_text(json.dumps({"latency_ms": {"p99": 9.0}}))
    done = CliRunner().invoke(bench_figures.main, ["--stream", str(tmp_path / "old.json"), "--probe", str(tmp_path / "x"),
                                                "--out", str(tmp_path / "old.png")])
    assert done.exit_code != 0 and "no per-window latency" in done.output and not (tmp_path / "old.png").exists()
