"""Local APIC register behaviour (SDM Vol. 3A chapter 10), without a CPU."""

from __future__ import annotations

import pytest

from vtemu.devices import lapic as L
from vtemu.devices.lapic import ApicBus, ApicRegisterError, LocalApic
from vtemu.machine.clock import GuestClock


class FakePic:
    def __init__(self) -> None:
        self.asserted = False

    def intr_asserted(self) -> bool:
        return self.asserted

    def acknowledge(self) -> int:
        self.asserted = False
        return 0x20


class Clock(GuestClock):
    """A guest clock the test moves forward, firing due timers as the run loop does."""

    def advance(self, ns: int) -> None:
        self.retire(ns)
        self.run_due_timers()


def apics(count: int = 2, x2apic: bool = False):
    clock = Clock()
    bus = ApicBus()
    pic = FakePic()
    cpus = [LocalApic(i, clock, bus, extint=pic if i == 0 else None, x2apic_enabled=lambda: x2apic)
            for i in range(count)]
    for apic in cpus:
        apic.mmio_write(L.SVR, 4, 0x1FF)
    return clock, bus, pic, cpus


def test_id_version_and_reset_state() -> None:
    clock, bus = Clock(), ApicBus()
    apic = LocalApic(3, clock, bus)
    assert apic.mmio_read(L.ID, 4) == 3 << 24
    assert apic.mmio_read(L.VERSION, 4) == (6 << 16) | 0x14
    assert apic.mmio_read(L.SVR, 4) == 0xFF              # software disabled at reset
    assert apic.mmio_read(L.LVT_TIMER, 4) == L.LVT_MASKED
    assert apic.mmio_read(L.DFR, 4) == 0xFFFFFFFF


def test_fixed_interrupts_dispatch_by_priority_and_eoi_clears_the_highest_isr() -> None:
    _, _, _, (apic, _) = apics()
    apic.accept_fixed(0x41)
    apic.accept_fixed(0x62)
    assert apic.intr_asserted()
    assert apic.acknowledge() == 0x62
    # 0x41 is in a lower priority class than the 0x62 in service: held back (10.8.3.1)
    assert not apic.intr_asserted()
    assert apic.mmio_read(L.ISR_BASE + 0x30, 4) == 1 << 2   # vector 0x62 = ISR dword 3, bit 2
    apic.mmio_write(L.EOI, 4, 0)
    assert apic.acknowledge() == 0x41
    apic.mmio_write(L.EOI, 4, 0)
    assert apic.isr == 0 and apic.irr == 0


def test_task_priority_masks_lower_classes() -> None:
    _, _, _, (apic, _) = apics()
    apic.mmio_write(L.TPR, 4, 0x50)
    apic.accept_fixed(0x45)
    assert not apic.intr_asserted()
    assert apic.mmio_read(L.PPR, 4) == 0x50
    apic.mmio_write(L.TPR, 4, 0x30)
    assert apic.intr_asserted()


def test_software_disabled_apic_drops_fixed_interrupts_and_masks_lvts() -> None:
    _, _, _, (apic, _) = apics()
    apic.mmio_write(L.LVT_TIMER, 4, 0x30)
    apic.mmio_write(L.SVR, 4, 0xFF)
    assert apic.mmio_read(L.LVT_TIMER, 4) & L.LVT_MASKED
    apic.accept_fixed(0x40)
    assert not apic.intr_asserted()


def test_illegal_vectors_set_esr_after_a_write() -> None:
    _, _, _, (apic, _) = apics()
    apic.mmio_write(L.ICR_LOW, 4, 0x00040005)         # self IPI, vector 5
    assert apic.mmio_read(L.ESR, 4) == 0               # latched only by the next ESR write
    apic.mmio_write(L.ESR, 4, 0)
    assert apic.mmio_read(L.ESR, 4) == L.ESR_SEND_ILLEGAL_VECTOR


def test_ipi_shorthands_and_physical_destination() -> None:
    _, bus, _, cpus = apics(4)
    a, b, c, d = cpus
    a.mmio_write(L.ICR_HIGH, 4, 2 << 24)
    a.mmio_write(L.ICR_LOW, 4, 0x40)                    # fixed, physical, to APIC 2
    assert [x.irr for x in cpus] == [0, 0, 1 << 0x40, 0]
    b.mmio_write(L.ICR_LOW, 4, 0x000C0050)              # all excluding self
    assert [bool(x.irr >> 0x50 & 1) for x in cpus] == [True, False, True, True]
    c.mmio_write(L.ICR_LOW, 4, 0x00080060)              # all including self
    assert all(x.irr >> 0x60 & 1 for x in cpus)
    d.mmio_write(L.ICR_LOW, 4, 0x00040070)              # self
    assert [bool(x.irr >> 0x70 & 1) for x in cpus] == [False, False, False, True]
    assert not a.mmio_read(L.ICR_LOW, 4) & L.ICR_PENDING   # delivered at once: idle


def test_logical_flat_destination() -> None:
    _, _, _, cpus = apics(3)
    for i, apic in enumerate(cpus):
        apic.mmio_write(L.LDR, 4, (1 << i) << 24)
    cpus[0].mmio_write(L.ICR_HIGH, 4, 0b110 << 24)
    cpus[0].mmio_write(L.ICR_LOW, 4, L.ICR_LOGICAL | 0x44)
    assert [bool(x.irr >> 0x44 & 1) for x in cpus] == [False, True, True]


def test_init_sipi_and_nmi_are_latched_signals() -> None:
    _, _, _, (a, b) = apics()
    a.mmio_write(L.ICR_HIGH, 4, 1 << 24)
    a.mmio_write(L.ICR_LOW, 4, 0x00004500)              # INIT, assert
    a.mmio_write(L.ICR_LOW, 4, 0x00008500)              # INIT level de-assert: no action
    a.mmio_write(L.ICR_LOW, 4, 0x00004608)              # SIPI vector 8
    a.mmio_write(L.ICR_LOW, 4, 0x00004400)              # NMI
    assert b.take_init() and not b.take_init()
    assert b.take_sipi() == 8 and b.take_sipi() is None
    assert b.take_nmi()
    assert b.irr == 0


def test_one_shot_timer_counts_down_in_guest_time() -> None:
    clock, _, _, (apic, _) = apics()
    apic.mmio_write(L.TIMER_DIVIDE, 4, 0b0001)          # divide by 4
    apic.mmio_write(L.LVT_TIMER, 4, 0x30)
    apic.mmio_write(L.TIMER_INITIAL, 4, 100)
    clock.advance(40)
    assert apic.mmio_read(L.TIMER_CURRENT, 4) == 90
    clock.advance(360)
    assert apic.mmio_read(L.TIMER_CURRENT, 4) == 0
    assert apic.acknowledge() == 0x30
    clock.advance(10_000)
    assert not apic.intr_asserted()


def test_periodic_timer_reloads_without_drift() -> None:
    clock, _, _, (apic, _) = apics()
    apic.mmio_write(L.TIMER_DIVIDE, 4, 0b1011)          # divide by 1
    apic.mmio_write(L.LVT_TIMER, 4, L.TIMER_PERIODIC | 0x31)
    apic.mmio_write(L.TIMER_INITIAL, 4, 50)
    fired = 0
    for _ in range(10):
        clock.advance(25)
        if apic.intr_asserted():
            apic.acknowledge()
            apic.mmio_write(L.EOI, 4, 0)
            fired += 1
    assert fired == 5
    assert apic.mmio_read(L.TIMER_CURRENT, 4) == 50


def test_masked_timer_still_counts_but_does_not_interrupt() -> None:
    clock, _, _, (apic, _) = apics()
    apic.mmio_write(L.LVT_TIMER, 4, L.LVT_MASKED | 0x30)
    apic.mmio_write(L.TIMER_DIVIDE, 4, 0b1011)
    apic.mmio_write(L.TIMER_INITIAL, 4, 10)
    clock.advance(20)
    assert not apic.intr_asserted()


def test_pic_reaches_the_bsp_through_lint0_until_masked() -> None:
    _, _, pic, (bsp, ap) = apics()
    pic.asserted = True
    assert bsp.intr_asserted() and not ap.intr_asserted()
    assert bsp.acknowledge() == 0x20
    pic.asserted = True
    bsp.mmio_write(L.LVT_LINT0, 4, L.LVT_MASKED | (L.EXTINT << 8))
    assert not bsp.intr_asserted()


def test_x2apic_msrs() -> None:
    _, _, _, (a, b) = apics(x2apic=True)
    assert a.msr_read(0x802) == 0 and b.msr_read(0x802) == 1
    assert b.msr_read(0x80D) == (0 << 16) | (1 << 1)    # logical ID: cluster 0, bit 1
    a.msr_write(0x830, (1 << 32) | 0x45)                # ICR: fixed 45h to x2APIC ID 1
    assert b.irr == 1 << 0x45
    a.msr_write(0x83F, 0x46)                            # self IPI
    assert a.irr == 1 << 0x46
    with pytest.raises(ApicRegisterError):
        a.msr_write(0x80B, 1)                           # EOI must be written with 0
    with pytest.raises(ApicRegisterError):
        a.msr_write(0x802, 5)                           # ID is read-only
    with pytest.raises(ApicRegisterError):
        a.msr_read(0x80E)                               # no DFR in x2APIC mode


def test_x2apic_msrs_fault_in_xapic_mode() -> None:
    _, _, _, (a, _) = apics(x2apic=False)
    with pytest.raises(ApicRegisterError):
        a.msr_read(0x802)
