"""Numenta Anomaly Benchmark (NAB): univariate sensor / metric series with labelled anomaly windows.

Canonical home: the numenta/NAB GitHub repository (``data/<category>/<series>.csv`` with columns
``timestamp,value``; ``labels/combined_windows.json`` maps ``<category>/<series>.csv`` to a list of
``[start, end]`` timestamp pairs). This loader knows the 31 series of five NAB folders
(``artificialNoAnomaly``, ``artificialWithAnomaly``, ``realAdExchange``, ``realKnownCause``,
``realTraffic``), each verified by the sha256 that ``../shared/data/nab/SHA256SUMS`` lists (the
files are plain CSV/JSON, so file and content hash agree).

NAB's own reading: the first 15% of every series is a *probationary period* in which a detector
learns and its alerts do not count; a window is detected when at least one alert falls inside it.

>>> from offline.data import DataStore
>>> # corpus = load_nab(DataStore("data", "../shared/data"))          # doctest: +SKIP
>>> # corpus["realKnownCause/nyc_taxi.csv"].windows[0]                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from offline.data.store import DataStore, RemoteFile
from offline.data.tabular import TabularData

RAW_BASE = "https://raw.githubusercontent.com/numenta/NAB/master/"
HOMEPAGE = "https://github.com/numenta/NAB"
PROBATIONARY_FRACTION = 0.15
#: NAB caps the probationary period at PROBATIONARY_FRACTION of this many rows (``probationary_length``)
PROBATIONARY_CAP_ROWS = 5000

#: paths relative to the NAB repository root -> sha256 (from ../shared/data/nab/SHA256SUMS)
SHA256 = {
    "data/artificialNoAnomaly/art_daily_no_noise.csv": "ccb7743ac2de8ca110db4af796d11ba31a23ad448a28e353a935c15f637756bc",
    "data/artificialNoAnomaly/art_daily_perfect_square_wave.csv": "662ff0a295b81eb0ff8e81116a54a497cd6f6b07c19c7a5ea72cce494913ce62",
    "data/artificialNoAnomaly/art_daily_small_noise.csv": "c4b304229f69f108eaa024fb2406fcd4510c5c5d95cd0053e2da6989682e4e6d",
    "data/artificialNoAnomaly/art_flatline.csv": "1cc10761ddd6d55fb5f0d9cfc73610416abbb120ee14bb65eff288509a463397",
    "data/artificialNoAnomaly/art_noisy.csv": "ad455adeaf06852222500955f2aefe6bd389cc762ef68e7102ee543209c8607f",
    "data/artificialWithAnomaly/art_daily_flatmiddle.csv": "ea5df125947e9ee2b977ac3d341f3c2a029588862af97cae4a654fc56e838702",
    "data/artificialWithAnomaly/art_daily_jumpsdown.csv": "4af31802e87dff4b4ba3ceb21714ba9d905f7888e1f53d47cc6dd4f856f9debc",
    "data/artificialWithAnomaly/art_daily_jumpsup.csv": "f79f92b93ee4f9c10e2dc552505e8880b0c618639ed5e0f9816e044b75c26456",
    "data/artificialWithAnomaly/art_daily_nojump.csv": "65c85d1834376ed5e622f01721d478609577ea0df0a067c5a5ebe5edea03b077",
    "data/artificialWithAnomaly/art_increase_spike_density.csv": "0959d8871d5c1a3fc3120fb7421e4ef113fffb434af2889085b52aebdb69360c",
    "data/artificialWithAnomaly/art_load_balancer_spikes.csv": "99f7130e54c7c3e818df8e3bdc0974cd241914bb14a10a9c3fa7c1374125d224",
    "data/realAdExchange/exchange-2_cpc_results.csv": "d869ab165254f3ee77ee21fd9fab2be1d07c1f80b8133cf01bbaf2d768c2ac64",
    "data/realAdExchange/exchange-2_cpm_results.csv": "1f01b9438566d2fe1ac446faa202a395ac86db9240a1955bc1f118c8eada2a19",
    "data/realAdExchange/exchange-3_cpc_results.csv": "e70b24dba107a2589657cb3feb9ca5605b4f3f7de49ff445f32f5991bc0bdbe5",
    "data/realAdExchange/exchange-3_cpm_results.csv": "74d354a94fb1730e14b469c7c1c6e99c2ad69af53afdb85f65220bd3cf01ce4a",
    "data/realAdExchange/exchange-4_cpc_results.csv": "d4c13abd6f28594dc446f22106562ebe917fdbe76170f60a500c2a402ecc09e2",
    "data/realAdExchange/exchange-4_cpm_results.csv": "4e5c955b632145b77b93fba4a5e3bf615d47e00416e17091d64e05ae109c760e",
    "data/realKnownCause/ambient_temperature_system_failure.csv": "230b68ccca20f59d562afd5d24ad52939c9b784386bed0054018358bf9120581",
    "data/realKnownCause/cpu_utilization_asg_misconfiguration.csv": "58ba65dc0737cfbac11b51514476d50c438d44011232144bb8d93f392df58f9f",
    "data/realKnownCause/ec2_request_latency_system_failure.csv": "98378580aa80157e057c61d59d81daddccc6c65a2c0c800e3f01f603b8215c3f",
    "data/realKnownCause/machine_temperature_system_failure.csv": "92bf5b87fc7f9bba8ca0b7ec63ccaac8cb4a1371a258e8c29a10ae9c018d82a4",
    "data/realKnownCause/nyc_taxi.csv": "d8fa6f7f0734bf5c8be12c52a94e20a82664c397d9dec4449156bd453d32856d",
    "data/realKnownCause/rogue_agent_key_hold.csv": "47b110baa8e3636574c1033dda1cce780873647fab58223d159d4fee6f180e86",
    "data/realKnownCause/rogue_agent_key_updown.csv": "9797cfef477c13306f7a33874ab4d6cf700f8f2c7e5825a2a5bc02004370909a",
    "data/realTraffic/TravelTime_387.csv": "38e70e9ead8227fd023bff6e93247d5bc01ee008f781b921a156962419b399bb",
    "data/realTraffic/TravelTime_451.csv": "7c174adfc457b201cd111d60688f7ec37eb7201c8080790dc41eeff477bd7345",
    "data/realTraffic/occupancy_6005.csv": "cd357d7820d675074270fd976d4af1fc1e7854ecb764783028cbcb18d980c91d",
    "data/realTraffic/occupancy_t4013.csv": "5663a8122a300360eb51fbbd0f21706da05af1af55262926d6a226bb6d071704",
    "data/realTraffic/speed_6005.csv": "7976e7596cd1e579696c737576e96a26fe041484472ed7d0a463ce2b094d7aa7",
    "data/realTraffic/speed_7578.csv": "15ba994384730cb5a2e6818f17ded1430b40d92eb7a08e5b1a48a445c8c350f6",
    "data/realTraffic/speed_t4013.csv": "fa5532d6f7db36cadc73e657fd4dfef05cb1ec44d4010243b314d3f1bbd6a7b5",
    "labels/combined_windows.json": "ca72334636cd8b8d2baa62355c06ef3a18d93eca782a3ddb98eb623b29883b32",
}
LABELS_PATH = "labels/combined_windows.json"


def _remote(path: str) -> RemoteFile:
    return RemoteFile(path=f"nab/{path}", sha256=SHA256[path], urls=(RAW_BASE + path,), homepage=HOMEPAGE)


FILES = tuple(_remote(path) for path in SHA256)
SERIES = tuple(path.removeprefix("data/") for path in SHA256 if path.startswith("data/"))
CATEGORIES = tuple(sorted({name.split("/")[0] for name in SERIES}))


def probationary_length(n_rows: int, fraction: float = PROBATIONARY_FRACTION) -> int:
    """Rows at the start of a series NAB does not score: ``min(floor(0.15 * rows), 750)``.

    The cap keeps long series (NAB's tweet counts have 15,000+ rows) from spending thousands of
    rows in probation; a detector that learns from more than these rows learns from scored rows.
    """
    # NAB scores rows i >= min(floor(f * rows), f * 5000); for whole i that is the ceiling of the cap
    return int(min(math.floor(fraction * n_rows), math.ceil(fraction * PROBATIONARY_CAP_ROWS)))



@dataclass
class NABSeries:
    """One series: ``name`` is ``<category>/<file>.csv`` as in NAB's label file."""

    name: str
    timestamps: np.ndarray  # datetime64[ns], increasing
    values: np.ndarray  # float64
    windows: list[tuple[np.datetime64, np.datetime64]] = field(default_factory=list)

    @property
    def category(self) -> str:
        return self.name.split("/")[0]

    @property
    def sensor_id(self) -> str:
        """A sensor id for the feed: the file name without ``.csv``."""
        return self.name.split("/")[-1].removesuffix(".csv")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def probation(self) -> int:
        """Rows in NAB's probationary period (the first 15%)."""
        return int(np.floor(PROBATIONARY_FRACTION * len(self)))

    def in_window(self) -> np.ndarray:
        """Boolean per row: inside a labelled anomaly window."""
        mask = np.zeros(len(self), dtype=bool)
        for start, end in self.windows:
            mask |= (self.timestamps >= start) & (self.timestamps <= end)
        return mask


def load_labels(store: DataStore) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    raw = json.loads(store.path(_remote(LABELS_PATH)).read_text())
    return {
        name: [(np.datetime64(pd.Timestamp(a)), np.datetime64(pd.Timestamp(b))) for a, b in windows]
        for name, windows in raw.items()
    }


def load_series(name: str, store: DataStore, labels: dict | None = None) -> NABSeries:
    if name not in SERIES:
        raise KeyError(f"unknown NAB series {name!r}; known: {', '.join(SERIES)}")
    labels = load_labels(store) if labels is None else labels
    frame = pd.read_csv(store.path(_remote(f"data/{name}")), parse_dates=["timestamp"])
    frame = frame.sort_values("timestamp", kind="stable")
    return NABSeries(
        name=name,
        timestamps=frame["timestamp"].to_numpy(dtype="datetime64[ns]"),
        values=frame["value"].to_numpy(dtype=np.float64),
        windows=[(np.datetime64(a, "ns"), np.datetime64(b, "ns")) for a, b in labels.get(name, [])],
    )


def load_nab(store: DataStore, names: tuple[str, ...] | list[str] | None = None) -> dict[str, NABSeries]:
    """Every series (or ``names``) with its windows, keyed by ``<category>/<file>.csv``."""
    labels = load_labels(store)
    return {name: load_series(name, store, labels) for name in (names or SERIES)}


def load_nab_tabular(store: DataStore) -> TabularData:
    """All series as one table of readings (for ``replay record``): feature ``value``; label 1 inside
    a labelled window; ``extra`` holds ``series``, ``sensor_id`` and ``timestamp``."""
    parts = []
    for series in load_nab(store).values():
        parts.append(pd.DataFrame({
            "series": series.name, "sensor_id": series.sensor_id, "timestamp": series.timestamps,
            "value": series.values, "label": series.in_window().astype("int8"),
        }))
    frame = pd.concat(parts, ignore_index=True)
    return TabularData(
        name="nab", features=frame[["value"]].astype("float64"), labels=frame["label"].to_numpy(dtype="int8"),
        numeric=["value"], extra=frame[["series", "sensor_id", "timestamp"]],
    )
