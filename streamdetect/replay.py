"""Recorded feeds: write a dataset slice as events, and replay a file of events into a topic.

``record`` writes events as JSON lines and the labels beside them in a CSV (``event_id,label``),
never inside the events, so the worker cannot see them. ``send`` replays a JSONL or CSV file
into a topic at a given rate through a batching producer. JSONL lines are sent byte for byte,
so a recorded file may hold malformed events on purpose.

    python -m streamdetect.replay record --feed transactions --split test --out runs/replay/transactions
    python -m streamdetect.replay send runs/replay/transactions.jsonl --topic transactions --rate 5000
"""

from __future__ import annotations

import asyncio
import csv
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson
from tqdm.auto import tqdm

from streamdetect.feeds import FEEDS, get_feed
from streamdetect.settings import Settings, get_settings

log = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "test")


# -- record ---------------------------------------------------------------------------------
def dataset_slice(feed_name: str, settings: Settings, *, split: str = "test", limit: int | None = None,
                  start: int = 0) -> tuple[list[dict], np.ndarray]:
    """Events and labels of a feed's benchmark dataset split (the rows the offline table scores)."""
    from offline.data import load_tabular
    from offline.training.train import PROTOCOL_SPLITS

    feed = get_feed(feed_name)
    if feed.dataset is None or feed.events_from_dataset is None:
        raise click.UsageError(f"feed {feed_name!r} has no dataset to record events from")
    store = settings.data.store()
    data = load_tabular(feed.dataset, store)
    index = getattr(PROTOCOL_SPLITS[feed.dataset](data), split)[start:]  # the rows the offline table scores
    if limit is not None:
        index = index[:limit]
    return feed.events_from_dataset(data, index), data.labels[index]


def write_recording(events: Sequence[dict], labels: np.ndarray, out_prefix: Path) -> tuple[Path, Path]:
    """``<prefix>.jsonl`` (events) and ``<prefix>.labels.csv`` (``event_id,label``)."""
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    events_path, labels_path = out_prefix.with_suffix(".jsonl"), out_prefix.with_suffix(".labels.csv")
    with open(events_path, "wb") as handle:
        for event in events:
            handle.write(orjson.dumps(event) + b"\n")
    with open(labels_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event_id", "label"])
        writer.writerows((event["event_id"], int(label)) for event, label in zip(events, labels))
    return events_path, labels_path


def read_labels(path: Path) -> dict[str, int]:
    with open(path, newline="") as handle:
        return {row["event_id"]: int(row["label"]) for row in csv.DictReader(handle)}


# -- send -------------------------------------------------------------------------------------
def read_messages(path: Path) -> list[bytes]:
    """The messages of a recorded feed: JSONL lines as they are, or CSV rows as JSON objects
    (numbers parsed as numbers)."""
    if path.suffix == ".csv":
        with open(path, newline="") as handle:
            return [orjson.dumps({k: _number_or_text(v) for k, v in row.items()}) for row in csv.DictReader(handle)]
    with open(path, "rb") as handle:
        return [line.rstrip(b"\r\n") for line in handle if line.strip()]


def _number_or_text(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def key_from_field(field: str | None) -> Callable[[bytes], bytes | None]:
    """Kafka key of a message: the value of ``field`` (the entity key), else the event id, else
    none; unreadable messages get no key."""

    def key(message: bytes) -> bytes | None:
        try:
            obj = orjson.loads(message)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        value = obj.get(field) if field else None
        value = value if value is not None else obj.get("event_id")
        return None if value is None else str(value).encode()

    return key


async def send_messages(
    bootstrap_kwargs: dict[str, Any],
    topic: str,
    messages: Iterable[bytes],
    *,
    rate: float = 0.0,
    key: Callable[[bytes], bytes | None] | None = None,
    progress: bool = True,
    total: int | None = None,
) -> dict:
    """Produce ``messages`` to ``topic`` at ``rate`` messages/s (0 = as fast as possible); waits
    for every acknowledgement. Returns counts and timing."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**bootstrap_kwargs, linger_ms=10, max_batch_size=1 << 20, acks="all")
    await producer.start()
    started = time.perf_counter()
    sent = 0
    pending: list[asyncio.Future] = []
    try:
        with tqdm(total=total, desc=f"send {topic}", unit="ev", disable=not progress, mininterval=0.5) as bar:
            for message in messages:
                pending.append(await producer.send(topic, message, key=key(message) if key else None))
                sent += 1
                if len(pending) >= 5000:  # bound memory; acknowledgements arrive in batches anyway
                    await asyncio.gather(*pending)
                    bar.update(len(pending))
                    pending = []
                if rate > 0:
                    ahead = sent / rate - (time.perf_counter() - started)
                    if ahead > 0.005:
                        await asyncio.sleep(ahead)
            await asyncio.gather(*pending)
            bar.update(len(pending))
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    return {"sent": sent, "seconds": seconds, "rate": sent / seconds if seconds else float("inf")}


# -- command line -----------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Record a dataset slice as a feed, and replay recorded feeds into Kafka topics."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--feed", type=click.Choice(sorted(FEEDS)), default="transactions", show_default=True)
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True,
              help="rows of the dataset's benchmark split (credit-card: time-ordered)")
@click.option("--limit", type=int, default=None, help="first N rows of the split only")
@click.option("--out", "out_prefix", type=click.Path(path_type=Path), default=Path("runs/replay/transactions"),
              show_default=True, help="writes OUT.jsonl (events) and OUT.labels.csv (event_id,label)")
def record(feed: str, split: str, limit: int | None, out_prefix: Path) -> None:
    """Write the feed's dataset split as JSON-lines events, labels in a separate CSV."""
    events, labels = dataset_slice(feed, get_settings(), split=split, limit=limit)
    events_path, labels_path = write_recording(events, labels, out_prefix)
    click.echo(f"{len(events)} events ({int(labels.sum())} labelled anomalous) -> {events_path}, labels -> {labels_path}")


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", default=None, help="target topic (default: the transactions feed's topic)")
@click.option("--rate", type=float, default=0.0, show_default=True, help="events per second; 0 = as fast as possible")
@click.option("--key-field", default=None, help="event field used as the Kafka key (default: event_id)")
@click.option("--bootstrap", default=None, help="broker host:port (default: settings, else the embedded broker)")
def send(path: Path, topic: str | None, rate: float, key_field: str | None, bootstrap: str | None) -> None:
    """Replay a JSONL (sent byte for byte) or CSV file into a topic."""
    from streamdetect.kafka.broker import client_kwargs
    from streamdetect.kafka.local import ResolvedBroker, resolve_bootstrap

    settings = get_settings()
    resolved = ResolvedBroker(bootstrap, "external") if bootstrap else resolve_bootstrap(settings)
    if resolved.owner is not None:
        resolved.stop()
        raise click.UsageError("no broker is running: set --bootstrap or STREAMDETECT_KAFKA__BOOTSTRAP, or start the "
                               "worker (or python -m streamdetect.kafka.local serve) first")
    messages = read_messages(path)
    result = asyncio.run(send_messages(
        client_kwargs(settings, resolved.bootstrap), topic or settings.topics.transactions, messages,
        rate=rate, key=key_from_field(key_field), total=len(messages),
    ))
    click.echo(f"sent {result['sent']} events in {result['seconds']:.1f}s ({result['rate']:.0f}/s)")


if __name__ == "__main__":
    cli()


def malformed_examples(template: dict, *, max_event_bytes: int = 64 * 1024) -> list[tuple[str, bytes, str, str | None]]:
    """Broken variants of a good event, one per way an event can be bad:
    ``(name, message, expected dead-letter reason, expected pydantic error type or None)``.
    Each carries its own event id (``bad-<name>``) where it has one, so its dead letter can be found."""
    def variant(name: str, **changes) -> dict:
        event = {**template, "event_id": f"bad-{name}", **changes}
        return {k: v for k, v in event.items() if v is not _DROP}

    numeric = next(k for k, v in template.items() if isinstance(v, float))  # a bounded float field of the feed
    nan_event = variant("nan")
    raw_nan = orjson.dumps(nan_event).replace(f'"{numeric}":{orjson.dumps(template[numeric]).decode()}'.encode(),
                                              f'"{numeric}":NaN'.encode())  # as Python's json.dumps writes NaN
    return [
        ("invalid-json", b'{"event_id": "bad-invalid-json", "V1": 1.0,', "invalid_json", None),
        ("not-an-object", orjson.dumps([template]), "not_an_object", None),
        ("missing-field", orjson.dumps(variant("missing-field", **{numeric: _DROP})), "invalid_event", "missing"),
        ("wrong-type", orjson.dumps(variant("wrong-type", **{numeric: "abc"})), "invalid_event", "float_type"),
        ("nan", raw_nan, "invalid_event", "finite_number"),
        ("out-of-range", orjson.dumps(variant("out-of-range", **{numeric: -1e30})), "invalid_event", "greater_than_equal"),
        ("extra-field", orjson.dumps(variant("extra-field", Class=1)), "invalid_event", "extra_forbidden"),
        ("oversized", orjson.dumps(variant("oversized", card_id="x" * max_event_bytes)), "oversized", None),
    ]


_DROP = object()
