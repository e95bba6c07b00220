"""RDMSR (31) and WRMSR (32) exits fed to the hypervisor: the processor's MSR model, the TSC
seen through the VMCS TSC offset, and #GP(0) for an MSR the processor does not implement."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig
from vtemu.hv.outcome import Resume
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionType
from vtemu.vmx.reasons import ExitReason

IA32_TSC, IA32_SYSENTER_CS, IA32_EFER, IA32_LSTAR, IA32_TSC_ADJUST = (
    0x10, 0x174, 0xC0000080, 0xC0000082, 0x3B)
GP_WITH_ERROR_CODE = 0x80000B0D   # valid | deliver error code | hardware exception | vector 13


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


def _rdmsr(rig: Rig, msr: int) -> int:
    insn = rig.place("rdmsr")
    rig.set(rax=0x5555, rdx=0x6666, rcx=msr)
    assert isinstance(rig.handle(rig.exit_for(ExitReason.RDMSR, insn)), Resume)
    return insn.address


def _wrmsr(rig: Rig, msr: int, value: int) -> int:
    insn = rig.place("wrmsr")
    rig.set(rdx=value >> 32, rax=value & 0xFFFFFFFF, rcx=msr)
    assert isinstance(rig.handle(rig.exit_for(ExitReason.WRMSR, insn)), Resume)
    return insn.address


def _assert_gp0_injected(rig: Rig, address: int) -> None:
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == GP_WITH_ERROR_CODE
    assert rig.injected_error() == 0
    assert rig.get("rip") == address      # a fault: the instruction is not completed


def test_rdmsr_of_a_known_msr(rig: Rig) -> None:
    rig.vcpu.write_msr(IA32_SYSENTER_CS, 0x10)
    address = _rdmsr(rig, IA32_SYSENTER_CS)
    assert (rig.get("rax"), rig.get("rdx")) == (0x10, 0)
    assert rig.get("rip") == address + 2
    assert rig.injected() is None


def test_wrmsr_then_rdmsr_round_trip(rig: Rig) -> None:
    address = _wrmsr(rig, IA32_LSTAR, 0xFFFF_8000_1234_5678)
    assert rig.get("rip") == address + 2
    assert rig.vcpu.read_msr(IA32_LSTAR) == 0xFFFF_8000_1234_5678
    _rdmsr(rig, IA32_LSTAR)
    assert (rig.get("rdx"), rig.get("rax")) == (0xFFFF_8000, 0x1234_5678)


def test_apic_base_reports_the_bsp_and_the_default_address(rig: Rig) -> None:
    _rdmsr(rig, 0x1B)
    assert rig.get("rax") == 0xFEE00000 | (1 << 11) | (1 << 8)


def test_rdmsr_of_an_unknown_msr_injects_gp0(rig: Rig) -> None:
    insn = rig.place("rdmsr")
    rig.set(rax=0x5555, rdx=0x6666, rcx=0x12345)
    assert isinstance(rig.handle(rig.exit_for(ExitReason.RDMSR, insn)), Resume)
    _assert_gp0_injected(rig, insn.address)
    assert (rig.get("rax"), rig.get("rdx")) == (0x5555, 0x6666)
    info = rig.injected()
    assert info is not None and info.type is InterruptionType.HARDWARE_EXCEPTION


def test_wrmsr_of_an_unknown_msr_injects_gp0(rig: Rig) -> None:
    insn = rig.place("wrmsr")
    rig.set(rdx=0, rax=1, rcx=0x4000_0100)
    rig.handle(rig.exit_for(ExitReason.WRMSR, insn))
    _assert_gp0_injected(rig, insn.address)


def test_non_canonical_lstar_injects_gp0_and_keeps_the_msr(rig: Rig) -> None:
    rig.vcpu.write_msr(IA32_LSTAR, 0x1000)
    insn = rig.place("wrmsr")
    rig.set(rdx=0x0000_8000, rax=0, rcx=IA32_LSTAR)
    rig.handle(rig.exit_for(ExitReason.WRMSR, insn))
    _assert_gp0_injected(rig, insn.address)
    assert rig.vcpu.read_msr(IA32_LSTAR) == 0x1000


def test_efer_reserved_bit_injects_gp0(rig: Rig) -> None:
    insn = rig.place("wrmsr")
    rig.set(rdx=0, rax=1 << 2, rcx=IA32_EFER)
    rig.handle(rig.exit_for(ExitReason.WRMSR, insn))
    _assert_gp0_injected(rig, insn.address)


def test_efer_write_keeps_lma_read_only(rig: Rig) -> None:
    _wrmsr(rig, IA32_EFER, (1 << 0) | (1 << 10))     # SCE, and an attempt to set LMA
    assert rig.vcpu.read_msr(IA32_EFER) == 1


def test_gp_in_real_mode_has_no_error_code() -> None:
    rig = Rig()
    rig.real_mode()
    insn = rig.place("rdmsr")
    rig.set(rcx=0x12345)
    rig.handle(rig.exit_for(ExitReason.RDMSR, insn))
    info = rig.injected()
    assert info is not None and info.vector == 13 and not info.deliver_error_code
    assert rig.get("rip") == insn.address


def _offset(rig: Rig, offset: int) -> None:
    """What VM entry does with the TSC offset: latch it (use TSC offsetting is on in vtx mode)."""
    rig.cpu.vmcs.write(F.TSC_OFFSET, offset)
    rig.cpu.reload_controls()


def test_rdmsr_tsc_adds_the_tsc_offset(rig: Rig) -> None:
    _offset(rig, 0x1234_5678_0000_1000)
    rig.partition.clock.retire(500)               # 500 instructions of guest time: TSC = 500
    _rdmsr(rig, IA32_TSC)
    assert (rig.get("rdx") << 32) | rig.get("rax") == 0x1234_5678_0000_1000 + 500


def test_wrmsr_tsc_reads_back_what_the_guest_wrote(rig: Rig) -> None:
    _offset(rig, 1 << 40)
    _wrmsr(rig, IA32_TSC, 0x10_0000)
    _rdmsr(rig, IA32_TSC)
    assert (rig.get("rdx") << 32) | rig.get("rax") == 0x10_0000
    # The write moved IA32_TSC_ADJUST (SDM 17.17.3): the TSC itself is 10_0000h - offset.
    _rdmsr(rig, IA32_TSC_ADJUST)
    adjust = (rig.get("rdx") << 32) | rig.get("rax")
    assert adjust == (0x10_0000 - (1 << 40)) & (2**64 - 1)


def test_rdmsr_zeroes_the_upper_halves_in_64_bit_mode() -> None:
    rig = Rig()
    rig.long_mode()
    rig.vcpu.write_msr(IA32_LSTAR, 0xFFFF_8000_0000_1000)
    insn = rig.place("rdmsr")
    rig.set(rax=2**64 - 1, rdx=2**64 - 1, rcx=0)
    rig.set(rcx=IA32_LSTAR)
    rig.handle(rig.exit_for(ExitReason.RDMSR, insn))
    assert (rig.get("rdx"), rig.get("rax")) == (0xFFFF_8000, 0x1000)


def test_wrmsr_ignores_the_upper_halves_of_rax_rdx_rcx_in_64_bit_mode() -> None:
    """WRMSR writes EDX:EAX to the MSR in ECX; bits 63:32 of RAX, RDX, RCX are ignored."""
    rig = Rig()
    rig.long_mode()
    insn = rig.place("wrmsr")
    rig.set(rcx=0xFFFF_FFFF_0000_0000 | IA32_SYSENTER_CS, rdx=0xFFFF_FFFF_0000_0000,
            rax=0xFFFF_FFFF_0000_0010)
    rig.handle(rig.exit_for(ExitReason.WRMSR, insn))
    assert rig.injected() is None
    assert rig.vcpu.read_msr(IA32_SYSENTER_CS) == 0x10
