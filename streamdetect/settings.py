"""The one settings class. Every knob of the worker and of the offline commands lives here.

Environment variables use the prefix ``STREAMDETECT_`` and ``__`` between nested names, e.g.
``STREAMDETECT_KAFKA__BOOTSTRAP=broker:9092`` or ``STREAMDETECT_DATA__MIRROR_DIR=../shared/data``.
No other module reads the environment: they take a ``Settings`` (or plain arguments).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from offline.settings import OfflineSettings


class KafkaSettings(BaseModel):
    bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset = start/reuse the embedded Tansu broker"
    )
    embedded_port: int = Field(19092, description="port of the embedded development broker")
    local_broker: Literal["tansu", "apache"] = Field("tansu", description="local broker to start when bootstrap is unset: tansu (in memory, starts in milliseconds) or apache (Apache Kafka 4.x from Maven Central on the JDK: needs java and mvn, ~15 s to start; python -m streamdetect.kafka.apache)")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT", description="Kafka security protocol")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(None, description="SASL mechanism")
    sasl_username: str | None = Field(None, description="SASL user")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_cafile: Path | None = Field(None, description="CA bundle for TLS")
    ssl_certfile: Path | None = Field(None, description="client certificate for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="client key for mutual TLS")
    client_id: str = Field("streamdetect", description="Kafka client id")
    consumer_group: str = Field("streamdetect-scorers", description="consumer group of the batch scorers (scale out: more workers, same group)")
    session_timeout_ms: int = Field(10_000, description="group membership timeout of the batch consumer")
    heartbeat_interval_ms: int = Field(1_000, description="group heartbeat of the batch consumer")
    fetch_max_wait_ms: int = Field(10, ge=1, description="longest a fetch waits for data: Tansu answers an idle fetch only when this runs out (python -m benchmarks.broker_probe), so it bounds latency there; Apache Kafka answers as data arrives, so 100-500 suits it")
    commit_interval_ms: int = Field(200, ge=0, description="least time between offset commits of the batch scorer: a commit per batch costs a broker round trip per batch; a kill replays at most this much (at-least-once)")


class TopicSettings(BaseModel):
    transactions: str = Field("transactions", description="feed: card transactions (JSON events)")
    access_logs: str = Field("access-logs", description="feed: connection/access-log records")
    sensor_readings: str = Field("sensor-readings", description="feed: sensor readings")
    alerts: str = Field("alerts", description="one explained record per flagged event, keyed by event id")
    scores: str = Field("scores", description="every event's score, one record per scored batch")
    deadletter: str = Field("deadletter", description="events that could not be scored, with raw bytes and a reason code")
    model_control: str = Field("model-control", description="load / promote / rollback / retrain messages")
    feedback: str = Field("feedback", description="analyst labels for alerted events")
    state: str = Field("streamdetect-state", description="compacted checkpoints of per-partition state")
    partitions: int = Field(4, description="partitions of every topic the project creates")
    replication_factor: int = Field(1, description="replication of the topics the project creates")


class ScoringSettings(BaseModel):
    target_false_alarm_rate: float = Field(0.01, gt=0, lt=1, description="alert when p-value < this")
    batch_size: int = Field(4096, ge=1, description="max events per scored batch: each batch has fixed costs (a few dozen numpy and torch calls, a scores record per partition, a fetch), which 4096 events share better than 2048; only a backlog fills a batch, so latency at a steady rate does not depend on it")
    linger_ms: int = Field(50, ge=0, description="max wait to fill a batch")
    threshold_window: int = Field(1000, ge=10, description="recent scores per key for the adaptive quantile")
    threshold_warmup: int = Field(200, ge=0, description="events per key before its own score level adapts the threshold; a value above any key's volume keeps the calibrated threshold fixed (for feeds where anomalies are not rare)")
    top_features: int = Field(5, ge=1, description="features named in each alert")
    publish_scores: bool = Field(True, description="publish one scores record per batch")
    checkpoint_interval_s: float = Field(1.0, ge=0, description="how often partition state is checkpointed")
    max_event_bytes: int = Field(64 * 1024, description="larger messages are dead-lettered unread")
    alert_budget_per_hour: float | None = Field(None, gt=0, description="at most this many alerts per key per hour of event time (token bucket; unset = no budget)")


class DriftSettings(BaseModel):
    enabled: bool = Field(True, description="watch each key's p-values for drift and publish drift events on model-control")
    detector: Literal["adwin", "kswin"] = Field("adwin", description="river drift detector")
    delta: float = Field(0.001, gt=0, lt=1, description="ADWIN confidence")
    alpha: float = Field(0.0001, gt=0, lt=1, description="KSWIN significance")
    min_events: int = Field(200, ge=1, description="values per key before a drift can be reported")
    cooldown: int = Field(1000, ge=0, description="values per key after a drift before the next one is reported")


class RetrainSettings(BaseModel):
    enabled: bool = Field(True, description="retrain automatically on drift (a manual retrain message always works)")
    window_events: int = Field(4000, ge=10, description="events after the drift point the candidate is trained on")
    shadow_events: int = Field(2000, ge=10, description="next events scored by the current model and the candidate side by side")
    min_shadow_events: int = Field(200, ge=1, description="fewer shadow events than this: no promotion")
    min_train_rows: int = Field(200, ge=10, description="fewer usable rows than this: no candidate")
    calibration_fraction: float = Field(0.25, gt=0, lt=1, description="latest share of the training rows held out for calibration")
    params: dict = Field({}, description="hyperparameters overriding the ones of the model in service (e.g. epochs)")
    cooldown_s: float = Field(120.0, ge=0, description="seconds after a retrain starts before drift can start another")
    collect_timeout_s: float = Field(600.0, gt=0, description="how long to wait for the training and shadow events to arrive")
    timeout_s: float = Field(900.0, gt=0, description="training time limit")
    auto_promote: bool = Field(True, description="promote a candidate that wins the shadow comparison")


class LabelSettings(BaseModel):
    """Analysts' labels (``feedback`` topic) and the second-stage scorer learnt from them."""

    learn_every: int = Field(10, ge=0, description="new labels that start a label-learning run of every served feed (0 = only on a {action: learn} control message)")
    min_labels: int = Field(10, ge=2, description="labelled alerts of a feed below which no second stage is learnt")
    min_per_class: int = Field(3, ge=1, description="confirmed and false-alarm labels each need at least this many")
    regularization: float = Field(1.0, gt=0, description="inverse L2 strength C of the second stage's logistic regression")
    calibration_events: int = Field(20000, ge=100, description="latest scored, unalerted events whose combined scores calibrate the second stage")
    recent_alerts: int = Field(500, ge=1, description="alerts the review page keeps in memory")
    suppress_hours: float = Field(24.0, ge=0, description="hours of event time a false_alarm label holds back the same pattern (top features) of the same key; 0 = never; events without a key are never held back")


class Settings(OfflineSettings):
    """The worker's settings: offline's (``data``, ``registry_dir``) plus Kafka, topics, scoring, drift, retraining."""

    model_config = SettingsConfigDict(env_prefix="STREAMDETECT_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    scoring: ScoringSettings = ScoringSettings()
    drift: DriftSettings = DriftSettings()
    retrain: RetrainSettings = RetrainSettings()
    labels: LabelSettings = LabelSettings()
    feeds: list[str] = Field(["transactions"], description="feeds this worker scores")
    app_id: str = Field("streamdetect", description="Faust app id (prefix of its internal topics)")
    web_port: int = Field(6066, description="Faust web server (health, metrics)")
    device: str = Field("cpu", description="torch device for scoring and training")
    log_level: str = Field("info", description="worker log level")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_table() -> str:
    """Markdown table of every setting with its environment variable and default (for the README)."""
    rows = ["| environment variable | default | meaning |", "|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}__")
                continue
            default = field.get_default(call_default_factory=True)
            shown = "(unset)" if default is None else f"`{default}`"
            rows.append(f"| `{prefix}{name.upper()}` | {shown} | {field.description or ''} |")

    walk(Settings, "STREAMDETECT_")
    return "\n".join(rows)


def main() -> None:
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="rewrite the table between the settings-table markers of this file")
    def cli(readme: Path | None) -> None:
        """Print every setting (environment variable, default, meaning) as a Markdown table."""
        table = settings_table()
        if readme is None:
            click.echo(table)
            return
        text = readme.read_text()
        start, end = "<!-- settings-table -->", "<!-- /settings-table -->"
        if start not in text or end not in text:
            raise click.ClickException(f"{readme}: no {start} ... {end} markers; add them where the table belongs")
        head, rest = text.split(start, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")

    cli()


if __name__ == "__main__":
    main()
