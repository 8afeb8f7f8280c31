"""The analyst simulation's queue and ranking (benchmarks/analyst_loop.py)."""

import numpy as np
from sklearn.metrics import average_precision_score

from benchmarks.analyst_loop import queue_order, ranking_auprc


def test_the_queue_puts_the_smallest_p_value_first_and_breaks_ties_by_score():
    p = np.array([0.5, 1e-4, 1e-4, 0.01])
    scores = np.array([1.0, 5.0, 9.0, 3.0])
    assert queue_order(p, scores).tolist() == [2, 1, 3, 0]


def test_ranking_auprc_is_the_average_precision_of_the_queue_order():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    labels = (rng.uniform(size=500) < 0.1).astype(int)
    assert np.isclose(ranking_auprc(labels, p, np.zeros(500)), average_precision_score(labels, -p))
    # tied p-values (the floor 1/(n+1)) are ordered by score, so a score that separates them counts
    tied = np.full(500, 1e-4)
    assert ranking_auprc(labels, tied, labels.astype(float)) == 1.0
