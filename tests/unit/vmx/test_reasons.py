"""Basic exit reasons (Appendix C) and the exit-reason field (SDM 24.9.1)."""

from __future__ import annotations

import pytest

from vtemu.vmx.reasons import ExitReason, ExitReasonField

APPENDIX_C = {
    0: "EXCEPTION_OR_NMI",
    1: "EXTERNAL_INTERRUPT",
    2: "TRIPLE_FAULT",
    3: "INIT_SIGNAL",
    4: "SIPI",
    7: "INTERRUPT_WINDOW",
    8: "NMI_WINDOW",
    9: "TASK_SWITCH",
    10: "CPUID",
    12: "HLT",
    14: "INVLPG",
    16: "RDTSC",
    18: "VMCALL",
    28: "CR_ACCESS",
    29: "MOV_DR",
    30: "IO_INSTRUCTION",
    31: "RDMSR",
    32: "WRMSR",
    33: "ENTRY_FAILURE_GUEST_STATE",
    34: "ENTRY_FAILURE_MSR_LOADING",
    36: "MWAIT",
    37: "MONITOR_TRAP_FLAG",
    39: "MONITOR",
    40: "PAUSE",
    41: "ENTRY_FAILURE_MACHINE_CHECK",
    43: "TPR_BELOW_THRESHOLD",
    44: "APIC_ACCESS",
    46: "GDTR_IDTR_ACCESS",
    47: "LDTR_TR_ACCESS",
    48: "EPT_VIOLATION",
    49: "EPT_MISCONFIG",
    50: "INVEPT",
    51: "RDTSCP",
    52: "PREEMPTION_TIMER",
    53: "INVVPID",
    54: "WBINVD",
    55: "XSETBV",
    56: "APIC_WRITE",
    57: "RDRAND",
    58: "INVPCID",
    59: "VMFUNC",
    60: "ENCLS",
    61: "RDSEED",
    62: "PML_FULL",
    63: "XSAVES",
    64: "XRSTORS",
    65: "PCONFIG",
    66: "SPP_EVENT",
    67: "UMWAIT",
    68: "TPAUSE",
    69: "LOADIWKEY",
    70: "ENCLV",
    74: "BUS_LOCK",
    76: "SEAMCALL",
    77: "TDCALL",
}


@pytest.mark.parametrize(("number", "name"), APPENDIX_C.items())
def test_appendix_c_numbers(number: int, name: str) -> None:
    assert ExitReason(number).name == name


def test_unused_numbers_are_not_reasons() -> None:
    for number in (35, 38, 42, 71):
        with pytest.raises(ValueError):
            ExitReason(number)
    assert {int(r) for r in ExitReason} >= set(range(0, 70)) - {35, 38, 42}


def test_names_for_tables() -> None:
    assert ExitReason.IO_INSTRUCTION.short_name == "I/O"
    assert ExitReason.IO_INSTRUCTION.sdm_name == "I/O instruction"
    assert ExitReason.EPT_VIOLATION.short_name == "EPTV"
    assert all(r.short_name and r.sdm_name for r in ExitReason)
    assert len({r.short_name for r in ExitReason}) == len(ExitReason)


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        (ExitReasonField.vm_exit(ExitReason.IO_INSTRUCTION), 0x0000_001E),
        (ExitReasonField.entry_failed(ExitReason.ENTRY_FAILURE_GUEST_STATE), 0x8000_0021),
        (ExitReasonField.entry_failed(ExitReason.ENTRY_FAILURE_MSR_LOADING), 0x8000_0022),
        (ExitReasonField(ExitReason.OTHER_SMI, pending_mtf=True, from_vmx_root=True), 0x3000_0006),
        (ExitReasonField(ExitReason.EPT_VIOLATION, enclave_mode=True), 0x0800_0030),
        (ExitReasonField(ExitReason.HLT, bus_lock_detected=True), 0x0400_000C),
    ],
)
def test_exit_reason_field_round_trip(field: ExitReasonField, raw: int) -> None:
    assert field.encode() == raw
    assert ExitReasonField.decode(raw) == field


def test_entry_failure_bit_must_match_reason() -> None:
    with pytest.raises(ValueError):
        ExitReasonField(ExitReason.CPUID, entry_failure=True)
    with pytest.raises(ValueError):
        ExitReasonField(ExitReason.ENTRY_FAILURE_GUEST_STATE)
    assert ExitReason.ENTRY_FAILURE_MACHINE_CHECK.is_entry_failure and not ExitReason.HLT.is_entry_failure


def test_decode_unknown_basic_reason() -> None:
    with pytest.raises(ValueError):
        ExitReasonField.decode(0x23)  # 35 is not used
