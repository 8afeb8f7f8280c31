"""The transactions feed builds exactly the columns the offline loader trained on."""

import numpy as np
from pydantic import ValidationError
import pytest

from offline.data import DataStore, load_tabular
from streamdetect.feeds import get_feed
from streamdetect.settings import Settings


def test_feed_columns_match_the_offline_features_row_for_row():
    settings = Settings()
    data = load_tabular("creditcard", DataStore(settings.data.data_dir, settings.data.mirror_dir, allow_download=False))
    feed = get_feed("transactions")
    rows = np.array([0, 1, 5_000, 100_000, 200_000, 284_806])
    events = [feed.event_model.model_validate(e) for e in feed.events_from_dataset(data, rows)]
    columns = feed.columns_of(events)
    for name in data.features.columns:
        np.testing.assert_allclose(columns[name], data.features[name].to_numpy()[rows], atol=1e-5, err_msg=name)
    assert "Class" not in feed.events_from_dataset(data, rows[:1])[0]  # labels never travel in events


def test_event_time_in_another_zone_gives_the_same_hour():
    feed = get_feed("transactions")
    base = {"event_id": "x", "Amount": 1.0, **{f"V{i}": 0.0 for i in range(1, 29)}}
    utc = feed.event_model.model_validate({**base, "event_time": "2013-09-01T23:30:00Z"})
    cest = feed.event_model.model_validate({**base, "event_time": "2013-09-02T01:30:00+02:00"})
    a, b = feed.columns_of([utc]), feed.columns_of([cest])
    assert a["hour_sin"][0] == pytest.approx(b["hour_sin"][0]) and a["hour_cos"][0] == pytest.approx(b["hour_cos"][0])
    with pytest.raises(ValidationError):
        feed.event_model.model_validate({**base, "event_time": "yesterday"})
