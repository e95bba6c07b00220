"""A Rig in pv mode: the partition's hypercall interface installed over vtx, helpers to set up
the hypercall page through the synthetic MSRs and to issue VMCALLs as exits."""

from __future__ import annotations

import struct

import unicorn.x86_const as U

from tests.unit.hv.fakes import CODE, Rig
from vtemu.hv.hypercalls import HypercallService, input_value
from vtemu.hv.outcome import Outcome
from vtemu.modes import pv
from vtemu.vmx.reasons import ExitReason

HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_HYPERCALL, HV_X64_MSR_VP_INDEX = 0x40000000, 0x40000001, 0x40000002
HYPERCALL_PAGE = 0x50000      # inside the rig's identity-mapped first 2 MiB
PARAMS = 0x60000              # a parameter page
OUTPUT = 0x61000
UD, GP = 6, 13


class PvRig(Rig):
    def __init__(self, vcpus: int = 1) -> None:
        super().__init__(vcpus=vcpus)
        pv.configure(self.cpu, self.partition)

    @property
    def service(self) -> HypercallService:
        return self.partition.hypercalls  # type: ignore[attr-defined]

    # --- MSRs through their exits -------------------------------------------------------------
    def wrmsr(self, msr: int, value: int) -> Outcome:
        insn = self.place("wrmsr")
        self.set(rcx=msr, rax=value & 0xFFFFFFFF, rdx=value >> 32)
        return self.handle(self.exit_for(ExitReason.WRMSR, insn))

    def rdmsr(self, msr: int) -> int:
        insn = self.place("rdmsr")
        self.set(rcx=msr)
        self.handle(self.exit_for(ExitReason.RDMSR, insn))
        return (self.get("rdx") & 0xFFFFFFFF) << 32 | self.get("rax") & 0xFFFFFFFF

    def enable(self, gpa: int = HYPERCALL_PAGE, os_id: int = 0x1234) -> None:
        self.wrmsr(HV_X64_MSR_GUEST_OS_ID, os_id)
        self.wrmsr(HV_X64_MSR_HYPERCALL, gpa | 1)

    # --- VMCALL ---------------------------------------------------------------------------------
    def vmcall(self, value: int, input: int = 0, output: int = 0) -> Outcome:
        """A VMCALL exit with the input in the registers of the current code mode's convention."""
        insn = self.place("vmcall")
        if self.vcpu.code_mode().name == "BITS64":
            self.set(rcx=value, rdx=input, r8=output)
        else:
            self.set(rdx=value >> 32, rax=value & 0xFFFFFFFF, rbx=input >> 32,
                     rcx=input & 0xFFFFFFFF, rdi=output >> 32, rsi=output & 0xFFFFFFFF)
        return self.handle(self.exit_for(ExitReason.VMCALL, insn))

    def call(self, code: int, input: int = 0, output: int = 0, **value: int) -> int:
        """A hypercall by code; returns the result value (RAX, or EDX:EAX in 32-bit code)."""
        self.vmcall(input_value(code, **value), input, output)
        return self.result()

    def result(self) -> int:
        if self.vcpu.code_mode().name == "BITS64":
            return self.get("rax")
        return (self.get("rdx") & 0xFFFFFFFF) << 32 | self.get("rax") & 0xFFFFFFFF

    def advanced(self) -> bool:
        return self.vcpu.rip == CODE + 3          # past the 3-byte VMCALL

    def qwords(self, gpa: int, *values: int) -> None:
        self.poke(gpa, struct.pack(f"<{len(values)}Q", *values))

    def rflags(self) -> int:
        return self.vcpu.read(U.UC_X86_REG_RFLAGS)
