"""A real Apache Kafka 4.x broker, fetched from Maven Central and started on the JDK by the project.

Why: production runs on Apache Kafka (``deploy/``), and Kafka 4.0 removed the old protocol
versions (produce/fetch/metadata versions from before Kafka 2.1, and ZooKeeper altogether):
clients that still send them are refused. Whether the pinned aiokafka and faust-streaming work
against Kafka 4.x has to be shown on a real broker, not assumed; ``tests/test_apache_kafka.py``
does that, and the integration tests and the bench can run on this broker too. The embedded
Tansu broker (``streamdetect.kafka.broker.EmbeddedBroker``) stays the fast default: it starts in
milliseconds and needs no JDK; this one needs a JDK 17+ and Maven and takes ~10-20 s to start.

No container engine: ``fetch_kafka`` runs Maven once on ``deploy/kafka/pom.xml``
(``dependency:copy-dependencies`` of ``org.apache.kafka:kafka_2.13`` at the version pinned there)
into ``.cache/kafka-<version>/libs`` under the project root and records a sha256 list of the jars,
so a damaged cache is detected and fetched again. ``ApacheKafkaBroker`` formats a single-node
KRaft storage directory (broker and controller in one process, the controller on a second
loopback port) in a temporary folder, starts ``kafka.Kafka`` with a small heap and few threads in
its own session, waits until it answers metadata and, on ``stop()``, sends SIGTERM (then SIGKILL)
and removes the folder: nothing it stored survives it. The JVMs keep a class-data-sharing archive
beside the jars, written by the first run, which roughly halves later starts.

    python -m streamdetect.kafka.apache fetch          # fetch + verify, print the libs folder
    python -m streamdetect.kafka.apache serve --port N # foreground broker until Ctrl-C
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile
from contextlib import contextmanager
from pathlib import Path

import click

from offline.bundle import file_sha256
from streamdetect.kafka.broker import (
    BrokerError,
    free_port,
    port_open,
    run_sync,
    stop_process,
    wait_for_metadata,
)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
CHECKSUMS = "SHA256SUMS"
NO_BROKER_HINT = "or set STREAMDETECT_KAFKA__BOOTSTRAP=host:port to use your own Kafka cluster"
MAVEN_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 30


# -- the pinned version ---------------------------------------------------------------------
def kafka_version(pom: Path = KAFKA_POM) -> str:
    """The Kafka version pinned in ``deploy/kafka/pom.xml`` (its ``<kafka.version>`` property)."""
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise BrokerError(f"cannot read the Kafka pom {pom}: {exc}") from None
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = root.find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <properties><kafka.version>")
    return node.text.strip()


def default_cache_dir(version: str | None = None) -> Path:
    """``<project root>/.cache/kafka-<version>`` (``.cache/`` is git-ignored)."""
    return PROJECT_ROOT / ".cache" / f"kafka-{version or kafka_version()}"


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Maven colours some lines even in batch mode
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _tail_file(path: Path, start: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return _tail(f.read().decode("utf-8", "replace"), lines)
    except OSError:
        return "(no log)"


# -- fetching and verifying the jars --------------------------------------------------------
def _read_checksums(libs: Path) -> dict[str, str] | None:
    try:
        text = (libs / CHECKSUMS).read_text()
    except OSError:
        return None
    sums: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest.strip()
    return sums


def verify_kafka(libs: Path, version: str) -> list[str]:
    """Problems with the jars in ``libs`` (empty list: complete and unchanged since fetched).

    Checks that ``kafka_2.13-<version>.jar`` and ``kafka-clients-<version>.jar`` are there, that the
    jars are exactly those of the recorded sha256 list, and that each hash still matches."""
    problems = []
    for required in (f"kafka_2.13-{version}.jar", f"kafka-clients-{version}.jar"):
        if not (libs / required).is_file():
            problems.append(f"{required} is missing")
    sums = _read_checksums(libs)
    if sums is None:
        return problems + [f"no {CHECKSUMS} list"]
    present = {p.name for p in libs.glob("*.jar")}
    problems += [f"{name} is missing" for name in sorted(set(sums) - present)]
    problems += [f"{name} is not in {CHECKSUMS}" for name in sorted(present - set(sums))]
    problems += [f"{name}: sha256 differs from {CHECKSUMS}" for name in sorted(present & set(sums))
                 if file_sha256(libs / name) != sums[name]]
    return problems


def _check_jars(libs: Path) -> list[str]:
    """Jars that are not readable zip archives (a truncated or damaged download)."""
    bad = []
    for jar in sorted(libs.glob("*.jar")):
        try:
            with zipfile.ZipFile(jar) as archive:
                archive.getinfo("META-INF/MANIFEST.MF")
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            bad.append(f"{jar.name}: {exc or 'not a jar'}")
    return bad


@contextmanager
def _locked(cache_dir: Path):
    """One fetch at a time per cache folder (parallel test runs, make kafka beside pytest)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_maven(pom: Path, target: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "the Apache Kafka broker is fetched with Maven, and `mvn` is not on PATH: install Maven 3.6+ "
            f"(Debian: apt-get install maven) and a JDK 17+, {NO_BROKER_HINT}")
    # -U: retry what an earlier failed (e.g. offline) run left marked as not found in Maven's cache
    command = [mvn, "-q", "-B", "-U", "-Dstyle.color=never", "--strict-checksums", "-f", str(pom),
               "dependency:copy-dependencies", f"-DoutputDirectory={target}", "-DincludeScope=runtime"]
    log.info("fetching Apache Kafka with Maven: %s", " ".join(command))
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        output = "".join(part.decode("utf-8", "replace") if isinstance(part, bytes) else part
                         for part in (exc.stdout or "", exc.stderr or ""))
        raise BrokerError(f"Maven did not finish fetching Kafka within {MAVEN_TIMEOUT_S:.0f}s:\n{_tail(output)}") from None
    if done.returncode != 0:
        raise BrokerError(
            f"Maven failed (exit {done.returncode}) fetching Kafka with {pom}; its output ends:\n"
            f"{_tail(done.stdout + done.stderr)}\n(check that Maven Central is reachable, {NO_BROKER_HINT})")


def fetch_kafka(cache_dir: Path | None = None, *, pom: Path = KAFKA_POM) -> Path:
    """The folder of verified Kafka jars (``<cache_dir>/libs``), fetched with Maven if needed.

    A cache that fails verification (a jar missing, added or changed since its sha256 list was
    written) is logged and fetched again; if the fresh copy differs from the recorded list too
    (then Maven's own repository holds a damaged file), a ``BrokerError`` says which jar."""
    version = kafka_version(pom)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(version)
    libs = cache_dir / "libs"
    with _locked(cache_dir):
        recorded = _read_checksums(libs) if libs.is_dir() else None
        if libs.is_dir():
            problems = verify_kafka(libs, version)
            if not problems:
                return libs
            log.warning("Kafka cache %s failed verification (%s); fetching it again", libs, "; ".join(problems))
        staging = cache_dir / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        _run_maven(pom, staging)
        problems = [f"{name} is missing" for name in (f"kafka_2.13-{version}.jar", f"kafka-clients-{version}.jar")
                    if not (staging / name).is_file()] + _check_jars(staging)
        if recorded:  # the same jar names must have the same bytes as when first fetched
            problems += [f"{p.name}: sha256 differs from the {CHECKSUMS} recorded at the first fetch"
                         for p in sorted(staging.glob("*.jar")) if p.name in recorded and file_sha256(p) != recorded[p.name]]
        if problems:
            raise BrokerError(
                f"the Kafka jars Maven fetched into {staging} are not usable: {'; '.join(problems)}. Delete the "
                f"damaged files from Maven's local repository (~/.m2/repository) and {cache_dir}, then fetch again")
        sums = "".join(f"{file_sha256(p)}  {p.name}\n" for p in sorted(staging.glob("*.jar")))
        (staging / CHECKSUMS).write_text(sums)
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        log.info("Apache Kafka %s fetched into %s (%d jars)", version, libs, sums.count("\n"))
        return libs


# -- the broker -----------------------------------------------------------------------------
def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "the Apache Kafka broker runs on the JDK, and `java` is not on PATH: install a JDK or JRE 17+ "
            f"(Debian: apt-get install openjdk-17-jre-headless) and Maven, {NO_BROKER_HINT}")
    return java


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, url-safe base64 without padding (as StorageTool random-uuid)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # one id in 64 starts with '-', which StorageTool's argument parser takes for an option (as Kafka's Uuid avoids)
        if not cluster_id.startswith("-"):
            return cluster_id


LOG4J2_PROPERTIES = """\
status = warn
# keep logging through Kafka's own shutdown hook (log4j's would stop it first)
shutdownHook = disable
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

# small heap, serial GC (no parallel GC threads), the JIT's tiers as usual; a JVM without the
# HotSpot-only options below (class-data sharing) ignores them rather than refusing to start
JVM_OPTIONS = ["-XX:+IgnoreUnrecognizedVMOptions", "-XX:+UseSerialGC", "-Xss512k", "-Djava.awt.headless=true",
               "-Dfile.encoding=UTF-8"]


class _ClassArchive:
    """A dynamic class-data-sharing archive of one JVM command (``format`` or ``broker``), kept in
    the libs folder (so a refetch drops it) and keyed on the ``java`` binary.

    The first run dumps the classes it loaded when it exits (``-XX:ArchiveClassesAtExit``, a few
    seconds and ~50 MB, once); later runs map them (``-XX:SharedArchiveFile``), which halves the
    broker's start on a loaded 2-core machine (~25 s -> ~10 s seen here). A stale or damaged
    archive is refused by the JVM, which then starts without it."""

    def __init__(self, libs: Path, kind: str, java: str):
        binary = Path(java).resolve()
        stat = binary.stat()
        key = hashlib.sha256(f"{binary}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        self.path = libs / f"cds-{kind}-{key}.jsa"
        self.pending = libs / f".cds-{kind}-{key}.{uuid.uuid4().hex[:8]}.jsa" if not self.path.is_file() else None

    @property
    def options(self) -> list[str]:
        if self.pending is None:
            return [f"-XX:SharedArchiveFile={self.path}"]
        return [f"-XX:ArchiveClassesAtExit={self.pending}"]

    def finish(self, exited_by_itself: bool) -> None:
        """Keep what a JVM that exited by itself dumped; drop a dump cut short."""
        pending, self.pending = self.pending, None
        if pending is None or not pending.exists():
            return
        if exited_by_itself and pending.stat().st_size > 0:
            pending.replace(self.path)
        else:
            pending.unlink(missing_ok=True)


class ApacheKafkaBroker:
    """A single-node Apache Kafka 4.x (KRaft, broker+controller) subprocess on loopback, for tests,
    the bench and local runs. Its data lives in a temporary folder removed on ``stop()``.

    >>> with ApacheKafkaBroker(port=free_port()) as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:...
    """

    def __init__(self, port: int | None = None, *, host: str = "127.0.0.1", log_path: Path | None = None,
                 cache_dir: Path | None = None, heap: str = "384m", partitions: int = 4):
        self.host, self.port = host, port or free_port()
        self.log_path = Path(log_path or Path(tempfile.gettempdir()) / f"streamdetect-kafka-{self.port}.log")
        self.cache_dir = cache_dir
        self.heap, self.partitions = heap, partitions
        self.controller_port: int | None = None
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._archive: _ClassArchive | None = None
        self.version = kafka_version()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def server_properties(self, log_dir: Path) -> str:
        controller = f"{self.host}:{self.controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(log_dir),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "false",  # as in production: topics are created explicitly
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",  # 50 by default: a slower first group join on 2 cores
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # few threads: the machine has 2 cores shared with the worker and the tests
            "num.network.threads": "1",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "num.replica.fetchers": "1",
            "log.cleaner.threads": "1",
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def start(self, timeout: float = 90.0) -> "ApacheKafkaBroker":
        """Fetch (once), format, start; returns when the broker answers metadata, or raises BrokerError.

        ``timeout`` bounds the format and the start; a first fetch (Maven) comes on top of it."""
        if self.process is not None:
            return self
        if port_open(self.host, self.port):
            raise BrokerError(f"{self.bootstrap} is already in use; stop what listens there or pick another port")
        started = time.monotonic()
        java = _java()
        libs = fetch_kafka(self.cache_dir)
        classpath = f"{libs}/*"
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"streamdetect-kafka-{self.port}-"))
        try:
            properties = self.workdir / "server.properties"
            properties.write_text(self.server_properties(self.workdir / "data"))
            log4j = self.workdir / "log4j2.properties"
            log4j.write_text(LOG4J2_PROPERTIES)
            jvm = [java, *JVM_OPTIONS, f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.workdir}"]
            archive, formatted = _ClassArchive(libs, "format", java), None
            try:
                formatted = subprocess.run(
                    [*jvm, *archive.options, "-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", classpath,
                     "kafka.tools.StorageTool", "format", "--standalone", "--cluster-id", _cluster_id(),
                     "--config", str(properties)],
                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=max(timeout, 30.0))
            except subprocess.TimeoutExpired:
                raise BrokerError(f"formatting the KRaft storage in {self.workdir} took over {max(timeout, 30.0):.0f}s") from None
            finally:
                archive.finish(exited_by_itself=formatted is not None and formatted.returncode == 0)
            if formatted.returncode != 0:
                raise BrokerError(f"formatting the KRaft storage in {self.workdir} failed (exit {formatted.returncode}):\n"
                                  f"{_tail(formatted.stdout + formatted.stderr)}")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log_file:
                log_start = log_file.tell()
                self._archive = _ClassArchive(libs, "broker", java)
                # own session: a Ctrl-C aimed at the worker does not kill the broker under it mid-shutdown
                self.process = subprocess.Popen([*jvm, *self._archive.options, f"-Xmx{self.heap}", "-Xms64m", "-cp",
                                                 classpath, "kafka.Kafka", str(properties)], stdout=log_file,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = started + timeout
            while not port_open(self.host, self.port):
                if self.process.poll() is not None:
                    raise BrokerError(f"Apache Kafka exited with status {self.process.returncode} while starting; "
                                      f"{self.log_path} ends:\n{_tail_file(self.log_path, log_start)}")
                if time.monotonic() > deadline:
                    raise BrokerError(f"Apache Kafka did not listen on {self.bootstrap} within {timeout:.0f}s; "
                                      f"{self.log_path} ends:\n{_tail_file(self.log_path, log_start)}")
                time.sleep(0.1)
            try:
                run_sync(wait_for_metadata({"bootstrap_servers": self.bootstrap},
                                           timeout=max(deadline - time.monotonic(), 10.0)))
            except BrokerError as exc:
                raise BrokerError(f"{exc}; {self.log_path} ends:\n{_tail_file(self.log_path, log_start)}") from None
        except BaseException:
            self.stop()
            raise
        log.info("Apache Kafka %s (pid %d) listening on %s after %.1fs, log %s", self.version, self.process.pid,
                 self.bootstrap, time.monotonic() - started, self.log_path)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL after ``timeout`` s; removes the data folder."""
        process, self.process = self.process, None
        archive, self._archive = self._archive, None
        if process is not None and process.poll() is None:
            # the first run also writes its class archive on the way out: give it the time
            stop_process(process, timeout + (60.0 if archive is not None and archive.pending else 0.0))
            log.info("Apache Kafka on %s stopped", self.bootstrap)
        if archive is not None:
            archive.finish(exited_by_itself=process is not None and process.returncode != -signal.SIGKILL)
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> "ApacheKafkaBroker":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- command line ---------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Apache Kafka 4.x from Maven Central, started on the JDK (needs java and mvn; no Docker)."""


@cli.command()
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the jars go (default: .cache/kafka-<version> under the project root)")
def fetch(cache_dir: Path | None) -> None:
    """Fetch the pinned Kafka with Maven (once), verify the jars, print their folder."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        click.echo(fetch_kafka(cache_dir))
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option("--port", type=int, default=None, help="port to listen on (default: settings kafka.embedded_port)")
@click.option("--heap", default="384m", show_default=True, help="broker JVM heap (-Xmx)")
def serve(port: int | None, heap: str) -> None:
    """Run Apache Kafka in the foreground (Ctrl-C stops it; its data is removed) and create the topics."""
    from streamdetect.kafka.broker import ensure_topics
    from streamdetect.settings import get_settings

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C, and SIGTERM from a supervisor, stop the broker too (it runs in its own session); also
    # where SIGINT came in ignored (a background job of a non-interactive shell)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    broker = ApacheKafkaBroker(port or settings.kafka.embedded_port, heap=heap, partitions=settings.topics.partitions)
    try:
        broker.start()
        created = ensure_topics(broker.bootstrap, settings)
        click.echo(f"Apache Kafka {broker.version} on {broker.bootstrap} (log {broker.log_path}); "
                   f"created topics: {', '.join(created) or 'none'}")
        click.echo(f"point the worker at it: STREAMDETECT_KAFKA__BOOTSTRAP={broker.bootstrap}")
        while broker.process is not None and broker.process.poll() is None:
            time.sleep(0.5)
        if broker.process is not None:
            raise click.ClickException(f"the broker exited with status {broker.process.returncode}; "
                                       f"see {broker.log_path}")
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(cli())
