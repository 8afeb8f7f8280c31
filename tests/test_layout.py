"""The layout's rules (issue 14, pyproject's [tool.importlinter]): checked on every test run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """offline never imports streamdetect or benchmarks; streamdetect never imports benchmarks;
    models import no data/training/evaluation; no import cycles inside streamdetect or offline."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_offline_imports_nothing_of_the_worker_even_lazily():
    """import-linter sees function-level imports too; this names the file if one slips in."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "offline").rglob("*.py")
                 if any(m.split(".")[0] in ("streamdetect", "benchmarks") for m in _imported_modules(p))]
    assert offenders == []


def test_only_settings_classes_read_the_environment():
    readers = []
    for package in ("offline", "streamdetect"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if "os.environ" in text or "os.getenv" in text:
                readers.append(str(path.relative_to(ROOT)))
    # the worker-process helper passes the parent's environment on to the child it spawns (it reads nothing)
    assert readers == ["streamdetect/worker_process.py"]


def test_the_worker_image_holds_no_harness():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "benchmarks" not in dockerfile.replace("--exclude benchmarks", "")
