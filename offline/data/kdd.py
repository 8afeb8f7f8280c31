"""KDD Cup 1999 (10% training file) and NSL-KDD (KDDTrain+, KDDTest+): network connection records.

Each row is one TCP/UDP/ICMP connection summarised by 41 features (names and types parsed from
``kddcup.names``) and labelled ``normal`` or with an attack name. Three columns are categorical
(``protocol_type``, ``service``, ``flag``); the other 38 are numeric (the 0/1 flags that
``kddcup.names`` calls "symbolic", e.g. ``logged_in``, are numeric 0/1 here). Byte counts and
durations are heavy-tailed (``src_bytes`` spans 0..7e8) and go through log1p in the feature schema.

``labels`` follow the usual reading, 1 = attack. The raw label (``normal.``, ``smurf.``, ...
for KDD Cup 99; ``normal``, ``neptune``, ... for NSL-KDD) is kept in ``extra["label"]``, plus
``extra["difficulty"]`` (NSL-KDD's count of the 21 learners that got the row right) and
``extra["part"]`` (``train``/``test``) for NSL-KDD, whose two files come as one table so that a
protocol split can hand back row indices. The DAGMM/EGBAD benchmark protocol reads the labels the
other way round (``normal.`` is the anomaly): see ``offline.training.protocols.dagmm_split``.

Files and hashes: only the 10% training file and ``kddcup.names`` of KDD Cup 99 are verified here
(sha256 of decompressed content, equal to the UCI files). The full training file and the labelled
test file are listed in ``UNVERIFIED_KDDCUP99_URLS`` with their canonical addresses, but their
hashes are not known to this project, so no loader reads them. NSL-KDD's canonical home is the
University of New Brunswick CIC site (download behind a form); the download URLs are the
byte-exact public GitHub copies.
"""

from __future__ import annotations

from collections.abc import Iterator
import datetime as dt
import re

import numpy as np
import pandas as pd

from offline.data.store import DataStore, RemoteFile
from offline.data.tabular import TabularData

_UCI = "http://kdd.ics.uci.edu/databases/kddcup99/"
KDDCUP99_HOME = _UCI + "kddcup99.html"
NSL_KDD_HOME = "https://www.unb.ca/cic/datasets/nsl.html"
_NSL_GITHUB = "https://raw.githubusercontent.com/defcom17/NSL_KDD/master/"
_NSL_GITHUB_2 = "https://raw.githubusercontent.com/jmnwong/NSL-KDD-Dataset/master/"

KDDCUP99_10_PERCENT = RemoteFile(
    path="kddcup99/kddcup.data_10_percent.gz",
    sha256="f8c8267ebcd9c0ed1fd7d6277fe5bfff8732e9b7db8e61b873542b2a534b6f9a",
    urls=(_UCI + "kddcup.data_10_percent.gz",),
    homepage=KDDCUP99_HOME,
)
KDDCUP99_NAMES = RemoteFile(
    path="kddcup99/kddcup.names",  # CRLF line endings, as UCI serves it
    sha256="fab3e5c771a72ae472c9dae56d62138dd95b9f880e36e8ea5a72f6ceb10efeb9",
    urls=(_UCI + "kddcup.names",),
    homepage=KDDCUP99_HOME,
)
#: canonical addresses of the other KDD Cup 99 files; their sha256 is not known here, so they are
#: not RemoteFiles and nothing loads them (a loader must never read an unverified file)
UNVERIFIED_KDDCUP99_URLS = {
    "full training data (4,898,431 rows)": _UCI + "kddcup.data.gz",
    "labelled test data (311,029 rows)": _UCI + "corrected.gz",
}
NSL_KDD_TRAIN = RemoteFile(
    path="nsl-kdd/KDDTrain+.txt.gz",
    sha256="1b86d2f957b33082081bba410fe129b475efebcc13c9014c3f447c8271aadf95",
    urls=(_NSL_GITHUB + "KDDTrain%2B.txt", _NSL_GITHUB_2 + "KDDTrain%2B.txt"),
    homepage=NSL_KDD_HOME,
)
NSL_KDD_TEST = RemoteFile(
    path="nsl-kdd/KDDTest+.txt.gz",
    sha256="fa46b0935342616aa83b7c2578db355b6a7aaabbc492248172c7a1e8b7ab8f84",
    urls=(_NSL_GITHUB + "KDDTest%2B.txt", _NSL_GITHUB_2 + "KDDTest%2B.txt"),
    homepage=NSL_KDD_HOME,
)
KDDCUP99_FILES = (KDDCUP99_10_PERCENT, KDDCUP99_NAMES)
NSL_KDD_FILES = (NSL_KDD_TRAIN, NSL_KDD_TEST, KDDCUP99_NAMES)  # NSL-KDD has no names file of its own

CATEGORICAL = ["protocol_type", "service", "flag"]
#: heavy-tailed counts (bytes, seconds, per-connection counters): log1p before standardising
LOG_SCALE = ["duration", "src_bytes", "dst_bytes", "hot", "num_failed_logins", "num_compromised", "num_root",
             "num_file_creations", "num_shells", "num_access_files", "wrong_fragment", "urgent", "count",
             "srv_count", "dst_host_count", "dst_host_srv_count"]
EXPECTED_ROWS = {"kddcup99": 494_021, "nsl-kdd/train": 125_973, "nsl-kdd/test": 22_544}
_NAME_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(continuous|symbolic)\s*\.\s*$")


def parse_names(text: str) -> list[tuple[str, str]]:
    """``kddcup.names`` -> ``[(column, "continuous"|"symbolic"), ...]`` (41 entries).

    The first line lists the label values; every further non-empty line is ``name: type.``.
    """
    columns = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        if not line.strip():
            continue
        match = _NAME_LINE.match(line)
        if match is None:
            raise ValueError(f"kddcup.names line {number}: cannot parse {line!r} (expected 'name: continuous.')")
        columns.append((match.group(1), match.group(2)))
    if len(columns) != 41:
        raise ValueError(f"kddcup.names: {len(columns)} columns, expected 41")
    return columns


def feature_columns(store: DataStore) -> list[str]:
    """The 41 feature names in file order, parsed from the verified ``kddcup.names``."""
    return [name for name, _ in parse_names(store.path(KDDCUP99_NAMES).read_text())]


def _read(path, names: list[str], expected_rows: int) -> pd.DataFrame:
    dtypes = {name: "category" if name in CATEGORICAL else "float32" for name in names}
    dtypes.update(label="str", difficulty="int16")
    frame = pd.read_csv(path, header=None, names=names, dtype=dtypes, engine="c")
    if len(frame) != expected_rows:
        raise ValueError(f"{path}: {len(frame)} rows, expected {expected_rows}")
    for column in CATEGORICAL:  # plain strings: the feature schema and the worker see str values
        frame[column] = frame[column].astype(str)
    return frame


def _tabular(name: str, frame: pd.DataFrame, columns: list[str], labels: np.ndarray, extra: list[str]) -> TabularData:
    return TabularData(
        name=name,
        features=frame[columns],
        labels=labels.astype("int8"),
        numeric=[c for c in columns if c not in CATEGORICAL],
        categorical=list(CATEGORICAL),
        log_scale=list(LOG_SCALE),
        extra=frame[extra].reset_index(drop=True),
    )


def load_kddcup99(store: DataStore) -> TabularData:
    """KDD Cup 99, 10% training file: 494,021 rows, 97,278 of them ``normal.``; label 1 = attack."""
    columns = feature_columns(store)
    frame = _read(store.path(KDDCUP99_10_PERCENT), columns + ["label"], EXPECTED_ROWS["kddcup99"])
    return _tabular("kddcup99", frame, columns, (frame["label"] != "normal.").to_numpy(), ["label"])


def load_nsl_kdd(store: DataStore) -> TabularData:
    """NSL-KDD: KDDTrain+ (125,973 rows) then KDDTest+ (22,544) in one table; ``extra["part"]``
    says which file a row came from. Label 1 = attack."""
    columns = feature_columns(store)
    parts = []
    for part, file in (("train", NSL_KDD_TRAIN), ("test", NSL_KDD_TEST)):
        frame = _read(store.path(file), columns + ["label", "difficulty"], EXPECTED_ROWS[f"nsl-kdd/{part}"])
        frame["part"] = part
        parts.append(frame)
    frame = pd.concat(parts, ignore_index=True)
    return _tabular("nsl-kdd", frame, columns, (frame["label"] != "normal").to_numpy(), ["label", "difficulty", "part"])


# -- access-log events for the worker's feed (issue 5, item 6) ----------------------------------
def access_log_events(
    data: TabularData,
    index: np.ndarray | None = None,
    *,
    start: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    events_per_second: float = 100.0,
    n_hosts: int = 16,
    seed: int = 0,
    id_prefix: str | None = None,
) -> tuple[list[dict], np.ndarray]:
    """Turn KDD rows (e.g. KDDTest+) into access-log events and their labels, kept apart.

    Each event holds the 41 KDD fields by name (counts as int, rates as float rounded back from
    float32 to the source's precision, categoricals as str) plus
    ``event_id`` (deterministic: dataset, row number), ``event_time`` (ISO-8601 UTC, rows spaced
    ``1/events_per_second`` apart in the given order) and ``host`` (the key). KDD records carry no
    host, so hosts are assigned by a seeded hash of the row number into ``n_hosts`` buckets;
    replaying the same rows with the same seed gives the same events. Returns
    ``(events, labels)`` with ``labels[i] = 1`` when event ``i`` is an attack.
    """
    index = np.arange(len(data)) if index is None else np.asarray(index)
    rows = data.features.iloc[index]
    prefix = id_prefix or data.name
    hosts = np.random.default_rng(seed).integers(0, n_hosts, size=len(data))[index]
    step = dt.timedelta(seconds=1.0 / events_per_second)
    integral = [c for c in data.numeric if not c.endswith("_rate")]  # rates are fractions, all else counts
    records = rows.to_dict(orient="records")
    events = []
    for position, (row_number, record, host) in enumerate(zip(index.tolist(), records, hosts.tolist())):
        event = {"event_id": f"{prefix}-{row_number}", "event_time": (start + position * step).isoformat(), "host": f"host-{host:02d}"}
        for column, value in record.items():
            event[column] = int(value) if column in integral else (str(value) if column in data.categorical else round(float(value), 6))
        events.append(event)
    return events, data.labels[index].astype(np.int8)


def iter_access_log_events(data: TabularData, index: np.ndarray | None = None, *, chunk: int = 10_000, **kwargs) -> Iterator[tuple[list[dict], np.ndarray]]:
    """``access_log_events`` in chunks (for replaying all of KDDTest+ without one big list).
    Event times and ids continue across chunks."""
    index = np.arange(len(data)) if index is None else np.asarray(index)
    start = kwargs.pop("start", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    rate = kwargs.pop("events_per_second", 100.0)
    for offset in range(0, len(index), chunk):
        yield access_log_events(
            data, index[offset : offset + chunk], start=start + dt.timedelta(seconds=offset / rate), events_per_second=rate, **kwargs
        )
