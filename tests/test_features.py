import numpy as np
import pandas as pd
import pytest

from offline.features.schema import FeatureError, FeatureSchema


def test_unseen_category_goes_to_other_bucket_and_is_counted():
    frame = pd.DataFrame({"bytes": [10.0, 100.0, 1000.0], "service": ["http", "ftp", "http"]})
    schema = FeatureSchema.fit(frame, numeric=["bytes"], categorical=["service"], log_scale=["bytes"])
    X, unseen = schema.transform({"bytes": [10.0, 20.0], "service": ["http", "gopher"]})
    names = schema.output_names
    assert names == ["bytes", "service=ftp", "service=http", "service=<other>"]
    assert X[0, names.index("service=http")] == 1 and X[1, names.index("service=<other>")] == 1
    assert unseen.tolist() == [0, 1]


def test_non_finite_rows_are_named():
    schema = FeatureSchema.fit(pd.DataFrame({"a": [1.0, 2.0, 3.0]}), numeric=["a"])
    with pytest.raises(FeatureError) as info:
        schema.transform({"a": [1.0, float("nan"), float("inf"), 2.0]})
    assert info.value.rows.tolist() == [1, 2]


def test_numeric_to_raw_inverts_log_and_scaling():
    frame = pd.DataFrame({"amount": [0.0, 5.0, 250.0, 1e4]})
    schema = FeatureSchema.fit(frame, numeric=["amount"], log_scale=["amount"])
    X, _ = schema.transform(frame)
    np.testing.assert_allclose(schema.numeric_to_raw(X)[:, 0], frame["amount"], rtol=1e-4, atol=1e-5)


def test_schema_round_trips_through_json_dict():
    frame = pd.DataFrame({"a": [1.0, 2.0], "c": ["x", "y"]})
    schema = FeatureSchema.fit(frame, numeric=["a"], categorical=["c"])
    again = FeatureSchema.from_dict(schema.to_dict())
    np.testing.assert_array_equal(again.transform(frame)[0], schema.transform(frame)[0])
