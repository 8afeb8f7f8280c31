"""Where the datasets live: the data settings that offline owns.

Environment variables ``STREAMDETECT_DATA__DATA_DIR``, ``STREAMDETECT_DATA__MIRROR_DIR`` and
``STREAMDETECT_DATA__ALLOW_DOWNLOAD``; the worker's one ``Settings`` composes this class as its
``data`` section (``streamdetect.settings``), so both halves read the same variables and
``offline`` never imports ``streamdetect``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from offline.data.store import DataStore


class DataSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMDETECT_DATA__", extra="ignore")

    data_dir: Path = Field(Path("data"), description="download cache of the datasets")
    mirror_dir: Path | None = Field(None, description="directory holding the same files as the canonical homes")
    allow_download: bool = Field(True, description="fall back to the canonical download")

    def store(self) -> DataStore:
        """The dataset store these settings describe: cache, then mirror, then canonical download."""
        return DataStore(self.data_dir, self.mirror_dir, self.allow_download)


def data_store() -> DataStore:
    """The store of the data settings in the environment (the offline commands' one line)."""
    return DataSettings().store()
