"""The VMCS store: VMREAD/VMWRITE semantics (SDM 24.11.2, 30.3), backend routing, dirty tracking."""

from __future__ import annotations

import pytest

from vtemu.vmx.controls import VmxCapabilities
from vtemu.vmx.errors import VmInstructionErrorNumber, VmxInstructionError
from vtemu.vmx.fields import FieldType, VmcsField as F
from vtemu.vmx.vmcs import LaunchState, Vmcs


class DictBackend:
    """Stands in for the vCPU registers."""

    def __init__(self) -> None:
        self.values: dict[F, int] = {}
        self.writes: list[tuple[F, int]] = []

    def read_field(self, field: F) -> int:
        return self.values.get(field, 0)

    def write_field(self, field: F, value: int) -> None:
        self.writes.append((field, value))
        self.values[field] = value


def test_fields_start_at_zero_and_read_back() -> None:
    vmcs = Vmcs()
    assert vmcs.read(F.GUEST_RIP) == 0
    vmcs.write(F.GUEST_RIP, 0xFFF0)
    assert vmcs.read(F.GUEST_RIP) == 0xFFF0
    assert vmcs.read(0x681E) == 0xFFF0  # raw encodings, as VMREAD's register operand gives them
    assert vmcs.launch_state is LaunchState.CLEAR


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        (F.GUEST_CS_SELECTOR, 0x1_2345, 0x2345),  # 16-bit: bits 15:0 only
        (F.EXCEPTION_BITMAP, 0x1_FFFF_FFFF, 0xFFFF_FFFF),  # 32-bit
        (F.GUEST_RIP, 0x1_0000_0000_0000_0001, 1),  # natural width: 64 bits on Intel 64
        (F.TSC_OFFSET, -1, (1 << 64) - 1),  # a negative Python int is the two's-complement register value
    ],
)
def test_vmwrite_ignores_bits_beyond_the_width(field: F, value: int, stored: int) -> None:
    vmcs = Vmcs()
    vmcs.write(field, value)
    assert vmcs.read(field) == stored


def test_high_access_reaches_bits_63_32() -> None:
    vmcs = Vmcs()
    vmcs.write(F.IO_BITMAP_A, 0x1_2345_6000)
    assert vmcs.read(F.IO_BITMAP_A_HIGH) == 0x1
    vmcs.write(F.IO_BITMAP_A_HIGH, 0x1_0000_00AB)  # a high access moves 32 bits
    assert vmcs.read(F.IO_BITMAP_A) == 0xAB_2345_6000
    assert vmcs.read(0x2001) == 0xAB


def test_vmwrite_to_read_only_field_fails_with_error_13() -> None:
    vmcs = Vmcs()
    with pytest.raises(VmxInstructionError) as raised:
        vmcs.write(F.EXIT_REASON, 30)
    assert raised.value.number is VmInstructionErrorNumber.VMWRITE_READ_ONLY_COMPONENT == 13
    assert vmcs.read(F.EXIT_REASON) == 0
    with pytest.raises(VmxInstructionError):
        vmcs.write(F.GUEST_PHYSICAL_ADDRESS_HIGH, 1)


def test_vmwrite_any_field_capability_allows_exit_information() -> None:
    vmcs = Vmcs(capabilities=VmxCapabilities(vmwrite_any_field=True))
    vmcs.write(F.EXIT_QUALIFICATION, 0x1234)
    assert vmcs.read(F.EXIT_QUALIFICATION) == 0x1234


@pytest.mark.parametrize(
    "field",
    [F.VIRTUAL_APIC_PAGE_ADDR, F.POSTED_INTR_NV, F.GUEST_PML_INDEX, 0x482C, 0x8000, 0x4001, 0x1_681E],
    ids=lambda f: getattr(f, "name", None) or hex(f),
)
def test_unsupported_components_fail_with_error_12(field: F | int) -> None:
    vmcs = Vmcs()
    for access in (lambda: vmcs.read(field), lambda: vmcs.write(field, 0)):
        with pytest.raises(VmxInstructionError) as raised:
            access()
        assert raised.value.number is VmInstructionErrorNumber.UNSUPPORTED_VMCS_COMPONENT == 12
    assert not vmcs.supports(field)


def test_record_exit_info_is_the_processor_side_write() -> None:
    vmcs = Vmcs()
    vmcs.record_exit_info(F.EXIT_REASON, 0x1_0000_001E)
    assert vmcs.read(F.EXIT_REASON) == 0x1E  # still masked to 32 bits
    assert not vmcs.dirty
    with pytest.raises(ValueError):
        vmcs.record_exit_info(F.GUEST_RIP, 0)


def test_record_instruction_error() -> None:
    vmcs = Vmcs()
    vmcs.record_instruction_error(VmInstructionErrorNumber.ENTRY_INVALID_CONTROL_FIELDS)
    assert vmcs.read(F.VM_INSTRUCTION_ERROR) == 7


def test_cpu_write_is_not_dirty() -> None:
    vmcs = Vmcs()
    vmcs.cpu_write(F.VM_ENTRY_INTR_INFO_FIELD, 0)
    vmcs.cpu_write(F.GUEST_RIP, 0x1000)
    assert vmcs.read(F.GUEST_RIP) == 0x1000 and not vmcs.dirty


def test_guest_state_goes_to_the_backend() -> None:
    backend = DictBackend()
    vmcs = Vmcs(backend)
    vmcs.write(F.GUEST_RIP, 0x7C00)
    assert backend.values[F.GUEST_RIP] == 0x7C00
    backend.values[F.GUEST_RSP] = 0x1_0000_0000_0000_0010  # the backend's bits beyond the width are cut
    assert vmcs.read(F.GUEST_RSP) == 0x10
    vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, 0x80)
    assert F.CPU_BASED_VM_EXEC_CONTROL not in backend.values  # only guest-state fields are routed
    assert vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL) == 0x80


def test_backend_high_access_is_read_modify_write_of_the_full_field() -> None:
    backend = DictBackend()
    backend.values[F.VMCS_LINK_POINTER] = 0x0000_0000_FFFF_FFFF
    vmcs = Vmcs(backend)
    vmcs.write(F.VMCS_LINK_POINTER_HIGH, 0xFFFF_FFFF)
    assert backend.writes == [(F.VMCS_LINK_POINTER, (1 << 64) - 1)]
    assert vmcs.read(F.VMCS_LINK_POINTER_HIGH) == 0xFFFF_FFFF


def test_dirty_tracking() -> None:
    vmcs = Vmcs()
    assert not vmcs.is_dirty()
    vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, 0x80)
    vmcs.write(F.EPT_POINTER_HIGH, 0)
    assert vmcs.dirty == {F.CPU_BASED_VM_EXEC_CONTROL, F.EPT_POINTER}  # a high access dirties the full field
    assert vmcs.is_dirty(FieldType.CONTROL)
    assert not vmcs.is_dirty(FieldType.GUEST_STATE, FieldType.HOST_STATE)
    vmcs.clear_dirty()
    assert not vmcs.dirty
    vmcs.write(F.GUEST_CR0, 0x31)
    assert vmcs.is_dirty(FieldType.GUEST_STATE) and vmcs.is_dirty()


def test_failed_writes_are_not_dirty() -> None:
    vmcs = Vmcs()
    with pytest.raises(VmxInstructionError):
        vmcs.write(F.EXIT_REASON, 1)
    assert not vmcs.dirty


def test_dump() -> None:
    backend = DictBackend()
    backend.values[F.GUEST_RIP] = 0xFFF0
    vmcs = Vmcs(backend)
    vmcs.write(F.PIN_BASED_VM_EXEC_CONTROL, 0x16)
    rows = vmcs.dump()
    names = [name for name, _ in rows]
    assert ("GUEST_RIP", 0xFFF0) in rows and ("PIN_BASED_VM_EXEC_CONTROL", 0x16) in rows
    assert not any(name.endswith("_HIGH") for name in names)
    assert names.index("VIRTUAL_PROCESSOR_ID") < names.index("GUEST_ES_SELECTOR") < names.index("HOST_RIP")
    assert "VIRTUAL_APIC_PAGE_ADDR" not in names  # unsupported fields are not part of this VMCS
    assert vmcs.dump(nonzero_only=True) == [("PIN_BASED_VM_EXEC_CONTROL", 0x16), ("GUEST_RIP", 0xFFF0)]
