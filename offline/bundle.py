"""Model bundles: the only thing that crosses from the offline half to the worker.

A bundle is a directory holding ``model.safetensors`` (tensors only: loading can never run code),
optionally ``calibration_rows.safetensors`` (the featurized held-out normal rows behind the
calibration scores, which a second stage learnt from analysts' labels is calibrated on; read only
then, by ``load_calibration_rows``) and ``manifest.json`` (model name and hyperparameters, feature schema, score definition,
calibration scores of held-out normal rows, training-data fingerprint, offline metrics,
creation time, code version and the sha256 of the weights file). ``load_bundle`` verifies the
hash and the manifest and refuses, with a message naming file and problem, anything that does
not match.

Bundles are kept in a registry directory, ``<registry>/<feed>/<version>/``, with a pointer file
``<registry>/<feed>/pointer.json`` naming the version in service and the promotion history
(so a rollback is one step back in that history).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from offline.detectors import Detector, detector_class
from offline.features.schema import FeatureSchema

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CALIBRATION_ROWS = "calibration_rows.safetensors"
MANIFEST = "manifest.json"
POINTER = "pointer.json"
MAX_CALIBRATION_SCORES = 20_000
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class BundleError(RuntimeError):
    """A bundle is missing, malformed or does not match its manifest."""


@dataclass
class Bundle:
    path: Path
    manifest: dict
    detector: Detector
    schema: FeatureSchema
    calibration_scores: np.ndarray  # sorted ascending

    @property
    def version(self) -> str:
        # the registry names a bundle by its directory: one copied into another registry (or under
        # another version) is that version there, whatever its manifest said where it was written
        if _VERSION_RE.match(self.path.name):
            return self.path.name
        return self.manifest.get("version") or self.path.name

    @property
    def model_name(self) -> str:
        return self.manifest["model"]["name"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def array_fingerprint(X: np.ndarray) -> str:
    X = np.ascontiguousarray(X, dtype=np.float32)
    return f"sha256:{hashlib.sha256(X.tobytes()).hexdigest()}:{X.shape[0]}x{X.shape[1] if X.ndim > 1 else 1}"


def code_version() -> str:
    """``<package version>+<git commit>``, or the ``code_version`` setting where one is set."""
    from importlib.metadata import PackageNotFoundError, version

    from offline.settings import OfflineSettings

    if configured := OfflineSettings().code_version:
        return configured
    try:
        package = version("streamdetect")
    except PackageNotFoundError:
        package = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{package}+{commit}" if commit else package


def save_bundle(
    directory: Path,
    *,
    detector: Detector,
    schema: FeatureSchema,
    calibration_scores: np.ndarray,
    feed: str,
    dataset: str,
    score_definition: str,
    training_fingerprint: str,
    metrics: dict | None = None,
    extra: dict | None = None,
    calibration_rows: np.ndarray | None = None,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = detector.state_tensors()
    weights = directory / WEIGHTS
    save_file(tensors, str(weights))
    rows_entry = {}
    if calibration_rows is not None:
        rows = np.ascontiguousarray(calibration_rows, dtype=np.float32)
        if len(rows) > MAX_CALIBRATION_SCORES:  # a fixed, evenly spread subset
            rows = rows[np.linspace(0, len(rows) - 1, MAX_CALIBRATION_SCORES).round().astype(int)]
        save_file({"X": torch.from_numpy(rows)}, str(directory / CALIBRATION_ROWS))
        rows_entry = {"calibration_rows": {"file": CALIBRATION_ROWS, "rows": len(rows),
                                           "sha256": file_sha256(directory / CALIBRATION_ROWS)}}
    calibration = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    if len(calibration) > MAX_CALIBRATION_SCORES:  # keep evenly spaced order statistics
        calibration = calibration[np.linspace(0, len(calibration) - 1, MAX_CALIBRATION_SCORES).round().astype(int)]
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": directory.name,
        "feed": feed,
        "dataset": dataset,
        "model": {"name": detector.name, "params": _jsonable(detector.get_params())},
        "features": {**schema.to_dict(), "output_names": schema.output_names, "n_features": schema.n_features},
        "score": {"definition": score_definition, "higher_is_anomalous": True},
        "calibration_scores": calibration.tolist(),
        "training_fingerprint": training_fingerprint,
        "metrics": _jsonable(metrics or {}),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "weights_sha256": file_sha256(weights),
        **rows_entry,
        **({"extra": _jsonable(extra)} if extra else {}),
    }
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(directory / MANIFEST)
    return directory


def load_bundle(directory: Path) -> Bundle:
    """Load and verify a bundle; raises ``BundleError`` saying what is wrong and where."""
    directory = Path(directory)
    manifest_path, weights = directory / MANIFEST, directory / WEIGHTS
    for path in (manifest_path, weights):
        if not path.exists():
            raise BundleError(f"{path}: missing; a bundle needs {MANIFEST} and {WEIGHTS} (train one with python -m offline.train)")
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {manifest.get('format_version')!r}, this code reads {FORMAT_VERSION}")
        name, params = manifest["model"]["name"], manifest["model"]["params"]
        expected_hash = manifest["weights_sha256"]
        schema = FeatureSchema.from_dict(manifest["features"])
        calibration = np.sort(np.asarray(manifest["calibration_scores"], dtype=np.float64))
        if calibration.ndim != 1 or len(calibration) < 10 or not np.isfinite(calibration).all():
            raise ValueError("calibration_scores must hold at least 10 finite numbers")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{manifest_path}: malformed manifest ({type(exc).__name__}: {exc}); retrain or restore this bundle") from exc
    actual_hash = file_sha256(weights)
    if actual_hash != expected_hash:
        raise BundleError(
            f"{weights}: sha256 {actual_hash} does not match the manifest's weights_sha256 {expected_hash}; "
            "the weights were changed or damaged after the bundle was written, refusing to load it"
        )
    try:
        tensors = load_file(str(weights))
        detector = detector_class(name).from_state(params, tensors, n_features=schema.n_features)
    except (SafetensorError, KeyError, RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
        raise BundleError(f"{weights}: cannot build model {name!r} from it ({exc})") from exc
    return Bundle(path=directory, manifest=manifest, detector=detector, schema=schema, calibration_scores=calibration)


def load_calibration_rows(bundle: Bundle) -> np.ndarray | None:
    """The bundle's featurized calibration rows (None when it has none), verified by sha256."""
    entry = bundle.manifest.get("calibration_rows")
    if not entry:
        return None
    path = bundle.path / entry["file"]
    if not path.exists() or file_sha256(path) != entry["sha256"]:
        raise BundleError(f"{path}: missing or its sha256 does not match the manifest's calibration_rows entry; "
                          "retrain or restore this bundle")
    try:
        rows = load_file(str(path))["X"].numpy()
    except (SafetensorError, KeyError) as exc:
        raise BundleError(f"{path}: unreadable calibration rows ({exc})") from exc
    if rows.ndim != 2 or rows.shape[1] != bundle.schema.n_features:
        raise BundleError(f"{path}: calibration rows of shape {rows.shape}, the schema has {bundle.schema.n_features} features")
    return rows


# -- the registry --------------------------------------------------------------------------
def feed_dir(registry: Path, feed: str) -> Path:
    return Path(registry) / feed


def list_versions(registry: Path, feed: str) -> list[str]:
    root = feed_dir(registry, feed)
    if not root.exists():
        return []
    return sorted((p.name for p in root.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)), key=lambda v: int(v[1:]))


def next_version_dir(registry: Path, feed: str) -> Path:
    versions = list_versions(registry, feed)
    number = int(versions[-1][1:]) + 1 if versions else 1
    return feed_dir(registry, feed) / f"v{number:04d}"


def read_pointer(registry: Path, feed: str) -> dict:
    path = feed_dir(registry, feed) / POINTER
    if not path.exists():
        return {"current": None, "history": []}
    try:
        pointer = json.loads(path.read_text())
        return {"current": pointer["current"], "history": list(pointer["history"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: malformed registry pointer ({exc}); fix it or promote a version again") from exc


def _write_pointer(registry: Path, feed: str, pointer: dict) -> None:
    path = feed_dir(registry, feed) / POINTER
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{POINTER}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(pointer, indent=1))
    tmp.replace(path)  # atomic: a reader sees the old or the new pointer, never half of one


def current_version(registry: Path, feed: str) -> str | None:
    return read_pointer(registry, feed)["current"]


def promote(registry: Path, feed: str, version: str) -> dict:
    if version not in list_versions(registry, feed):
        raise BundleError(f"{feed_dir(registry, feed) / version}: no such bundle version to promote")
    pointer = read_pointer(registry, feed)
    if pointer["current"] != version:
        pointer = {"current": version, "history": pointer["history"] + [version]}
        _write_pointer(registry, feed, pointer)
    return pointer


def rollback(registry: Path, feed: str) -> dict:
    pointer = read_pointer(registry, feed)
    if len(pointer["history"]) < 2:
        raise BundleError(f"{feed_dir(registry, feed)}: nothing to roll back to (history {pointer['history']})")
    history = pointer["history"][:-1]
    pointer = {"current": history[-1], "history": history}
    _write_pointer(registry, feed, pointer)
    return pointer


def load_current(registry: Path, feed: str) -> Bundle:
    version = current_version(registry, feed)
    if version is None:
        raise BundleError(
            f"{feed_dir(registry, feed)}: no bundle in service for feed {feed!r}; "
            f"train one with: python -m offline.train --feed {feed} ..."
        )
    return load_bundle(feed_dir(registry, feed) / version)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
