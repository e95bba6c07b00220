"""stringio: REP OUTSB / REP INSB, one exit each, performed whole by the hypervisor."""

from __future__ import annotations

from vtemu.vmx.qualifications import IoDirection
from vtemu.vmx.reasons import ExitReason

EXPECTED = (
    b"one REP OUTSB printed this line\n"
    b"REP OUTSB backwards (DF = 1)\n"
    b"fw_cfg signature: QEMU\n"
    b"after REP INSB: ecx 00000000, edi advanced by 00000004\n"
    b"stringio done\n"
)


def test_serial_and_exit_status(boot) -> None:
    run = boot("stringio")
    assert run.serial == EXPECTED
    assert run.exit_code == 0


def test_each_string_instruction_is_one_exit(boot) -> None:
    exits = [r for r in boot("stringio").exits if r.exit.guest_rip >= 0x100000]
    strings = [r for r in exits if r.reason is ExitReason.IO_INSTRUCTION and r.io().string]
    shapes = [(r.io().direction, r.io().port, r.io().size, r.io().rep, r.io().immediate)
              for r in strings]
    assert shapes == [(IoDirection.OUT, 0x3F8, 1, True, False),
                      (IoDirection.OUT, 0x3F8, 1, True, False),
                      (IoDirection.IN, 0x511, 1, True, False)]
    assert all(r.exit.instruction_length == 2 for r in strings)  # F3 6E / F3 6C


def test_fw_cfg_selector_write_is_16_bit(boot) -> None:
    exits = [r for r in boot("stringio").exits if r.exit.guest_rip >= 0x100000]
    selects = [(r.io().size, r.out_value) for r in exits
               if r.reason is ExitReason.IO_INSTRUCTION and r.io().port == 0x510]
    assert selects == [(2, 0)]


def test_no_single_byte_com1_writes_for_the_outsb_lines(boot) -> None:
    """Only the PUTS lines (and SERIAL_INIT's divisor write) use plain OUT to 3F8h."""
    exits = [r for r in boot("stringio").exits if r.exit.guest_rip >= 0x100000]
    plain = [r for r in exits if r.reason is ExitReason.IO_INSTRUCTION and not r.io().string
             and r.io().direction is IoDirection.OUT and r.io().port == 0x3F8]
    outsb_bytes = len(b"one REP OUTSB printed this line\n" b"REP OUTSB backwards (DF = 1)\n")
    assert len(plain) == 1 + len(EXPECTED) - outsb_bytes
