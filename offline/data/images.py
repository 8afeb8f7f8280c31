"""Image datasets: MNIST, Fashion-MNIST (IDX files) and CIFAR-10 (python batches).

Every loader returns an :class:`ImageData`: float32 images in [0, 1] shaped (N, C, H, W), int64
labels, class names and class aliases (``"shoe"`` in Fashion-MNIST = sneaker, sandal, ankle boot).

MNIST and Fashion-MNIST are four gzipped IDX files each, resolved through the :class:`DataStore`
(cache, mirror, canonical download) and verified by the sha256 of their decompressed content.

CIFAR-10 is ``cifar-10-python.tar.gz`` from its canonical home. Its publisher gives md5 sums
(of the archive and, as torchvision carries them, of every member), not sha256; we verify every
*member* we read by its md5 (content, independent of gzip), so a re-compressed copy still loads.
The batches are Python pickles: they are read with :class:`_ArrayOnlyUnpickler`, which builds
numpy arrays and plain containers and refuses every other global, so reading data never runs
code. No CIFAR-10 copy is reachable on the development machines: the loader is tested on a small
archive generated in the same format (``tests/test_images_data.py``).

>>> from offline.data.store import DataStore
>>> data = load_images("mnist", DataStore(mirror_dir="../shared/data"), limit=100)  # doctest: +SKIP
>>> data.x_train.shape, data.x_train.dtype
((100, 1, 28, 28), dtype('float32'))
"""

from __future__ import annotations

import _codecs
import gzip
import hashlib
import io
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from offline.data.store import DataError, DataStore, RemoteFile

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

MNIST_HOME = "http://yann.lecun.com/exdb/mnist/"
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
FASHION_HOME = "https://github.com/zalandoresearch/fashion-mnist"
FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

_IDX_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
#: names that stand for a group of classes (the normal class of a one-class run may be a group)
CLASS_ALIASES = {
    "mnist": {},
    "fashion-mnist": {"shoe": (5, 7, 9), "shoes": (5, 7, 9), "footwear": (5, 7, 9), "tshirt": (0,), "t-shirt": (0,), "top": (0,), "boot": (9,)},
    "cifar10": {"car": (1,), "vehicle": (0, 1, 8, 9), "animal": (2, 3, 4, 5, 6, 7)},
}

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_HOME = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_ARCHIVE = "cifar10/cifar-10-python.tar.gz"
#: md5 of each member's content, as published for the canonical archive (torchvision carries the same)
CIFAR10_MEMBER_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10")


@dataclass
class ImageData:
    name: str
    x_train: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    aliases: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def resolve_class(self, value) -> tuple[int, ...]:
        """``2``, ``"2"``, ``"sneaker"`` or an alias such as ``"shoe"`` -> tuple of class indices."""
        return resolve_class(self.name, value)


def resolve_class(dataset: str, value) -> tuple[int, ...]:
    names = CLASS_NAMES[dataset]
    if isinstance(value, (int, np.integer)):
        index = int(value)
    else:
        text = str(value).strip().lower()
        if text.lstrip("-").isdigit():
            index = int(text)
        elif text in CLASS_ALIASES[dataset]:
            return tuple(CLASS_ALIASES[dataset][text])
        elif text in [n.lower() for n in names]:
            index = [n.lower() for n in names].index(text)
        else:
            known = ", ".join([*names, *CLASS_ALIASES[dataset]])
            raise ValueError(f"unknown class {value!r} for {dataset}; use 0-{len(names) - 1} or one of: {known}")
    if not 0 <= index < len(names):
        raise ValueError(f"class {index} out of range for {dataset} (0-{len(names) - 1})")
    return (index,)


def class_label(dataset: str, classes: tuple[int, ...]) -> str:
    """Short name of a class group for file names and tables: ``2``, ``shoe``, ``5+7``."""
    for alias, members in CLASS_ALIASES[dataset].items():
        if tuple(members) == tuple(classes) and len(members) > 1:
            return alias
    return "+".join(str(c) for c in classes)


# -- IDX ---------------------------------------------------------------------------------------
def _idx_file(dataset: str, name: str) -> RemoteFile:
    if dataset == "mnist":
        urls = tuple(base + name for base in MNIST_MIRRORS) + (MNIST_HOME + name,)
        home = MNIST_HOME
    else:
        urls, home = (FASHION_BASE + name,), FASHION_HOME
    return RemoteFile(path=f"{dataset}/{name}", sha256=_IDX_SHA256[dataset][name], urls=urls, homepage=home)


def read_idx(path: Path, *, limit: int | None = None) -> np.ndarray:
    """Parse a (gzipped) IDX file; reads only the first ``limit`` items when given."""
    with open(path, "rb") as raw:
        opener = gzip.open if raw.read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as stream:
        header = stream.read(4)
        if len(header) != 4 or header[0] != 0 or header[1] != 0 or header[2] != 0x08:
            raise DataError(f"{path}: not an unsigned-byte IDX file (magic {header.hex()})")
        ndim = header[3]
        dims = [int.from_bytes(stream.read(4), "big") for _ in range(ndim)]
        count = dims[0] if limit is None else min(dims[0], int(limit))
        item = int(np.prod(dims[1:])) if ndim > 1 else 1
        payload = stream.read(count * item)
    if len(payload) != count * item:
        raise DataError(f"{path}: truncated IDX file ({len(payload)} bytes of {count * item} expected)")
    return np.frombuffer(payload, dtype=np.uint8).reshape([count, *dims[1:]])


def _load_idx_dataset(dataset: str, store: DataStore, limit: int | None) -> ImageData:
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(store.path(_idx_file(dataset, f"{prefix}-images-idx3-ubyte.gz")), limit=limit)
        labels = read_idx(store.path(_idx_file(dataset, f"{prefix}-labels-idx1-ubyte.gz")), limit=limit)
        if len(images) != len(labels):
            raise DataError(f"{dataset} {split}: {len(images)} images but {len(labels)} labels")
        parts[split] = (images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64))
    return ImageData(dataset, *parts["train"], *parts["test"], CLASS_NAMES[dataset], dict(CLASS_ALIASES[dataset]))


# -- CIFAR-10 ----------------------------------------------------------------------------------
class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dtypes and builtin containers; every other global is refused."""

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":  # how Python 3 writes bytes at pickle protocol 2
            return _codecs.encode
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            raise pickle.UnpicklingError("numpy scalars are not expected in CIFAR batches")
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data file")


def safe_unpickle(payload: bytes) -> object:
    return _ArrayOnlyUnpickler(io.BytesIO(payload), encoding="bytes").load()


def _md5(payload: bytes) -> str:
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()


def _cifar_archive(store: DataStore) -> Path:
    """Cache, then mirror, then the canonical URL (member hashes are checked when reading)."""
    cached = Path(store.data_dir) / CIFAR10_ARCHIVE
    if cached.exists():
        return cached
    if store.mirror_dir is not None and (Path(store.mirror_dir) / CIFAR10_ARCHIVE).exists():
        return Path(store.mirror_dir) / CIFAR10_ARCHIVE
    if store.allow_download:
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(".gz.part")
        try:
            with urllib.request.urlopen(CIFAR10_URL, timeout=60) as response, open(part, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
            part.replace(cached)
            return cached
        except OSError as exc:
            part.unlink(missing_ok=True)
            reason = f"download from {CIFAR10_URL} failed: {exc}"
    else:
        reason = "not found and downloads are off"
    where = f"cache {cached}" + (f", mirror {Path(store.mirror_dir) / CIFAR10_ARCHIVE}" if store.mirror_dir else "")
    raise DataError(
        f"dataset file {CIFAR10_ARCHIVE} ({reason}; looked in {where}). Get cifar-10-python.tar.gz from "
        f"{CIFAR10_URL} ({CIFAR10_HOME}) and place it at {cached}."
    )


def load_cifar10_archive(path: Path, *, member_md5: dict[str, str] | None = None, limit: int | None = None) -> ImageData:
    """Read a ``cifar-10-python.tar.gz``; every member read is checked against ``member_md5``."""
    member_md5 = CIFAR10_MEMBER_MD5 if member_md5 is None else member_md5
    payloads: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in member_md5:
                    payloads[base] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read as a tar.gz archive ({exc}); delete it and fetch it again from {CIFAR10_URL}") from exc
    for name, expected in member_md5.items():
        if name not in payloads:
            raise DataError(f"{path}: member cifar-10-batches-py/{name} is missing; the archive is incomplete (get it from {CIFAR10_URL})")
        actual = _md5(payloads[name])
        if actual != expected:
            raise DataError(f"{path}: member {name} has md5 {actual}, expected {expected}; the archive is corrupt or a different release")

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            entry = safe_unpickle(payloads[name])
            data, labels = entry[b"data"], entry[b"labels"]
        except (pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError) as exc:
            raise DataError(f"{path}: member {name} is not a CIFAR-10 batch ({exc})") from exc
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise DataError(f"{path}: member {name} has data of shape {data.shape} and {len(labels)} labels")
        return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)

    train_names = sorted(n for n in member_md5 if n.startswith("data_batch_"))
    train = [batch(n) for n in train_names]
    x_train, y_train = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    x_test, y_test = batch("test_batch")
    names = CLASS_NAMES["cifar10"]
    if "batches.meta" in payloads:
        meta = safe_unpickle(payloads["batches.meta"])
        raw = meta.get(b"label_names") if isinstance(meta, dict) else None
        if raw:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    if limit is not None:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    return ImageData(
        "cifar10",
        x_train.astype(np.float32) / 255.0, y_train, x_test.astype(np.float32) / 255.0, y_test,
        names, dict(CLASS_ALIASES["cifar10"]),
    )


# -- entry point -------------------------------------------------------------------------------
def load_images(name: str, store: DataStore, *, limit: int | None = None) -> ImageData:
    """Load an image dataset by name; ``limit`` keeps the first rows of each split (tests)."""
    if name in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(name, store, limit)
    if name == "cifar10":
        return load_cifar10_archive(_cifar_archive(store), limit=limit)
    raise KeyError(f"unknown image dataset {name!r}; known: {', '.join(IMAGE_DATASETS)}")


def is_image_dataset(name: str) -> bool:
    return name in IMAGE_DATASETS
