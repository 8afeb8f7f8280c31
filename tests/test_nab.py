"""The NAB loader: every series and its windows, verified against the mirror's SHA256SUMS."""

from pathlib import Path

import numpy as np
import pytest

from offline.data import DataError, DataStore, dataset_files, load_tabular
from offline.data.nab import CATEGORIES, FILES, SERIES, load_nab, load_series
from streamdetect.settings import Settings


def _mirror() -> Path:
    mirror = Settings().data.mirror_dir
    if mirror is None:
        pytest.fail("set STREAMDETECT_DATA__MIRROR_DIR to the dataset mirror (make test does)")
    return Path(mirror)


def test_hashes_match_the_mirror_sha256sums():
    sums = {}
    for line in (_mirror() / "nab/SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        sums[path.removeprefix("./")] = digest
    assert {f.path.removeprefix("nab/"): f.sha256 for f in FILES} == sums
    assert dataset_files("nab") == FILES
    assert all(f.urls[0].startswith("https://raw.githubusercontent.com/numenta/NAB/") for f in FILES)
    assert len(SERIES) == 31 and len(CATEGORIES) == 5


def test_series_and_windows_load_from_the_mirror(tmp_path):
    store = DataStore(tmp_path / "cache", _mirror(), allow_download=False)
    corpus = load_nab(store, ["realKnownCause/nyc_taxi.csv", "artificialNoAnomaly/art_flatline.csv"])
    taxi = corpus["realKnownCause/nyc_taxi.csv"]
    assert len(taxi) == 10320 and taxi.sensor_id == "nyc_taxi" and taxi.category == "realKnownCause"
    assert len(taxi.windows) == 5 and np.all(np.diff(taxi.timestamps) > np.timedelta64(0))
    mask = taxi.in_window()
    assert 0 < mask.sum() < len(taxi) and not mask[: taxi.probation].any()
    assert corpus["artificialNoAnomaly/art_flatline.csv"].windows == []
    table = load_tabular("nab", store)
    assert len(table) == 139_187 and table.extra["series"].nunique() == 31 and 0 < table.labels.mean() < 0.2


def test_corrupt_series_is_refused_naming_file_and_hash(tmp_path):
    mirror = tmp_path / "mirror"
    target = mirror / "nab/data/realKnownCause/nyc_taxi.csv"
    target.parent.mkdir(parents=True)
    target.write_text("timestamp,value\n2014-07-01 00:00:00,1\n")
    store = DataStore(tmp_path / "cache", mirror, allow_download=False)
    with pytest.raises(DataError) as info:
        load_series("realKnownCause/nyc_taxi.csv", store, labels={})
    assert "nyc_taxi.csv" in str(info.value) and "d8fa6f7f" in str(info.value)
