"""A rig whose exits go the whole way: vm_exit (exit information, exit count) -> dispatcher."""

from __future__ import annotations

from tests.unit.hv.fakes import RecordingPortDevice, Rig
from vtemu.vmx.exit import ExitDecision
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason
from vtemu.vmx.transitions import vm_exit

PORT = 0x500   # no device of the reference machine lives here


def rig_with_port(reads: list[int] | None = None) -> tuple[Rig, RecordingPortDevice]:
    rig = Rig()
    rig.protected_mode()
    device = RecordingPortDevice(reads=reads)
    rig.partition.ports.attach("dummy", PORT, 4, device, byte_wide=False)
    return rig, device


def take(rig: Rig, reason: ExitReason, code: str, qualification: int = 0, **registers: int) -> ExitDecision:
    """Place `code`, set registers, and let the processor take the exit (as vcpu.py would)."""
    insn = rig.place(code)
    if registers:
        rig.set(**registers)
    return vm_exit(rig.cpu, rig.exit_for(reason, insn, qualification))


def io(rig: Rig, direction: IoDirection, size: int = 1, port: int = PORT, **registers: int) -> ExitDecision:
    register = {1: "al", 2: "ax", 4: "eax"}[size]
    code = f"in {register}, dx" if direction is IoDirection.IN else f"out dx, {register}"
    qualification = IoQualification(size, direction, port=port).encode()
    return take(rig, ExitReason.IO_INSTRUCTION, code, qualification, rdx=port, **registers)
