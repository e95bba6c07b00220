"""Breakdown keys and trace payloads per exit family, from made-up exits and set registers."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig
from vtemu.debug.exitinfo import (ALIASES, FAMILIES, BreakdownKey, breakdown_key, family,
                                  reasons_named)
from vtemu.errors import BadInput
from vtemu.vmx.exit import VmExit
from vtemu.vmx.interruption import InterruptionInfo
from vtemu.vmx.qualifications import (CrAccessQualification, CrAccessType,
                                      EptViolationQualification, Gpr, IoDirection,
                                      IoQualification, MovDrDirection, MovDrQualification)
from vtemu.vmx.reasons import ExitReason


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


def _operands(exit: VmExit, rig: Rig) -> tuple:
    return family(exit.reason).operands(exit, rig.cpu)


def test_io_key_is_port_and_direction_from_the_qualification(rig: Rig) -> None:
    out = VmExit(ExitReason.IO_INSTRUCTION, 0, IoQualification(1, IoDirection.OUT, port=0x3F8).encode())
    inw = VmExit(ExitReason.IO_INSTRUCTION, 0, IoQualification(2, IoDirection.IN, port=0x511).encode())
    assert breakdown_key(out, rig.cpu) == BreakdownKey("port", 0x3F8, "out")
    assert breakdown_key(inw, rig.cpu) == BreakdownKey("port", 0x511, "in")
    assert breakdown_key(out, rig.cpu).label() == "out 0x3f8"
    rig.set(rax=0x12345641)
    assert _operands(out, rig) == (0x3F8, 1, "out", False, False)
    assert family(out.reason).results(out, rig.cpu) == (0x41,)            # AL only
    assert family(inw.reason).results(inw, rig.cpu) == (0x5641,)          # AX


def test_string_io_has_no_single_value(rig: Rig) -> None:
    qualification = IoQualification(1, IoDirection.OUT, string=True, rep=True, port=0x3F8).encode()
    exit = VmExit(ExitReason.IO_INSTRUCTION, 0, qualification)
    assert _operands(exit, rig) == (0x3F8, 1, "out", True, True)
    assert family(exit.reason).results(exit, rig.cpu) == (None,)


def test_msr_key_is_ecx_and_wrmsr_payload_is_edx_eax(rig: Rig) -> None:
    rig.set(rcx=0xC0000080, rdx=0x1, rax=0x500)
    rdmsr, wrmsr = VmExit(ExitReason.RDMSR, 0), VmExit(ExitReason.WRMSR, 0)
    assert breakdown_key(rdmsr, rig.cpu) == breakdown_key(wrmsr, rig.cpu) == BreakdownKey("msr", 0xC0000080)
    assert breakdown_key(rdmsr, rig.cpu).label() == "msr 0xc0000080"
    assert _operands(wrmsr, rig) == (0xC0000080, 0x1_0000_0500)
    assert _operands(rdmsr, rig) == (0xC0000080,)
    assert family(rdmsr.reason).results(rdmsr, rig.cpu) == (0x1_0000_0500,)
    assert FAMILIES[ExitReason.RDMSR].fields == FAMILIES[ExitReason.WRMSR].fields == ("msr", "value")


def test_cpuid_key_is_the_leaf_in_eax(rig: Rig) -> None:
    rig.set(rax=0x40000000, rcx=3)
    exit = VmExit(ExitReason.CPUID, 0)
    assert breakdown_key(exit, rig.cpu) == BreakdownKey("leaf", 0x40000000)
    assert _operands(exit, rig) == (0x40000000, 3)


def test_cr_key_is_number_and_access_type(rig: Rig) -> None:
    to_cr3 = CrAccessQualification(3, CrAccessType.MOV_TO_CR, gpr=Gpr.RBX).encode()
    from_cr0 = CrAccessQualification(0, CrAccessType.MOV_FROM_CR, gpr=Gpr.RDX).encode()
    lmsw = CrAccessQualification(0, CrAccessType.LMSW, lmsw_source_data=0x11).encode()
    rig.set(rbx=0xFFFF_FFFF_0002_0000, rdx=0x11)
    mov_to = VmExit(ExitReason.CR_ACCESS, 0, to_cr3)
    assert breakdown_key(mov_to, rig.cpu) == BreakdownKey("cr", 3, "mov to")
    assert breakdown_key(mov_to, rig.cpu).label() == "mov to cr3"
    results = family(ExitReason.CR_ACCESS).results
    assert _operands(mov_to, rig) == (3, "mov to")
    assert results(mov_to, rig.cpu) == (0x20000,)             # 32 bits outside 64-bit mode
    mov_from = VmExit(ExitReason.CR_ACCESS, 0, from_cr0)
    assert _operands(mov_from, rig) == (0, "mov from")
    assert results(mov_from, rig.cpu) == (0x11,)
    lmsw_exit = VmExit(ExitReason.CR_ACCESS, 0, lmsw)
    assert breakdown_key(lmsw_exit, rig.cpu).label() == "lmsw"
    assert results(lmsw_exit, rig.cpu) == (0x11,)


def test_dr_key(rig: Rig) -> None:
    exit = VmExit(ExitReason.MOV_DR, 0, MovDrQualification(7, MovDrDirection.TO_DR, Gpr.RAX).encode())
    assert breakdown_key(exit, rig.cpu).label() == "mov to dr7"


def test_hypercall_code_is_rcx_bits_15_0_in_64_bit_mode() -> None:
    rig = Rig()
    rig.long_mode()
    rig.set(rcx=(3 << 48) | (5 << 32) | (1 << 16) | 0x0002)
    exit = VmExit(ExitReason.VMCALL, 0)
    assert breakdown_key(exit, rig.cpu) == BreakdownKey("hypercall", 2)
    assert _operands(exit, rig) == (2, True, 5, 3)


def test_hypercall_input_is_edx_eax_outside_64_bit_mode(rig: Rig) -> None:
    rig.set(rcx=0xDEAD, rdx=0x0000_0007, rax=0x0000_0008)
    exit = VmExit(ExitReason.VMCALL, 0)
    assert breakdown_key(exit, rig.cpu) == BreakdownKey("hypercall", 8)
    assert _operands(exit, rig) == (8, False, 7, 0)


def test_exception_and_interrupt_vectors(rig: Rig) -> None:
    page_fault = VmExit(ExitReason.EXCEPTION_OR_NMI, 0, 0xB8000,
                        interruption=InterruptionInfo.exception(14, error_code=True), interruption_error=2)
    assert breakdown_key(page_fault, rig.cpu) == BreakdownKey("vector", 14, "exception")
    assert breakdown_key(page_fault, rig.cpu).label() == "vector 14 (#PF)"
    assert _operands(page_fault, rig) == (14, 2, 0xB8000)
    irq = VmExit(ExitReason.EXTERNAL_INTERRUPT, 0, interruption=InterruptionInfo.external_interrupt(0x24))
    assert breakdown_key(irq, rig.cpu).label() == "vector 0x24"
    unacknowledged = VmExit(ExitReason.EXTERNAL_INTERRUPT, 0)
    assert breakdown_key(unacknowledged, rig.cpu) is None
    assert _operands(unacknowledged, rig) == (None,)


def test_ept_violation_key_is_the_guest_physical_page(rig: Rig) -> None:
    qualification = EptViolationQualification(write=True, readable=True).encode()
    exit = VmExit(ExitReason.EPT_VIOLATION, 0, qualification, guest_physical=0xFEE00030)
    assert breakdown_key(exit, rig.cpu) == BreakdownKey("page", 0xFEE00000)
    assert breakdown_key(exit, rig.cpu).label() == "page 0xfee00000"
    assert _operands(exit, rig) == (0xFEE00030, None, "w")
    misconfig = VmExit(ExitReason.EPT_MISCONFIG, 0, guest_physical=0x1234)
    assert breakdown_key(misconfig, rig.cpu) == BreakdownKey("page", 0x1000)


def test_reasons_without_a_family_have_no_key_or_payload(rig: Rig) -> None:
    exit = VmExit(ExitReason.HLT, 0)
    assert breakdown_key(exit, rig.cpu) is None
    assert family(ExitReason.HLT).fields == () and _operands(exit, rig) == ()


def test_every_family_names_as_many_fields_as_it_reads(rig: Rig) -> None:
    rig.set(rax=0, rcx=0, rdx=0)
    samples = {
        ExitReason.IO_INSTRUCTION: IoQualification(1, IoDirection.IN, port=0x60).encode(),
        ExitReason.CR_ACCESS: CrAccessQualification(4, CrAccessType.MOV_FROM_CR).encode(),
        ExitReason.MOV_DR: MovDrQualification(0, MovDrDirection.FROM_DR, Gpr.RAX).encode(),
        ExitReason.EPT_VIOLATION: EptViolationQualification(read=True).encode(),
    }
    for reason, fam in FAMILIES.items():
        exit = VmExit(reason, 0, samples.get(reason, 0), guest_physical=0x1000,
                      interruption=InterruptionInfo.exception(6))
        operands = fam.operands(exit, rig.cpu)
        results = fam.results(exit, rig.cpu) if fam.results else ()
        assert len(operands) + len(results) == len(fam.fields), reason


@pytest.mark.parametrize("word, reasons", [
    ("io", {ExitReason.IO_INSTRUCTION}),
    ("IO_INSTRUCTION", {ExitReason.IO_INSTRUCTION}),
    ("io_instruction", {ExitReason.IO_INSTRUCTION}),
    ("30", {ExitReason.IO_INSTRUCTION}),
    ("hlt", {ExitReason.HLT}),
    ("HLT", {ExitReason.HLT}),
    ("cpuid", {ExitReason.CPUID}),
    ("msr", {ExitReason.RDMSR, ExitReason.WRMSR}),
    ("wrmsr", {ExitReason.WRMSR}),
    ("cr", {ExitReason.CR_ACCESS}),
    ("ept", {ExitReason.EPT_VIOLATION, ExitReason.EPT_MISCONFIG}),
    ("ext", {ExitReason.EXTERNAL_INTERRUPT}),
    ("extint", {ExitReason.EXTERNAL_INTERRUPT}),     # the reason's short label
    ("exc", {ExitReason.EXCEPTION_OR_NMI}),
    ("vmcall", {ExitReason.VMCALL}),
])
def test_reason_names_sdm_names_numbers_and_aliases(word: str, reasons: set[ExitReason]) -> None:
    assert set(reasons_named(word)) == reasons


def test_an_unknown_reason_name_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown exit reason 'iox'"):
        reasons_named("iox")
    with pytest.raises(BadInput):
        reasons_named("35")   # a number the SDM leaves unused
    assert all(reasons for reasons in ALIASES.values())
