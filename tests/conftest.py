"""Generic fixtures: settings from the environment, the credit-card data, one embedded broker per session.

Fixtures specific to one part of the project live in ``tests/fixtures_*.py``; every such file
is loaded as a pytest plugin below, so their fixtures are visible to all tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the project is normally installed (pip install -e .); this also works without
    sys.path.insert(0, str(ROOT))

pytest_plugins = sorted(p.stem for p in Path(__file__).parent.glob("fixtures_*.py"))


@pytest.fixture(scope="session")
def settings():
    """The one settings class, read from the environment (e.g. STREAMDETECT_DATA__MIRROR_DIR)."""
    from streamdetect.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def data_store(settings):

    return settings.data.store()


@pytest.fixture(scope="session")
def creditcard(data_store):
    from offline.data import load_tabular

    return load_tabular("creditcard", data_store)


#: the brokers the integration tests run on: the embedded Tansu (the demo's default) and a real
#: Apache Kafka 4.x started from Maven Central's jars on the JDK (required when CI=true)
BROKERS = ("tansu", "apache")


def local_broker(kind: str, tmp_path_factory):
    """A started broker of ``kind`` on a free port (a context manager); skips Apache Kafka where the
    JDK or Maven is missing, unless CI=true makes it required."""
    import os
    import shutil

    from streamdetect.kafka.broker import EmbeddedBroker, free_port

    if kind == "tansu":
        return EmbeddedBroker(free_port())
    from streamdetect.kafka.apache import ApacheKafkaBroker

    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        reason = f"Apache Kafka needs {' and '.join(missing)} on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true makes the Apache Kafka leg required")
        pytest.skip(reason)
    return ApacheKafkaBroker(free_port(), log_path=tmp_path_factory.mktemp("apache-kafka") / "broker.log")


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory):
    """The embedded Tansu broker (in memory) on a free port, shared by the session: for what only Tansu does."""
    with local_broker("tansu", tmp_path_factory) as broker:
        yield broker


@pytest.fixture(scope="session", params=BROKERS)
def kafka_broker(request, embedded_broker, tmp_path_factory):
    """A real broker for the integration tests, each test once per broker: Tansu, then Apache Kafka."""
    if request.param == "tansu":
        yield embedded_broker
        return
    with local_broker(request.param, tmp_path_factory) as broker:
        yield broker
