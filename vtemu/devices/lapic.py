"""Local APIC, xAPIC and x2APIC register interfaces (Intel SDM Vol. 3A chapter 10).

One LocalApic per vCPU; an ApicBus joins those of a partition and carries inter-processor
interrupts (10.6). Register offsets are the xAPIC MMIO page layout (Table 10-1); in x2APIC
mode the same registers are MSR 800h + offset/16 (10.12.1.2, Table 10-6), with a 64-bit ICR
at MSR 830h and the self-IPI register at 83Fh.

What the vCPU sees of a local APIC is its INTR pin: `intr_asserted()` and `acknowledge()`
(the INTA cycle). Fixed interrupts wait in IRR and are dispatched by priority against the
processor-priority register (10.8.3); the bootstrap processor's LINT0 is wired to the 8259's
INTR in ExtINT mode at reset (virtual-wire mode, as QEMU's apic_reset_common does for the
BSP), so a PIC interrupt reaches the CPU through the APIC exactly as before an OS touches it.

INIT, SIPI and NMI are not vectors in IRR: they are signals to the processor (10.6.1), which
the VMX layer turns into VM exits (SDM 25.2: INIT and SIPI always exit in VMX non-root
operation). The APIC keeps them latched until the processor takes them.

Timer (10.5.4): the APIC timer counts at the APIC bus clock, which vtemu sets to guest time's
1 GHz (one tick per guest nanosecond = per retired instruction) divided by the divide
configuration; one-shot and periodic modes; the current count is derived from the deadline,
so it is exact at every read and deterministic.
"""

from __future__ import annotations

from typing import Callable, Protocol

from vtemu.devices.bus import InterruptController

# Register offsets in the xAPIC page (SDM Table 10-1).
ID = 0x020
VERSION = 0x030
TPR = 0x080
APR = 0x090
PPR = 0x0A0
EOI = 0x0B0
RRD = 0x0C0
LDR = 0x0D0
DFR = 0x0E0
SVR = 0x0F0
ISR_BASE = 0x100
TMR_BASE = 0x180
IRR_BASE = 0x200
ESR = 0x280
LVT_CMCI = 0x2F0
ICR_LOW = 0x300
ICR_HIGH = 0x310
LVT_TIMER = 0x320
LVT_THERMAL = 0x330
LVT_PERF = 0x340
LVT_LINT0 = 0x350
LVT_LINT1 = 0x360
LVT_ERROR = 0x370
TIMER_INITIAL = 0x380
TIMER_CURRENT = 0x390
TIMER_DIVIDE = 0x3E0
SELF_IPI = 0x3F0            # x2APIC only (MSR 83Fh)

X2APIC_MSR_BASE = 0x800     # 10.12.1.2: MSR = 800h + (offset >> 4)
X2APIC_MSR_LAST = 0x8FF
PAGE_SIZE = 0x1000

# Version register: version 14h (integrated APIC), max LVT entry 6 (CMCI..error), bit 24
# "suppress EOI broadcast" not offered (10.4.8, Figure 10-7).
APIC_VERSION = 0x14
MAX_LVT = 6
SVR_ENABLE = 1 << 8          # APIC software enable (10.4.7.2, Figure 10-23)
SVR_RESET = 0xFF
LVT_MASKED = 1 << 16
LVT_RESET = LVT_MASKED
LVT_DELIVERY_SHIFT = 8
TIMER_PERIODIC = 1 << 17     # LVT timer mode bits 18:17 = 01 (10.5.4)
DFR_FLAT = 0xFFFFFFFF

# ICR fields (10.6.1, Figure 10-12).
ICR_DELIVERY_SHIFT = 8
ICR_LOGICAL = 1 << 11
ICR_PENDING = 1 << 12
ICR_ASSERT = 1 << 14
ICR_LEVEL = 1 << 15
ICR_SHORTHAND_SHIFT = 18
ICR_WRITABLE = 0x000CFFFF & ~ICR_PENDING

# Delivery modes (ICR bits 10:8, LVT bits 10:8).
FIXED, LOWEST, SMI, NMI, INIT, STARTUP, EXTINT = 0, 1, 2, 4, 5, 6, 7
# Destination shorthands (ICR bits 19:18).
NO_SHORTHAND, SELF, ALL_INCLUDING_SELF, ALL_EXCLUDING_SELF = 0, 1, 2, 3
# ESR bits (10.5.3, Figure 10-9).
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7
XAPIC_BROADCAST = 0xFF
X2APIC_BROADCAST = 0xFFFFFFFF
DIVIDE_SHIFTS = {0b000: 1, 0b001: 2, 0b010: 3, 0b011: 4, 0b100: 5, 0b101: 6, 0b110: 7, 0b111: 0}
TICK_NS = 1                  # APIC bus clock: 1 GHz, guest time's own rate

_READ_ONLY = frozenset({VERSION, APR, PPR, RRD, TIMER_CURRENT})


class Timekeeper(Protocol):
    """The partition's guest clock as the timer needs it."""

    def now_ns(self) -> int: ...
    def schedule(self, deadline_ns: int, callback: Callable[[], None]) -> object: ...
    def cancel(self, timer: object) -> None: ...


class ApicRegisterError(Exception):
    """An x2APIC MSR access the SDM answers with #GP (10.12.1.2)."""


class LocalApic:
    def __init__(self, apic_id: int, clock: Timekeeper, bus: "ApicBus",
                 extint: InterruptController | None = None,
                 x2apic_enabled: Callable[[], bool] = lambda: False) -> None:
        self.apic_id = apic_id
        self.clock = clock
        self.bus = bus
        self.extint = extint           # the 8259 on LINT0 (the BSP only)
        self.x2apic_enabled = x2apic_enabled
        self.init_pending = False
        self.sipi_vector: int | None = None
        self.nmi_pending = False
        self.interrupts_accepted = 0
        self._timer: object | None = None
        self._timer_deadline = 0
        bus.join(self)
        self.reset()

    def reset(self) -> None:
        """Power-up and INIT state (10.4.7.1): everything cleared but the ID, LVTs masked."""
        self.tpr = 0
        self.ldr = 0
        self.dfr = DFR_FLAT
        self.svr = SVR_RESET
        self.irr = 0
        self.isr = 0
        self.tmr = 0
        self.esr = 0
        self._esr_pending = 0
        self.icr = 0
        self.lvt = {LVT_CMCI: LVT_RESET, LVT_TIMER: LVT_RESET, LVT_THERMAL: LVT_RESET,
                    LVT_PERF: LVT_RESET, LVT_LINT0: LVT_RESET, LVT_LINT1: LVT_RESET,
                    LVT_ERROR: LVT_RESET}
        if self.extint is not None:
            self.lvt[LVT_LINT0] = EXTINT << LVT_DELIVERY_SHIFT   # virtual wire (see module doc)
        self.timer_initial = 0
        self.timer_divide = 0
        self._stop_timer()

    # --- state ---------------------------------------------------------------------------
    @property
    def software_enabled(self) -> bool:
        return bool(self.svr & SVR_ENABLE)

    def processor_priority(self) -> int:
        """PPR = TPR if TPR[7:4] >= ISRV[7:4], else ISRV[7:4] << 4 (10.8.3.1)."""
        isrv = self.isr.bit_length() - 1 if self.isr else 0
        if (self.tpr >> 4) >= (isrv >> 4):
            return self.tpr
        return isrv & 0xF0

    def _deliverable_vector(self) -> int | None:
        if not self.irr:
            return None
        vector = self.irr.bit_length() - 1
        if (vector >> 4) <= (self.processor_priority() >> 4):
            return None
        return vector

    def _extint_asserted(self) -> bool:
        lint0 = self.lvt[LVT_LINT0]
        return (self.extint is not None and not lint0 & LVT_MASKED
                and (lint0 >> LVT_DELIVERY_SHIFT) & 7 == EXTINT and self.extint.intr_asserted())

    # --- the INTR pin (what the processor sees) ------------------------------------------
    def intr_asserted(self) -> bool:
        return self._deliverable_vector() is not None or self._extint_asserted()

    def acknowledge(self) -> int:
        """INTA: the highest deliverable vector moves IRR -> ISR (10.8.4); else the PIC's."""
        vector = self._deliverable_vector()
        if vector is not None:
            self.irr &= ~(1 << vector)
            self.isr |= 1 << vector
            return vector
        assert self.extint is not None, "acknowledge with INTR deasserted"
        return self.extint.acknowledge()

    # --- receiving -----------------------------------------------------------------------
    def accept_fixed(self, vector: int, level: bool = False) -> None:
        """A fixed interrupt arrives (IPI, LVT): set IRR (10.8.1); vectors 0-15 are illegal."""
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        if not self.software_enabled:
            return   # 10.4.7.2: a software-disabled APIC accepts no fixed interrupts
        self.irr |= 1 << vector
        self.tmr = self.tmr | (1 << vector) if level else self.tmr & ~(1 << vector)
        self.interrupts_accepted += 1

    def accept(self, mode: int, vector: int, level: bool = False) -> None:
        if mode in (FIXED, LOWEST):
            self.accept_fixed(vector, level)
        elif mode == NMI:
            self.nmi_pending = True
        elif mode == INIT:
            self.init_pending = True
        elif mode == STARTUP:
            self.sipi_vector = vector   # taken only in wait-for-SIPI (the processor decides)
        # SMI and ExtINT IPIs are not supported by this model and are dropped.

    def take_init(self) -> bool:
        pending, self.init_pending = self.init_pending, False
        return pending

    def take_sipi(self) -> int | None:
        vector, self.sipi_vector = self.sipi_vector, None
        return vector

    def take_nmi(self) -> bool:
        pending, self.nmi_pending = self.nmi_pending, False
        return pending

    def end_of_interrupt(self) -> None:
        """EOI clears the highest ISR bit (10.8.5)."""
        if self.isr:
            self.isr &= ~(1 << (self.isr.bit_length() - 1))

    def _error(self, bits: int) -> None:
        """Latch an error (ESR reads the latched value after a write, 10.5.3) and signal it."""
        self._esr_pending |= bits
        lvt = self.lvt[LVT_ERROR]
        if not lvt & LVT_MASKED and self.software_enabled:
            self.accept_fixed(lvt & 0xFF)

    # --- xAPIC MMIO -------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        register = offset & ~0xF
        value = self.read_register(register)
        shift = (offset & 0xF) * 8
        return (value >> shift) & ((1 << (8 * size)) - 1) if shift < 32 else 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset & 0xF or size != 4:
            return   # 10.4.1: registers are 32 bits on 16-byte boundaries; others are undefined
        self.write_register(offset, value & 0xFFFFFFFF)

    # --- x2APIC MSRs --------------------------------------------------------------------------
    def msr_read(self, msr: int) -> int:
        register = (msr - X2APIC_MSR_BASE) << 4
        if not self.x2apic_enabled() or register in (EOI, SELF_IPI, DFR, ICR_HIGH) \
                or not self._implemented(register):
            raise ApicRegisterError(f"RDMSR {msr:#x}")
        if register == ICR_LOW:
            return self.icr
        if register == ID:
            return self.apic_id
        if register == LDR:
            return self._x2apic_ldr()
        return self.read_register(register)

    def msr_write(self, msr: int, value: int) -> None:
        register = (msr - X2APIC_MSR_BASE) << 4
        if (not self.x2apic_enabled() or not self._implemented(register)
                or register in _READ_ONLY | {ID, LDR, DFR, ICR_HIGH}):
            raise ApicRegisterError(f"WRMSR {msr:#x}")
        if register == ICR_LOW:
            self.icr = value & ((0xFFFFFFFF << 32) | ICR_WRITABLE)
            self._send_ipi(value & 0xFFFFFFFF, value >> 32, x2apic=True)
        elif register == SELF_IPI:
            self.accept_fixed(value & 0xFF)
        elif register == EOI and value:
            raise ApicRegisterError("non-zero write to the x2APIC EOI register")   # 10.12.1.2
        else:
            self.write_register(register, value & 0xFFFFFFFF)

    def _implemented(self, register: int) -> bool:
        return (register in (ID, VERSION, TPR, PPR, EOI, LDR, DFR, SVR, ESR, ICR_LOW, ICR_HIGH,
                             TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE, SELF_IPI)
                or register in self.lvt
                or ISR_BASE <= register < IRR_BASE + 0x80)

    def _x2apic_ldr(self) -> int:
        """Logical x2APIC ID: cluster = ID[19:4], bit ID[3:0] in the cluster (10.12.10.2)."""
        return ((self.apic_id >> 4) << 16) | (1 << (self.apic_id & 0xF))

    # --- the register file --------------------------------------------------------------------
    def read_register(self, register: int) -> int:
        if register == ID:
            return self.apic_id << 24
        if register == VERSION:
            return (MAX_LVT << 16) | APIC_VERSION
        if register == TPR:
            return self.tpr
        if register == PPR:
            return self.processor_priority()
        if register == LDR:
            return self.ldr
        if register == DFR:
            return self.dfr
        if register == SVR:
            return self.svr
        if register == ESR:
            return self.esr
        if register == ICR_LOW:
            return self.icr & 0xFFFFFFFF
        if register == ICR_HIGH:
            return (self.icr >> 32) & 0xFFFFFFFF
        if register == TIMER_INITIAL:
            return self.timer_initial
        if register == TIMER_CURRENT:
            return self._timer_current()
        if register == TIMER_DIVIDE:
            return self.timer_divide
        if register in self.lvt:
            return self.lvt[register]
        for base, bits in ((ISR_BASE, self.isr), (TMR_BASE, self.tmr), (IRR_BASE, self.irr)):
            if base <= register < base + 0x80:
                return (bits >> (((register - base) >> 4) * 32)) & 0xFFFFFFFF
        return 0

    def write_register(self, register: int, value: int) -> None:
        if register == TPR:
            self.tpr = value & 0xFF
        elif register == EOI:
            self.end_of_interrupt()
        elif register == LDR:
            self.ldr = value & 0xFF000000
        elif register == DFR:
            self.dfr = value | 0x0FFFFFFF
        elif register == SVR:
            self._write_svr(value)
        elif register == ESR:
            self.esr, self._esr_pending = self._esr_pending, 0   # 10.5.3: write latches
        elif register == ICR_LOW:
            self.icr = (self.icr & ~0xFFFFFFFF) | (value & ICR_WRITABLE)
            self._send_ipi(value, self.icr >> 32 >> 24, x2apic=False)
        elif register == ICR_HIGH:
            self.icr = (self.icr & 0xFFFFFFFF) | ((value & 0xFF000000) << 32)
        elif register == TIMER_INITIAL:
            self._start_timer(value)
        elif register == TIMER_DIVIDE:
            self.timer_divide = value & 0xB
        elif register in self.lvt:
            self._write_lvt(register, value)

    def _write_svr(self, value: int) -> None:
        self.svr = value & 0x13FF
        if not self.software_enabled:
            for register in self.lvt:       # 10.4.7.2: software disable masks every LVT
                self.lvt[register] |= LVT_MASKED

    def _write_lvt(self, register: int, value: int) -> None:
        keep = {LVT_TIMER: 0x300FF, LVT_LINT0: 0x1A7FF, LVT_LINT1: 0x1A7FF}.get(register, 0x107FF)
        value &= keep
        if not self.software_enabled:
            value |= LVT_MASKED                  # masks cannot be cleared while disabled
        self.lvt[register] = value

    # --- inter-processor interrupts ---------------------------------------------------------
    def _send_ipi(self, low: int, destination: int, x2apic: bool) -> None:
        mode = (low >> ICR_DELIVERY_SHIFT) & 7
        vector = low & 0xFF
        if mode == INIT and not low & ICR_ASSERT and low & ICR_LEVEL:
            return   # INIT level de-assert: no action on modern processors (10.6.1)
        if mode in (FIXED, LOWEST) and vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        targets = self.bus.destinations(self, (low >> ICR_SHORTHAND_SHIFT) & 3, destination,
                                        bool(low & ICR_LOGICAL), x2apic)
        if mode == LOWEST and targets:
            targets = targets[:1]   # deterministic arbitration: the lowest APIC ID wins
        for target in targets:
            target.accept(mode, vector, bool(low & ICR_LEVEL))

    def matches_logical(self, destination: int, x2apic: bool) -> bool:
        if x2apic:
            ldr = self._x2apic_ldr()
            return destination >> 16 == ldr >> 16 and bool(destination & ldr & 0xFFFF)
        if self.dfr >> 28 == 0xF:                       # flat model (10.6.2.2)
            return bool((self.ldr >> 24) & destination)
        cluster = self.ldr >> 28                        # cluster model
        return destination >> 4 == cluster and bool(destination & (self.ldr >> 24) & 0xF)

    # --- the timer --------------------------------------------------------------------------
    def _ns_per_count(self) -> int:
        bits = self.timer_divide
        return TICK_NS << DIVIDE_SHIFTS[(bits & 3) | ((bits >> 1) & 4)]

    def _start_timer(self, count: int) -> None:
        """Writing the initial count starts (or, with 0, stops) the countdown (10.5.4)."""
        self.timer_initial = count
        self._stop_timer()
        if count:
            self._arm(count)

    def _arm(self, count: int) -> None:
        self._timer_deadline = self.clock.now_ns() + count * self._ns_per_count()
        self._timer = self.clock.schedule(self._timer_deadline, self._timer_expired)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self.clock.cancel(self._timer)
        self._timer = None

    def _timer_current(self) -> int:
        if self._timer is None:
            return 0
        left = self._timer_deadline - self.clock.now_ns()
        return max(0, -(-left // self._ns_per_count()))

    def _timer_expired(self) -> None:
        self._timer = None
        lvt = self.lvt[LVT_TIMER]
        if lvt & TIMER_PERIODIC:
            # The next period starts at the previous deadline: periods never drift.
            self._timer_deadline += self.timer_initial * self._ns_per_count()
            self._timer = self.clock.schedule(self._timer_deadline, self._timer_expired)
        if not lvt & LVT_MASKED:
            self.accept_fixed(lvt & 0xFF)


class ApicBus:
    """The APICs of one partition, in APIC ID order (IPIs are delivered in that order)."""

    def __init__(self) -> None:
        self.apics: list[LocalApic] = []
        self.ipis_sent = 0

    def join(self, apic: LocalApic) -> None:
        self.apics.append(apic)
        self.apics.sort(key=lambda a: a.apic_id)

    def destinations(self, source: LocalApic, shorthand: int, destination: int, logical: bool,
                     x2apic: bool) -> list[LocalApic]:
        """Who receives an IPI (10.6.2): shorthand, else physical ID or logical match."""
        self.ipis_sent += 1
        if shorthand == SELF:
            return [source]
        if shorthand == ALL_INCLUDING_SELF:
            return list(self.apics)
        if shorthand == ALL_EXCLUDING_SELF:
            return [apic for apic in self.apics if apic is not source]
        broadcast = X2APIC_BROADCAST if x2apic else XAPIC_BROADCAST
        if destination == broadcast:
            return list(self.apics)
        if logical:
            return [apic for apic in self.apics if apic.matches_logical(destination, x2apic)]
        return [apic for apic in self.apics if apic.apic_id == destination]
