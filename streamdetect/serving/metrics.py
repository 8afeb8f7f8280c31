"""The worker's counters and timings: ``/metrics`` (Prometheus text format) and ``/metrics.json``.

Two views of the same counts. ``as_dict`` is the JSON view the demo, the bench and the tests read
(``/metrics.json``); ``render`` is the Prometheus text exposition (``/metrics``), built from
instruments on a registry of this ``Metrics`` instance (never the process-wide default registry:
tests and tools create several). The batch scorer reports each feed's batch through
``observe_batch`` and ``observe_published``, the model holder its promotions and rollbacks through
``observe_control``. Consumer lag and the model version in service are read when scraped, from the
callables ``lag`` and ``versions`` (set by the app once the consumer and the models exist).

Prometheus metrics (label ``feed`` is the feed's name, e.g. ``transactions``, not its topic):

- ``streamdetect_events_in_total{feed}``: events consumed (valid or not, and events replayed into a
  restored state only, as the JSON ``events``)
- ``streamdetect_events_scored_total{feed}``: events scored (the events "out")
- ``streamdetect_alerts_total{feed}``: alerts published
- ``streamdetect_dead_letters_total{feed,reason}``: events sent to the dead-letter topic, by reason code
  (``feed="feedback"``: analysts' label records that were refused)
- ``streamdetect_labels_total{label}``: analysts' labels accepted (``confirmed``, ``false_alarm``)
- ``streamdetect_batch_latency_seconds{feed}``: histogram of the time to score one feed's batch
  (``pipeline.process_batch``: decode, validate, featurize, score, thresholds, outputs), 1 ms - 5 s
- ``streamdetect_batch_oldest_event_age_seconds{feed}``: histogram of the age of each batch's oldest
  event when it was scored (its Kafka timestamp to scoring: the end-to-end latency's worst case)
- ``streamdetect_consumer_lag{topic,partition}``: records not yet handed to the scorer per assigned
  partition (highwater - position), at scrape time
- ``streamdetect_model_info{feed,version}``: 1 for the bundle version in service per feed
- ``streamdetect_model_promotions_total{feed}``, ``streamdetect_model_rollbacks_total{feed}``:
  control messages applied by this worker
- ``streamdetect_batches_total``, ``streamdetect_commit_failures_total``: the JSON view's counts
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

# the classic text format (0.0.4): what every Prometheus server (2.x and 3.x) and scraper reads;
# ``generate_latest`` writes it (our metric names need none of the 1.0.0 format's escaping)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
EVENT_AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

LagSource = Callable[[], Mapping[tuple[str, int], int]]
VersionsSource = Callable[[], Mapping[str, "str | None"]]


class _ScrapeTime:
    """Collector of what is read when scraped: consumer lag, models in service, plain counters."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def collect(self):
        m = self.metrics
        lag = GaugeMetricFamily("streamdetect_consumer_lag",
                                "Records of an assigned partition not yet handed to the scorer (highwater - position)",
                                labels=["topic", "partition"])
        for (topic, partition), value in sorted(self._read(m.lag, "consumer lag").items()):
            lag.add_metric([str(topic), str(partition)], float(value))
        yield lag
        info = GaugeMetricFamily("streamdetect_model_info", "The bundle version in service per feed (always 1)",
                                 labels=["feed", "version"])
        for feed, version in sorted(self._read(m.versions, "model versions").items()):
            if version:
                info.add_metric([feed, version], 1.0)
        yield info
        yield CounterMetricFamily("streamdetect_batches_total", "Batches handled (all feeds)", value=m.batches)
        yield CounterMetricFamily("streamdetect_commit_failures_total", "Offset commits that failed (retried later)",
                                  value=m.commit_failures)

    @staticmethod
    def _read(source: Callable[[], Mapping] | None, what: str) -> Mapping:
        if source is None:
            return {}
        try:
            return source() or {}
        except Exception as exc:  # a scrape never fails on this: the series is left out
            log.debug("metrics: %s not available (%s)", what, exc)
            return {}


class Metrics:
    def __init__(self, feeds: Iterable[str] = (), *, lag: LagSource | None = None,
                 versions: VersionsSource | None = None) -> None:
        self.started = time.time()
        self.events = 0
        self.scored = 0
        self.alerts = 0
        self.batches = 0
        self.dead_letters: dict[str, int] = defaultdict(int)
        self.last_batch_latency_ms = 0.0
        self.last_batch_seconds = 0.0
        self.busy_seconds = 0.0  # time spent handling batches: scored / busy_seconds = scoring capacity
        self.commit_failures = 0
        self.caught_up = 0  # events replayed into a restored state only (see ``CatchUp``)
        self.unseen_categories = 0  # categorical values the bundle never saw in training (scored as "<other>")
        # seconds per stage (fetch, decode, validate, featurize, score, threshold, outputs, publish, commit):
        # divided by ``events`` they name the bottleneck (python -m benchmarks.stream_bench reports them per 1k events)
        self.stage_seconds: dict[str, float] = defaultdict(float)
        # how late the event loop ran a 10 ms timer, last ~30 s (``BatchScorer._watch_loop_lag``)
        self.loop_lag_ms: deque[float] = deque(maxlen=3000)
        # read at scrape time: {(topic, partition): lag} and {feed: version or None}
        self.lag, self.versions = lag, versions

        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("streamdetect_events_in", "Events consumed from the feed's topic", ["feed"], registry=r)
        self.events_scored = Counter("streamdetect_events_scored", "Events scored", ["feed"], registry=r)
        self.alerts_published = Counter("streamdetect_alerts", "Alerts published", ["feed"], registry=r)
        self.labels_taken = Counter("streamdetect_labels", "Analyst labels accepted from the feedback topic", ["label"], registry=r)
        self.labels_by_kind: dict[str, int] = {}
        self.suppressed_by_label = 0  # alerts not published: the key's pattern was labelled a false alarm
        self.dead_lettered = Counter("streamdetect_dead_letters", "Events sent to the dead-letter topic, by reason",
                                     ["feed", "reason"], registry=r)
        self.batch_latency = Histogram("streamdetect_batch_latency_seconds", "Time to score one batch of a feed",
                                       ["feed"], buckets=BATCH_SECONDS_BUCKETS, registry=r)
        self.oldest_event_age = Histogram("streamdetect_batch_oldest_event_age_seconds",
                                          "Age of each batch's oldest event when scored (Kafka timestamp to scoring)",
                                          ["feed"], buckets=EVENT_AGE_BUCKETS, registry=r)
        self.promotions = Counter("streamdetect_model_promotions", "Promotions applied by this worker", ["feed"],
                                  registry=r)
        self.rollbacks = Counter("streamdetect_model_rollbacks", "Rollbacks applied by this worker", ["feed"],
                                 registry=r)
        r.register(_ScrapeTime(self))
        for feed in feeds:  # the feed's series exist (at 0) from the start, not from its first event
            for family in (self.events_in, self.events_scored, self.alerts_published, self.batch_latency,
                           self.oldest_event_age, self.promotions, self.rollbacks):
                family.labels(feed=feed)

    # -- updates ----------------------------------------------------------------------------------
    def observe_batch(self, feed: str, events: int, scored: int, *, latency_s: float,
                      oldest_event_age_s: float = 0.0, unseen_categories: int = 0) -> None:
        """One feed's batch went through the pipeline (published or, on catch-up, into the state only).
        ``latency_s``: the pipeline's time on it; ``oldest_event_age_s``: its oldest event's age (0: no
        event had a timestamp, then no age is observed)."""
        self.events += events
        self.scored += scored
        self.unseen_categories += unseen_categories
        self.last_batch_latency_ms = oldest_event_age_s * 1000
        self.events_in.labels(feed=feed).inc(events)
        self.events_scored.labels(feed=feed).inc(scored)
        self.batch_latency.labels(feed=feed).observe(latency_s)
        if oldest_event_age_s > 0:
            self.oldest_event_age.labels(feed=feed).observe(oldest_event_age_s)

    def observe_published(self, feed: str, alerts: int, dead_by_reason: Mapping[str, int]) -> None:
        """A batch's alerts and dead letters were sent."""
        self.alerts += alerts
        self.alerts_published.labels(feed=feed).inc(alerts)
        for reason, count in dead_by_reason.items():
            self.dead_letters[reason] += count
            self.dead_lettered.labels(feed=feed, reason=reason).inc(count)

    def observe_label(self, label: str) -> None:
        """An analyst's label was accepted (``feedback`` topic)."""
        self.labels_by_kind[label] = self.labels_by_kind.get(label, 0) + 1
        self.labels_taken.labels(label=label).inc()

    def observe_control(self, feed: str, action: str) -> None:
        """A promote or rollback control message was applied."""
        if action == "promote":
            self.promotions.labels(feed=feed).inc()
        elif action == "rollback":
            self.rollbacks.labels(feed=feed).inc()

    # -- views ------------------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE

    def as_dict(self) -> dict[str, Any]:
        uptime = time.time() - self.started
        return {
            "uptime_s": round(uptime, 1), "events": self.events, "scored": self.scored, "alerts": self.alerts,
            "batches": self.batches, "dead_letters": dict(self.dead_letters),
            "last_batch_latency_ms": round(self.last_batch_latency_ms, 1),
            "last_batch_seconds": round(self.last_batch_seconds, 4), "busy_seconds": round(self.busy_seconds, 3),
            "commit_failures": self.commit_failures, "caught_up": self.caught_up,
            "unseen_categories": self.unseen_categories, "labels": dict(self.labels_by_kind),
            "suppressed_by_label": self.suppressed_by_label,
            "stage_seconds": {name: round(seconds, 4) for name, seconds in self.stage_seconds.items()},
            "loop_lag_ms_last_30s": {q: round(float(np.percentile(self.loop_lag_ms, p)), 2)
                                     for q, p in (("p50", 50), ("p99", 99), ("max", 100))} if self.loop_lag_ms else None,
        }
