"""exceptions: 64-bit exception delivery as the handlers saw it, and #DF on an IST stack."""

from __future__ import annotations

FRAME_OK = b" rip ok cs ok rsp ok aligned ok"
EXPECTED = (
    b"exceptions: 64-bit IDT loaded\n"
    b"#DE vector 00000000 error none" + FRAME_OK + b"\n"
    b"#BP vector 00000003 error none" + FRAME_OK + b"\n"
    b"#UD vector 00000006 error none" + FRAME_OK + b"\n"
    b"#GP vector 0000000d error 00000ff8" + FRAME_OK + b"\n"
    b"#PF vector 0000000e error 00000000 cr2 0000000000107123" + FRAME_OK + b"\n"
    b"read after #PF fix: 600df00d\n"
    b"#PF vector 0000000e error 00000003 cr2 0000000000108456" + FRAME_OK + b"\n"
    b"written after #PF fix: 00c0ffee\n"
    b"#GP gate not present, raising #GP\n"
    b"#DF error 00000000 ist1 ok rsp ok\n"
    b"exceptions done\n"
)


def test_serial_and_exit_status(boot) -> None:
    run = boot("exceptions")
    assert run.serial == EXPECTED
    assert run.exit_code == 0


def test_nothing_escapes_to_the_hypervisor_as_a_fault(boot) -> None:
    """The exception bitmap is clear: every exception is delivered to the guest IDT without
    a VM exit, and the run ends through isa-debug-exit, not a triple fault."""
    reasons = {r.reason.name for r in boot("exceptions").exits}
    assert reasons <= {"IO_INSTRUCTION", "RDMSR", "WRMSR"}
