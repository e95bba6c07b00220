"""Delivering interrupts and exceptions through the guest's IVT or IDT.

Unicorn reports exceptions but never delivers them, so this is the processor's delivery
microcode: real-mode IVT (SDM Vol. 3A 20.1.4), protected-mode IDT with 16/32-bit interrupt
and trap gates and a TSS stack switch on a privilege change (6.12), IA-32e 64-bit gates with
IST and RSP0-2 (6.14), error codes (6.13), and double-fault escalation when delivery itself
faults (6.15, Table 6-5) up to a triple fault, which the caller turns into shutdown.

A delivery either completes or changes nothing: every memory access is translated before
the frame is written and before any register changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Callable

import unicorn.x86_const as U

from vtemu.machine.cpustate import DESC_DPL_SHIFT, CpuContext, Seg, SegmentCache
from vtemu.machine.descriptors import (CONTRIBUTORY, DOUBLE_FAULT, ERROR_CODE_VECTORS, FAULT_CLASS,
                                       PAGE_FAULT, Gate, GateType, TssType, tss32_stack_offsets,
                                       tss64_ist_offset, tss64_rsp_offset)
from vtemu.machine.vcpu import GuestPageFault, MemoryAccess, VCpu

RFLAGS_CF_RESERVED = 1 << 1
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18

GP, NP, SS_FAULT, TS = 13, 11, 12, 10


class EventType(IntEnum):
    """Event types, numbered as in the VMX interruption-information format (SDM 24.8.3)."""

    EXTERNAL_INTERRUPT = 0
    NMI = 2
    HARDWARE_EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4
    PRIVILEGED_SOFTWARE_EXCEPTION = 5
    SOFTWARE_EXCEPTION = 6


@dataclass(frozen=True)
class Event:
    vector: int
    type: EventType
    error_code: int | None = None

    @property
    def software(self) -> bool:
        return self.type in (EventType.SOFTWARE_INTERRUPT, EventType.SOFTWARE_EXCEPTION,
                             EventType.PRIVILEGED_SOFTWARE_EXCEPTION)

    @property
    def external_bit(self) -> int:
        """EXT (error-code bit 0): set when the event was not caused by the program (SDM 6.13)."""
        return 0 if self.type in (EventType.SOFTWARE_INTERRUPT,
                                  EventType.SOFTWARE_EXCEPTION) else 1

    @classmethod
    def exception(cls, vector: int, error_code: int | None = None) -> "Event":
        return cls(vector, EventType.HARDWARE_EXCEPTION, error_code)


class TripleFault(Exception):
    """Delivery failed while delivering a double fault: the processor shuts down (SDM 6.15)."""

    def __init__(self, first: Event, second: Event) -> None:
        super().__init__(f"triple fault: vector {second.vector} while delivering vector {first.vector}")
        self.first = first
        self.second = second


class UnsupportedDelivery(Exception):
    """A legal but unimplemented path (task gates, virtual-8086 mode)."""


class _Fault(Exception):
    """An exception detected during delivery; `cr2` is set for page faults."""

    def __init__(self, vector: int, error_code: int | None = 0, cr2: int | None = None) -> None:
        super().__init__(vector)
        self.event = Event.exception(vector, error_code if vector in ERROR_CODE_VECTORS else None)
        self.cr2 = cr2


class InterceptedFault(Exception):
    """A fault during delivery that `intercepts` claimed (a VM exit, SDM 25.2, 27.2.4): nothing
    of it reached the guest, CR2 included; `delivering` is the event it interrupted."""

    def __init__(self, event: Event, delivering: Event, cr2: int | None) -> None:
        super().__init__(f"vector {event.vector} while delivering vector {delivering.vector}")
        self.event = event
        self.delivering = delivering
        self.cr2 = cr2


def deliver(vcpu: VCpu, event: Event, return_rip: int,
            intercepts: Callable[[Event], bool] | None = None) -> Event:
    """Deliver `event`, escalating faults during delivery (Table 6-5); returns what was finally
    delivered. A fault, once escalated, that `intercepts` claims raises InterceptedFault."""
    current = event
    while True:
        try:
            _Delivery(vcpu, current, return_rip).run()
            if current.type is EventType.NMI:
                _block_nmis(vcpu)
            return current
        except _Fault as fault:
            nested = escalate(current, fault.event)
            if intercepts is not None and intercepts(nested):
                # A #PF that exits leaves CR2 alone (its address goes to the qualification).
                exiting_pf = nested is fault.event and fault.cr2 is not None
                if fault.cr2 is not None and not exiting_pf:
                    vcpu.write(U.UC_X86_REG_CR2, fault.cr2)
                raise InterceptedFault(nested, current, fault.cr2 if exiting_pf else None) from None
            if fault.cr2 is not None:
                vcpu.write(U.UC_X86_REG_CR2, fault.cr2)
            current = nested


def _block_nmis(vcpu: VCpu) -> None:
    """An NMI handler runs with further NMIs blocked until IRET (SDM 6.7.1); Unicorn's IRET
    clears the flag itself."""
    context = vcpu.context.load()
    context.set_nmi_blocked(True)
    context.store()


def escalate(first: Event, second: Event) -> Event:
    """What the processor delivers when `second` occurs while delivering `first` (Table 6-5)."""
    if first.type in (EventType.HARDWARE_EXCEPTION,) and first.vector == DOUBLE_FAULT:
        if second.vector in CONTRIBUTORY or second.vector == PAGE_FAULT:
            raise TripleFault(first, second)
        return second
    first_class = _fault_class(first)
    second_class = _fault_class(second)
    if second_class == "contributory" and first_class in ("contributory", "page fault"):
        return Event.exception(DOUBLE_FAULT, 0)
    if second_class == "page fault" and first_class == "page fault":
        return Event.exception(DOUBLE_FAULT, 0)
    return second


def _fault_class(event: Event) -> str:
    if event.type is not EventType.HARDWARE_EXCEPTION:
        return "benign"
    if event.vector in CONTRIBUTORY:
        return "contributory"
    return "page fault" if event.vector == PAGE_FAULT else "benign"


class _Delivery:
    def __init__(self, vcpu: VCpu, event: Event, return_rip: int) -> None:
        self.vcpu = vcpu
        self.event = event
        self.return_rip = return_rip
        self.context: CpuContext = vcpu.context.load()
        self.rflags = vcpu.read(U.UC_X86_REG_RFLAGS)
        self.cr0 = vcpu.read(U.UC_X86_REG_CR0)
        self.efer = vcpu.read_msr(0xC0000080)
        self._pages: dict[tuple[int, MemoryAccess, bool], int] = {}   # this delivery's TLB

    def run(self) -> None:
        if not self.cr0 & 1:
            self._real_mode()
        elif self.rflags & RFLAGS_VM:
            raise UnsupportedDelivery("virtual-8086 mode is not supported")
        elif self.efer & (1 << 10):
            self._long_mode()
        else:
            self._protected_mode()

    # --- memory --------------------------------------------------------------------------
    def _translate(self, linear: int, access: MemoryAccess, user: bool) -> int:
        """Like the processor's TLB, one walk per page for the whole delivery (the IDT entry,
        the TSS field and the frame's slots mostly share pages)."""
        key = (linear & ~0xFFF, access, user)
        page = self._pages.get(key)
        if page is None:
            try:
                page = self.vcpu.translate(linear & ~0xFFF, access, user)
            except GuestPageFault as fault:
                raise _Fault(PAGE_FAULT, fault.error_code, linear) from None
            self._pages[key] = page
        return page | (linear & 0xFFF)

    def _read(self, linear: int, size: int) -> int:
        data = b"".join(self.vcpu.memory.read(self._translate(address, MemoryAccess.READ, False), len(chunk))
                        for address, chunk in _split(linear, bytes(size)))
        return int.from_bytes(data, "little")

    def _commit(self, writes: list[tuple[int, bytes]], user: bool) -> None:
        """Translate every target, then write: a faulting push leaves memory unchanged."""
        targets = [[(self._translate(address, MemoryAccess.WRITE, user), chunk)
                    for address, chunk in _split(linear, data)] for linear, data in writes]
        for pieces in targets:
            for hpa, chunk in pieces:
                self.vcpu.write_host(hpa, chunk)

    # --- real mode (SDM Vol. 3A 20.1.4) -------------------------------------------------
    def _real_mode(self) -> None:
        idt = self.context.table("idt")
        entry = 4 * self.event.vector
        if entry + 3 > idt.limit:
            raise _Fault(GP, self._selector_error(self.event.vector, idt=True))
        vector = self._read(idt.base + entry, 4)
        ss = self.context.segment(Seg.SS)
        sp = self.vcpu.read(U.UC_X86_REG_RSP) & 0xFFFF
        cs = self.context.segment(Seg.CS)
        frame = []
        for value in (self.rflags & 0xFFFF, cs.selector, self.return_rip & 0xFFFF):
            sp = (sp - 2) & 0xFFFF
            frame.append((ss.base + sp, value.to_bytes(2, "little")))
        self._commit(frame, user=False)
        self.context.load_segment(Seg.CS, SegmentCache.real_mode(vector >> 16))
        self._finish(sp, vector & 0xFFFF, RFLAGS_IF | RFLAGS_TF | RFLAGS_AC, rsp_mask=0xFFFF)

    # --- protected mode (SDM Vol. 3A 6.12) ----------------------------------------------
    def _protected_mode(self) -> None:
        gate = Gate.legacy(self._gate_bytes(8))
        self._check_gate(gate)
        if gate.type == GateType.TASK:
            raise UnsupportedDelivery("task-gate delivery (hardware task switch) is not supported")
        code = self._code_segment(gate.selector)
        cpl = self.context.cpl
        new_cpl = cpl if code.type & 0x4 else code.dpl  # conforming code keeps the CPL
        width = 2 if gate.is_16bit else 4
        old_ss = self.context.segment(Seg.SS)
        old_esp = self.vcpu.read(U.UC_X86_REG_RSP)
        if new_cpl < cpl:
            stack, esp = self._tss_stack(new_cpl)
            values = [old_ss.selector, old_esp]
        else:
            stack, esp = old_ss, old_esp
            values = []
        values += [self._pushed_rflags(), self.context.segment(Seg.CS).selector, self.return_rip]
        if self._error_code() is not None:
            values.append(self._error_code())
        mask = 0xFFFFFFFF if stack.big else 0xFFFF
        esp, frame = self._frame(stack.base, esp, values, width, mask)
        if gate.offset > code.limit:
            raise _Fault(GP, 0)
        self._commit(frame, user=new_cpl == 3)
        self._load_code(code, gate.selector, new_cpl)
        if new_cpl < cpl:
            self.context.load_segment(Seg.SS, stack)
        cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM | (RFLAGS_IF if gate.clears_if else 0)
        self._finish(esp, gate.offset, cleared, rsp_mask=mask)

    def _tss_stack(self, new_cpl: int) -> tuple[SegmentCache, int]:
        tr = self.context.table("tr")
        is_16bit = (tr.flags >> 8) & 0xF in (TssType.AVAILABLE16, TssType.BUSY16)
        sp_offset, ss_offset, sp_size = tss32_stack_offsets(new_cpl, is_16bit)
        if ss_offset + 1 > tr.limit:
            raise _Fault(TS, tr.selector & 0xFFFC)
        esp = self._read(tr.base + sp_offset, sp_size)
        selector = self._read(tr.base + ss_offset, 2)
        stack = self._data_segment(selector, TS)
        if selector & 3 != new_cpl or stack.dpl != new_cpl:
            raise _Fault(TS, selector & 0xFFFC)
        return stack, esp

    # --- IA-32e mode (SDM Vol. 3A 6.14) -------------------------------------------------
    def _long_mode(self) -> None:
        gate = Gate.long_mode(self._gate_bytes(16))
        self._check_gate(gate)
        if gate.type not in (GateType.INTERRUPT32, GateType.TRAP32):
            raise _Fault(GP, self._selector_error(self.event.vector, idt=True))
        code = self._code_segment(gate.selector)
        if not code.long or code.big:
            raise _Fault(GP, gate.selector & 0xFFFC)
        cpl = self.context.cpl
        new_cpl = cpl if code.type & 0x4 else code.dpl
        rsp = self.vcpu.read(U.UC_X86_REG_RSP)
        ss_selector = self.context.segment(Seg.SS).selector
        if gate.ist:
            rsp = self._read(self._tss64_field(tss64_ist_offset(gate.ist)), 8)
        elif new_cpl < cpl:
            rsp = self._read(self._tss64_field(tss64_rsp_offset(new_cpl)), 8)
        values = [ss_selector, self.vcpu.read(U.UC_X86_REG_RSP), self._pushed_rflags(),
                  self.context.segment(Seg.CS).selector, self.return_rip]
        if self._error_code() is not None:
            values.append(self._error_code())
        rsp, frame = self._frame(0, rsp & ~0xF, values, 8, 0xFFFFFFFFFFFFFFFF)
        if not _canonical(gate.offset) or not _canonical(rsp):
            raise _Fault(GP if not _canonical(gate.offset) else SS_FAULT, 0)
        self._commit(frame, user=new_cpl == 3)
        self._load_code(code, gate.selector, new_cpl)
        if new_cpl < cpl:
            # IA-32e: SS becomes a NULL selector with RPL = new CPL (SDM 6.14.4); QEMU takes
            # the CPL from the SS cache's DPL, so the cache carries it.
            self.context.load_segment(Seg.SS, SegmentCache(new_cpl, 0, 0, new_cpl << DESC_DPL_SHIFT))
        cleared = RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | (RFLAGS_IF if gate.clears_if else 0)
        self._finish(rsp, gate.offset, cleared, rsp_mask=0xFFFFFFFFFFFFFFFF)

    def _tss64_field(self, offset: int) -> int:
        tr = self.context.table("tr")
        if offset + 7 > tr.limit:
            raise _Fault(TS, tr.selector & 0xFFFC)
        return tr.base + offset

    # --- shared steps --------------------------------------------------------------------
    def _gate_bytes(self, size: int) -> int:
        idt = self.context.table("idt")
        entry = size * self.event.vector
        if entry + size - 1 > idt.limit:
            raise _Fault(GP, self._selector_error(self.event.vector, idt=True))
        return self._read(idt.base + entry, size)

    def _check_gate(self, gate: Gate) -> None:
        """Privilege and presence checks on the gate itself (SDM 6.12.1.1)."""
        if gate.type not in set(GateType):
            raise _Fault(GP, self._selector_error(self.event.vector, idt=True))
        if self.event.type is EventType.SOFTWARE_INTERRUPT or self.event.type is EventType.SOFTWARE_EXCEPTION:
            if gate.dpl < self.context.cpl:
                raise _Fault(GP, self._selector_error(self.event.vector, idt=True))
        if not gate.present:
            raise _Fault(NP, self._selector_error(self.event.vector, idt=True))

    def _descriptor(self, selector: int, fault: int) -> SegmentCache:
        if selector & 0xFFFC == 0:
            raise _Fault(fault, self.event.external_bit)
        table = self.context.table("ldt" if selector & 4 else "gdt")
        index = selector & 0xFFF8
        if index + 7 > table.limit:
            raise _Fault(fault, self._selector_error(selector))
        return SegmentCache.from_descriptor(selector, self._read(table.base + index, 8))

    def _code_segment(self, selector: int) -> SegmentCache:
        code = self._descriptor(selector, GP)
        if code.system or not code.type & 0x8 or code.dpl > self.context.cpl:
            raise _Fault(GP, self._selector_error(selector))
        if not code.present:
            raise _Fault(NP, self._selector_error(selector))
        return code

    def _data_segment(self, selector: int, fault: int) -> SegmentCache:
        data = self._descriptor(selector, fault)
        if data.system or data.type & 0x8 or not data.type & 0x2:
            raise _Fault(fault, self._selector_error(selector))
        if not data.present:
            raise _Fault(SS_FAULT, self._selector_error(selector))
        return data

    def _selector_error(self, index: int, idt: bool = False) -> int:
        """Error code format of SDM 6.13: selector index, IDT bit (1), EXT bit (0)."""
        if idt:
            return (index << 3) | 2 | self.event.external_bit
        return (index & 0xFFFC) | self.event.external_bit

    def _error_code(self) -> int | None:
        if self.event.type is not EventType.HARDWARE_EXCEPTION:
            return None
        if self.event.vector not in ERROR_CODE_VECTORS:
            return None
        return self.event.error_code or 0

    def _pushed_rflags(self) -> int:
        """RF is set in the saved image for fault-class exceptions (SDM Vol. 3A 17.3.1.1)."""
        rflags = self.rflags
        if self.event.type is EventType.HARDWARE_EXCEPTION and self.event.vector in FAULT_CLASS:
            rflags |= RFLAGS_RF
        return rflags

    def _frame(self, base: int, sp: int, values: list[int], width: int,
               mask: int) -> tuple[int, list[tuple[int, bytes]]]:
        writes = []
        for value in values:
            sp = (sp - width) & mask
            writes.append((base + sp, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")))
        return sp, writes

    def _load_code(self, code: SegmentCache, selector: int, cpl: int) -> None:
        self.context.load_segment(Seg.CS, SegmentCache((selector & 0xFFFC) | cpl, code.base,
                                                       code.limit, code.flags))

    def _finish(self, rsp: int, rip: int, cleared_flags: int, rsp_mask: int) -> None:
        """Commit registers: descriptor caches first (context), then RSP, RIP and RFLAGS."""
        self.context.clear_interrupt_shadow()
        self.context.forget_exception_in_flight()
        self.context.store()
        old_rsp = self.vcpu.read(U.UC_X86_REG_RSP)
        self.vcpu.write(U.UC_X86_REG_RSP, (old_rsp & ~rsp_mask) | (rsp & rsp_mask))
        self.vcpu.write(U.UC_X86_REG_RIP, rip)
        self.vcpu.write(U.UC_X86_REG_RFLAGS, (self.rflags & ~cleared_flags) | RFLAGS_CF_RESERVED)


def _canonical(address: int) -> bool:
    top = address >> 47
    return top == 0 or top == 0x1FFFF


def _split(linear: int, data: bytes) -> list[tuple[int, bytes]]:
    pieces = []
    offset = 0
    while offset < len(data):
        size = min(len(data) - offset, 0x1000 - ((linear + offset) & 0xFFF))
        pieces.append((linear + offset, data[offset:offset + size]))
        offset += size
    return pieces

