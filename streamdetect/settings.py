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
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap: str | None = Field(
        None, description="host:port[,host:port]; unset = start/reuse the embedded Tansu broker"
    )
    embedded_port: int = Field(19092, description="port of the embedded development broker")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    client_id: str = "streamdetect"
    consumer_group: str = "streamdetect-scorers"
    session_timeout_ms: int = Field(10_000, description="group membership timeout of the batch consumer")
    heartbeat_interval_ms: int = 1_000
    fetch_max_wait_ms: int = Field(50, description="short fetch wait keeps latency low")


class TopicSettings(BaseModel):
    transactions: str = "transactions"
    access_logs: str = "access-logs"
    sensor_readings: str = "sensor-readings"
    alerts: str = "alerts"
    scores: str = "scores"
    deadletter: str = "deadletter"
    model_control: str = "model-control"
    feedback: str = "feedback"
    state: str = "streamdetect-state"
    partitions: int = Field(4, description="partitions of every topic the project creates")
    replication_factor: int = 1


class DataSettings(BaseModel):
    data_dir: Path = Field(Path("data"), description="download cache of the datasets")
    mirror_dir: Path | None = Field(None, description="directory holding the same files as the canonical homes")
    allow_download: bool = Field(True, description="fall back to the canonical download")


class ScoringSettings(BaseModel):
    target_false_alarm_rate: float = Field(0.01, gt=0, lt=1, description="alert when p-value < this")
    batch_size: int = Field(2048, ge=1, description="max events per scored batch")
    linger_ms: int = Field(50, ge=0, description="max wait to fill a batch")
    threshold_window: int = Field(1000, ge=10, description="recent scores per key for the adaptive quantile")
    threshold_warmup: int = Field(200, ge=0, description="events per key before the key's own quantile counts")
    top_features: int = Field(5, ge=1)
    publish_scores: bool = True
    checkpoint_interval_s: float = Field(1.0, ge=0, description="how often partition state is checkpointed")
    max_event_bytes: int = Field(64 * 1024, description="larger messages are dead-lettered unread")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMDETECT_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    data: DataSettings = DataSettings()
    scoring: ScoringSettings = ScoringSettings()
    registry_dir: Path = Field(Path("registry"), description="bundle registry: <registry>/<feed>/<version>/")
    feeds: list[str] = Field(["transactions"], description="feeds this worker scores")
    app_id: str = "streamdetect"
    web_port: int = Field(6066, description="Faust web server (health, metrics)")
    device: str = Field("cpu", description="torch device for scoring and training")
    log_level: str = "info"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
