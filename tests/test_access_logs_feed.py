"""The access-logs feed: KDD connection records in, one-hot text fields, unseen categories scored."""

import numpy as np
import pytest
from pydantic import ValidationError

from offline.data import DataStore, load_tabular
from offline.data.kdd import KDDCUP99_NAMES, parse_names
from offline.training.train import PROTOCOL_SPLITS
from streamdetect.feeds import get_feed
from streamdetect.feeds.access_logs import KDD_FIELDS
from streamdetect.settings import Settings


@pytest.fixture(scope="module")
def nsl_kdd():
    settings = Settings()
    store = DataStore(settings.data.data_dir, settings.data.mirror_dir, allow_download=False)
    return load_tabular("nsl-kdd", store), store


def test_fields_are_the_names_file(nsl_kdd):
    _, store = nsl_kdd
    assert KDD_FIELDS == [name for name, _ in parse_names(store.path(KDDCUP99_NAMES).read_text())]


def test_feed_columns_match_the_offline_features(nsl_kdd):
    data, _ = nsl_kdd
    feed = get_feed("access-logs")
    rows = PROTOCOL_SPLITS["nsl-kdd"](data).test[:300]
    events = [feed.event_model.model_validate(e) for e in feed.events_from_dataset(data, rows)]
    columns = feed.columns_of(events)
    for name in data.numeric:
        np.testing.assert_allclose(columns[name], data.features[name].to_numpy()[rows], atol=1e-6, err_msg=name)
    for name in data.categorical:
        assert columns[name].tolist() == data.features[name].astype(str).to_numpy()[rows].tolist()
    assert all(feed.key_of(e).startswith("host-") for e in events)  # the entity key of the thresholds
    assert "label" not in feed.events_from_dataset(data, rows[:1])[0]


def test_bad_connection_records_are_rejected(nsl_kdd):
    data, _ = nsl_kdd
    feed = get_feed("access-logs")
    good = feed.events_from_dataset(data, np.arange(1))[0]
    feed.event_model.model_validate(good)
    for change in ({"serror_rate": 1.5}, {"src_bytes": -1}, {"service": ""}, {"flag": "S F"}, {"label": "normal"}):
        with pytest.raises(ValidationError):
            feed.event_model.model_validate({**good, **change})
