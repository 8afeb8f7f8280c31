"""The worker's first validation pass: a msgspec mirror of a feed's pydantic event model.

pydantic stays the schema (feeds declare their events with it, and its errors word the dead
letters). For the common case, a batch of valid events, the worker first decodes each record
with a msgspec ``Struct`` built from that model. In the bench this took the worker's
``decode_validate`` stage from 7.7 to 4.524 ms per 1,000 transactions (pydantic's batch call
alone: benchmarks/results/superseded/stream-before-msgspec-mirror.json; with the mirror, the
run after it: benchmarks/results/superseded/stream-before-exact-state-restore.json). The mirror
only has to be **stricter** than the model: whatever it refuses goes on to pydantic, which accepts it or words the dead letter; whatever it accepts,
pydantic would accept with the same values (``tests/test_fast_decode.py`` checks this on fuzzed
and edge-case events). Hence:

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
import types
import typing
from dataclasses import dataclass
from functools import cache
from itertools import chain
from operator import attrgetter

import annotated_types as at
import msgspec
import numpy as np
import pydantic
from pydantic import BaseModel

from streamdetect.feeds.columnar import EventTable, field_layout

#: ASCII digits only: Python's \d would also take other scripts' digits
RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?\Z"
_CONFIG_KEYS = {"extra", "frozen", "title"}  # model_config keys that change nothing the mirror checks
_CONSTRAINTS = {at.Ge: "ge", at.Le: "le", at.Gt: "gt", at.Lt: "lt", at.MinLen: "min_length", at.MaxLen: "max_length"}


class Unmirrorable(Exception):
    """The model uses something the mirror cannot check exactly as pydantic does."""


@dataclass(frozen=True)
class FastDecoder:
    """Decodes a feed's records into an ``EventTable``, leaving out the ones it refuses."""

    decoder: msgspec.json.Decoder
    numbers: tuple[str, ...]
    times: tuple[str, ...]
    texts: tuple[str, ...]

    def decode(self, values: list[bytes]) -> tuple[list[int], EventTable]:
        """(positions of the accepted values, their table); the others are for pydantic."""
        decode = self.decoder.decode
        structs, refused = [], []
        for i, raw in enumerate(values):
            try:
                structs.append(decode(raw))
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
                refused.append(i)
        refused_set = set(refused)
        accepted = [i for i in range(len(values)) if i not in refused_set]
        times = {}
        for name in self.times:
            texts = list(map(attrgetter(name), structs))
            try:
                times[name] = list(map(dt.datetime.fromisoformat, texts))
            except ValueError:  # e.g. 2013-02-29 matches the pattern: pydantic says what is wrong
                kept = [k for k, text in enumerate(texts) if _parses(text)]
                structs, accepted = [structs[k] for k in kept], [accepted[k] for k in kept]
                times = {n: [v[k] for k in kept] for n, v in times.items()}
                times[name] = [dt.datetime.fromisoformat(texts[k]) for k in kept]
        n, width = len(structs), len(self.numbers)
        table = EventTable(n, times=times)
        if width:
            # one C-level getter per event, straight into one float block
            numbers = attrgetter(*self.numbers) if width > 1 else (lambda s, name=self.numbers[0]: (getattr(s, name),))
            block = np.fromiter(chain.from_iterable(map(numbers, structs)), dtype=np.float64, count=n * width)
            block = block.reshape(n, width)
            table.numbers = {name: block[:, j] for j, name in enumerate(self.numbers)}
        table.texts = {name: list(map(attrgetter(name), structs)) for name in self.texts}
        return accepted, table


def _parses(text: str) -> bool:
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
    definitions = {}  # field name -> msgspec field definition
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
        definitions[name] = _field(name, annotation, metadata, optional)
    # the same split into numbers, times and texts as the tables pydantic events make (so that both
    # kinds of table concatenate); gc=False: numbers and strings make no reference cycle
    numbers, times, texts = field_layout(model)
    struct = msgspec.defstruct(f"{model.__name__}Mirror", [definitions[n] for n in numbers + times + texts],
                               kw_only=True, forbid_unknown_fields=True, frozen=True, gc=False)
    return FastDecoder(msgspec.json.Decoder(struct), numbers, times, texts)


def _field(name: str, annotation, metadata: list, optional: bool):
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
        kind = float  # JSON has no NaN/inf and msgspec refuses overflowing numbers: always finite
    elif annotation is str:
        kind = str
    elif annotation is dt.datetime:
        if meta:
            raise Unmirrorable(f"{name}: {meta}")
        meta, kind = {"pattern": RFC3339}, str
    else:
        raise Unmirrorable(f"{name}: {annotation}")
    kind = typing.Annotated[kind, msgspec.Meta(**meta)] if meta else kind
    return (name, kind | None, None) if optional else (name, kind)
