"""VM-instruction error numbers (SDM 30.4, Table 30-1) and the exception that carries one.

A VMX instruction that fails with a current VMCS ("VMfailValid", SDM 30.2) stores one of these
numbers in the VM-instruction error field; vtemu's VMX layer raises `VmxInstructionError` and
the instruction emulation turns it into that architectural outcome.
"""

from __future__ import annotations

from enum import IntEnum


class VmInstructionErrorNumber(IntEnum):
    """SDM 30.4, Table 30-1 "VM-Instruction Error Numbers"."""

    VMCALL_IN_VMX_ROOT = 1
    VMCLEAR_INVALID_ADDRESS = 2
    VMCLEAR_VMXON_POINTER = 3
    VMLAUNCH_NON_CLEAR_VMCS = 4
    VMRESUME_NON_LAUNCHED_VMCS = 5
    VMRESUME_AFTER_VMXOFF = 6
    ENTRY_INVALID_CONTROL_FIELDS = 7
    ENTRY_INVALID_HOST_STATE = 8
    VMPTRLD_INVALID_ADDRESS = 9
    VMPTRLD_VMXON_POINTER = 10
    VMPTRLD_WRONG_REVISION = 11
    UNSUPPORTED_VMCS_COMPONENT = 12
    VMWRITE_READ_ONLY_COMPONENT = 13
    VMXON_IN_VMX_ROOT = 15
    ENTRY_INVALID_EXECUTIVE_VMCS_POINTER = 16
    ENTRY_NON_LAUNCHED_EXECUTIVE_VMCS = 17
    ENTRY_EXECUTIVE_VMCS_NOT_VMXON_POINTER = 18
    VMCALL_NON_CLEAR_VMCS = 19
    VMCALL_INVALID_EXIT_CONTROLS = 20
    VMCALL_WRONG_MSEG_REVISION = 22
    VMXOFF_DUAL_MONITOR = 23
    VMCALL_INVALID_SMM_MONITOR_FEATURES = 24
    ENTRY_INVALID_EXECUTIVE_CONTROLS = 25
    ENTRY_EVENTS_BLOCKED_BY_MOV_SS = 26
    INVALID_INVEPT_INVVPID_OPERAND = 28


class VmxInstructionError(Exception):
    """A VMX instruction failed with VMfailValid and this VM-instruction error number."""

    def __init__(self, number: VmInstructionErrorNumber, detail: str = "") -> None:
        self.number = number
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(f"VM-instruction error {int(number)} ({number.name}){suffix}")
