"""Which exits a trace keeps: reason names (`--filter io,hlt`) and payload values (`port=0x3f8`).

An exit is kept when its reason is one of the named ones (all reasons when none are named)
and every payload filter matches it. A payload filter names a field of the exit's payload
(vtemu.debug.exitinfo: port, size, direction, msr, leaf, cr, vector, gpa, hypercall ...) or
`vcpu`/`rip`, and one or more values: `port=0x3f8`, `port=0x3f8,0x80`, `port=0x3f8..0x3ff`
(inclusive), `direction=in`. An exit whose payload has no such field does not match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from vtemu.debug.exitinfo import FAMILIES, NO_PAYLOAD, PAYLOAD_FIELDS, reasons_named
from vtemu.errors import BadInput
from vtemu.vmx.reasons import ExitReason

RECORD_FIELDS = ("vcpu", "rip")            # filterable fields every exit has
KNOWN_FIELDS = frozenset(PAYLOAD_FIELDS) | frozenset(RECORD_FIELDS)
_BOOLEANS = {"true": 1, "yes": 1, "false": 0, "no": 0}

Value = int | str | tuple[int, int]


@dataclass(frozen=True)
class FieldFilter:
    """One `name=value[,value...]` filter; a value is a number, a word, or an inclusive range."""

    name: str
    values: tuple[Value, ...]

    def accepts(self, value: object) -> bool:
        if value is None:
            return False
        if isinstance(value, str):
            return value.lower() in self.values
        for wanted in self.values:
            if isinstance(wanted, tuple):
                if wanted[0] <= value <= wanted[1]:  # type: ignore[operator]
                    return True
            elif wanted == value:
                return True
        return False


@dataclass(frozen=True)
class ExitFilter:
    reasons: frozenset[ExitReason] | None = None     # None: every reason
    fields: tuple[FieldFilter, ...] = ()
    # Per reason, where each filtered field sits: -1 vcpu, -2 rip, >= 0 payload index, None absent.
    _positions: dict[ExitReason, tuple[int | None, ...]] = field(default_factory=dict, compare=False,
                                                                  repr=False)

    @property
    def everything(self) -> bool:
        return self.reasons is None and not self.fields

    def wants(self, reason: ExitReason) -> bool:
        return self.reasons is None or reason in self.reasons

    def matches(self, reason: ExitReason, vcpu: int, rip: int, payload: tuple) -> bool:
        if not self.fields:
            return True
        positions = self._positions.get(reason)
        if positions is None:
            names = FAMILIES.get(reason, NO_PAYLOAD).fields
            positions = self._positions[reason] = tuple(
                -1 if f.name == "vcpu" else -2 if f.name == "rip"
                else names.index(f.name) if f.name in names else None for f in self.fields)
        for position, wanted in zip(positions, self.fields):
            if position is None:
                return False
            value = vcpu if position == -1 else rip if position == -2 else payload[position]
            if not wanted.accepts(value):
                return False
        return True


def parse_reasons(words: Iterable[str]) -> frozenset[ExitReason] | None:
    """`io,hlt` (several words or comma lists): None when nothing was named."""
    reasons: set[ExitReason] = set()
    for word in words:
        for name in word.split(","):
            if name.strip():
                reasons.update(reasons_named(name))
    return frozenset(reasons) if reasons else None


def parse_field_filter(text: str) -> FieldFilter:
    name, equals, values = text.partition("=")
    name = name.strip().lower()
    if not equals or not name:
        raise BadInput(f"bad filter {text!r}: expected NAME=VALUE, e.g. port=0x3f8")
    if name not in KNOWN_FIELDS:
        raise BadInput(f"unknown filter field {name!r} (known: {', '.join(sorted(KNOWN_FIELDS))})")
    parsed = tuple(_parse_value(text, value.strip()) for value in values.split(","))
    if not parsed:
        raise BadInput(f"bad filter {text!r}: no value")
    return FieldFilter(name, parsed)


def _parse_value(text: str, value: str) -> Value:
    if not value:
        raise BadInput(f"bad filter {text!r}: empty value")
    low, dots, high = value.partition("..")
    if dots:
        bounds = (_number(low), _number(high))
        if None in bounds:
            raise BadInput(f"bad filter {text!r}: a range needs two numbers (LOW..HIGH)")
        return bounds  # type: ignore[return-value]
    number = _number(value)
    return number if number is not None else value.lower()


def _is_value(text: str) -> bool:
    low, dots, high = text.partition("..")
    return _number(low) is not None and (not dots or _number(high) is not None)


def _number(text: str) -> int | None:
    text = text.strip()
    if text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    try:
        return int(text, 0)
    except ValueError:
        return None


def build_filter(reason_words: Iterable[str] = (), field_words: Iterable[str] = ()) -> ExitFilter:
    """From `--filter` words (which may mix reason names and NAME=VALUE) and loose NAME=VALUE words."""
    reasons: list[str] = []
    field_texts: list[str] = []
    for word in reason_words:
        in_field = False
        for item in word.split(","):
            if "=" in item:
                field_texts.append(item)
                in_field = True
            elif in_field and _is_value(item):
                field_texts[-1] += "," + item    # io,port=0x3f8,0x80: more values of the field
            elif item.strip():
                reasons.append(item)
                in_field = False
    fields = [parse_field_filter(text) for text in [*field_texts, *field_words]]
    return ExitFilter(parse_reasons(reasons), tuple(fields))
