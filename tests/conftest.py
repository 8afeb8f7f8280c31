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
    from offline.data import DataStore

    return DataStore(settings.data.data_dir, settings.data.mirror_dir, settings.data.allow_download)


@pytest.fixture(scope="session")
def creditcard(data_store):
    from offline.data import load_tabular

    return load_tabular("creditcard", data_store)


@pytest.fixture(scope="session")
def embedded_broker():
    """A real Kafka-protocol broker (Tansu, in memory) on a free port, shared by the session."""
    from streamdetect.broker import EmbeddedBroker, free_port

    with EmbeddedBroker(free_port()) as broker:
        yield broker
