"""VMCS field encodings against SDM Appendix B, and the width/type derived from their bits."""

from __future__ import annotations

import pytest

from vtemu.vmx.fields import (
    AccessType,
    Encoding,
    FieldType,
    FieldWidth,
    GuestSegment,
    VmcsField as F,
    full_fields,
    guest_segment_fields,
    highest_index,
)

# Encodings quoted from SDM Vol. 3D Appendix B.
KNOWN_ENCODINGS = {
    F.GUEST_RIP: 0x681E,
    F.EXIT_REASON: 0x4402,
    F.EXIT_QUALIFICATION: 0x6400,
    F.VM_ENTRY_INTR_INFO_FIELD: 0x4016,
    F.EPT_POINTER: 0x201A,
    F.PIN_BASED_VM_EXEC_CONTROL: 0x4000,
    F.CPU_BASED_VM_EXEC_CONTROL: 0x4002,
    F.SECONDARY_VM_EXEC_CONTROL: 0x401E,
    F.GUEST_CS_SELECTOR: 0x0802,
    F.GUEST_CR0: 0x6800,
    F.IO_BITMAP_A: 0x2000,
    F.MSR_BITMAP: 0x2004,
    F.VMCS_LINK_POINTER: 0x2800,
    F.VIRTUAL_PROCESSOR_ID: 0x0000,
    F.HOST_TR_SELECTOR: 0x0C0C,
    F.TSC_OFFSET: 0x2010,
    F.GUEST_PHYSICAL_ADDRESS: 0x2400,
    F.GUEST_IA32_EFER: 0x2806,
    F.HOST_IA32_EFER: 0x2C02,
    F.VM_INSTRUCTION_ERROR: 0x4400,
    F.VM_EXIT_INSTRUCTION_LEN: 0x440C,
    F.VMX_INSTRUCTION_INFO: 0x440E,
    F.GUEST_INTERRUPTIBILITY_INFO: 0x4824,
    F.GUEST_ACTIVITY_STATE: 0x4826,
    F.VMX_PREEMPTION_TIMER_VALUE: 0x482E,
    F.HOST_IA32_SYSENTER_CS: 0x4C00,
    F.CR0_GUEST_HOST_MASK: 0x6000,
    F.CR3_TARGET_VALUE3: 0x600E,
    F.GUEST_LINEAR_ADDRESS: 0x640A,
    F.GUEST_RFLAGS: 0x6820,
    F.GUEST_PENDING_DBG_EXCEPTIONS: 0x6822,
    F.HOST_RIP: 0x6C16,
    F.PLE_WINDOW: 0x4022,
}


@pytest.mark.parametrize(
    ("field", "encoding"), KNOWN_ENCODINGS.items(), ids=lambda v: getattr(v, "name", hex(v))
)
def test_known_encodings(field: F, encoding: int) -> None:
    assert int(field) == encoding


# Appendix B groups every field by width and type; each group is one table (B-1 .. B-15).
APPENDIX_B_TABLES: dict[tuple[FieldWidth, FieldType], list[str]] = {
    (FieldWidth.BITS16, FieldType.CONTROL): [
        "VIRTUAL_PROCESSOR_ID",
        "POSTED_INTR_NV",
        "EPTP_INDEX",
        "HLAT_PREFIX_SIZE",
        "LAST_PID_POINTER_INDEX",
    ],
    (FieldWidth.BITS16, FieldType.GUEST_STATE): [
        "GUEST_ES_SELECTOR",
        "GUEST_CS_SELECTOR",
        "GUEST_SS_SELECTOR",
        "GUEST_DS_SELECTOR",
        "GUEST_FS_SELECTOR",
        "GUEST_GS_SELECTOR",
        "GUEST_LDTR_SELECTOR",
        "GUEST_TR_SELECTOR",
        "GUEST_INTR_STATUS",
        "GUEST_PML_INDEX",
        "GUEST_UINV",
    ],
    (FieldWidth.BITS16, FieldType.HOST_STATE): [
        "HOST_ES_SELECTOR",
        "HOST_CS_SELECTOR",
        "HOST_SS_SELECTOR",
        "HOST_DS_SELECTOR",
        "HOST_FS_SELECTOR",
        "HOST_GS_SELECTOR",
        "HOST_TR_SELECTOR",
    ],
    (FieldWidth.BITS64, FieldType.CONTROL): [
        "IO_BITMAP_A",
        "IO_BITMAP_B",
        "MSR_BITMAP",
        "VM_EXIT_MSR_STORE_ADDR",
        "VM_EXIT_MSR_LOAD_ADDR",
        "VM_ENTRY_MSR_LOAD_ADDR",
        "EXECUTIVE_VMCS_POINTER",
        "PML_ADDRESS",
        "TSC_OFFSET",
        "VIRTUAL_APIC_PAGE_ADDR",
        "APIC_ACCESS_ADDR",
        "POSTED_INTR_DESC_ADDR",
        "VM_FUNCTION_CONTROL",
        "EPT_POINTER",
        "EOI_EXIT_BITMAP0",
        "EOI_EXIT_BITMAP1",
        "EOI_EXIT_BITMAP2",
        "EOI_EXIT_BITMAP3",
        "EPTP_LIST_ADDRESS",
        "VMREAD_BITMAP",
        "VMWRITE_BITMAP",
        "VE_INFORMATION_ADDRESS",
        "XSS_EXIT_BITMAP",
        "ENCLS_EXITING_BITMAP",
        "SPPT_POINTER",
        "TSC_MULTIPLIER",
        "TERTIARY_VM_EXEC_CONTROL",
        "ENCLV_EXITING_BITMAP",
        "LOW_PASID_DIRECTORY",
        "HIGH_PASID_DIRECTORY",
        "SHARED_EPT_POINTER",
        "PCONFIG_EXITING_BITMAP",
        "HLAT_POINTER",
        "PID_POINTER_TABLE",
        "SECONDARY_VM_EXIT_CONTROLS",
    ],
    (FieldWidth.BITS64, FieldType.EXIT_INFORMATION): ["GUEST_PHYSICAL_ADDRESS"],
    (FieldWidth.BITS64, FieldType.GUEST_STATE): [
        "VMCS_LINK_POINTER",
        "GUEST_IA32_DEBUGCTL",
        "GUEST_IA32_PAT",
        "GUEST_IA32_EFER",
        "GUEST_IA32_PERF_GLOBAL_CTRL",
        "GUEST_PDPTE0",
        "GUEST_PDPTE1",
        "GUEST_PDPTE2",
        "GUEST_PDPTE3",
        "GUEST_IA32_BNDCFGS",
        "GUEST_IA32_RTIT_CTL",
        "GUEST_IA32_LBR_CTL",
        "GUEST_IA32_PKRS",
    ],
    (FieldWidth.BITS64, FieldType.HOST_STATE): [
        "HOST_IA32_PAT",
        "HOST_IA32_EFER",
        "HOST_IA32_PERF_GLOBAL_CTRL",
        "HOST_IA32_PKRS",
    ],
    (FieldWidth.BITS32, FieldType.CONTROL): [
        "PIN_BASED_VM_EXEC_CONTROL",
        "CPU_BASED_VM_EXEC_CONTROL",
        "EXCEPTION_BITMAP",
        "PAGE_FAULT_ERROR_CODE_MASK",
        "PAGE_FAULT_ERROR_CODE_MATCH",
        "CR3_TARGET_COUNT",
        "VM_EXIT_CONTROLS",
        "VM_EXIT_MSR_STORE_COUNT",
        "VM_EXIT_MSR_LOAD_COUNT",
        "VM_ENTRY_CONTROLS",
        "VM_ENTRY_MSR_LOAD_COUNT",
        "VM_ENTRY_INTR_INFO_FIELD",
        "VM_ENTRY_EXCEPTION_ERROR_CODE",
        "VM_ENTRY_INSTRUCTION_LEN",
        "TPR_THRESHOLD",
        "SECONDARY_VM_EXEC_CONTROL",
        "PLE_GAP",
        "PLE_WINDOW",
        "INSTRUCTION_TIMEOUT_CONTROL",
    ],
    (FieldWidth.BITS32, FieldType.EXIT_INFORMATION): [
        "VM_INSTRUCTION_ERROR",
        "EXIT_REASON",
        "VM_EXIT_INTR_INFO",
        "VM_EXIT_INTR_ERROR_CODE",
        "IDT_VECTORING_INFO_FIELD",
        "IDT_VECTORING_ERROR_CODE",
        "VM_EXIT_INSTRUCTION_LEN",
        "VMX_INSTRUCTION_INFO",
    ],
    (FieldWidth.BITS32, FieldType.GUEST_STATE): [
        "GUEST_ES_LIMIT",
        "GUEST_CS_LIMIT",
        "GUEST_SS_LIMIT",
        "GUEST_DS_LIMIT",
        "GUEST_FS_LIMIT",
        "GUEST_GS_LIMIT",
        "GUEST_LDTR_LIMIT",
        "GUEST_TR_LIMIT",
        "GUEST_GDTR_LIMIT",
        "GUEST_IDTR_LIMIT",
        "GUEST_ES_AR_BYTES",
        "GUEST_CS_AR_BYTES",
        "GUEST_SS_AR_BYTES",
        "GUEST_DS_AR_BYTES",
        "GUEST_FS_AR_BYTES",
        "GUEST_GS_AR_BYTES",
        "GUEST_LDTR_AR_BYTES",
        "GUEST_TR_AR_BYTES",
        "GUEST_INTERRUPTIBILITY_INFO",
        "GUEST_ACTIVITY_STATE",
        "GUEST_SMBASE",
        "GUEST_SYSENTER_CS",
        "VMX_PREEMPTION_TIMER_VALUE",
    ],
    (FieldWidth.BITS32, FieldType.HOST_STATE): ["HOST_IA32_SYSENTER_CS"],
    (FieldWidth.NATURAL, FieldType.CONTROL): [
        "CR0_GUEST_HOST_MASK",
        "CR4_GUEST_HOST_MASK",
        "CR0_READ_SHADOW",
        "CR4_READ_SHADOW",
        "CR3_TARGET_VALUE0",
        "CR3_TARGET_VALUE1",
        "CR3_TARGET_VALUE2",
        "CR3_TARGET_VALUE3",
    ],
    (FieldWidth.NATURAL, FieldType.EXIT_INFORMATION): [
        "EXIT_QUALIFICATION",
        "IO_RCX",
        "IO_RSI",
        "IO_RDI",
        "IO_RIP",
        "GUEST_LINEAR_ADDRESS",
    ],
    (FieldWidth.NATURAL, FieldType.GUEST_STATE): [
        "GUEST_CR0",
        "GUEST_CR3",
        "GUEST_CR4",
        "GUEST_ES_BASE",
        "GUEST_CS_BASE",
        "GUEST_SS_BASE",
        "GUEST_DS_BASE",
        "GUEST_FS_BASE",
        "GUEST_GS_BASE",
        "GUEST_LDTR_BASE",
        "GUEST_TR_BASE",
        "GUEST_GDTR_BASE",
        "GUEST_IDTR_BASE",
        "GUEST_DR7",
        "GUEST_RSP",
        "GUEST_RIP",
        "GUEST_RFLAGS",
        "GUEST_PENDING_DBG_EXCEPTIONS",
        "GUEST_SYSENTER_ESP",
        "GUEST_SYSENTER_EIP",
        "GUEST_S_CET",
        "GUEST_SSP",
        "GUEST_INTR_SSP_TABLE",
    ],
    (FieldWidth.NATURAL, FieldType.HOST_STATE): [
        "HOST_CR0",
        "HOST_CR3",
        "HOST_CR4",
        "HOST_FS_BASE",
        "HOST_GS_BASE",
        "HOST_TR_BASE",
        "HOST_GDTR_BASE",
        "HOST_IDTR_BASE",
        "HOST_IA32_SYSENTER_ESP",
        "HOST_IA32_SYSENTER_EIP",
        "HOST_RSP",
        "HOST_RIP",
        "HOST_S_CET",
        "HOST_SSP",
        "HOST_INTR_SSP_TABLE",
    ],
}
EXPECTED_GROUP = {name: group for group, names in APPENDIX_B_TABLES.items() for name in names}


def test_appendix_b_tables_list_every_full_field_once() -> None:
    listed = [name for names in APPENDIX_B_TABLES.values() for name in names]
    assert len(listed) == len(set(listed))
    assert set(listed) == {field.name for field in full_fields()}


def test_no_encoding_is_an_alias() -> None:
    """Two names with one value would silently collapse into an alias and vanish from iteration."""
    assert len(F.__members__) == len(list(F))


@pytest.mark.parametrize("field", list(F), ids=lambda f: f.name)
def test_width_and_type_derived_from_bits(field: F) -> None:
    width, field_type = EXPECTED_GROUP[field.full.name]
    assert field.width is width
    assert field.type is field_type
    assert field.encoding.well_formed
    assert field.is_read_only == (field_type is FieldType.EXIT_INFORMATION)
    if field.is_high:
        assert field.bits == 32
    else:
        assert field.bits == {FieldWidth.BITS16: 16, FieldWidth.BITS32: 32}.get(width, 64)
    assert field.mask == (1 << field.bits) - 1


@pytest.mark.parametrize("field", full_fields(), ids=lambda f: f.name)
def test_every_64bit_field_has_its_high_encoding(field: F) -> None:
    if field.width is FieldWidth.BITS64:
        high = field.high
        assert high is not None and int(high) == int(field) + 1
        assert high.name == field.name + "_HIGH" and high.full is field
        assert high.access_type is AccessType.HIGH and high.index == field.index
    else:
        assert field.high is None
        assert field.access_type is AccessType.FULL


def test_encoding_structure() -> None:
    """Table 24-17: GUEST_RIP 681Eh = width 3 (natural), type 2 (guest), index 0Fh, full."""
    rip = Encoding(0x681E)
    assert (rip.width, rip.type, rip.index, rip.access_type) == (
        FieldWidth.NATURAL,
        FieldType.GUEST_STATE,
        0x0F,
        AccessType.FULL,
    )
    assert Encoding(0x2001).access_type is AccessType.HIGH


@pytest.mark.parametrize(
    "raw", [0x1000 | 0x4000, 0x8000, 0x1_0000, 0x4001, 0x6801, 0x0801, -2, 1 << 32], ids=hex
)
def test_malformed_encodings(raw: int) -> None:
    assert not Encoding(raw).well_formed


def test_lookup() -> None:
    assert F.lookup(0x681E) is F.GUEST_RIP
    assert F.lookup(0x482C) is None  # index 16h of the 32-bit guest group is unused
    assert F.lookup(0x8000) is None


@pytest.mark.parametrize("segment", list(GuestSegment), ids=lambda s: s.name)
def test_guest_segment_fields(segment: GuestSegment) -> None:
    fields = guest_segment_fields(segment)
    assert fields.selector.name == f"GUEST_{segment.name}_SELECTOR"
    assert fields.base.name == f"GUEST_{segment.name}_BASE"
    assert fields.limit.name == f"GUEST_{segment.name}_LIMIT"
    assert fields.access_rights.name == f"GUEST_{segment.name}_AR_BYTES"


def test_highest_index() -> None:
    assert highest_index([F.GUEST_RIP, F.VMX_PREEMPTION_TIMER_VALUE, F.IO_BITMAP_A_HIGH]) == 0x17
