"""The VM-exit debugger on real guests: exact steps, exit and mode breakpoints, reverse steps.

Each test boots a guest from tests/guests (assembled in-process) under a debugger Session
and drives it with the same commands a user types (vtemu.debug.commands).
"""

from __future__ import annotations

import unicorn.x86_const as U

from tests.guests.harness import _firmware, guest_image
from vtemu.debug.commands import Commands
from vtemu.debug.debugger import build_for
from vtemu.debug.stepping import Session, StopKind
from vtemu.debug.views import register_lines
from vtemu.hv.partition import PartitionSpec
from vtemu.machine.cpustate import Seg
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason

KERNEL_LOAD = 0x100000   # the guests' multiboot header loads image offset 0 here


def session_for(name: str, output: bytearray | None = None) -> Session:
    spec = PartitionSpec(name=name, kernel=guest_image(name))
    sink = output.extend if output is not None else None
    return Session(build_for([spec], _firmware()), sink)


def run(session: Session, *lines: str) -> list[str]:
    commands = Commands(session)
    out: list[str] = []
    for line in lines:
        out += commands.execute(line).lines
    return out


def snapshot(session: Session) -> tuple:
    return session.position, session.retired, tuple(register_lines(session.vcpu))


def first_position_where(name: str, predicate) -> int:  # noqa: ANN001
    """Smallest position at which `predicate(session)` holds (it must stay true after)."""
    low, high = 0, session_for(name).cont().position
    while low < high:
        middle = (low + high) // 2
        probe = session_for(name)
        if middle:
            probe.step(middle)
        if predicate(probe):
            high = middle
        else:
            low = middle + 1
    return low


def read_qwords(session: Session, linear: int, count: int) -> list[int]:
    data = session.vcpu.read_linear(linear, 8 * count)
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]


def test_si_1_over_the_reset_far_jump_is_one_instruction_across_a_block_boundary() -> None:
    session = session_for("hello")
    assert session.vcpu.linear_rip() == 0xFFFFFFF0
    lines = run(session, "si 1")
    assert session.retired == 1 and session.position == 1
    assert session.vcpu.linear_rip() == 0xF0000      # the jump's target, nothing executed there
    assert lines[0] == "stepped" and "real mode" in lines[1]


def test_single_steps_and_one_long_step_reach_the_same_states() -> None:
    stepped = session_for("exceptions")
    stepped.step(60000)
    single = {}
    for _ in range(300):
        stepped.step(1)
        single[stepped.position] = snapshot(stepped)
    for position in (60001, 60150, 60300):
        direct = session_for("exceptions")
        direct.step(position)
        assert snapshot(direct) == single[position]


def test_si_over_a_faulting_instruction_lands_in_its_handler_with_the_frame() -> None:
    fault = first_position_where("exceptions", lambda s: s.cpu.exceptions_delivered >= 1)
    session = session_for("exceptions")
    session.step(fault - 1)
    faulting_rip = session.vcpu.rip
    retired = session.retired
    rsp = session.vcpu.read(U.UC_X86_REG_RSP)
    run(session, "si 1")
    assert session.cpu.exceptions_delivered == 1
    assert session.retired == retired                 # a fault retires nothing...
    assert session.position == fault                  # ...but it is one step
    assert session.vcpu.rip != faulting_rip
    frame_rsp = session.vcpu.read(U.UC_X86_REG_RSP)
    saved_rip, saved_cs = read_qwords(session, frame_rsp, 2)
    if saved_rip != faulting_rip:                     # a vector with an error code
        saved_rip, saved_cs = read_qwords(session, frame_rsp + 8, 2)
    assert saved_rip == faulting_rip
    assert saved_cs == session.vcpu.segment(Seg.CS).selector
    assert frame_rsp < rsp


def test_si_over_int_n_enters_the_handler_with_the_return_address_after_it() -> None:
    image = guest_image("user")
    address = KERNEL_LOAD + image.index(b"\xcd\x80")
    session = session_for("user")
    lines = run(session, f"b {address:#x}", "c")
    assert lines[1] == f"stopped: breakpoint: breakpoint at {address:#x}"
    assert "int 0x80" in lines[3]
    retired = session.retired
    run(session, "si 1")
    assert session.retired == retired + 1
    rsp = session.vcpu.read(U.UC_X86_REG_RSP)
    saved_rip, _, _, saved_rsp, _ = read_qwords(session, rsp, 5)
    assert saved_rip == address + 2
    assert session.vcpu.segment(Seg.CS).selector & 3 == 0     # from ring 3 into the kernel
    assert saved_rsp != rsp


def test_be_io_port_stops_at_the_first_uart_write_with_its_qualification() -> None:
    output = bytearray()
    session = session_for("hello", output)
    lines = run(session, "be io port=0x3f8", "c")
    stop = session.last_stop
    assert stop.kind is StopKind.EXIT and stop.record is not None
    record = stop.record
    assert record.reason is ExitReason.IO_INSTRUCTION
    io = IoQualification.decode(record.qualification)
    assert (io.port, io.size, io.direction, io.string) == (0x3F8, 1, IoDirection.OUT, False)
    earlier = [r for r in list(session.history)[:-1] if r.reason is ExitReason.IO_INSTRUCTION
               and IoQualification.decode(r.qualification).port == 0x3F8]
    assert earlier == []
    assert session.vcpu.rip == record.rip + 1           # stopped right after the OUT
    assert "port=0x3f8" in lines[2] and "direction=out" in lines[2]
    assert output == b""                                # nothing printed yet


def test_si_over_an_io_exit_is_one_instruction_and_one_exit() -> None:
    session = session_for("hello")
    run(session, "be io port=0x3f8", "c", "rs 1")
    out_rip = session.vcpu.rip
    assert session.vcpu.read_linear(session.vcpu.linear_rip(), 1) == b"\xee"   # out dx, al
    exits, retired = session.exits_seen, session.retired
    run(session, "d all", "si 1")
    assert session.retired == retired + 1
    assert session.exits_seen == exits + 1
    assert session.history[-1].reason is ExitReason.IO_INSTRUCTION
    assert session.vcpu.rip == out_rip + 1


def test_bm_stops_at_the_switch_to_long_mode() -> None:
    session = session_for("longmode")
    run(session, "bm")
    for _ in range(10):
        stop = session.cont()
        assert stop.kind is StopKind.MODE, stop
        if session.mode().long:
            break
    assert session.mode().long and "long mode" in stop.detail
    run(session, "rs 1")
    assert not session.mode().long                      # one instruction earlier: not yet


def test_si_100_then_rs_100_returns_to_the_identical_register_state() -> None:
    session = session_for("exceptions")
    session.step(20000)
    before = snapshot(session)
    run(session, "si 100")
    assert snapshot(session) != before
    run(session, "rs 100")
    assert snapshot(session) == before


def test_rc_goes_back_to_the_previous_breakpoint_stop() -> None:
    session = session_for("hello")
    lines = run(session, "b 0x100039", "c")
    assert "breakpoint at 0x100039" in lines[1]
    at_break = snapshot(session)
    run(session, "si 50", "rc")
    assert snapshot(session) == at_break
    assert session.last_stop.kind is StopKind.BREAKPOINT
    run(session, "rc")
    assert session.position == 0 and session.last_stop.kind is StopKind.START


def test_bi_stops_at_the_instruction_count() -> None:
    session = session_for("hello")
    run(session, "bi 5000", "c")
    assert session.retired == 5000 and session.last_stop.kind is StopKind.COUNT


def new_exits(session: Session, before: int) -> list[ExitReason]:
    taken = session.exits_seen - before
    return [record.reason for record in list(session.history)[-taken:]] if taken else []


def test_held_interrupts_are_not_taken_while_stepping() -> None:
    session = session_for("tick")
    run(session, "be ext", "c")                        # the timer is running
    before = session.exits_seen
    lines = run(session, "d all", "set stepirq off", "si 3000")
    assert ExitReason.EXTERNAL_INTERRUPT not in new_exits(session, before)
    assert lines[2].startswith("stopped: halted")     # it waits for the held interrupt
    before = session.exits_seen
    run(session, "set stepirq on", "si 3000")
    assert ExitReason.EXTERNAL_INTERRUPT in new_exits(session, before)


def test_bad_commands_are_one_line_errors() -> None:
    from vtemu.errors import BadInput
    import pytest
    session = session_for("hello")
    for line in ("bogus", "si x", "x/4q", "be nosuchreason", "be io port="):
        with pytest.raises(BadInput):
            Commands(session).execute(line)


def test_a_read_watchpoint_stops_right_after_the_reading_instruction() -> None:
    greeting = KERNEL_LOAD + guest_image("hello").index(b"Hello from")
    session = session_for("hello")
    session.add_watchpoint(greeting + 1, 1, "read")
    stop = session.cont()
    assert stop.kind is StopKind.WATCH and stop.detail == f"read of 1 bytes at {greeting + 1:#x}"
    assert session.vcpu.read(U.UC_X86_REG_RSI) == greeting + 2      # lodsb has completed
    after = snapshot(session)
    run(session, "rs 1")
    assert session.vcpu.read_linear(session.vcpu.linear_rip(), 1) == b"\xac"   # lodsb
    run(session, "si 1")
    assert snapshot(session) == after
