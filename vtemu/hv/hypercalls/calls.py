"""The hypercalls vtemu implements: TLFS codes where the TLFS has the call, vtemu's own codes
(8001h-80FFh, table.py) otherwise. Each validates every argument; see README "pv mode".

TLFS calls (TLFS "Virtual MMU" chapter, and HvCallNotifyLongSpinWait with the spinlock
recommendation of CPUID 40000004h):

  0001h HvCallSwitchVirtualAddressSpace   simple, fast or memory: AddressSpace (the new CR3)
  0002h HvCallFlushVirtualAddressSpace    simple, memory: AddressSpace, Flags, ProcessorMask
  0003h HvCallFlushVirtualAddressList     rep, memory: the same header, then one GVA range per
                                          rep (bits 63:12 page, 11:0 additional pages)
  0008h HvCallNotifyLongSpinWait          simple, fast or memory: SpinCount (bits 31:0)

vtemu's calls:

  8001h VtemuCallMmuUpdate   rep, memory: 16-byte elements {ptr, value} in the manner of Xen's
                             mmu_update/mmuext_op; ptr bits 2:0 select the operation:
                               0 write the paging-structure entry at GPA ptr & ~7 := value
                               1 invalidate the linear page `value`       (ptr >> 3 must be 0);
                                 under shadow paging the leaf is rebuilt from the guest's
                                 tables at once (no hidden fault on the next access)
                               2 flush this vCPU's TLB  (ptr >> 3 and value must be 0)
                               3 load CR3 := value                         (ptr >> 3 must be 0)
                               4 zero the 4 KiB frame at GPA `value` (Xen's MMUEXT_CLEAR_PAGE)
                               5 as 1, for a page the guest is about to write: the refilled
                                 leaf is writable and the walk sets the dirty flag
                             applied in order; the first bad element stops the list and is the
                             status, reps completed counting the ones applied
  8002h VtemuCallConsoleWrite  fast: input = GPA of the bytes, output = length (<= 4096);
                               the bytes go to COM1's transmitter as OUTs to THR would
  8003h VtemuCallShutdown      fast: input = exit code (0-255), output = 0; the run ends
                               as if the code had been written to isa-debug-exit
  8004h VtemuCallPortWrite     fast: input = port | size << 16 (size 1, 2 or 4), output = value
  8005h VtemuCallIdle          fast, no parameters: STI; HLT (RFLAGS.IF := 1, the vCPU waits
                               for an interrupt), so a caller may stage it with interrupts off

Writes to guest tables go through the vCPU (vcpu.write_host), so under shadow paging the
shadow MMU drops what it derived from the entries written, exactly as for an emulated guest
store, and under EPT the guest's own TLB rules apply (invalidate what you changed).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.hv.hypercalls.abi import HvStatus, HypercallError, HypercallInput
from vtemu.hv.hypercalls.params import (read_guest_bytes, read_parameters, read_qwords,
                                        write_guest)
from vtemu.hv.hypercalls.table import SUCCESS, HypercallResult, register
from vtemu.hv.outcome import HALT
from vtemu.machine import layout
from vtemu.machine.addr import PAGE_MASK
from vtemu.mmu.paging import Access

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

HV_CALL_SWITCH_VIRTUAL_ADDRESS_SPACE = 0x0001
HV_CALL_FLUSH_VIRTUAL_ADDRESS_SPACE = 0x0002
HV_CALL_FLUSH_VIRTUAL_ADDRESS_LIST = 0x0003
HV_CALL_NOTIFY_LONG_SPIN_WAIT = 0x0008
VTEMU_CALL_MMU_UPDATE = 0x8001
VTEMU_CALL_CONSOLE_WRITE = 0x8002
VTEMU_CALL_SHUTDOWN = 0x8003
VTEMU_CALL_PORT_WRITE = 0x8004
VTEMU_CALL_IDLE = 0x8005

# HV_FLUSH_* flags (TLFS "HvCallFlushVirtualAddressSpace").
HV_FLUSH_ALL_PROCESSORS = 1 << 0
HV_FLUSH_ALL_VIRTUAL_ADDRESS_SPACES = 1 << 1
HV_FLUSH_NON_GLOBAL_MAPPINGS_ONLY = 1 << 2
FLUSH_FLAGS = HV_FLUSH_ALL_PROCESSORS | HV_FLUSH_ALL_VIRTUAL_ADDRESS_SPACES | HV_FLUSH_NON_GLOBAL_MAPPINGS_ONLY
FLUSH_HEADER_QWORDS = 3
GVA_RANGE_COUNT_MASK = 0xFFF
PAGES_PER_FULL_FLUSH = 32

MMU_PT_UPDATE, MMU_INVLPG, MMU_FLUSH_TLB, MMU_LOAD_CR3, MMU_CLEAR_PAGE, MMU_INVLPG_FOR_WRITE = range(6)
PAGE_SIZE = 4096
MMU_OP_MASK = 0x7
MMU_ELEMENT = 16
PTE_PRESENT = 1
ENTRY_ADDRESS_TOP = 52            # paging-structure entries hold addresses below bit 52
CONSOLE_MAX = 4096
PORT_SIZES = (1, 2, 4)
MAX_EXIT_CODE = 0xFF
RFLAGS_IF = 1 << 9


# --- TLFS calls -------------------------------------------------------------------------------
def switch_address_space(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    cr3 = call.input if call.fast else read_qwords(partition, call.input, 1)[0]
    _load_cr3(partition, cpu, cr3)
    return SUCCESS


def flush_address_space(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    _, flags, mask = read_qwords(partition, call.input, FLUSH_HEADER_QWORDS)
    for target in _flush_targets(partition, flags, mask):
        partition.paging.flush_guest_tlb(target)  # type: ignore[attr-defined]
    return SUCCESS


def flush_address_list(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    header = FLUSH_HEADER_QWORDS * 8
    read_parameters(partition, call.input, header + 8 * call.rep_count)   # the whole list in one page
    _, flags, mask = read_qwords(partition, call.input, FLUSH_HEADER_QWORDS)
    targets = _flush_targets(partition, flags, mask)
    count = call.rep_end - call.rep_start
    ranges = read_qwords(partition, call.input + header + 8 * call.rep_start, count)
    for gva_range in ranges:
        pages = (gva_range & GVA_RANGE_COUNT_MASK) + 1
        for target in targets:
            _invalidate_range(partition, target, gva_range & PAGE_MASK, pages)
    return HypercallResult(HvStatus.SUCCESS, call.rep_end)


def _invalidate_range(partition: "Partition", cpu: "VmxCpu", first: int, pages: int) -> None:
    """Page by page, or past PAGES_PER_FULL_FLUSH the whole TLB: flushing more than asked is
    always allowed (SDM 4.10.4.1), and a 4096-page range per rep cannot make one call slow."""
    paging = partition.paging
    if pages > PAGES_PER_FULL_FLUSH:
        paging.flush_guest_tlb(cpu)  # type: ignore[attr-defined]
        return
    for page in range(pages):
        paging.invalidate_page(cpu, first + page * 4096)  # type: ignore[attr-defined]


def notify_long_spin_wait(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    spins = call.input if call.fast else read_qwords(partition, call.input, 1)[0]
    outcome = partition.hypercalls.note_long_spin_wait(cpu, spins & 0xFFFFFFFF)  # type: ignore[attr-defined]
    return HypercallResult(HvStatus.SUCCESS, 0, outcome)


def _flush_targets(partition: "Partition", flags: int, mask: int) -> list["VmxCpu"]:
    """The vCPUs a flush names. Each vCPU's TLB holds only its current address space, so a
    flush of any address space flushes the named vCPUs (flushing more is always allowed)."""
    if flags & ~FLUSH_FLAGS:
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"unknown flush flags {flags:#x}")
    if flags & HV_FLUSH_ALL_PROCESSORS:
        return list(partition.vcpus)
    return [cpu for cpu in partition.vcpus if cpu.index < 64 and mask >> cpu.index & 1]


# --- vtemu's calls --------------------------------------------------------------------------------
def mmu_update(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    read_parameters(partition, call.input, MMU_ELEMENT * call.rep_count)   # the list in one page
    count = call.rep_end - call.rep_start
    words = read_qwords(partition, call.input + MMU_ELEMENT * call.rep_start, 2 * count)
    for offset in range(count):
        index = call.rep_start + offset
        try:
            _mmu_operation(partition, cpu, words[2 * offset], words[2 * offset + 1])
        except HypercallError as error:
            raise HypercallError(error.status, f"element {index}: {error}", reps_completed=index) from None
    return HypercallResult(HvStatus.SUCCESS, call.rep_end)


def _mmu_operation(partition: "Partition", cpu: "VmxCpu", ptr: int, value: int) -> None:
    op = ptr & MMU_OP_MASK
    if op == MMU_PT_UPDATE:
        _check_entry(partition, value)
        write_guest(partition, cpu, ptr & ~MMU_OP_MASK, struct.pack("<Q", value))
        return
    if ptr >> 3 or op > MMU_INVLPG_FOR_WRITE:
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"bad MMU operation {ptr:#x}")
    if op in (MMU_INVLPG, MMU_INVLPG_FOR_WRITE):
        refill = Access(write=op == MMU_INVLPG_FOR_WRITE)
        partition.paging.invalidate_page(cpu, value, refill=refill)  # type: ignore[attr-defined]
    elif op == MMU_CLEAR_PAGE:
        if value % PAGE_SIZE:
            raise HypercallError(HvStatus.INVALID_ALIGNMENT, f"frame {value:#x} is not page aligned")
        write_guest(partition, cpu, value, bytes(PAGE_SIZE))
    elif op == MMU_FLUSH_TLB:
        if value:
            raise HypercallError(HvStatus.INVALID_PARAMETER, "a TLB flush takes no value")
        partition.paging.flush_guest_tlb(cpu)  # type: ignore[attr-defined]
    else:
        _load_cr3(partition, cpu, value)


def _check_entry(partition: "Partition", value: int) -> None:
    """A present entry may not name a frame beyond the guest's MAXPHYADDR (CPUID 80000008h):
    those bits are reserved and the processor would refuse the walk (SDM 4.5, Table 4-20)."""
    if not value & PTE_PRESENT:
        return
    maxphyaddr = partition.cpuid.query(0x80000008, 0, 0)[0] & 0xFF
    if (value >> maxphyaddr) & ((1 << (ENTRY_ADDRESS_TOP - maxphyaddr)) - 1):
        raise HypercallError(HvStatus.INVALID_PARAMETER,
                             f"entry {value:#x} sets address bits beyond MAXPHYADDR {maxphyaddr}")


def _load_cr3(partition: "Partition", cpu: "VmxCpu", value: int) -> None:
    if not partition.paging.load_guest_cr3(cpu, value):  # type: ignore[attr-defined]
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"CR3 value {value:#x} has reserved bits")


def console_write(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    if call.output > CONSOLE_MAX:
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"console write of {call.output} bytes")
    data = read_guest_bytes(partition, call.input, call.output)
    partition.ports.write_string(layout.COM1_BASE, 1, data)
    return SUCCESS


def shutdown(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    if call.input > MAX_EXIT_CODE or call.output:
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"exit code {call.input:#x}")
    # The same ending as the guest's write to isa-debug-exit: `vtemu run` exits with the code.
    partition.ports.write(layout.DEBUG_EXIT_PORT, 4, call.input)
    return SUCCESS


def port_write(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    port, size = call.input & 0xFFFF, call.input >> 16
    if size not in PORT_SIZES or port + size > 0x10000:
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"port write {call.input:#x}")
    if call.output >> (8 * size):
        raise HypercallError(HvStatus.INVALID_PARAMETER, f"value {call.output:#x} wider than {size} bytes")
    partition.ports.write(port, size, call.output)
    return SUCCESS


def idle(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    if call.input or call.output:
        raise HypercallError(HvStatus.INVALID_PARAMETER, "VtemuCallIdle takes no parameters")
    flags = cpu.vcpu.read(U.UC_X86_REG_RFLAGS)
    cpu.vcpu.write(U.UC_X86_REG_RFLAGS, flags | RFLAGS_IF)   # STI; HLT as one operation
    ready = partition.interrupt_ready(cpu)
    return HypercallResult(HvStatus.SUCCESS, 0, None if ready else HALT)


def _register_all() -> None:
    register(HV_CALL_SWITCH_VIRTUAL_ADDRESS_SPACE, "HvCallSwitchVirtualAddressSpace", switch_address_space)
    register(HV_CALL_FLUSH_VIRTUAL_ADDRESS_SPACE, "HvCallFlushVirtualAddressSpace", flush_address_space,
             fast=False)
    register(HV_CALL_FLUSH_VIRTUAL_ADDRESS_LIST, "HvCallFlushVirtualAddressList", flush_address_list,
             rep=True, fast=False)
    register(HV_CALL_NOTIFY_LONG_SPIN_WAIT, "HvCallNotifyLongSpinWait", notify_long_spin_wait)
    register(VTEMU_CALL_MMU_UPDATE, "VtemuCallMmuUpdate", mmu_update, rep=True, fast=False)
    register(VTEMU_CALL_CONSOLE_WRITE, "VtemuCallConsoleWrite", console_write, memory=False)
    register(VTEMU_CALL_SHUTDOWN, "VtemuCallShutdown", shutdown, memory=False)
    register(VTEMU_CALL_PORT_WRITE, "VtemuCallPortWrite", port_write, memory=False)
    register(VTEMU_CALL_IDLE, "VtemuCallIdle", idle, memory=False)


_register_all()
