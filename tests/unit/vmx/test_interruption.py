"""The interruption-information format (SDM 24.8.3, 24.9.2, 24.9.3) and error-code vectors."""

from __future__ import annotations

import pytest

from vtemu.vmx.interruption import (
    ExceptionVector,
    InterruptionInfo,
    InterruptionType,
    error_code_vectors,
    exception_delivers_error_code,
)


@pytest.mark.parametrize(
    ("info", "raw"),
    [
        # valid(31) | deliver error code(11) | type 3 << 8 | vector 13
        (InterruptionInfo.exception(ExceptionVector.GP, error_code=True), 0x8000_0B0D),
        (InterruptionInfo.external_interrupt(0x20), 0x8000_0020),
        (InterruptionInfo.nmi(), 0x8000_0202),
        (InterruptionInfo(0x80, InterruptionType.SOFTWARE_INTERRUPT), 0x8000_0480),  # INT 80h
        (InterruptionInfo(ExceptionVector.BP, InterruptionType.SOFTWARE_EXCEPTION), 0x8000_0603),  # INT3
        (
            InterruptionInfo(ExceptionVector.DB, InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION),
            0x8000_0501,
        ),  # INT1
        (InterruptionInfo(0, InterruptionType.OTHER_EVENT), 0x8000_0700),  # pending MTF VM exit
        (
            InterruptionInfo(
                ExceptionVector.PF, InterruptionType.HARDWARE_EXCEPTION, True, nmi_unblocking=True
            ),
            0x8000_1B0E,
        ),
        (InterruptionInfo(0, InterruptionType.EXTERNAL_INTERRUPT, valid=False), 0),
    ],
)
def test_round_trip(info: InterruptionInfo, raw: int) -> None:
    assert info.encode() == raw
    assert InterruptionInfo.decode(raw) == info


def test_reserved_type_does_not_decode() -> None:
    with pytest.raises(ValueError):
        InterruptionInfo.decode(0x8000_0100)


def test_reserved_bits_are_ignored_on_decode() -> None:
    assert InterruptionInfo.decode(0x8000_4020) == InterruptionInfo.external_interrupt(0x20)


def test_vector_must_fit() -> None:
    with pytest.raises(ValueError):
        InterruptionInfo(256, InterruptionType.EXTERNAL_INTERRUPT).encode()


def test_software_types() -> None:
    assert {t for t in InterruptionType if t.is_software} == {
        InterruptionType.SOFTWARE_INTERRUPT,
        InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION,
        InterruptionType.SOFTWARE_EXCEPTION,
    }


def test_error_code_vectors() -> None:
    """SDM Vol. 3A 6.15: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13, #PF 14, #AC 17 (+ #CP 21 with CET)."""
    assert error_code_vectors(cet=False) == {8, 10, 11, 12, 13, 14, 17}
    assert error_code_vectors(cet=True) == {8, 10, 11, 12, 13, 14, 17, 21}


@pytest.mark.parametrize(
    ("vector", "protected", "cet", "expected"),
    [
        (13, True, False, True),
        (13, False, False, False),
        (6, True, False, False),
        (21, True, False, False),
        (21, True, True, True),
        (8, True, False, True),
        (1, True, True, False),
    ],
)
def test_exception_delivers_error_code(vector: int, protected: bool, cet: bool, expected: bool) -> None:
    assert exception_delivers_error_code(vector, protected_mode=protected, cet=cet) is expected
