"""Control-register-access exits (28) fed to the hypervisor: MOV to/from CR0/CR3/CR4/CR8, CLTS
and LMSW (Table 27-3), checked as the processor checks them, with the read shadows kept."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig
from vtemu.hv.outcome import Resume
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.qualifications import CrAccessQualification, CrAccessType, Gpr
from vtemu.vmx.reasons import ExitReason

CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE = 1, 2, 4, 8, 0x10, 0x20
CR0_NW, CR0_CD, CR0_PG = 1 << 29, 1 << 30, 1 << 31
CR4_PAE, CR4_PGE, CR4_VMXE = 1 << 5, 1 << 7, 1 << 13
GP_WITH_ERROR_CODE = 0x80000B0D


def _mov_to(rig: Rig, cr: int, code: str, gpr: Gpr, value: int) -> int:
    insn = rig.place(code)
    rig.set(**{gpr.name: value})
    qualification = CrAccessQualification(cr, CrAccessType.MOV_TO_CR, gpr=gpr).encode()
    assert isinstance(rig.handle(rig.exit_for(ExitReason.CR_ACCESS, insn, qualification)), Resume)
    return insn.address


def _mov_from(rig: Rig, cr: int, code: str, gpr: Gpr) -> int:
    insn = rig.place(code)
    qualification = CrAccessQualification(cr, CrAccessType.MOV_FROM_CR, gpr=gpr).encode()
    assert isinstance(rig.handle(rig.exit_for(ExitReason.CR_ACCESS, insn, qualification)), Resume)
    return insn.address


def _assert_gp0(rig: Rig, address: int) -> None:
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == GP_WITH_ERROR_CODE
    assert rig.injected_error() == 0
    assert rig.get("rip") == address


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


# --- CR8 / TPR -------------------------------------------------------------------------------

def test_mov_to_cr8_sets_the_tpr(rig: Rig) -> None:
    rig.long_mode()
    address = _mov_to(rig, 8, "mov cr8, rbx", Gpr.RBX, 0x9)
    assert rig.vcpu.tpr == 0x9
    assert rig.get("rip") == address + 4


def test_mov_from_cr8_reads_the_tpr(rig: Rig) -> None:
    rig.long_mode()
    rig.vcpu.tpr = 0xC
    rig.set(r9=2**64 - 1)
    address = _mov_from(rig, 8, "mov r9, cr8", Gpr.R9)
    assert rig.get("r9") == 0xC
    assert rig.get("rip") > address


def test_mov_to_cr8_with_reserved_bits_injects_gp(rig: Rig) -> None:
    rig.long_mode()
    rig.vcpu.tpr = 3
    address = _mov_to(rig, 8, "mov cr8, rax", Gpr.RAX, 0x10)
    _assert_gp0(rig, address)
    assert rig.vcpu.tpr == 3


# --- CR4 -------------------------------------------------------------------------------------

def test_setting_cr4_vmxe_injects_gp_and_changes_nothing(rig: Rig) -> None:
    rig.cpu.vmcs.write(F.CR4_READ_SHADOW, 0)
    address = _mov_to(rig, 4, "mov cr4, eax", Gpr.RAX, CR4_VMXE | CR4_PGE)
    _assert_gp0(rig, address)
    assert rig.get("cr4") == 0
    assert rig.cpu.vmcs.read(F.CR4_READ_SHADOW) == 0


def test_cr4_write_applies_the_value_and_keeps_the_shadow_of_host_bits(rig: Rig) -> None:
    """vtx owns only CR4.VMXE: a legal write lands in CR4; the shadow keeps VMXE = 0."""
    assert rig.cpu.vmcs.read(F.CR4_GUEST_HOST_MASK) == CR4_VMXE
    address = _mov_to(rig, 4, "mov cr4, ecx", Gpr.RCX, CR4_PGE | CR4_PAE)
    assert rig.get("cr4") == CR4_PGE | CR4_PAE
    assert rig.cpu.vmcs.read(F.CR4_READ_SHADOW) == 0
    assert rig.get("rip") == address + 3
    assert rig.injected() is None


def test_cr4_reserved_bit_injects_gp(rig: Rig) -> None:
    address = _mov_to(rig, 4, "mov cr4, eax", Gpr.RAX, 1 << 22)
    _assert_gp0(rig, address)


def test_clearing_cr4_pae_in_ia32e_mode_injects_gp() -> None:
    rig = Rig()
    rig.long_mode()
    address = _mov_to(rig, 4, "mov cr4, rax", Gpr.RAX, 0)
    _assert_gp0(rig, address)
    assert rig.get("cr4") & CR4_PAE


# --- CR0 -------------------------------------------------------------------------------------

def test_cr0_write_with_host_owned_bits_updates_cr0_and_the_shadow(rig: Rig) -> None:
    rig.cpu.vmcs.write(F.CR0_GUEST_HOST_MASK, CR0_TS | CR0_CD)
    rig.cpu.vmcs.write(F.CR0_READ_SHADOW, 0)
    value = CR0_PE | CR0_ET | CR0_TS | CR0_MP
    address = _mov_to(rig, 0, "mov cr0, edx", Gpr.RDX, value)
    assert rig.get("cr0") & 0xFFFF == value
    assert rig.cpu.vmcs.read(F.CR0_READ_SHADOW) == CR0_TS
    assert rig.get("rip") == address + 3


@pytest.mark.parametrize("value", [CR0_PG | CR0_ET, CR0_PE | CR0_ET | CR0_NW])
def test_inconsistent_cr0_injects_gp(rig: Rig, value: int) -> None:
    """PG without PE, NW without CD: #GP(0) (SDM Vol. 2 MOV CR)."""
    before = rig.get("cr0")
    address = _mov_to(rig, 0, "mov cr0, eax", Gpr.RAX, value)
    _assert_gp0(rig, address)
    assert rig.get("cr0") == before


def test_enabling_paging_with_lme_and_no_pae_injects_gp(rig: Rig) -> None:
    rig.vcpu.write_msr(0xC0000080, 1 << 8)
    address = _mov_to(rig, 0, "mov cr0, eax", Gpr.RAX, CR0_PG | CR0_PE | CR0_ET)
    _assert_gp0(rig, address)


def test_clts_clears_ts_in_cr0_and_its_shadow(rig: Rig) -> None:
    rig.cpu.vmcs.write(F.CR0_GUEST_HOST_MASK, CR0_TS)
    rig.cpu.vmcs.write(F.CR0_READ_SHADOW, CR0_TS)
    rig.set(cr0=CR0_PE | CR0_ET | CR0_TS | CR0_MP)
    insn = rig.place("clts")
    qualification = CrAccessQualification(0, CrAccessType.CLTS).encode()
    rig.handle(rig.exit_for(ExitReason.CR_ACCESS, insn, qualification))
    assert rig.get("cr0") & 0xFFFF == CR0_PE | CR0_ET | CR0_MP
    assert rig.cpu.vmcs.read(F.CR0_READ_SHADOW) == 0
    assert rig.get("rip") == insn.address + 2


def _lmsw(rig: Rig, source: int) -> int:
    insn = rig.place("lmsw ax")
    rig.set(rax=source)
    qualification = CrAccessQualification(0, CrAccessType.LMSW, lmsw_source_data=source).encode()
    rig.handle(rig.exit_for(ExitReason.CR_ACCESS, insn, qualification))
    return insn.address


def test_lmsw_loads_mp_em_ts_but_cannot_clear_pe(rig: Rig) -> None:
    rig.cpu.vmcs.write(F.CR0_GUEST_HOST_MASK, 0xF)
    rig.cpu.vmcs.write(F.CR0_READ_SHADOW, CR0_PE)
    rig.set(cr0=CR0_PE | CR0_ET | CR0_MP)
    address = _lmsw(rig, CR0_TS | CR0_EM | 0xFFF0)      # PE = 0 in the source, high bits ignored
    assert rig.get("cr0") & 0xFFFF == CR0_PE | CR0_ET | CR0_TS | CR0_EM
    assert rig.cpu.vmcs.read(F.CR0_READ_SHADOW) == CR0_PE | CR0_TS | CR0_EM
    assert rig.get("rip") == address + 3


def test_lmsw_can_set_pe() -> None:
    rig = Rig()
    rig.real_mode()
    rig.cpu.vmcs.write(F.CR0_GUEST_HOST_MASK, CR0_PE)
    rig.cpu.vmcs.write(F.CR0_READ_SHADOW, 0)
    _lmsw(rig, CR0_PE)
    assert rig.get("cr0") & CR0_PE
    assert rig.cpu.vmcs.read(F.CR0_READ_SHADOW) == CR0_PE


# --- CR3 -------------------------------------------------------------------------------------

def test_mov_to_and_from_cr3(rig: Rig) -> None:
    address = _mov_to(rig, 3, "mov cr3, esi", Gpr.RSI, 0x5000)
    assert rig.get("cr3") == 0x5000 and rig.get("rip") == address + 3
    rig.set(rbp=0)
    _mov_from(rig, 3, "mov ebp, cr3", Gpr.RBP)
    assert rig.get("rbp") == 0x5000
