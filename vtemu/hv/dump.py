"""A decoded state dump for runs that end badly: registers, segments, control state, last exits."""

from __future__ import annotations

from typing import TYPE_CHECKING

import unicorn.x86_const as U

from vtemu.machine.cpustate import Seg

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

_GPRS = ("RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP",
         "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "RIP", "RFLAGS")
_CONTROL = ("CR0", "CR2", "CR3", "CR4")


def dump_vcpu(cpu: "VmxCpu") -> list[str]:
    vcpu = cpu.vcpu
    lines = [f"vCPU {cpu.index}: mode {vcpu.code_mode().value}-bit, CPL {vcpu.context.load().cpl}, "
             f"activity {cpu.activity.name}, {vcpu.instructions_retired} instructions counted"]
    values = [f"{name.lower():>6}={vcpu.read(getattr(U, 'UC_X86_REG_' + name)):016x}" for name in _GPRS]
    lines += ["  " + " ".join(values[i:i + 4]) for i in range(0, len(values), 4)]
    control = [f"{name.lower()}={vcpu.read(getattr(U, 'UC_X86_REG_' + name)):x}" for name in _CONTROL]
    control.append(f"efer={vcpu.read_msr(0xC0000080):x}")
    lines.append("  " + " ".join(control))
    context = vcpu.context.load()
    for seg in Seg:
        cache = context.segment(seg)
        lines.append(f"  {seg.name.lower()}: sel={cache.selector:04x} base={cache.base:x} "
                     f"limit={cache.limit:x} flags={cache.flags:06x}")
    for name in ("gdt", "idt", "ldt", "tr"):
        cache = context.table(name)
        lines.append(f"  {name}: sel={cache.selector:04x} base={cache.base:x} limit={cache.limit:x}")
    lines.append(f"  last {len(cpu.history)} VM exits:")
    lines += [f"    {exit.describe()}" for exit in cpu.history]
    return lines


def dump_partition(partition: "Partition") -> str:
    lines = [f"partition {partition.index} ({partition.name}):"]
    for cpu in partition.vcpus:
        lines += dump_vcpu(cpu)
    return "\n".join(lines)
