"""Trace filters: reason words (SDM names, numbers, aliases) and NAME=VALUE payload filters."""

from __future__ import annotations

import pytest

from vtemu.debug.filters import FieldFilter, build_filter, parse_field_filter
from vtemu.errors import BadInput
from vtemu.vmx.reasons import ExitReason

IO = ExitReason.IO_INSTRUCTION
IO_PAYLOAD = (0x3F8, 1, "out", False, False, 0x41)     # port, size, direction, string, rep, value


def test_no_words_keep_everything() -> None:
    everything = build_filter()
    assert everything.everything and everything.wants(ExitReason.HLT)
    assert everything.matches(ExitReason.HLT, 0, 0, ())


def test_reason_words_are_case_insensitive_and_comma_separated() -> None:
    f = build_filter(["IO,hlt", "Msr"])
    assert f.reasons == {IO, ExitReason.HLT, ExitReason.RDMSR, ExitReason.WRMSR}
    assert f.wants(ExitReason.WRMSR) and not f.wants(ExitReason.CPUID)


def test_unknown_reason_is_bad_input_naming_it() -> None:
    with pytest.raises(BadInput, match="'bogus'"):
        build_filter(["io,bogus"])


@pytest.mark.parametrize("text, value, accepted", [
    ("port=0x3f8", 0x3F8, True),
    ("port=1016", 0x3F8, True),
    ("port=0x3f9", 0x3F8, False),
    ("port=0x80,0x3f8", 0x3F8, True),
    ("port=0x3f8..0x3ff", 0x3FD, True),
    ("port=0x3f8..0x3ff", 0x400, False),
    ("direction=OUT", "out", True),
    ("direction=in", "out", False),
    ("string=false", False, True),
    ("string=1", False, False),
])
def test_field_values_ranges_lists_and_words(text: str, value: object, accepted: bool) -> None:
    assert parse_field_filter(text).accepts(value) is accepted


def test_a_missing_value_never_matches() -> None:
    assert not FieldFilter("value", (0,)).accepts(None)


def test_payload_filters_and_together_and_need_the_field() -> None:
    f = build_filter([], ["port=0x3f8", "direction=out"])
    assert f.matches(IO, 0, 0, IO_PAYLOAD)
    assert not f.matches(IO, 0, 0, (0x3F8, 1, "in", False, False, 0))
    assert not f.matches(ExitReason.HLT, 0, 0, ())                    # HLT has no port
    assert not f.matches(ExitReason.CPUID, 0, 0, (0x3F8, 0))         # nor does CPUID


def test_vcpu_and_rip_filter_every_exit() -> None:
    f = build_filter([], ["vcpu=1", "rip=0x1000..0x1fff"])
    assert f.matches(ExitReason.HLT, 1, 0x1234, ())
    assert not f.matches(ExitReason.HLT, 0, 0x1234, ())
    assert not f.matches(ExitReason.HLT, 1, 0x2000, ())


def test_filter_words_may_mix_reasons_and_fields() -> None:
    f = build_filter(["io,port=0x3f8,0x80,hlt"])
    assert f.reasons == {IO, ExitReason.HLT}
    assert f.fields == (FieldFilter("port", (0x3F8, 0x80)),)


@pytest.mark.parametrize("text, message", [
    ("colour=red", "unknown filter field 'colour'"),
    ("port=", "empty value"),
    ("port=1..x", "range"),
    ("=3", "NAME=VALUE"),
])
def test_bad_field_filters_are_bad_input(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_field_filter(text)
