"""guests/sensitive.S in the three CPU modes: nothing leaks under VT-x or binary translation;
under classic ring compression (--mode deprivileged) every one of Robin & Irvine's
sensitive-unprivileged instructions but SLDT betrays the VMM, with the values the hardware
really produces at CPL 1 on the VMM's shadow tables. The guest exits 0 in every mode."""

from __future__ import annotations

import pytest

from tests.guests.harness import run_guest
from vtemu.vmx.reasons import ExitReason

HEADER = "sensitive: Robin & Irvine's sensitive unprivileged instructions at CPL 0\n"
# What the kernel reads at CPL 0 on bare hardware (and on QEMU: tests/differential).
BARE = {
    "SGDT ": "00100450", "SIDT ": "001005a0", "SLDT ": "00000000", "SMSW ": "00000011",
    "STR  ": "00000018", "PUSHF": "00000000", "POPF ": "00000000", "LAR  ": "00c09b00",
    "LSL  ": "ffffffff", "VERR ": "00000000", "VERW ": "00000000", "POP  ": "00000010",
    "PUSH ": "00000008", "CALL ": "00000008", "JMP  ": "00000008",
    "INT  ": "00000008", "RET  ": "00000008", "MOV  ": "00000010",
}
# What the deprivileged kernel sees instead, and why.
DEPRIVILEGED = {
    "SGDT ": "ffc00000",    # the shadow GDT's base, in the VMM window
    "SIDT ": "ffc10000",    # the shadow IDT's base
    "SMSW ": "00000031",    # CR0.NE, which the VMM keeps set (VMX fixed-1)
    "STR  ": "0000fff8",    # the VMM's own TSS selector
    "PUSHF": "00000200",    # the real IF, 1 although the guest executed CLI
    "POPF ": "00000200",    # POPF at CPL 1 ignored IF = 0: the next INT's frame shows IF = 1
    "LAR  ": "00c0bb00",    # DPL 1: the compressed descriptor
    "LSL  ": "ffbfffff",    # the limit truncated below the VMM window
    "VERR ": "00000001",    # an RPL 1 selector passes against a DPL 1 descriptor
    "VERW ": "00000001",
    "POP  ": "00000011",    # the VMM loads the kernel's stack selector with RPL 1
    "PUSH ": "00000009",    # PUSH CS: the CPL is in CS.RPL
    "CALL ": "00000009",    # a far CALL pushes CS with RPL 1
    "JMP  ": "00000009",    # a far JMP loads CS with RPL = CPL
    "INT  ": "00000009",    # INT through a DPL 3 gate runs natively: the frame's CS has RPL 1
    "RET  ": "00000009",    # a far RET to RPL 0 traps and the VMM returns to RPL 1
    "MOV  ": "00000011",    # MOV from SS
}


def _expected(seen: dict[str, str]) -> str:
    lines = [HEADER]
    for name, bare in BARE.items():
        value = seen.get(name, bare)
        lines.append(f"{name} saw {value} bare {bare} {'ok' if value == bare else 'LEAK'}\n")
    lines.append(f"sensitive: {len(seen)} of {len(BARE)} leaked\n")
    return "".join(lines)


@pytest.mark.parametrize("mode", ["vtx", "bt"])
def test_nothing_leaks_under_vtx_and_binary_translation(mode: str) -> None:
    run = run_guest("sensitive", mode=mode)
    assert run.text == _expected({})
    assert run.exit_code == 0


def test_deprivileged_kernel_sees_the_leaks_of_pre_vt_x86() -> None:
    run = run_guest("sensitive", mode="deprivileged")
    assert run.text == _expected(DEPRIVILEGED)
    assert run.exit_code == 0


def test_deprivileged_privileged_instructions_trap_as_gp_exits() -> None:
    """The kernel's CLI, LGDT, LTR, MOV SS, port I/O... each reached the VMM as a #GP exit
    (exit reason 0, vector 13); no instruction exit of VT-x's (HLT, I/O, CR, MSR) was used
    after the kernel's entry."""
    run = run_guest("sensitive", mode="deprivileged")
    engine = run.partition.vcpus[0].mode_engine
    emulated = engine.counters.emulated
    for mnemonic in ("cli", "sti", "lgdt", "lidt", "ltr", "lldt", "out", "in", "iretd"):
        assert emulated.get(mnemonic, 0) > 0, mnemonic
    kernel_exits = [r.exit for r in run.exits if r.exit.guest_rip >= 0x100000 and not r.exit.callout]
    reasons = {exit.reason for exit in kernel_exits}
    assert reasons <= {ExitReason.EXCEPTION_OR_NMI, ExitReason.CPUID}
    gp = [exit for exit in kernel_exits if exit.interruption is not None and exit.interruption.vector == 13]
    assert len(gp) == engine.counters.traps

