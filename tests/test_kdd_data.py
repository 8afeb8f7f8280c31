"""KDD Cup 99 and NSL-KDD loaders on the real mirror files, the protocol splits, unseen categories,
and the access-log events the worker's feed will replay."""

import numpy as np
import pandas as pd
import pytest

from offline.data import DATASET_FILES, DataError, DataStore, dataset_files, load_tabular
from offline.data.kdd import (
    CATEGORICAL,
    KDDCUP99_NAMES,
    UNVERIFIED_KDDCUP99_URLS,
    access_log_events,
    iter_access_log_events,
    parse_names,
)
from offline.features.schema import OTHER, FeatureSchema
from offline.training.protocols import dagmm_labels, dagmm_split, dagmm_validation_normals, kdd_normal_traffic_split, nsl_kdd_split
from streamdetect.settings import Settings


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    settings = Settings().data
    if settings.mirror_dir is None:
        pytest.skip("STREAMDETECT_DATA__MIRROR_DIR is not set")
    return DataStore(settings.data_dir, settings.mirror_dir, allow_download=False)


@pytest.fixture(scope="module")
def kdd(store):
    return load_tabular("kddcup99", store)


@pytest.fixture(scope="module")
def nsl(store):
    return load_tabular("nsl-kdd", store)


def test_kddcup99_10_percent_rows_columns_and_labels(kdd):
    assert len(kdd) == 494_021
    assert int((kdd.extra["label"] == "normal.").sum()) == 97_278
    assert int(kdd.labels.sum()) == 494_021 - 97_278  # 1 = attack, the usual reading
    assert list(kdd.features.columns[:5]) == ["duration", "protocol_type", "service", "flag", "src_bytes"]
    assert kdd.features.shape[1] == 41 and kdd.categorical == CATEGORICAL
    assert len(kdd.numeric) == 38 and "src_bytes" in kdd.log_scale
    assert kdd.features["service"].nunique() == 66


def test_nsl_kdd_train_and_test_parts(nsl):
    part = nsl.extra["part"]
    train, test = (part == "train").to_numpy(), (part == "test").to_numpy()
    assert train.sum() == 125_973 and test.sum() == 22_544
    assert int((nsl.labels[train] == 0).sum()) == 67_343
    assert int((nsl.labels[test] == 0).sum()) == 9_711
    assert set(nsl.extra.columns) == {"label", "difficulty", "part"}
    assert nsl.extra["difficulty"].between(0, 21).all()


def test_names_file_parses_to_41_typed_columns(store):
    columns = parse_names(store.path(KDDCUP99_NAMES).read_text())
    assert len(columns) == 41 and columns[1] == ("protocol_type", "symbolic") and columns[-1][0] == "dst_host_srv_rerror_rate"
    with pytest.raises(ValueError, match="line 3"):
        parse_names("labels.\nduration: continuous.\nbroken line\n")


def test_file_registry_and_unverified_files_are_explicit():
    assert {f.path for f in dataset_files("kddcup99")} == {"kddcup99/kddcup.data_10_percent.gz", "kddcup99/kddcup.names"}
    assert "nsl-kdd" in DATASET_FILES and all(len(f.sha256) == 64 for f in dataset_files("nsl-kdd"))
    assert all(url.startswith("http://kdd.ics.uci.edu/databases/kddcup99/") for url in UNVERIFIED_KDDCUP99_URLS.values())


def test_corrupt_kdd_file_is_a_clear_error(tmp_path):
    (tmp_path / "mirror/kddcup99").mkdir(parents=True)
    (tmp_path / "mirror/kddcup99/kddcup.names").write_text("not the names file\n")
    store = DataStore(tmp_path / "cache", tmp_path / "mirror", allow_download=False)
    with pytest.raises(DataError, match=KDDCUP99_NAMES.sha256):
        store.path(KDDCUP99_NAMES)


def test_dagmm_split_trains_on_attacks_only_and_tests_on_the_other_half(kdd):
    split = dagmm_split(kdd, seed=3)
    labels = dagmm_labels(kdd)
    assert labels.sum() == 97_278  # normal. is the anomaly under this protocol
    assert labels[split.train].sum() == 0 and labels[split.calibration].sum() == 0
    train_half = np.concatenate([split.train, split.calibration])
    assert len(train_half) + labels[dagmm_validation_normals(kdd, seed=3)].sum() == 494_021 // 2
    assert len(split.test) == 494_021 - 494_021 // 2
    assert np.intersect1d(train_half, split.test).size == 0
    assert 0.18 < labels[split.test].mean() < 0.21
    assert 0.08 < len(split.calibration) / len(train_half) < 0.12
    other = dagmm_split(kdd, seed=4)
    assert not np.array_equal(other.test, split.test)  # a fresh split per seed
    assert np.array_equal(dagmm_split(kdd, seed=3).train, split.train)  # and reproducible


def test_normal_traffic_and_nsl_splits(kdd, nsl):
    split = kdd_normal_traffic_split(kdd)
    assert kdd.labels[split.train].sum() == 0 and kdd.labels[split.calibration].sum() == 0
    assert np.intersect1d(split.train, split.test).size == 0
    nsl_split = nsl_kdd_split(nsl, seed=0)
    part = nsl.extra["part"].to_numpy()
    assert (part[nsl_split.train] == "train").all() and (nsl.labels[nsl_split.train] == 0).all()
    assert len(nsl_split.train) + len(nsl_split.calibration) == 67_343
    assert (part[nsl_split.test] == "test").all() and len(nsl_split.test) == 22_544


def test_unseen_categories_go_to_other_and_are_counted(kdd):
    # under the DAGMM protocol the schema is fitted on attack rows: services that only normal
    # traffic uses are unseen, and must be encoded as <other>, never crash
    attacks = kdd.features[kdd.labels == 1].iloc[:20_000]
    schema = FeatureSchema.fit(attacks, numeric=kdd.numeric, categorical=kdd.categorical, log_scale=kdd.log_scale)
    rows = pd.concat([attacks.iloc[:2], attacks.iloc[:1].assign(service="no-such-service", flag="ZZ")], ignore_index=True)
    X, unseen = schema.transform(rows)
    assert unseen.tolist() == [0, 0, 2]
    names = schema.output_names
    assert X[2, names.index(f"service={OTHER}")] == 1 and X[2, names.index(f"flag={OTHER}")] == 1
    assert np.isfinite(X).all() and X.shape[1] == schema.n_features
    # heavy-tailed byte counts are log-scaled: the standardised values stay moderate
    X_all, _ = schema.transform(kdd.features.iloc[:50_000])
    assert np.abs(X_all[:, names.index("src_bytes")]).max() < 50


def test_access_log_events_carry_all_fields_ids_times_and_hosts(nsl):
    test_rows = np.flatnonzero(nsl.extra["part"].to_numpy() == "test")[:5]
    events, labels = access_log_events(nsl, test_rows, events_per_second=10)
    assert len(events) == 5 and labels.tolist() == nsl.labels[test_rows].tolist()
    first = events[0]
    assert set(nsl.features.columns) <= set(first) and {"event_id", "event_time", "host"} <= set(first)
    assert "label" not in first and "difficulty" not in first  # labels are kept apart
    assert isinstance(first["src_bytes"], int) and isinstance(first["service"], str) and isinstance(first["same_srv_rate"], float)
    assert first["event_id"] == f"nsl-kdd-{test_rows[0]}"
    assert events[1]["event_time"] > first["event_time"]
    again, _ = access_log_events(nsl, test_rows, events_per_second=10)
    assert again == events  # deterministic: same rows, same events
    chunks = list(iter_access_log_events(nsl, test_rows, chunk=2, events_per_second=10))
    assert [e for chunk, _ in chunks for e in chunk] == events
    # the events featurize with a bundle's schema like the offline frame does
    schema = FeatureSchema.fit(nsl.features.iloc[:5000], numeric=nsl.numeric, categorical=nsl.categorical, log_scale=nsl.log_scale)
    columns = {c: [e[c] for e in events] for c in schema.input_columns}
    X_events, _ = schema.transform(columns)
    X_frame, _ = schema.transform(nsl.features.iloc[test_rows])
    np.testing.assert_allclose(X_events, X_frame, atol=1e-5)
