"""Intel 8259A pair: initialization, priorities, EOI forms, cascade, spurious IRQs, modes."""

from __future__ import annotations

from typing import Callable

import pytest

from tests.unit.devices.fakes import RecordingLine
from vtemu.devices.bus import pulse
from vtemu.devices.pic8259 import Pic8259, Pic8259Pair

MASTER_BASE = 0x20
SLAVE_BASE = 0x28
NONSPECIFIC_EOI = 0x20
READ_IRR = 0x0A
READ_ISR = 0x0B


def init_chip(chip: Pic8259, vector_base: int, icw3: int, icw1: int = 0x11, icw4: int = 0x01) -> None:
    chip.io_write(0, 1, icw1)
    chip.io_write(1, 1, vector_base)
    chip.io_write(1, 1, icw3)
    chip.io_write(1, 1, icw4)


def make_pair(master_icw1: int = 0x11, master_icw4: int = 0x01, slave_icw1: int = 0x11,
              slave_icw4: int = 0x01,
              on_intr_change: Callable[[bool], None] | None = None) -> Pic8259Pair:
    pair = Pic8259Pair(on_intr_change)
    init_chip(pair.master, MASTER_BASE, 0x04, master_icw1, master_icw4)
    init_chip(pair.slave, SLAVE_BASE, 0x02, slave_icw1, slave_icw4)
    return pair


def isr(chip: Pic8259) -> int:
    chip.io_write(0, 1, READ_ISR)
    return chip.io_read(0, 1)


def irr(chip: Pic8259) -> int:
    chip.io_write(0, 1, READ_IRR)
    return chip.io_read(0, 1)


def test_icw_sequence_then_raised_irq_gives_its_vector() -> None:
    pair = make_pair()
    assert pair.master.initialized and pair.slave.initialized
    assert not pair.intr_asserted()
    pulse(pair.irq_line(1))
    assert pair.intr_asserted()
    assert irr(pair.master) == 0b10
    assert pair.acknowledge() == MASTER_BASE + 1
    assert isr(pair.master) == 0b10
    assert irr(pair.master) == 0
    assert not pair.intr_asserted()


def test_vector_base_ignores_low_three_bits() -> None:
    pair = Pic8259Pair()
    init_chip(pair.master, 0x37, 0x04)
    pulse(pair.irq_line(3))
    assert pair.acknowledge() == 0x33


def test_mask_blocks_and_unmasking_delivers_the_latched_request() -> None:
    pair = make_pair()
    pair.master.io_write(1, 1, 0x01)
    assert pair.master.io_read(1, 1) == 0x01
    pulse(pair.irq_line(0))
    assert not pair.intr_asserted()
    assert irr(pair.master) == 0x01          # masking never clears IRR
    pair.master.io_write(1, 1, 0x00)
    assert pair.intr_asserted()
    assert pair.acknowledge() == MASTER_BASE


def test_in_service_level_blocks_lower_priorities_until_eoi() -> None:
    pair = make_pair()
    pulse(pair.irq_line(3))
    assert pair.acknowledge() == MASTER_BASE + 3
    pulse(pair.irq_line(5))
    assert not pair.intr_asserted()
    pair.master.io_write(0, 1, NONSPECIFIC_EOI)
    assert isr(pair.master) == 0
    assert pair.intr_asserted()
    assert pair.acknowledge() == MASTER_BASE + 5


def test_higher_priority_request_nests_and_nonspecific_eoi_ends_the_highest() -> None:
    pair = make_pair()
    pulse(pair.irq_line(5))
    assert pair.acknowledge() == MASTER_BASE + 5
    pulse(pair.irq_line(1))
    assert pair.intr_asserted()
    assert pair.acknowledge() == MASTER_BASE + 1
    assert isr(pair.master) == 0b100010
    pair.master.io_write(0, 1, NONSPECIFIC_EOI)
    assert isr(pair.master) == 0b100000


def test_simultaneous_requests_are_served_in_priority_order() -> None:
    pair = make_pair()
    for irq in (6, 4, 1):
        pulse(pair.irq_line(irq))
    served = []
    while pair.intr_asserted():
        served.append(pair.acknowledge())
        pair.master.io_write(0, 1, NONSPECIFIC_EOI)
    assert served == [MASTER_BASE + 1, MASTER_BASE + 4, MASTER_BASE + 6]


def test_specific_eoi_clears_only_the_named_level() -> None:
    pair = make_pair()
    pulse(pair.irq_line(5))
    pair.acknowledge()
    pulse(pair.irq_line(1))
    pair.acknowledge()
    pair.master.io_write(0, 1, 0x60 | 5)
    assert isr(pair.master) == 0b10


def test_cascaded_slave_irq_delivers_slave_vector() -> None:
    pair = make_pair()
    pulse(pair.irq_line(12))
    assert pair.intr_asserted()
    assert irr(pair.master) == 0b100
    assert pair.acknowledge() == SLAVE_BASE + 4
    assert isr(pair.slave) == 0b10000
    assert isr(pair.master) == 0b100
    pair.slave.io_write(0, 1, NONSPECIFIC_EOI)
    pair.master.io_write(0, 1, NONSPECIFIC_EOI)
    assert isr(pair.slave) == 0 and isr(pair.master) == 0


def test_slave_irq_outranks_master_irq3_through_ir2() -> None:
    pair = make_pair()
    pulse(pair.irq_line(3))
    pulse(pair.irq_line(9))
    assert pair.acknowledge() == SLAVE_BASE + 1


def test_spurious_irq7_when_level_request_vanishes_before_inta() -> None:
    pair = make_pair(master_icw1=0x19)          # LTIM: level-triggered
    line = pair.irq_line(3)
    line.set_level(True)
    assert pair.intr_asserted()
    line.set_level(False)
    assert not pair.intr_asserted()
    assert pair.acknowledge() == MASTER_BASE + 7
    assert isr(pair.master) == 0               # a default IR7 sets no ISR bit


def test_spurious_irq7_when_request_masked_before_inta() -> None:
    pair = make_pair()
    pulse(pair.irq_line(3))
    pair.master.io_write(1, 1, 0x08)
    assert pair.acknowledge() == MASTER_BASE + 7
    assert isr(pair.master) == 0
    assert irr(pair.master) == 0x08


def test_spurious_irq15_leaves_master_ir2_in_service() -> None:
    pair = make_pair()
    pulse(pair.irq_line(10))
    assert pair.intr_asserted()
    pair.slave.io_write(1, 1, 0x04)             # the slave's request goes away
    assert pair.intr_asserted()                 # the master latched the slave's INT edge
    assert pair.acknowledge() == SLAVE_BASE + 7
    assert isr(pair.slave) == 0
    assert isr(pair.master) == 0b100            # the master still needs its EOI


def test_edge_mode_needs_a_new_rising_edge() -> None:
    pair = make_pair()
    line = pair.irq_line(1)
    line.set_level(True)
    pair.acknowledge()
    pair.master.io_write(0, 1, NONSPECIFIC_EOI)
    line.set_level(True)                        # still high: not an edge
    assert not pair.intr_asserted()
    line.set_level(False)
    line.set_level(True)
    assert pair.intr_asserted()


def test_level_mode_requests_again_after_eoi_while_line_stays_high() -> None:
    pair = make_pair(master_icw1=0x19)
    pair.irq_line(4).set_level(True)
    assert pair.acknowledge() == MASTER_BASE + 4
    assert not pair.intr_asserted()
    pair.master.io_write(0, 1, NONSPECIFIC_EOI)
    assert pair.intr_asserted()
    assert irr(pair.master) == 0x10


def test_auto_eoi_sets_no_isr_bit() -> None:
    pair = make_pair(master_icw4=0x03)
    pulse(pair.irq_line(3))
    assert pair.acknowledge() == MASTER_BASE + 3
    assert isr(pair.master) == 0
    pulse(pair.irq_line(6))
    assert pair.acknowledge() == MASTER_BASE + 6


def test_rotate_on_nonspecific_eoi_makes_the_served_level_lowest() -> None:
    pair = make_pair()
    pulse(pair.irq_line(0))
    pair.acknowledge()
    pair.master.io_write(0, 1, 0xA0)
    assert pair.master.lowest_priority_ir == 0
    assert isr(pair.master) == 0
    pulse(pair.irq_line(0))
    pulse(pair.irq_line(7))
    assert pair.acknowledge() == MASTER_BASE + 7
    assert isr(pair.master) == 0x80              # a real IR7, not a spurious one


def test_rotate_on_specific_eoi() -> None:
    pair = make_pair()
    pulse(pair.irq_line(4))
    pair.acknowledge()
    pair.master.io_write(0, 1, 0xE0 | 4)
    assert isr(pair.master) == 0
    assert pair.master.lowest_priority_ir == 4
    pulse(pair.irq_line(3))
    pulse(pair.irq_line(5))
    assert pair.acknowledge() == MASTER_BASE + 5


def test_set_priority_command() -> None:
    pair = make_pair()
    pair.master.io_write(0, 1, 0xC0 | 3)         # IR3 lowest, so IR4 highest
    pulse(pair.irq_line(1))
    pulse(pair.irq_line(4))
    assert pair.acknowledge() == MASTER_BASE + 4


def test_rotate_in_auto_eoi_mode() -> None:
    pair = make_pair(master_icw4=0x03)
    pair.master.io_write(0, 1, 0x80)             # set rotate-in-AEOI
    pulse(pair.irq_line(1))
    pair.acknowledge()
    assert pair.master.lowest_priority_ir == 1
    pair.master.io_write(0, 1, 0x00)             # clear it
    pulse(pair.irq_line(5))
    pair.acknowledge()
    assert pair.master.lowest_priority_ir == 1


def test_read_register_select_persists_and_imr_reads_at_offset_1() -> None:
    pair = make_pair()
    pulse(pair.irq_line(6))
    pulse(pair.irq_line(0))
    pair.acknowledge()
    pair.master.io_write(1, 1, 0x5A)
    pair.master.io_write(0, 1, READ_ISR)
    assert pair.master.io_read(0, 1) == 0x01
    assert pair.master.io_read(0, 1) == 0x01     # the selection sticks
    assert pair.master.io_read(1, 1) == 0x5A
    pair.master.io_write(0, 1, READ_IRR)
    assert pair.master.io_read(0, 1) == 0x40


def test_poll_command_acknowledges_through_a_read() -> None:
    pair = make_pair()
    pulse(pair.irq_line(5))
    pair.master.io_write(0, 1, 0x0C)
    assert pair.master.io_read(0, 1) == 0x80 | 5
    assert isr(pair.master) == 0x20
    pair.master.io_write(0, 1, 0x0C)
    assert pair.master.io_read(1, 1) == 0x00     # any address; no request: I bit clear
    assert pair.master.io_read(1, 1) == 0x00     # poll mode ended: IMR again


def test_special_mask_mode_enables_lower_priorities() -> None:
    pair = make_pair()
    pulse(pair.irq_line(3))
    pair.acknowledge()
    pulse(pair.irq_line(5))
    assert not pair.intr_asserted()
    pair.master.io_write(1, 1, 0x08)             # mask the level in service
    assert not pair.intr_asserted()              # plain masking does not lift the nesting
    pair.master.io_write(0, 1, 0x68)             # OCW3: set special mask mode
    assert pair.intr_asserted()
    assert pair.acknowledge() == MASTER_BASE + 5
    pair.master.io_write(0, 1, NONSPECIFIC_EOI)  # skips masked IS bit 3
    assert isr(pair.master) == 0x08
    pair.master.io_write(0, 1, 0x48)             # reset special mask mode
    pulse(pair.irq_line(6))
    assert not pair.intr_asserted()


@pytest.mark.parametrize("sfnm, delivered", [(True, True), (False, False)])
def test_special_fully_nested_mode_lets_higher_slave_irq_through(sfnm: bool, delivered: bool) -> None:
    pair = make_pair(master_icw4=0x11 if sfnm else 0x01)
    pulse(pair.irq_line(12))
    assert pair.acknowledge() == SLAVE_BASE + 4
    pulse(pair.irq_line(9))                      # higher priority on the same slave
    assert pair.intr_asserted() is delivered
    if delivered:
        assert pair.acknowledge() == SLAVE_BASE + 1


def test_on_intr_change_reports_each_transition() -> None:
    changes: list[bool] = []
    pair = make_pair(on_intr_change=changes.append)
    pulse(pair.irq_line(1))
    pulse(pair.irq_line(0))                      # already asserted: no new call
    assert changes == [True]
    pair.acknowledge()
    assert changes == [True, False]
    pair.master.io_write(0, 1, NONSPECIFIC_EOI)
    assert changes == [True, False, True]        # IRQ 1 now outranks nothing in service


def test_icw1_reinitializes_masks_and_latches() -> None:
    pair = make_pair()
    pair.master.io_write(1, 1, 0xFF)
    pulse(pair.irq_line(1))
    init_chip(pair.master, MASTER_BASE, 0x04)
    assert pair.master.io_read(1, 1) == 0
    assert irr(pair.master) == 0
    assert not pair.intr_asserted()


def test_single_mode_skips_icw3_and_no_icw4_goes_straight_to_ocw1() -> None:
    chip = Pic8259()
    chip.io_write(0, 1, 0x13)                    # single, ICW4 needed
    chip.io_write(1, 1, 0x40)
    chip.io_write(1, 1, 0x01)                    # this is ICW4
    assert chip.initialized and chip.x86_mode
    chip.io_write(1, 1, 0xFE)
    assert chip.io_read(1, 1) == 0xFE
    chip.io_write(0, 1, 0x12)                    # single, no ICW4
    chip.io_write(1, 1, 0x50)
    assert chip.initialized
    chip.io_write(1, 1, 0x0F)
    assert chip.io_read(1, 1) == 0x0F
    assert chip.vector_base == 0x50


def test_slave_with_other_cascade_address_leaves_the_bus_floating() -> None:
    pair = Pic8259Pair()
    init_chip(pair.master, MASTER_BASE, 0x04)
    init_chip(pair.slave, SLAVE_BASE, 0x03)
    pulse(pair.irq_line(8))
    assert pair.acknowledge() == 0xFF


def test_irq_lines_cover_0_to_15_except_the_cascade() -> None:
    pair = make_pair()
    with pytest.raises(ValueError):
        pair.irq_line(2)
    with pytest.raises(ValueError):
        pair.irq_line(16)
    assert pair.irq_line(9) is pair.irq_line(9)


def test_device_driving_a_line_through_the_protocol() -> None:
    """The IrqLine returned by irq_line is what devices hold: check it with a recorder too."""
    changes = RecordingLine()
    pair = make_pair(on_intr_change=changes.set_level)
    pair.irq_line(15).set_level(True)
    assert changes.levels == [True]
    assert pair.acknowledge() == SLAVE_BASE + 7
    assert isr(pair.slave) == 0x80               # a real IRQ 15, ISR bit set
