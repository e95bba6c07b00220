"""Bit-field plumbing shared by every VMX format (encodings, qualifications, interruption info).

The SDM describes each VMX format as a table of bit ranges ("7:0 vector", "10:8 type"). The
helpers here let the modules state those ranges exactly as the tables do, and `BitStruct` turns
a frozen dataclass whose fields carry their bit range into an encode/decode pair, so a format
is written once, as data, and cannot drift between its encoder and its decoder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Self


def ones(width: int) -> int:
    """A mask of `width` low bits."""
    return (1 << width) - 1


def bit_range(value: int, high: int, low: int) -> int:
    """Bits high:low of `value`, in the SDM's "high:low" order."""
    return (value >> low) & ones(high - low + 1)


def bit(value: int, position: int) -> bool:
    return bool((value >> position) & 1)


def place(field: int, high: int, low: int) -> int:
    """Shift `field` into bits high:low; a value that does not fit is a caller bug, not truncated."""
    if field < 0 or field > ones(high - low + 1):
        raise ValueError(f"{field:#x} does not fit in bits {high}:{low}")
    return field << low


def is_canonical(address: int, linear_width: int = 48) -> bool:
    """SDM Vol. 1 3.3.7.1: bits 63:N-1 of a canonical address are all equal (N = linear width)."""
    top = address >> (linear_width - 1)
    return top in (0, ones(65 - linear_width))


def within_physical_width(address: int, physical_width: int) -> bool:
    """True if `address` sets no bit at or above the physical-address width (MAXPHYADDR)."""
    return 0 <= address and address >> physical_width == 0


@dataclass(frozen=True)
class BitSpan:
    """Where one dataclass field lives in the encoded value, and how to convert it."""

    high: int
    low: int
    decode: Callable[[int], Any]
    encode: Callable[[Any], int]


def bits(
    high: int,
    low: int | None = None,
    kind: Callable[[int], Any] = int,
    *,
    to_raw: Callable[[Any], int] = int,
    default: Any = dataclasses.MISSING,
) -> Any:
    """Declare a dataclass field stored in bits high:low, converted with `kind` on decode."""
    span = BitSpan(high, high if low is None else low, kind, to_raw)
    return dataclasses.field(default=default, metadata={"bits": span})


def flag(position: int, *, default: bool = False) -> Any:
    """Declare a one-bit boolean field."""
    return bits(position, position, bool, default=default)


class BitStruct:
    """Mixin for frozen dataclasses whose fields are all declared with `bits`/`flag`.

    `decode` ignores bits the format leaves reserved or undefined (the SDM says software must
    not rely on them); `encode` writes them as 0, which is what the processor stores.
    """

    _spans: ClassVar[tuple[tuple[str, BitSpan], ...]]
    _decoded: ClassVar[dict[int, Any]]
    _encoded: ClassVar[dict[Any, int]]
    _CACHE_LIMIT: ClassVar[int] = 4096  # exits repeat the same few values; memoize them

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._spans = ()
        cls._decoded = {}
        cls._encoded = {}

    @classmethod
    def _layout(cls) -> tuple[tuple[str, BitSpan], ...]:
        if not cls._spans:
            cls._spans = tuple(
                (f.name, f.metadata["bits"]) for f in dataclasses.fields(cls) if "bits" in f.metadata
            )
        return cls._spans

    def encode(self) -> int:
        cache = type(self)._encoded
        value = cache.get(self)
        if value is None:
            value = 0
            for name, span in self._layout():
                value |= place(span.encode(getattr(self, name)), span.high, span.low)
            if len(cache) >= self._CACHE_LIMIT:
                cache.clear()
            cache[self] = value
        return value

    @classmethod
    def decode(cls, raw: int) -> Self:
        cached = cls._decoded.get(raw)
        if cached is None:
            fields = {name: span.decode(bit_range(raw, span.high, span.low)) for name, span in cls._layout()}
            cached = cls(**fields)
            if len(cls._decoded) >= cls._CACHE_LIMIT:
                cls._decoded.clear()
            cls._decoded[raw] = cached
        return cached  # type: ignore[no-any-return]
