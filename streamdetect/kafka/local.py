"""Which broker to talk to, and the development broker commands.

``resolve_bootstrap``: the configured cluster (``STREAMDETECT_KAFKA__BOOTSTRAP``) if set; else a
local broker on ``kafka.embedded_port``, reused when something already listens there, else started:
the embedded Tansu broker (``broker.EmbeddedBroker``, the default: in memory, starts in
milliseconds) or Apache Kafka (``apache.ApacheKafkaBroker``, when ``kafka.local_broker`` is
``apache``).

    python -m streamdetect.kafka.local serve     # a development broker in the foreground, topics created
    python -m streamdetect.kafka.local topics    # create the project's topics on the resolved broker
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import click

from streamdetect.kafka.apache import ApacheKafkaBroker
from streamdetect.kafka.broker import EmbeddedBroker, ensure_topics, port_open
from streamdetect.settings import Settings, get_settings

log = logging.getLogger("streamdetect.kafka")

DEV_BROKER_WARNING = (
    "using the embedded Tansu broker at %s: an in-memory DEVELOPMENT broker (data is lost when it "
    "stops); set STREAMDETECT_KAFKA__BOOTSTRAP=host:port to use a real Kafka cluster"
)


@dataclass
class ResolvedBroker:
    bootstrap: str
    kind: str  # "external", "embedded", "embedded-reused", "apache"
    owner: Any = None  # what to stop at exit (EmbeddedBroker or ApacheKafkaBroker), if we started it

    def stop(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.stop()


def resolve_bootstrap(settings: Settings | None = None) -> ResolvedBroker:
    """The broker to use: the configured one, else a local one on ``kafka.embedded_port`` (reused when
    something already listens there, else started: Tansu, or Apache Kafka when ``kafka.local_broker``
    says so)."""
    settings = settings or get_settings()
    if settings.kafka.bootstrap:
        return ResolvedBroker(settings.kafka.bootstrap, "external")
    host, port = "127.0.0.1", settings.kafka.embedded_port
    if port_open(host, port):
        log.warning(DEV_BROKER_WARNING + " (reusing the broker already listening there)", f"{host}:{port}")
        return ResolvedBroker(f"{host}:{port}", "embedded-reused")
    if settings.kafka.local_broker == "apache":
        broker = ApacheKafkaBroker(port, host=host).start()
        log.warning("using a local Apache Kafka broker at %s (data in a temporary folder, removed when it stops)", broker.bootstrap)
        return ResolvedBroker(broker.bootstrap, "apache", broker)
    broker = EmbeddedBroker(port, host=host).start()
    log.warning(DEV_BROKER_WARNING, broker.bootstrap)
    return ResolvedBroker(broker.bootstrap, "embedded", broker)


# -- command line ---------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Development broker helpers."""


@cli.command()
@click.option("--port", type=int, default=None, help="port to listen on (default: settings kafka.embedded_port)")
def serve(port: int | None) -> None:
    """Run the embedded in-memory Tansu broker in the foreground (Ctrl-C stops it) and create the topics."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    with EmbeddedBroker(port or settings.kafka.embedded_port) as broker:
        created = ensure_topics(broker.bootstrap, settings)
        click.echo(f"development broker on {broker.bootstrap} (in memory); created topics: {', '.join(created) or 'none'}")
        click.echo(f"point the worker at it: STREAMDETECT_KAFKA__BOOTSTRAP={broker.bootstrap}")
        try:
            while broker.process is not None and broker.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@cli.command()
@click.option("--bootstrap", default=None, help="broker address (default: settings / embedded)")
def topics(bootstrap: str | None) -> None:
    """Create the project's topics with the configured partition count."""
    settings = get_settings()
    resolved = ResolvedBroker(bootstrap, "external") if bootstrap else resolve_bootstrap(settings)
    try:
        created = ensure_topics(resolved.bootstrap, settings)
        click.echo(f"{resolved.bootstrap}: created {', '.join(created) or 'nothing (all exist)'}")
    finally:
        resolved.stop()


if __name__ == "__main__":
    sys.exit(cli())
