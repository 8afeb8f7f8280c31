"""The worker's first validation pass: a msgspec mirror of a feed's pydantic event model.

pydantic stays the schema (feeds declare their events with it, and its errors word the dead
letters). For the common case, a batch of valid events, the worker first decodes each record
with a msgspec ``Struct`` built from that model. In the bench this took the worker's
``decode_validate`` stage from 7.7 to 4.524 ms per 1,000 transactions (pydantic's batch call
alone: benchmarks/results/superseded/stream-before-msgspec-mirror.json; with the mirror, the
run after it: benchmarks/results/superseded/stream-before-exact-state-restore.json).

The struct checks types, missing and unknown fields only; the constraints are checked after it,
on the batch's columns (``NumberBounds`` on the whole float block at once, ``TextRule`` one pass
per string field). msgspec's own per-value constraints cost as much again as the decode itself
(its pattern check is a Python regex call per value, per event).

The mirror only has to be **stricter** than the model: whatever it refuses goes on to pydantic,
which accepts it or words the dead letter; whatever it accepts, pydantic would accept with the
same values (``tests/test_fast_decode.py`` checks this on fuzzed and edge-case events). Hence:

- Only models made of what can be mirrored exactly get a mirror: ``extra="forbid"``, no
  validators, fields that are floats, strings or datetimes (optionally ``| None = None``) with
  ``ge``/``le``/``gt``/``lt``, ``min_length``/``max_length`` and ``pattern`` constraints. Anything
  else (the sensor feed's model validator, lists, ints) returns ``None`` and the feed is validated
  by pydantic alone.
- A pattern ending in ``$`` ends in ``\\Z`` here: Python's ``$`` also matches before a trailing
  newline, the Rust regex pydantic uses does not.
- Datetimes are read as strings of the RFC 3339 subset below and parsed by
  ``datetime.fromisoformat``; other spellings pydantic accepts (a date alone, epoch numbers, more
  than 6 decimals, which pydantic truncates and msgspec would round) go to pydantic.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from dataclasses import dataclass
from functools import cache
from itertools import chain
from operator import attrgetter, itemgetter

import annotated_types as at
import msgspec
import numpy as np
import pydantic
from msgspec.structs import astuple
from pydantic import BaseModel

from streamdetect.feeds.columnar import EventTable, field_layout

#: ASCII digits only: Python's \d would also take other scripts' digits
RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?\Z"
_CONFIG_KEYS = {"extra", "frozen", "title"}  # model_config keys that change nothing the mirror checks
_CONSTRAINTS = {at.Ge: "ge", at.Le: "le", at.Gt: "gt", at.Lt: "lt", at.MinLen: "min_length", at.MaxLen: "max_length"}


class Unmirrorable(Exception):
    """The model uses something the mirror cannot check exactly as pydantic does."""


@dataclass(frozen=True)
class NumberBounds:
    """The number fields' ``ge``/``le``/``gt``/``lt``, one entry per number column (+-inf where a
    field has no such bound), checked on the batch's whole block at once."""

    ge: np.ndarray
    le: np.ndarray
    gt: np.ndarray
    lt: np.ndarray

    @classmethod
    def of(cls, constraints: list[dict]) -> "NumberBounds | None":
        if not any(constraints):
            return None
        low, high = -np.inf, np.inf
        return cls(*(np.array([c.get(key, default) for c in constraints], dtype=np.float64)
                     for key, default in (("ge", low), ("le", high), ("gt", low), ("lt", high))))

    def failures(self, block: np.ndarray) -> list[int]:
        ok = (block >= self.ge) & (block <= self.le) & (block > self.gt) & (block < self.lt)
        return [] if ok.all() else np.flatnonzero(~ok.all(axis=1)).tolist()


@dataclass(frozen=True)
class TextRule:
    """A string field's ``min_length``/``max_length``/``pattern``, checked value by value (an absent
    optional value passes: the struct only lets it be absent where the model does)."""

    name: str
    min_length: int | None = None
    max_length: int | None = None
    pattern: re.Pattern | None = None

    def failures(self, values: list) -> list[int]:
        present = values if None not in values else [v for v in values if v is not None]
        lengths_ok = True
        if self.min_length is not None or self.max_length is not None:
            lengths = list(map(len, present))
            lengths_ok = (self.min_length is None or min(lengths, default=self.min_length) >= self.min_length) and \
                         (self.max_length is None or max(lengths, default=self.max_length) <= self.max_length)
        if lengths_ok and (self.pattern is None or all(map(self.pattern.search, present))):
            return []  # the common case: one pass over the batch
        return [row for row, value in enumerate(values) if value is not None and not self.accepts(value)]

    def accepts(self, value: str) -> bool:
        return (self.min_length is None or len(value) >= self.min_length) and \
               (self.max_length is None or len(value) <= self.max_length) and \
               (self.pattern is None or self.pattern.search(value) is not None)


@dataclass(frozen=True)
class FastDecoder:
    """Decodes a feed's records into an ``EventTable``, leaving out the ones it refuses (the
    struct checks types; ``bounds`` and ``rules`` the constraints, on the batch's columns)."""

    decoder: msgspec.json.Decoder
    numbers: tuple[str, ...]
    times: tuple[str, ...]
    texts: tuple[str, ...]
    bounds: NumberBounds | None = None
    rules: tuple[TextRule, ...] = ()

    def decode(self, values: list[bytes]) -> tuple[list[int], EventTable]:
        """(positions of the accepted values, their table); the others are for pydantic."""
        try:  # the common case: every value decodes
            structs, accepted = list(map(self.decoder.decode, values)), list(range(len(values)))
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            structs, accepted = self._decode_each(values)
        n, width = len(structs), len(self.numbers)
        block = np.empty((n, width), dtype=np.float64)
        if width and n:
            # the struct's fields start with the numbers: its tuple's head, straight into one float block
            head = itemgetter(slice(0, width))
            block = np.fromiter(chain.from_iterable(map(head, map(astuple, structs))), dtype=np.float64, count=n * width)
            block = block.reshape(n, width)
        columns = {name: list(map(attrgetter(name), structs)) for name in self.times + self.texts}
        refused = set(self.bounds.failures(block)) if self.bounds is not None else set()
        for rule in self.rules:
            refused.update(rule.failures(columns[rule.name]))
        kept = None
        if refused:
            kept = [k for k in range(n) if k not in refused]
        times = {}
        for name in self.times:
            texts = columns[name] if kept is None else [columns[name][k] for k in kept]
            try:
                times[name] = list(map(dt.datetime.fromisoformat, texts))
            except ValueError:  # e.g. 2013-02-29 matches the pattern: pydantic says what is wrong
                kept = [k for k in (kept if kept is not None else range(n))
                        if all(parses_datetime(columns[other][k]) for other in self.times)]
                return self._taking(kept, accepted, block, columns)
        if kept is not None:
            return self._taking(kept, accepted, block, columns)
        return accepted, self._table(n, block, columns, times)

    def _decode_each(self, values: list[bytes]) -> tuple[list, list[int]]:
        decode = self.decoder.decode
        structs, accepted = [], []
        for i, raw in enumerate(values):
            try:
                structs.append(decode(raw))
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
                continue
            accepted.append(i)
        return structs, accepted

    def _taking(self, kept: list[int], accepted: list[int], block: np.ndarray, columns: dict[str, list]
                ) -> tuple[list[int], EventTable]:
        """The rows ``kept`` of a batch some of whose rows failed a check (rare: no hurry)."""
        columns = {name: [values[k] for k in kept] for name, values in columns.items()}
        times = {name: list(map(dt.datetime.fromisoformat, columns[name])) for name in self.times}
        return [accepted[k] for k in kept], self._table(len(kept), block[kept], columns, times)

    def _table(self, n: int, block: np.ndarray, columns: dict[str, list], times: dict[str, list]) -> EventTable:
        table = EventTable(n, times=times)
        if self.numbers:
            table.numbers = {name: block[:, j] for j, name in enumerate(self.numbers)}
        table.texts = {name: columns[name] for name in self.texts}
        return table


def parses_datetime(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


@cache
def fast_decoder(model: type[BaseModel]) -> FastDecoder | None:
    """The model's msgspec mirror, or None when it has no exact one (see the module's docstring)."""
    try:
        return _mirror(model)
    except Unmirrorable:
        return None


def _mirror(model: type[BaseModel]) -> FastDecoder:
    config = model.model_config
    if config.get("extra") != "forbid" or set(config) - _CONFIG_KEYS:
        raise Unmirrorable(f"model_config {dict(config)}")
    decorators = model.__pydantic_decorators__
    if any((decorators.validators, decorators.field_validators, decorators.root_validators,
            decorators.model_validators, decorators.field_serializers)):
        raise Unmirrorable("validators")
    definitions, checks = {}, {}  # field name -> msgspec field definition, its constraints
    for name, info in model.model_fields.items():
        if info.alias not in (None, name):
            raise Unmirrorable(f"{name}: alias")
        annotation, optional = info.annotation, False
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1 or len(typing.get_args(annotation)) != 2 or info.default is not None:
                raise Unmirrorable(f"{name}: union")
            annotation, optional = members[0], True
            metadata = list(getattr(annotation, "__metadata__", ()))  # Annotated[str, Field(...)] | None
            annotation = typing.get_args(annotation)[0] if metadata else annotation
            # pydantic keeps an Annotated member's constraints as FieldInfo objects in __metadata__
            metadata = [m for field_info in metadata for m in getattr(field_info, "metadata", [field_info])]
        else:
            if not info.is_required():
                raise Unmirrorable(f"{name}: default")
            metadata = list(info.metadata)
        if optional and annotation is not str:
            raise Unmirrorable(f"{name}: optional {annotation}")
        kind, meta = _field(name, annotation, metadata)
        definitions[name] = (name, kind | None, None) if optional else (name, kind)
        checks[name] = meta
    # the same split into numbers, times and texts as the tables pydantic events make (so that both
    # kinds of table concatenate); gc=False: numbers and strings make no reference cycle
    numbers, times, texts = field_layout(model)
    struct = msgspec.defstruct(f"{model.__name__}Mirror", [definitions[n] for n in numbers + times + texts],
                               kw_only=True, forbid_unknown_fields=True, frozen=True, gc=False)
    bounds = NumberBounds.of([checks[name] for name in numbers])
    rules = tuple(TextRule(name, checks[name].get("min_length"), checks[name].get("max_length"),
                           re.compile(checks[name]["pattern"]) if "pattern" in checks[name] else None)
                  for name in times + texts if checks[name])
    return FastDecoder(msgspec.json.Decoder(struct), numbers, times, texts, bounds, rules)


def _field(name: str, annotation, metadata: list) -> tuple[type, dict]:
    """(the type the struct decodes, the constraints ``FastDecoder`` checks after it) of one field."""
    meta: dict = {}
    for item in metadata:
        if type(item) in _CONSTRAINTS:
            key = _CONSTRAINTS[type(item)]  # also the constraint's attribute name in annotated_types
            meta[key] = getattr(item, key)
        elif isinstance(item, (pydantic.Strict, pydantic.AllowInfNan)):
            continue  # msgspec never coerces (as strict as pydantic's strict mode), and its floats are finite
        elif type(item).__name__ == "_PydanticGeneralMetadata" and set(vars(item)) == {"pattern"}:
            pattern = item.pattern
            meta["pattern"] = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
        else:
            raise Unmirrorable(f"{name}: {item!r}")
    if annotation is float:
        if meta.keys() - {"ge", "le", "gt", "lt"}:
            raise Unmirrorable(f"{name}: {meta}")
        return float, meta  # JSON has no NaN/inf and msgspec refuses overflowing numbers: always finite
    if annotation is str:
        return str, meta
    if annotation is dt.datetime:
        if meta:
            raise Unmirrorable(f"{name}: {meta}")
        return str, {"pattern": RFC3339}
    raise Unmirrorable(f"{name}: {annotation}")
