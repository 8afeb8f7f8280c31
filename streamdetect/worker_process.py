"""One worker subprocess, ``faust -A streamdetect.app worker``, started and watched from Python.

Shared by ``python -m streamdetect.demo`` and the measuring harness in ``benchmarks/`` (the
stream bench, the NAB replay through Kafka) and the integration tests: spawn it pointed at a
broker, wait until ``/ready`` answers, read its views, kill -9 or stop it, read its memory and CPU.
The child reads its settings from the environment, as any deployment would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamdetect.settings import Settings


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class WorkerProcess:
    """One worker subprocess (``faust -A <app> worker``) with its web port and log."""

    settings: Settings
    env: dict[str, str]  # more environment for the child; wins over what ``spawn`` derives from ``settings``
    bootstrap: str
    log_path: Path
    app: str = "streamdetect.app"
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def port(self) -> int:
        return self.settings.web_port

    def spawn(self) -> None:
        root = Path(__file__).resolve().parents[1]
        env = {
            **os.environ, "STREAMDETECT_KAFKA__BOOTSTRAP": self.bootstrap,
            "STREAMDETECT_WEB_PORT": str(self.port),
            "STREAMDETECT_REGISTRY_DIR": str(Path(self.settings.registry_dir).resolve()),
            "STREAMDETECT_DATA__DATA_DIR": str(Path(self.settings.data.data_dir).resolve()),
            **({"STREAMDETECT_DATA__MIRROR_DIR": str(Path(self.settings.data.mirror_dir).resolve())}
               if self.settings.data.mirror_dir else {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            **self.env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", self.app, "worker", "-l", "info"], env=env, stdout=handle,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1

    def get(self, view: str, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{view}", timeout=timeout) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Seconds until ``/ready`` answers 200 (bundle loaded, partitions held)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with status {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("ready", timeout=2)
                return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.3)
        raise TimeoutError(f"worker not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def start(self, timeout: float = 180.0) -> float:
        self.spawn()
        return self.wait_ready(timeout)

    def metrics(self) -> dict:
        return self.get("metrics.json")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def memory_mb(self) -> dict[str, float]:
        """Current (VmRSS) and peak (VmHWM) resident memory of the worker process, MiB."""
        out = {}
        with open(f"/proc/{self.process.pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) / 1024
        return {"rss_mb": round(out.get("VmRSS", 0.0), 1), "peak_rss_mb": round(out.get("VmHWM", 0.0), 1)}

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the worker process has used so far (all its threads)."""
        return cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.25, what: str = "condition") -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not met within {timeout:.0f}s")
        time.sleep(interval)
    return time.monotonic() - started
