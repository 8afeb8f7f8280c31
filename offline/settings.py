"""The settings the offline commands read: datasets and the bundle registry.

``streamdetect.settings.Settings`` extends this class (the worker's one settings class adds
Kafka, topics, scoring, drift and retraining), so a variable such as
``STREAMDETECT_REGISTRY_DIR`` or ``STREAMDETECT_DATA__MIRROR_DIR`` means the same to both halves
and is defined once, here. No other offline module reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from offline.data.settings import DataSettings


class OfflineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMDETECT_", env_nested_delimiter="__", extra="ignore")

    data: DataSettings = Field(default_factory=DataSettings)
    registry_dir: Path = Field(Path("registry"), description="bundle registry: <registry>/<feed>/<version>/")
    code_version: str | None = Field(
        None, description="the code version stamped on result rows and bundles, in place of <package>+<git commit>: "
                          "for a copy of the tree without its git history (the lent GPU machine)")
