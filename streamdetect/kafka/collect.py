"""Read the worker's output topics back: alerts, scores records and dead letters.

Used by the demo and the integration tests to account for every event sent. Reads with no
consumer group from the start of each topic and keeps records produced since ``since_ms``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from tqdm.auto import tqdm

from streamdetect.settings import Settings


@dataclass
class Outputs:
    alerts: list[dict] = field(default_factory=list)
    scores: dict[str, dict] = field(default_factory=dict)  # event id -> latest {score, p_value, alerted, threshold, model_version}
    score_records: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    times_scored: Counter = field(default_factory=Counter)  # event id -> how many score entries it got

    @property
    def dead_by_reason(self) -> Counter:
        return Counter(d["reason"] for d in self.dead_letters)

    def accounted(self) -> int:
        return len(self.scores) + len(self.dead_letters)

    def alerts_pending(self) -> int:
        """Events whose scores record says ``alerted`` but whose alert has not been read yet.

        Alerts and scores travel on different topics, so the last scores can arrive before the
        last alerts; stopping on the scores alone would drop alerts the worker did publish."""
        flagged = {event_id for event_id, s in self.scores.items() if s["alerted"]}
        return len(flagged - {a["event_id"] for a in self.alerts})


async def collect_outputs(
    bootstrap_kwargs: dict[str, Any],
    settings: Settings,
    *,
    expected: int,
    since_ms: int = 0,
    timeout: float = 120.0,
    event_ids: set[str] | None = None,
    progress: bool = True,
) -> Outputs:
    """Consume until ``expected`` events are accounted for (scored or dead-lettered) or ``timeout``
    passes. ``event_ids`` restricts the scores kept to those events."""
    topics = settings.topics
    consumer = AIOKafkaConsumer(topics.alerts, topics.scores, topics.deadletter, **bootstrap_kwargs,
                                group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=100, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    out = Outputs()
    deadline = time.monotonic() + timeout
    try:
        with tqdm(total=expected, desc="accounted", unit="ev", disable=not progress, mininterval=0.5) as bar:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
                for tp, records in batch.items():
                    for record in records:
                        if record.timestamp is not None and record.timestamp < since_ms:
                            continue
                        value = orjson.loads(record.value)
                        if tp.topic == topics.alerts:
                            out.alerts.append(value)
                        elif tp.topic == topics.deadletter:
                            out.dead_letters.append(value)
                        else:
                            _add_scores(out, value, event_ids)
                bar.update(out.accounted() - bar.n)
                if out.accounted() >= expected and not out.alerts_pending():
                    break
    finally:
        await consumer.stop()
    return out


def _add_scores(out: Outputs, record: dict, event_ids: set[str] | None) -> None:
    out.score_records.append(record)
    for i, event_id in enumerate(record["event_ids"]):
        if event_ids is not None and event_id not in event_ids:
            continue
        out.times_scored[event_id] += 1
        out.scores[event_id] = {
            "score": record["scores"][i], "p_value": record["p_values"][i], "alerted": record["alerted"][i],
            "threshold": record["thresholds"][i], "model_version": record["model_version"],
            "latency_ms_max": record["latency_ms_max"], "produced_at": record["produced_at"],
        }
