"""Fixtures of the reliability tests: a broker of their own (they pause it), and one soak run.

The soak is ``benchmarks.stream_bench.soak``, the same code the bench's longer soak runs: a good feed
with 10,000 fuzzed events mixed in, the worker killed with SIGKILL and restarted mid-replay, a
bundle with a malformed manifest promoted, the broker paused with SIGSTOP and resumed.
"""

from __future__ import annotations

import pytest

from conftest import BROKERS, local_broker

#: make test keeps the broker pause short (the bench's soak pauses it for 30 s)
SOAK_PAUSE_S = 8.0
SOAK_KILL_CYCLES = 2
SOAK_GOOD_EVENTS = 3_000
SOAK_FUZZED_EVENTS = 10_000
#: set in the soak worker's environment; must never show up in its log
CANARY_PASSWORD = "canary-pw-7f3a9c"


@pytest.fixture(scope="module", params=BROKERS)
def own_broker(request, tmp_path_factory):
    """A broker only this module uses (the soak stops it with SIGSTOP): Tansu, then Apache Kafka."""
    with local_broker(request.param, tmp_path_factory) as broker:
        yield broker


@pytest.fixture(scope="module")
def soak_run(own_broker, creditcard_bundles, settings, tmp_path_factory):
    from benchmarks.stream_bench import soak

    workdir = tmp_path_factory.mktemp("soak")
    good, fuzz = SOAK_GOOD_EVENTS, SOAK_FUZZED_EVENTS
    # sending lasts past the kill cycles (~15-25 s per restart here), so that each kill is mid-replay
    rate = (good + fuzz) / (SOAK_KILL_CYCLES * 18.0 + SOAK_PAUSE_S + 10.0)
    result = soak(settings, own_broker.bootstrap, creditcard_bundles, workdir, good=good, fuzz=fuzz,
                  kill_cycles=SOAK_KILL_CYCLES, pause_s=SOAK_PAUSE_S, broker_pid=own_broker.process.pid, rate=rate,
                  extra_env={"STREAMDETECT_KAFKA__SASL_PASSWORD": CANARY_PASSWORD,
                             "STREAMDETECT_KAFKA__SASL_USERNAME": "soak-user"})
    result.workdir = workdir
    return result
