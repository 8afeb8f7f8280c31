"""Image loaders: slices of the real MNIST / Fashion-MNIST mirror files, and CIFAR-10 on a small
archive generated here in the canonical format (no CIFAR-10 copy is reachable on our machines)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from offline.data.images import (
    CIFAR10_MEMBER_MD5,
    DataError,
    load_cifar10_archive,
    load_images,
    resolve_class,
)
from offline.data.store import DataStore


@pytest.fixture(scope="module")
def mirror(settings) -> Path:
    if settings.data.mirror_dir is None or not (Path(settings.data.mirror_dir) / "mnist").exists():
        pytest.skip("STREAMDETECT_DATA__MIRROR_DIR does not point at the data mirror")
    return Path(settings.data.mirror_dir)


@pytest.fixture(scope="module")
def store(mirror, tmp_path_factory) -> DataStore:
    return DataStore(tmp_path_factory.mktemp("image-cache"), mirror, allow_download=False)


@pytest.mark.parametrize(
    "name, first_train_labels, first_test_labels",
    [("mnist", [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
     ("fashion-mnist", [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])],
)
def test_idx_loaders_read_the_real_files(store, name, first_train_labels, first_test_labels):
    data = load_images(name, store, limit=300)
    assert data.x_train.shape == (300, 1, 28, 28) and data.x_test.shape == (300, 1, 28, 28)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() == pytest.approx(1.0)
    assert data.y_train[:10].tolist() == first_train_labels
    assert data.y_test[:10].tolist() == first_test_labels
    assert len(data.class_names) == 10
    # background is black and digits/garments have ink: the mean is far from 0 and 1
    assert 0.05 < data.x_train.mean() < 0.5


def test_class_names_and_aliases():
    assert resolve_class("fashion-mnist", "shoe") == (5, 7, 9)
    assert resolve_class("fashion-mnist", "Sneaker") == (7,)
    assert resolve_class("mnist", "2") == (2,) and resolve_class("mnist", 3) == (3,)
    with pytest.raises(ValueError, match="unknown class"):
        resolve_class("mnist", "cat")
    with pytest.raises(ValueError, match="out of range"):
        resolve_class("mnist", 10)


def test_a_corrupt_idx_file_is_a_clear_error(tmp_path):
    target = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    target.parent.mkdir(parents=True)
    with gzip.open(target, "wb") as handle:
        handle.write(b"\x00\x00\x08\x03" + b"\x00" * 100)
    with pytest.raises(DataError) as info:
        load_images("mnist", DataStore(tmp_path, None, allow_download=False))
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "ba891046e6505d7a" in message


def test_a_missing_idx_file_names_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match="yann.lecun.com|ossci-datasets"):
        load_images("mnist", DataStore(tmp_path, None, allow_download=False))


# -- CIFAR-10 in its canonical format, generated ----------------------------------------------
def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 255, 0, 128  # first image: R=255, G=0, B=128
    return {b"batch_label": b"generated", b"labels": [int(v) for v in rng.integers(0, 10, n)], b"data": data,
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


def _write_archive(path: Path, members: dict[str, bytes]) -> dict[str, str]:
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return {name: hashlib.md5(payload).hexdigest() for name, payload in members.items()}


@pytest.fixture
def cifar_members() -> dict[str, bytes]:
    members = {f"data_batch_{i}": pickle.dumps(_batch(20, i), protocol=2) for i in range(1, 6)}
    members["test_batch"] = pickle.dumps(_batch(10, 9), protocol=2)
    members["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer",
                                                                               "dog", "frog", "horse", "ship", "truck"]],
                                            b"num_cases_per_batch": 10000, b"num_vis": 3072}, protocol=2)
    return members


def test_cifar10_loader_on_a_generated_archive(tmp_path, cifar_members):
    path = tmp_path / "cifar-10-python.tar.gz"
    md5 = _write_archive(path, cifar_members)
    data = load_cifar10_archive(path, member_md5=md5)
    assert data.x_train.shape == (100, 3, 32, 32) and data.x_test.shape == (10, 3, 32, 32)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() and data.x_train.max() <= 1
    first = data.x_train[0]
    assert first[0].min() == 1.0 and first[1].max() == 0.0 and first[2].mean() == pytest.approx(128 / 255)
    assert data.y_train[:20].tolist() == _batch(20, 1)[b"labels"]
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
    assert set(CIFAR10_MEMBER_MD5) == set(cifar_members)  # the canonical member list


def test_cifar10_refuses_a_member_with_the_wrong_hash(tmp_path, cifar_members):
    path = tmp_path / "cifar-10-python.tar.gz"
    md5 = _write_archive(path, cifar_members)
    md5["data_batch_3"] = "0" * 32
    with pytest.raises(DataError, match="data_batch_3 has md5"):
        load_cifar10_archive(path, member_md5=md5)


class _Exploit:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_never_runs_code_from_the_archive(tmp_path, cifar_members):
    cifar_members["data_batch_2"] = pickle.dumps({b"data": _Exploit(), b"labels": []}, protocol=2)
    path = tmp_path / "cifar-10-python.tar.gz"
    md5 = _write_archive(path, cifar_members)
    with pytest.raises(DataError, match="refusing to load global"):
        load_cifar10_archive(path, member_md5=md5)


def test_cifar10_missing_archive_names_the_canonical_url(tmp_path):
    with pytest.raises(DataError, match="cs.toronto.edu/~kriz/cifar-10-python.tar.gz"):
        load_images("cifar10", DataStore(tmp_path, None, allow_download=False))
