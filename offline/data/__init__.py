"""Dataset loaders. Each knows its files' canonical homes and content hashes (see ``store.py``).

``load_tabular(name, store)`` returns a ``TabularData``; image loaders live beside it.
New datasets register a loader in ``TABULAR_LOADERS`` (lazy imports keep start-up light).
"""

from __future__ import annotations

from importlib import import_module

from offline.data.store import DataError, DataStore, RemoteFile
from offline.data.tabular import TabularData

TABULAR_LOADERS: dict[str, str] = {
    "creditcard": "offline.data.creditcard:load_creditcard",
    "kddcup99": "offline.data.kdd:load_kddcup99",
    "nsl-kdd": "offline.data.kdd:load_nsl_kdd",
    "nab": "offline.data.nab:load_nab_tabular",
}
#: every dataset's files (a tuple of RemoteFile), for ``python -m offline.data fetch``
DATASET_FILES: dict[str, str] = {
    "creditcard": "offline.data.creditcard:FILES",
    "kddcup99": "offline.data.kdd:KDDCUP99_FILES",
    "nsl-kdd": "offline.data.kdd:NSL_KDD_FILES",
    "nab": "offline.data.nab:FILES",
}


def dataset_files(name: str) -> tuple[RemoteFile, ...]:
    try:
        module, attr = DATASET_FILES[name].split(":")
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASET_FILES))}") from None
    return getattr(import_module(module), attr)


def load_tabular(name: str, store: DataStore) -> TabularData:
    try:
        target = TABULAR_LOADERS[name]
    except KeyError:
        raise KeyError(f"unknown tabular dataset {name!r}; known: {', '.join(sorted(TABULAR_LOADERS))}") from None
    module, func = target.split(":")
    return getattr(import_module(module), func)(store)


__all__ = ["DataError", "DataStore", "RemoteFile", "TabularData", "TABULAR_LOADERS", "DATASET_FILES", "dataset_files", "load_tabular"]
