"""The bundle in service per feed, swapped without a restart."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from offline import bundle as bundles
from offline.bundle import Bundle, BundleError

if TYPE_CHECKING:
    from streamdetect.serving.metrics import Metrics

log = logging.getLogger(__name__)


class ModelHolder:
    """The bundle in service per feed. A bundle that fails verification is refused (logged) and
    the one in service keeps serving; the batch scorer reads ``current(feed)`` at every batch."""

    def __init__(self, registry: Path, feeds: list[str], metrics: Metrics | None = None):
        self.registry, self.feeds = Path(registry), feeds
        self.metrics = metrics  # counts the promotions and rollbacks ``apply_control`` applies
        self.bundles: dict[str, Bundle] = {}
        self.refused: dict[str, str] = {}  # feed -> version last refused (not retried until the pointer moves)
        self.last_error: dict[str, str] = {}

    def current(self, feed: str) -> Bundle | None:
        return self.bundles.get(feed)

    def versions(self) -> dict[str, str | None]:
        return {feed: (b.version if (b := self.bundles.get(feed)) else None) for feed in self.feeds}

    def refresh(self, feed: str, *, force: bool = False) -> bool:
        """Load the registry's current bundle for ``feed`` if it is not the one in service; True if swapped."""
        try:
            wanted = bundles.current_version(self.registry, feed)
        except BundleError as exc:
            return self._refuse(feed, "?", str(exc))
        in_service = self.bundles.get(feed)
        if wanted is None or (in_service is not None and in_service.version == wanted):
            return False
        if not force and self.refused.get(feed) == wanted:
            return False
        try:
            loaded = bundles.load_bundle(bundles.feed_dir(self.registry, feed) / wanted)
        except BundleError as exc:
            self._refuse(feed, wanted, str(exc))
            if in_service is not None:
                return False
            # nothing in service yet (a worker starting after a bad promotion): rather than score
            # nothing, serve the newest earlier version of the promotion history that verifies
            loaded = self._fallback(feed, wanted)
            if loaded is None:
                return False
            self.bundles[feed] = loaded
            return True
        self.bundles[feed] = loaded
        self.refused.pop(feed, None)
        self.last_error.pop(feed, None)
        log.info("feed %s: now serving bundle %s (%s, was %s)", feed, loaded.version, loaded.model_name,
                 in_service.version if in_service else "none")
        return True

    def _fallback(self, feed: str, refused: str) -> Bundle | None:
        history = bundles.read_pointer(self.registry, feed)["history"]
        for version in reversed(history):
            if version == refused:
                continue
            try:
                loaded = bundles.load_bundle(bundles.feed_dir(self.registry, feed) / version)
            except BundleError as exc:
                log.error("feed %s: fallback bundle %s refused too: %s", feed, version, exc)
                continue
            log.error("feed %s: serving FALLBACK bundle %s from the promotion history, because the current "
                      "version %s is refused; promote or roll back to fix the registry", feed, version, refused)
            return loaded
        return None

    def _refuse(self, feed: str, version: str, error: str) -> bool:
        in_service = self.bundles.get(feed)
        self.refused[feed], self.last_error[feed] = version, error
        log.error("feed %s: REFUSED bundle %s: %s -- still serving %s", feed, version, error,
                  in_service.version if in_service else "nothing (not consuming until a valid bundle is promoted)")
        return False

    def apply_control(self, message: dict) -> str:
        """``{action: load|promote|rollback, feed, version?}`` -> what happened, in words."""
        action, feed = message.get("action"), message.get("feed")
        if feed not in self.feeds:
            return f"ignored control {message!r}: feed {feed!r} is not served here ({', '.join(self.feeds)})"
        try:
            if action == "promote":
                version = message.get("version")
                if not version:
                    return f"ignored control {message!r}: promote needs a version"
                bundles.promote(self.registry, feed, version)
            elif action == "rollback":
                bundles.rollback(self.registry, feed)
            elif action != "load":
                return f"ignored control {message!r}: action must be load, promote or rollback"
        except BundleError as exc:
            return f"control {action} for {feed} failed: {exc}"
        if self.metrics is not None:
            self.metrics.observe_control(feed, action)
        self.refresh(feed, force=True)
        return f"control {action} for {feed}: serving {self.versions()[feed]}"
