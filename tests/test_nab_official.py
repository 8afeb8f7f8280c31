"""``python -m benchmarks.nab_official``: the river HalfSpaceTrees baseline's replay and the command line."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from benchmarks.nab_official import HST_WARMUP, main, replay_hst


def test_hst_replay_alerts_at_a_spike_and_never_in_its_warm_up():
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 1.0, 1500)
    values[1000] = 60.0
    scores, alerts = replay_hst(values)
    assert scores.shape == alerts.shape == (1500,)
    assert not alerts[:HST_WARMUP].any() and (scores[:HST_WARMUP] == 0).all()
    # the spike's value, or its change back, scores above (almost) every recent score
    assert alerts[1000:1003].any() and scores[1000] > 0.99
    assert 0.0 <= scores.min() and scores.max() < 1.0
    assert alerts.sum() <= 10, "plain noise rarely clears p < 0.001"


def test_an_unknown_series_is_a_usage_error():
    result = CliRunner().invoke(main, ["--series", "realNope/none.csv"])
    assert result.exit_code == 2 and "Invalid value for '--series'" in result.output
