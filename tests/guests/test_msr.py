"""msr: RDMSR/WRMSR exits, the MSR model's values, TSC progress and #GP for unknown MSRs."""

from __future__ import annotations

import pytest

from vtemu.vmx.reasons import ExitReason

TSC_LINES = [
    b"TSC increased from RDMSR to RDTSC: yes",
    b"TSC increased from RDTSC to RDTSC: yes",
]
EXPECTED = [
    b"msr: 64-bit mode",
    b"IA32_EFER = 0000000000000500",
    b"IA32_EFER | SCE | NXE = 0000000000000d01",
    b"IA32_STAR = 001b0008deadbeef",
    b"IA32_LSTAR = ffffffff80001234",
    *TSC_LINES,
    b"wrmsr 000006e1 with bits 63:32 set: #GP, error code 00000000",
    b"rdmsr c0011234: #GP on unknown MSR, error code 00000000",
    b"msr done",
]
TSC_AT = slice(5, 7)


def _lines(boot) -> list[bytes]:
    run = boot("msr")
    assert run.exit_code == 0
    assert run.serial.endswith(b"\n")
    return run.serial.split(b"\n")[:-1]


def test_msr_values_and_faults(boot) -> None:
    lines = _lines(boot)
    assert lines[:TSC_AT.start] == EXPECTED[:TSC_AT.start]
    assert lines[TSC_AT.stop:] == EXPECTED[TSC_AT.stop:]
    assert all(line.endswith((b": yes", b": no")) for line in lines[TSC_AT])


def test_tsc_increases(boot) -> None:
    assert _lines(boot)[TSC_AT] == TSC_LINES


def test_every_msr_access_exits(boot) -> None:
    """RDMSR/WRMSR exit in order (MSR in the detail); the IA32_TSC read is an RDMSR exit too,
    RDTSC is not intercepted."""
    accesses = [(r.reason.name, r.exit.detail.split()[-1]) for r in boot("msr").exits
                if r.reason in (ExitReason.RDMSR, ExitReason.WRMSR)]
    efer = "0xc0000080"
    assert accesses == [
        ("RDMSR", efer), ("WRMSR", efer),                       # LONG64_ENTER: LME
        ("RDMSR", efer), ("RDMSR", efer), ("WRMSR", efer), ("RDMSR", efer),
        ("WRMSR", "0xc0000081"), ("WRMSR", "0xc0000082"),
        ("RDMSR", "0xc0000081"), ("RDMSR", "0xc0000082"),
        ("RDMSR", "0x10"),
        ("WRMSR", "0x6e1"), ("RDMSR", "0xc0011234"),
    ]
    assert not any(r.reason in (ExitReason.RDTSC, ExitReason.RDTSCP) for r in boot("msr").exits)
