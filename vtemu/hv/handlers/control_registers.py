"""Control-register accesses (28): MOV to/from CR0/CR3/CR4/CR8, CLTS, LMSW (Table 27-3).

The hypervisor owns the CR0/CR4 bits in the guest/host masks: a write that would change
one exits here, is checked as the processor would check it (#GP for reserved or
inconsistent values, SDM Vol. 3A 2.5 and Vol. 2 MOV CR), and then applied to the guest's
real register while the read shadow keeps what the guest believes it wrote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.handlers.common import GP, done, inject_exception, read_gpr, write_gpr
from vtemu.hv.outcome import Outcome
from vtemu.machine.decode import CodeMode
from vtemu.machine.msrs import IA32_EFER
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.qualifications import CrAccessQualification, CrAccessType
from vtemu.vmx.reasons import ExitReason

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu
    from vtemu.vmx.exit import VmExit

CR0_PE, CR0_TS, CR0_NW, CR0_CD, CR0_PG = 1 << 0, 1 << 3, 1 << 29, 1 << 30, 1 << 31
CR4_PAE, CR4_VMXE = 1 << 5, 1 << 13
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
CR4_SUPPORTED = (1 << 11) - 1   # VME..OSXMMEXCPT, as CPUID reports (controls.py CR4_FIXED1)
_REGS = {0: U.UC_X86_REG_CR0, 3: U.UC_X86_REG_CR3, 4: U.UC_X86_REG_CR4}
_MASKS = {0: (F.CR0_GUEST_HOST_MASK, F.CR0_READ_SHADOW), 4: (F.CR4_GUEST_HOST_MASK, F.CR4_READ_SHADOW)}


def handle_cr_access(exit: "VmExit", cpu: "VmxCpu", partition: "Partition") -> Outcome:
    access = exit.decoded(CrAccessQualification)
    if access.access_type is CrAccessType.MOV_TO_CR:
        return _mov_to_cr(exit, cpu, access.cr, read_gpr(cpu, access.gpr))
    if access.access_type is CrAccessType.MOV_FROM_CR:
        value = cpu.vcpu.tpr if access.cr == 8 else cpu.vcpu.read(_REGS[access.cr])
        write_gpr(cpu, access.gpr, value)
        return done(exit, cpu)
    if access.access_type is CrAccessType.CLTS:
        return _mov_to_cr(exit, cpu, 0, _guest_view(cpu, 0) & ~CR0_TS)
    source = access.lmsw_source_data & 0xF
    cr0 = _guest_view(cpu, 0)
    return _mov_to_cr(exit, cpu, 0, (cr0 & ~0xE) | source | (cr0 & CR0_PE))


def _guest_view(cpu: "VmxCpu", cr: int) -> int:
    mask_field, shadow_field = _MASKS[cr]
    mask = cpu.vmcs.read(mask_field)
    return (cpu.vcpu.read(_REGS[cr]) & ~mask) | (cpu.vmcs.read(shadow_field) & mask)


def _mov_to_cr(exit: "VmExit", cpu: "VmxCpu", cr: int, value: int) -> Outcome:
    if cr == 8:
        if value >> 4:
            return inject_exception(cpu, GP, 0)
        cpu.vcpu.tpr = value
        return done(exit, cpu)
    if cr == 3:
        cpu.vcpu.write(U.UC_X86_REG_CR3, value)
        return done(exit, cpu)
    if not _valid(cpu, cr, value) or not _long_mode_consistent(cpu, cr, value):
        return inject_exception(cpu, GP, 0)
    mask_field, shadow_field = _MASKS[cr]
    cpu.vcpu.write(_REGS[cr], value)
    cpu.vmcs.write(shadow_field, value & cpu.vmcs.read(mask_field))
    cpu.vcpu.flush_tlb()
    return done(exit, cpu)


def _valid(cpu: "VmxCpu", cr: int, value: int) -> bool:
    if value >> 32:
        return False
    if cr == 4:
        return not value & ~CR4_SUPPORTED
    if value & CR0_PG and not value & CR0_PE:
        return False
    return not (value & CR0_NW and not value & CR0_CD)


def _long_mode_consistent(cpu: "VmxCpu", cr: int, value: int) -> bool:
    """SDM Vol. 2 MOV CR #GP(0) and Vol. 3A 10.8.5: IA-32e mode needs PAE before paging, keeps
    PAE while active, and 64-bit code cannot turn paging off."""
    efer = cpu.vcpu.read_msr(IA32_EFER)
    if cr == 4:
        return bool(value & CR4_PAE or not efer & EFER_LMA)
    if value & CR0_PG:
        return bool(not efer & EFER_LME or cpu.vcpu.read(U.UC_X86_REG_CR4) & CR4_PAE)
    return cpu.vcpu.code_mode() is not CodeMode.BITS64


HANDLERS = {ExitReason.CR_ACCESS: handle_cr_access}
