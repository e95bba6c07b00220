"""MOV DR exits (29) fed to the hypervisor, which performs the move for the guest."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig
from vtemu.hv.outcome import Resume
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.qualifications import Gpr, MovDrDirection, MovDrQualification
from vtemu.vmx.reasons import ExitReason


def _mov_dr(rig: Rig, code: str, dr: int, direction: MovDrDirection, gpr: Gpr) -> int:
    insn = rig.place(code)
    qualification = MovDrQualification(dr, direction, gpr).encode()
    assert isinstance(rig.handle(rig.exit_for(ExitReason.MOV_DR, insn, qualification)), Resume)
    return insn.address + insn.size


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


def test_mov_to_dr0(rig: Rig) -> None:
    rig.set(rbx=0x12345678)
    next_rip = _mov_dr(rig, "mov dr0, ebx", 0, MovDrDirection.TO_DR, Gpr.RBX)
    assert rig.get("dr0") == 0x12345678
    assert rig.get("rip") == next_rip


def test_mov_from_dr7(rig: Rig) -> None:
    rig.set(dr7=0x401, rcx=0xFFFF)
    next_rip = _mov_dr(rig, "mov ecx, dr7", 7, MovDrDirection.FROM_DR, Gpr.RCX)
    assert rig.get("rcx") == 0x401
    assert rig.get("rip") == next_rip


def test_mov_to_dr3_from_r12_in_64_bit_mode() -> None:
    rig = Rig()
    rig.long_mode()
    rig.set(r12=0xFFFF_8000_0000_4000)
    _mov_dr(rig, "mov dr3, r12", 3, MovDrDirection.TO_DR, Gpr.R12)
    assert rig.get("dr3") == 0xFFFF_8000_0000_4000


def test_dr4_aliases_dr6_when_cr4_de_is_clear(rig: Rig) -> None:
    assert not rig.get("cr4") & (1 << 3)
    rig.set(dr6=0xFFFF0FF1, rax=0)
    _mov_dr(rig, "mov eax, dr4", 4, MovDrDirection.FROM_DR, Gpr.RAX)
    assert rig.get("rax") == 0xFFFF0FF1


def test_dr7_upper_half_write_injects_gp_in_64_bit_mode() -> None:
    rig = Rig()
    rig.long_mode()
    rig.set(rax=1 << 32 | 0x401)
    insn = rig.place("mov dr7, rax")
    qualification = MovDrQualification(7, MovDrDirection.TO_DR, Gpr.RAX).encode()
    rig.handle(rig.exit_for(ExitReason.MOV_DR, insn, qualification))
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0x80000B0D
    assert rig.get("rip") == insn.address


@pytest.mark.parametrize(("dr", "reads_back"), [(7, 0x400), (6, 0xFFFF0FF0)])
def test_dr6_dr7_fixed_bits_read_as_one(rig: Rig, dr: int, reads_back: int) -> None:
    rig.set(rax=0)
    _mov_dr(rig, f"mov dr{dr}, eax", dr, MovDrDirection.TO_DR, Gpr.RAX)
    rig.set(rbx=0x1234)
    _mov_dr(rig, f"mov ebx, dr{dr}", dr, MovDrDirection.FROM_DR, Gpr.RBX)
    assert rig.get("rbx") == reads_back
