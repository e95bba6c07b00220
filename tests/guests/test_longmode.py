"""longmode: 32-bit protected mode to 64-bit long mode with the guest's own tables."""

from __future__ import annotations

from vtemu.machine.decode import CodeMode
from vtemu.vmx.reasons import ExitReason

EXPECTED = (
    b"32-bit protected mode: entering long mode\n"
    b"64-bit long mode: hello\n"
    b"EFER = 00000500\n"
    b"0x123456789 * 0x10001 = 000123468ace6789\n"
    b"rol 16, xor 0xffffffff00000000 = dcb9753167890001\n"
    b"CS = 00000008\n"
    b"long mode OK\n"
)


def test_serial_and_exit_status(boot) -> None:
    run = boot("longmode")
    assert run.serial == EXPECTED
    assert run.exit_code == 0


def test_efer_accesses_exit(boot) -> None:
    """The switch reads and writes IA32_EFER (LME) through RDMSR/WRMSR exits; the guest
    reads it once more in 64-bit mode."""
    msr_exits = [(r.reason, r.exit.detail) for r in boot("longmode").exits
                 if r.reason in (ExitReason.RDMSR, ExitReason.WRMSR)]
    assert msr_exits == [(ExitReason.RDMSR, "msr 0xc0000080"), (ExitReason.WRMSR, "msr 0xc0000080"),
                         (ExitReason.RDMSR, "msr 0xc0000080")]


def test_ends_in_64_bit_mode(boot) -> None:
    last = boot("longmode").exits[-1]
    assert last.exit.guest_rip > 0x100000
    assert last.exit.instruction is not None
    assert last.exit.instruction.mode is CodeMode.BITS64
