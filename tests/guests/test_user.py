"""user: ring 3 entered with IRETQ, SYSCALL/SYSRET (emulated by vtemu), INT 80h and #GP."""

from __future__ import annotations

from vtemu.vmx.reasons import ExitReason

EXPECTED = (
    b"user: kernel in 64-bit mode\n"
    b"IRETQ to ring 3\n"
    b"syscall from ring 3: cs 00000008 ss 00000010 caller cpl 00000003 rcx ok"
    b" r11.df 00000001 rflags.df 00000000\n"
    b"#GP from ring 3 at hlt: error 00000000 rsp0 stack ok saved cs 0000002b\n"
    b"int 0x80 from ring 3: rsp0 stack ok saved cs 0000002b saved ss 00000023 saved rsp ok\n"
    b"after sysret: cs 0000002b ss 00000023 rflags.df 00000001\n"
    b"exit syscall from ring 3: caller cpl 00000003\n"
)


def test_serial_and_exit_status(boot) -> None:
    run = boot("user")
    assert run.serial == EXPECTED
    assert run.exit_code == 0


def test_syscall_state_is_programmed_through_msr_exits(boot) -> None:
    writes = [r.exit.detail for r in boot("user").exits if r.reason is ExitReason.WRMSR]
    assert writes == ["msr 0xc0000080", "msr 0xc0000081", "msr 0xc0000082", "msr 0xc0000084",
                      "msr 0xc0000080"]


def test_hlt_in_ring_3_is_not_a_hlt_exit(boot) -> None:
    """HLT at CPL 3 faults (#GP) before any VM exit could happen."""
    assert not any(r.reason is ExitReason.HLT for r in boot("user").exits)
