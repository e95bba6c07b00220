"""Bit-range masks, written the way the SDM's tables name fields ("bits 51:M")."""


def bit_range(high: int, low: int) -> int:
    """Mask of bits high:low inclusive; empty when high < low, as the SDM's "bits (M-20):13" is when M=32."""
    return ((1 << (high + 1)) - (1 << low)) if high >= low else 0
