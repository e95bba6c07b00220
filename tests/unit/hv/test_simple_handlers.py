"""HLT (12), RDTSC/RDTSCP (16/51), the preemption timer (52), the VMX instructions and their
#UD, RDPMC's #GP, and the cache/TLB instructions, fed to the hypervisor as made-up exits."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig
from vtemu.hv.outcome import Halt, Resume
from vtemu.vmx.exit import VmExit
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionInfo
from vtemu.vmx.reasons import ExitReason

RFLAGS_IF = 1 << 9
IA32_TSC_AUX = 0xC0000103
UD = 0x80000306          # valid | hardware exception | vector 6, no error code


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


# --- HLT -------------------------------------------------------------------------------------

def _hlt(rig: Rig) -> object:
    insn = rig.place("hlt")
    outcome = rig.handle(rig.exit_for(ExitReason.HLT, insn))
    assert rig.get("rip") == insn.address + 1
    return outcome


def test_hlt_with_interrupts_disabled_halts(rig: Rig) -> None:
    rig.partition.pending_vectors(rig.cpu).append(0x30)
    rig.set(rflags=0x2)
    assert isinstance(_hlt(rig), Halt)


def test_hlt_with_nothing_pending_halts(rig: Rig) -> None:
    rig.set(rflags=0x2 | RFLAGS_IF)
    assert isinstance(_hlt(rig), Halt)


def test_hlt_with_a_pending_vector_and_if_set_resumes(rig: Rig) -> None:
    rig.partition.pending_vectors(rig.cpu).append(0x30)
    rig.set(rflags=0x2 | RFLAGS_IF)
    assert isinstance(_hlt(rig), Resume)


def test_hlt_with_the_pic_asserting_intr_and_if_set_resumes(rig: Rig) -> None:
    rig.init_pic()
    rig.raise_irq(0)
    rig.set(rflags=0x2 | RFLAGS_IF)
    assert isinstance(_hlt(rig), Resume)


def test_halted_vcpu_wakes_only_with_if_and_an_interrupt(rig: Rig) -> None:
    """The dispatcher turns Halt into a blocked vCPU; can_wake() is what the run loop asks."""
    rig.set(rflags=0x2 | RFLAGS_IF)
    insn = rig.place("hlt")
    rig.dispatch(rig.exit_for(ExitReason.HLT, insn))
    rig.cpu.blocked = True                        # what the processor does with a HALT decision
    assert not rig.cpu.can_wake()
    rig.init_pic()
    rig.raise_irq(1)
    assert rig.cpu.can_wake()


# --- TSC -------------------------------------------------------------------------------------

def _latch_offset(rig: Rig, offset: int) -> None:
    rig.cpu.vmcs.write(F.TSC_OFFSET, offset)
    rig.cpu.reload_controls()


def test_rdtsc_returns_tsc_plus_offset(rig: Rig) -> None:
    _latch_offset(rig, 0x0000_0012_0000_0100)
    rig.partition.clock.retire(0x40)
    insn = rig.place("rdtsc")
    rig.handle(rig.exit_for(ExitReason.RDTSC, insn))
    assert (rig.get("rdx"), rig.get("rax")) == (0x12, 0x140)
    assert rig.get("rip") == insn.address + 2


def test_rdtsc_with_a_negative_offset_wraps(rig: Rig) -> None:
    _latch_offset(rig, -0x10 & (2**64 - 1))
    rig.partition.clock.retire(0x8)
    insn = rig.place("rdtsc")
    rig.handle(rig.exit_for(ExitReason.RDTSC, insn))
    assert (rig.get("rdx"), rig.get("rax")) == (0xFFFF_FFFF, 0xFFFF_FFF8)


def test_rdtscp_also_returns_tsc_aux_in_ecx(rig: Rig) -> None:
    _latch_offset(rig, 1000)
    rig.vcpu.write_msr(IA32_TSC_AUX, 0x0000_0007)
    insn = rig.place("rdtscp")
    rig.set(rcx=0xFFFF)
    rig.handle(rig.exit_for(ExitReason.RDTSCP, insn))
    assert (rig.get("rdx"), rig.get("rax"), rig.get("rcx")) == (0, 1000, 7)
    assert rig.get("rip") == insn.address + 3


def test_rdtsc_zeroes_the_upper_halves_in_64_bit_mode() -> None:
    rig = Rig()
    rig.long_mode()
    _latch_offset(rig, 5)
    insn = rig.place("rdtsc")
    rig.set(rax=2**64 - 1, rdx=2**64 - 1)
    rig.handle(rig.exit_for(ExitReason.RDTSC, insn))
    assert (rig.get("rdx"), rig.get("rax")) == (0, 5)


def test_preemption_timer_exit_just_resumes(rig: Rig) -> None:
    rig.vcpu.rip = 0x10000
    outcome = rig.handle(VmExit(ExitReason.PREEMPTION_TIMER, 0x10000))
    assert isinstance(outcome, Resume)
    assert rig.get("rip") == 0x10000 and rig.injected() is None


# --- VMX instructions, RDPMC, cache and TLB --------------------------------------------------

@pytest.mark.parametrize(("reason", "code"), [
    (ExitReason.VMCALL, "vmcall"), (ExitReason.VMXON, bytes.fromhex("f3 0f c7 35 00 00 04 00")),
    (ExitReason.VMLAUNCH, "vmlaunch"), (ExitReason.VMRESUME, "vmresume"),
    (ExitReason.VMXOFF, "vmxoff"), (ExitReason.VMREAD, "vmread eax, ebx"),
    (ExitReason.INVEPT, bytes.fromhex("66 0f 38 80 05 00 00 04 00")),
])
def test_vmx_instructions_inject_ud(rig: Rig, reason: ExitReason, code: str | bytes) -> None:
    insn = rig.place(code)
    assert isinstance(rig.handle(rig.exit_for(reason, insn)), Resume)
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == UD
    assert rig.get("rip") == insn.address


def test_rdpmc_injects_gp0(rig: Rig) -> None:
    insn = rig.place("rdpmc")
    rig.handle(rig.exit_for(ExitReason.RDPMC, insn))
    assert rig.injected() == InterruptionInfo.exception(13, error_code=True)
    assert rig.injected_error() == 0 and rig.get("rip") == insn.address


@pytest.mark.parametrize(("reason", "code"), [
    (ExitReason.INVD, "invd"), (ExitReason.WBINVD, "wbinvd"), (ExitReason.PAUSE, "pause"),
    (ExitReason.INVLPG, "invlpg [eax]"),
])
def test_cache_and_tlb_instructions_complete(rig: Rig, reason: ExitReason, code: str) -> None:
    insn = rig.place(code)
    assert isinstance(rig.handle(rig.exit_for(reason, insn)), Resume)
    assert rig.get("rip") == insn.address + insn.size
    assert rig.injected() is None
