"""The data store: cache -> mirror -> download, verified by content hash, clear errors."""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from offline.data import DataError, DataStore, RemoteFile, load_tabular
from offline.data.creditcard import CREDITCARD_CSV
from streamdetect.settings import Settings


def _gz(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        handle.write(content)
    return hashlib.sha256(content).hexdigest()


def test_mirror_file_is_verified_and_cached(tmp_path):
    sha = _gz(tmp_path / "mirror/demo/file.csv.gz", b"a,b\n1,2\n")
    store = DataStore(tmp_path / "cache", tmp_path / "mirror", allow_download=False)
    path = store.path(RemoteFile("demo/file.csv.gz", sha))
    assert path == tmp_path / "cache/demo/file.csv.gz"
    assert gzip.decompress(path.read_bytes()) == b"a,b\n1,2\n"
    # a second store finds the cached copy even with the mirror gone
    os.remove(tmp_path / "mirror/demo/file.csv.gz")
    assert DataStore(tmp_path / "cache", None, allow_download=False).path(RemoteFile("demo/file.csv.gz", sha)) == path


def test_corrupt_file_is_refused_with_file_hash_and_remedy(tmp_path):
    good = _gz(tmp_path / "mirror/demo/file.csv.gz", b"original")
    _gz(tmp_path / "cache/demo/file.csv.gz", b"tampered")
    store = DataStore(tmp_path / "cache", tmp_path / "mirror", allow_download=False)
    with pytest.raises(DataError) as info:
        store.path(RemoteFile("demo/file.csv.gz", good, urls=("https://example.org/file.csv.gz",)))
    message = str(info.value)
    assert "cache/demo/file.csv.gz" in message and good in message and "https://example.org/file.csv.gz" in message


def test_truncated_gzip_is_a_data_error(tmp_path):
    sha = _gz(tmp_path / "cache/demo/file.gz", b"x" * 100_000)
    data = (tmp_path / "cache/demo/file.gz").read_bytes()
    (tmp_path / "cache/demo/file.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="damaged"):
        DataStore(tmp_path / "cache", None, allow_download=False).path(RemoteFile("demo/file.gz", sha))


def test_missing_file_names_what_and_where(tmp_path):
    store = DataStore(tmp_path / "cache", tmp_path / "mirror", allow_download=False)
    with pytest.raises(DataError) as info:
        store.path(CREDITCARD_CSV)
    message = str(info.value)
    assert "creditcard/creditcard.csv.gz" in message and CREDITCARD_CSV.sha256 in message
    assert "STREAMDETECT_DATA__MIRROR_DIR" in message


def test_creditcard_loads_from_the_real_mirror(tmp_path):
    settings = Settings()
    if settings.data.mirror_dir is None:
        pytest.fail("set STREAMDETECT_DATA__MIRROR_DIR to the dataset mirror (make test does)")
    data = load_tabular("creditcard", DataStore(settings.data.data_dir, settings.data.mirror_dir, allow_download=False))
    assert len(data) == 284_807 and int(data.labels.sum()) == 492
    assert list(data.features.columns) == [f"V{i}" for i in range(1, 29)] + ["Amount", "hour_sin", "hour_cos"]
    assert np.all(np.diff(data.extra["Time"].to_numpy()) >= 0)
