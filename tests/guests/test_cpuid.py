"""cpuid: what vtemu's CPUID policy shows a guest, leaf by leaf, and that each CPUID exits."""

from __future__ import annotations

import pytest

from vtemu.vmx.reasons import ExitReason

VENDOR_LINE = b"vendor: GenuineIntel, max basic leaf 0000000d"
OTHER_LINES = [
    b"family 00000006 model 0000003a stepping 00000009",   # signature 000306A9h
    b"hypervisor bit (1:ECX[31]): set",
    b'40000000: max leaf 40000006, vendor "VtemuVirtCPU"',
    b"40000001: 00000000 00000000 00000000 00000000",
    b"40000002: 00000000 00000001 00000000 00000000",       # version 0.1, build 0
    b"40000003: 00000000 00000000 00000000 00000000",
    b"40000004: 00000000 ffffffff 00000000 00000000",       # spinlock retries: never
    b"40000005: 00000001 00000001 00000000 00000000",       # 1 vCPU
    b"40000006: 00000008 00000000 00000000 00000000",       # SLAT in use
    b"cpuid done",
]


def _lines(boot) -> list[bytes]:
    run = boot("cpuid")
    assert run.exit_code == 0
    assert run.serial.endswith(b"\n")
    return run.serial.split(b"\n")[:-1]


def test_leaf1_and_hypervisor_leaves(boot) -> None:
    lines = _lines(boot)
    assert lines[1:] == OTHER_LINES
    assert lines[0].startswith(b"vendor: ") and lines[0].endswith(b", max basic leaf 0000000d")


def test_vendor_string(boot) -> None:
    assert _lines(boot)[0] == VENDOR_LINE


def test_every_cpuid_is_an_exit(boot) -> None:
    leaves = [r.exit.detail for r in boot("cpuid").exits
              if r.reason is ExitReason.CPUID and r.exit.guest_rip >= 0x100000]
    assert leaves == ["leaf 0x0", "leaf 0x1"] + [f"leaf {0x40000000 + i:#x}" for i in range(7)]
