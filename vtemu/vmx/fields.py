"""VMCS field encodings (Intel SDM Vol. 3D Appendix B) with width/type derived from the number.

SDM references in vtemu.vmx use the section numbers of the 2016-2022 editions of Vol. 3C/3D
(VMCS = chapter 24, VM entries = 26, VM exits = 27, VMX instructions = 30, capability MSRs =
Appendix A, encodings = Appendix B, exit reasons = Appendix C). Table numbers are those of the
2016 edition unless a title is given instead; later editions renumber some tables, and the
2023+ editions move these chapters up by one (VMCS = chapter 25).

Every VMCS component is named by a 32-bit encoding (SDM 24.11.2, Table 24-17 "Structure of
VMCS Component Encoding"):

    bit 0      access type: 0 = full, 1 = high (only 64-bit fields have a high access)
    bits 9:1   index
    bits 11:10 type: 0 control, 1 VM-exit information (read-only data), 2 guest state, 3 host state
    bit 12     reserved (0)
    bits 14:13 width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width
    bits 31:15 reserved (0)

`VmcsField` lists every encoding of Appendix B; everything else about a field (its width, mask,
type, whether VMWRITE may touch it) is computed from those bits, never tabulated by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from vtemu.vmx.bits import bit_range, ones


class AccessType(IntEnum):
    """Bit 0 of an encoding."""

    FULL = 0
    HIGH = 1


class FieldType(IntEnum):
    """Bits 11:10 of an encoding: which area of the VMCS the field belongs to."""

    CONTROL = 0
    EXIT_INFORMATION = 1  # "read-only data" in Table 24-17; VM-exit information fields (24.9)
    GUEST_STATE = 2
    HOST_STATE = 3


class FieldWidth(IntEnum):
    """Bits 14:13 of an encoding."""

    BITS16 = 0
    BITS64 = 1
    BITS32 = 2
    NATURAL = 3


# vtemu models a processor that supports Intel 64 architecture, so natural-width fields have
# 64 bits (SDM 24.11.2: "64 bits on processors that support Intel 64 architecture").
NATURAL_WIDTH_BITS = 64
_WIDTH_BITS = {
    FieldWidth.BITS16: 16,
    FieldWidth.BITS64: 64,
    FieldWidth.BITS32: 32,
    FieldWidth.NATURAL: NATURAL_WIDTH_BITS,
}
_RESERVED_ENCODING_BITS = (ones(17) << 15) | (1 << 12)  # bits 31:15 and bit 12 must be 0


@dataclass(frozen=True)
class Encoding:
    """The decoded bits of any 32-bit value offered as a VMCS encoding (valid or not)."""

    raw: int

    @property
    def access_type(self) -> AccessType:
        return AccessType(self.raw & 1)

    @property
    def index(self) -> int:
        return bit_range(self.raw, 9, 1)

    @property
    def type(self) -> FieldType:
        return FieldType(bit_range(self.raw, 11, 10))

    @property
    def width(self) -> FieldWidth:
        return FieldWidth(bit_range(self.raw, 14, 13))

    @property
    def well_formed(self) -> bool:
        """Reserved bits clear and a high access only on a 64-bit field (Table 24-17)."""
        if self.raw < 0 or self.raw & _RESERVED_ENCODING_BITS or self.raw >> 32:
            return False
        return self.access_type is AccessType.FULL or self.width is FieldWidth.BITS64


class VmcsField(IntEnum):
    """Every VMCS component encoding of SDM Vol. 3D Appendix B (Tables B-1 .. B-15).

    64-bit fields also have their `_HIGH` encoding (full + 1), which VMREAD/VMWRITE use to reach
    bits 63:32 alone (SDM 24.11.2).
    """

    # --- B.1.1 16-bit control fields (Table B-1) -----------------------------------------------
    VIRTUAL_PROCESSOR_ID = 0x0000
    POSTED_INTR_NV = 0x0002
    EPTP_INDEX = 0x0004
    HLAT_PREFIX_SIZE = 0x0006
    LAST_PID_POINTER_INDEX = 0x0008
    # --- B.1.2 16-bit guest-state fields (Table B-2) -------------------------------------------
    GUEST_ES_SELECTOR = 0x0800
    GUEST_CS_SELECTOR = 0x0802
    GUEST_SS_SELECTOR = 0x0804
    GUEST_DS_SELECTOR = 0x0806
    GUEST_FS_SELECTOR = 0x0808
    GUEST_GS_SELECTOR = 0x080A
    GUEST_LDTR_SELECTOR = 0x080C
    GUEST_TR_SELECTOR = 0x080E
    GUEST_INTR_STATUS = 0x0810
    GUEST_PML_INDEX = 0x0812
    GUEST_UINV = 0x0814
    # --- B.1.3 16-bit host-state fields (Table B-3) --------------------------------------------
    HOST_ES_SELECTOR = 0x0C00
    HOST_CS_SELECTOR = 0x0C02
    HOST_SS_SELECTOR = 0x0C04
    HOST_DS_SELECTOR = 0x0C06
    HOST_FS_SELECTOR = 0x0C08
    HOST_GS_SELECTOR = 0x0C0A
    HOST_TR_SELECTOR = 0x0C0C
    # --- B.2.1 64-bit control fields (Table B-4) -----------------------------------------------
    IO_BITMAP_A = 0x2000
    IO_BITMAP_A_HIGH = 0x2001
    IO_BITMAP_B = 0x2002
    IO_BITMAP_B_HIGH = 0x2003
    MSR_BITMAP = 0x2004
    MSR_BITMAP_HIGH = 0x2005
    VM_EXIT_MSR_STORE_ADDR = 0x2006
    VM_EXIT_MSR_STORE_ADDR_HIGH = 0x2007
    VM_EXIT_MSR_LOAD_ADDR = 0x2008
    VM_EXIT_MSR_LOAD_ADDR_HIGH = 0x2009
    VM_ENTRY_MSR_LOAD_ADDR = 0x200A
    VM_ENTRY_MSR_LOAD_ADDR_HIGH = 0x200B
    EXECUTIVE_VMCS_POINTER = 0x200C
    EXECUTIVE_VMCS_POINTER_HIGH = 0x200D
    PML_ADDRESS = 0x200E
    PML_ADDRESS_HIGH = 0x200F
    TSC_OFFSET = 0x2010
    TSC_OFFSET_HIGH = 0x2011
    VIRTUAL_APIC_PAGE_ADDR = 0x2012
    VIRTUAL_APIC_PAGE_ADDR_HIGH = 0x2013
    APIC_ACCESS_ADDR = 0x2014
    APIC_ACCESS_ADDR_HIGH = 0x2015
    POSTED_INTR_DESC_ADDR = 0x2016
    POSTED_INTR_DESC_ADDR_HIGH = 0x2017
    VM_FUNCTION_CONTROL = 0x2018
    VM_FUNCTION_CONTROL_HIGH = 0x2019
    EPT_POINTER = 0x201A
    EPT_POINTER_HIGH = 0x201B
    EOI_EXIT_BITMAP0 = 0x201C
    EOI_EXIT_BITMAP0_HIGH = 0x201D
    EOI_EXIT_BITMAP1 = 0x201E
    EOI_EXIT_BITMAP1_HIGH = 0x201F
    EOI_EXIT_BITMAP2 = 0x2020
    EOI_EXIT_BITMAP2_HIGH = 0x2021
    EOI_EXIT_BITMAP3 = 0x2022
    EOI_EXIT_BITMAP3_HIGH = 0x2023
    EPTP_LIST_ADDRESS = 0x2024
    EPTP_LIST_ADDRESS_HIGH = 0x2025
    VMREAD_BITMAP = 0x2026
    VMREAD_BITMAP_HIGH = 0x2027
    VMWRITE_BITMAP = 0x2028
    VMWRITE_BITMAP_HIGH = 0x2029
    VE_INFORMATION_ADDRESS = 0x202A
    VE_INFORMATION_ADDRESS_HIGH = 0x202B
    XSS_EXIT_BITMAP = 0x202C
    XSS_EXIT_BITMAP_HIGH = 0x202D
    ENCLS_EXITING_BITMAP = 0x202E
    ENCLS_EXITING_BITMAP_HIGH = 0x202F
    SPPT_POINTER = 0x2030
    SPPT_POINTER_HIGH = 0x2031
    TSC_MULTIPLIER = 0x2032
    TSC_MULTIPLIER_HIGH = 0x2033
    TERTIARY_VM_EXEC_CONTROL = 0x2034
    TERTIARY_VM_EXEC_CONTROL_HIGH = 0x2035
    ENCLV_EXITING_BITMAP = 0x2036
    ENCLV_EXITING_BITMAP_HIGH = 0x2037
    LOW_PASID_DIRECTORY = 0x2038
    LOW_PASID_DIRECTORY_HIGH = 0x2039
    HIGH_PASID_DIRECTORY = 0x203A
    HIGH_PASID_DIRECTORY_HIGH = 0x203B
    SHARED_EPT_POINTER = 0x203C
    SHARED_EPT_POINTER_HIGH = 0x203D
    PCONFIG_EXITING_BITMAP = 0x203E
    PCONFIG_EXITING_BITMAP_HIGH = 0x203F
    HLAT_POINTER = 0x2040
    HLAT_POINTER_HIGH = 0x2041
    PID_POINTER_TABLE = 0x2042
    PID_POINTER_TABLE_HIGH = 0x2043
    SECONDARY_VM_EXIT_CONTROLS = 0x2044
    SECONDARY_VM_EXIT_CONTROLS_HIGH = 0x2045
    # --- B.2.2 64-bit read-only data field (Table B-5) -----------------------------------------
    GUEST_PHYSICAL_ADDRESS = 0x2400
    GUEST_PHYSICAL_ADDRESS_HIGH = 0x2401
    # --- B.2.3 64-bit guest-state fields (Table B-6) -------------------------------------------
    VMCS_LINK_POINTER = 0x2800
    VMCS_LINK_POINTER_HIGH = 0x2801
    GUEST_IA32_DEBUGCTL = 0x2802
    GUEST_IA32_DEBUGCTL_HIGH = 0x2803
    GUEST_IA32_PAT = 0x2804
    GUEST_IA32_PAT_HIGH = 0x2805
    GUEST_IA32_EFER = 0x2806
    GUEST_IA32_EFER_HIGH = 0x2807
    GUEST_IA32_PERF_GLOBAL_CTRL = 0x2808
    GUEST_IA32_PERF_GLOBAL_CTRL_HIGH = 0x2809
    GUEST_PDPTE0 = 0x280A
    GUEST_PDPTE0_HIGH = 0x280B
    GUEST_PDPTE1 = 0x280C
    GUEST_PDPTE1_HIGH = 0x280D
    GUEST_PDPTE2 = 0x280E
    GUEST_PDPTE2_HIGH = 0x280F
    GUEST_PDPTE3 = 0x2810
    GUEST_PDPTE3_HIGH = 0x2811
    GUEST_IA32_BNDCFGS = 0x2812
    GUEST_IA32_BNDCFGS_HIGH = 0x2813
    GUEST_IA32_RTIT_CTL = 0x2814
    GUEST_IA32_RTIT_CTL_HIGH = 0x2815
    GUEST_IA32_LBR_CTL = 0x2816
    GUEST_IA32_LBR_CTL_HIGH = 0x2817
    GUEST_IA32_PKRS = 0x2818
    GUEST_IA32_PKRS_HIGH = 0x2819
    # --- B.2.4 64-bit host-state fields (Table B-7) --------------------------------------------
    HOST_IA32_PAT = 0x2C00
    HOST_IA32_PAT_HIGH = 0x2C01
    HOST_IA32_EFER = 0x2C02
    HOST_IA32_EFER_HIGH = 0x2C03
    HOST_IA32_PERF_GLOBAL_CTRL = 0x2C04
    HOST_IA32_PERF_GLOBAL_CTRL_HIGH = 0x2C05
    HOST_IA32_PKRS = 0x2C06
    HOST_IA32_PKRS_HIGH = 0x2C07
    # --- B.3.1 32-bit control fields (Table B-8) -----------------------------------------------
    PIN_BASED_VM_EXEC_CONTROL = 0x4000
    CPU_BASED_VM_EXEC_CONTROL = 0x4002
    EXCEPTION_BITMAP = 0x4004
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008
    CR3_TARGET_COUNT = 0x400A
    VM_EXIT_CONTROLS = 0x400C
    VM_EXIT_MSR_STORE_COUNT = 0x400E
    VM_EXIT_MSR_LOAD_COUNT = 0x4010
    VM_ENTRY_CONTROLS = 0x4012
    VM_ENTRY_MSR_LOAD_COUNT = 0x4014
    VM_ENTRY_INTR_INFO_FIELD = 0x4016
    VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018
    VM_ENTRY_INSTRUCTION_LEN = 0x401A
    TPR_THRESHOLD = 0x401C
    SECONDARY_VM_EXEC_CONTROL = 0x401E
    PLE_GAP = 0x4020
    PLE_WINDOW = 0x4022
    INSTRUCTION_TIMEOUT_CONTROL = 0x4024
    # --- B.3.2 32-bit read-only data fields (Table B-9) ----------------------------------------
    VM_INSTRUCTION_ERROR = 0x4400
    EXIT_REASON = 0x4402
    VM_EXIT_INTR_INFO = 0x4404
    VM_EXIT_INTR_ERROR_CODE = 0x4406
    IDT_VECTORING_INFO_FIELD = 0x4408
    IDT_VECTORING_ERROR_CODE = 0x440A
    VM_EXIT_INSTRUCTION_LEN = 0x440C
    VMX_INSTRUCTION_INFO = 0x440E
    # --- B.3.3 32-bit guest-state fields (Table B-10) ------------------------------------------
    GUEST_ES_LIMIT = 0x4800
    GUEST_CS_LIMIT = 0x4802
    GUEST_SS_LIMIT = 0x4804
    GUEST_DS_LIMIT = 0x4806
    GUEST_FS_LIMIT = 0x4808
    GUEST_GS_LIMIT = 0x480A
    GUEST_LDTR_LIMIT = 0x480C
    GUEST_TR_LIMIT = 0x480E
    GUEST_GDTR_LIMIT = 0x4810
    GUEST_IDTR_LIMIT = 0x4812
    GUEST_ES_AR_BYTES = 0x4814
    GUEST_CS_AR_BYTES = 0x4816
    GUEST_SS_AR_BYTES = 0x4818
    GUEST_DS_AR_BYTES = 0x481A
    GUEST_FS_AR_BYTES = 0x481C
    GUEST_GS_AR_BYTES = 0x481E
    GUEST_LDTR_AR_BYTES = 0x4820
    GUEST_TR_AR_BYTES = 0x4822
    GUEST_INTERRUPTIBILITY_INFO = 0x4824
    GUEST_ACTIVITY_STATE = 0x4826
    GUEST_SMBASE = 0x4828
    GUEST_SYSENTER_CS = 0x482A
    VMX_PREEMPTION_TIMER_VALUE = 0x482E
    # --- B.3.4 32-bit host-state field (Table B-11) --------------------------------------------
    HOST_IA32_SYSENTER_CS = 0x4C00
    # --- B.4.1 natural-width control fields (Table B-12) ---------------------------------------
    CR0_GUEST_HOST_MASK = 0x6000
    CR4_GUEST_HOST_MASK = 0x6002
    CR0_READ_SHADOW = 0x6004
    CR4_READ_SHADOW = 0x6006
    CR3_TARGET_VALUE0 = 0x6008
    CR3_TARGET_VALUE1 = 0x600A
    CR3_TARGET_VALUE2 = 0x600C
    CR3_TARGET_VALUE3 = 0x600E
    # --- B.4.2 natural-width read-only data fields (Table B-13) --------------------------------
    EXIT_QUALIFICATION = 0x6400
    IO_RCX = 0x6402
    IO_RSI = 0x6404
    IO_RDI = 0x6406
    IO_RIP = 0x6408
    GUEST_LINEAR_ADDRESS = 0x640A
    # --- B.4.3 natural-width guest-state fields (Table B-14) -----------------------------------
    GUEST_CR0 = 0x6800
    GUEST_CR3 = 0x6802
    GUEST_CR4 = 0x6804
    GUEST_ES_BASE = 0x6806
    GUEST_CS_BASE = 0x6808
    GUEST_SS_BASE = 0x680A
    GUEST_DS_BASE = 0x680C
    GUEST_FS_BASE = 0x680E
    GUEST_GS_BASE = 0x6810
    GUEST_LDTR_BASE = 0x6812
    GUEST_TR_BASE = 0x6814
    GUEST_GDTR_BASE = 0x6816
    GUEST_IDTR_BASE = 0x6818
    GUEST_DR7 = 0x681A
    GUEST_RSP = 0x681C
    GUEST_RIP = 0x681E
    GUEST_RFLAGS = 0x6820
    GUEST_PENDING_DBG_EXCEPTIONS = 0x6822
    GUEST_SYSENTER_ESP = 0x6824
    GUEST_SYSENTER_EIP = 0x6826
    GUEST_S_CET = 0x6828
    GUEST_SSP = 0x682A
    GUEST_INTR_SSP_TABLE = 0x682C
    # --- B.4.4 natural-width host-state fields (Table B-15) ------------------------------------
    HOST_CR0 = 0x6C00
    HOST_CR3 = 0x6C02
    HOST_CR4 = 0x6C04
    HOST_FS_BASE = 0x6C06
    HOST_GS_BASE = 0x6C08
    HOST_TR_BASE = 0x6C0A
    HOST_GDTR_BASE = 0x6C0C
    HOST_IDTR_BASE = 0x6C0E
    HOST_IA32_SYSENTER_ESP = 0x6C10
    HOST_IA32_SYSENTER_EIP = 0x6C12
    HOST_RSP = 0x6C14
    HOST_RIP = 0x6C16
    HOST_S_CET = 0x6C18
    HOST_SSP = 0x6C1A
    HOST_INTR_SSP_TABLE = 0x6C1C

    # --- everything below is derived from the encoding bits --------------------------------------
    # Computed once per member (see _derive below): VM exits read these on every field access.
    @property
    def encoding(self) -> Encoding:
        return Encoding(int(self))

    @property
    def access_type(self) -> AccessType:
        return self._derived_access  # type: ignore[attr-defined,no-any-return]

    @property
    def index(self) -> int:
        return self.encoding.index

    @property
    def type(self) -> FieldType:
        return self._derived_type  # type: ignore[attr-defined,no-any-return]

    @property
    def width(self) -> FieldWidth:
        return self._derived_width  # type: ignore[attr-defined,no-any-return]

    @property
    def is_high(self) -> bool:
        return self._derived_high  # type: ignore[attr-defined,no-any-return]

    @property
    def bits(self) -> int:
        """Bits a VMREAD/VMWRITE of this encoding transfers (a high access moves 32 bits)."""
        return 32 if self.is_high else _WIDTH_BITS[self.width]

    @property
    def mask(self) -> int:
        return self._derived_mask  # type: ignore[attr-defined,no-any-return]

    @property
    def is_read_only(self) -> bool:
        """VM-exit information fields: VMWRITE refuses them unless IA32_VMX_MISC[29] = 1 (30.3)."""
        return self.type is FieldType.EXIT_INFORMATION

    @property
    def full(self) -> VmcsField:
        """The field that stores this encoding's bits: itself, or the full field of a high access."""
        return self._derived_full  # type: ignore[attr-defined,no-any-return]

    @property
    def high(self) -> VmcsField | None:
        """The high-access encoding of a 64-bit field (None for other widths)."""
        return VmcsField(int(self) | 1) if self.width is FieldWidth.BITS64 else None

    @classmethod
    def lookup(cls, raw: int) -> VmcsField | None:
        """The field named by a raw encoding (a VMREAD/VMWRITE operand), or None if there is none."""
        try:
            return cls(raw)
        except ValueError:
            return None


def _derive() -> None:
    """Attach each member's encoding-derived attributes (SDM B.0) once, at import."""
    for member in VmcsField:
        encoding = Encoding(int(member))
        member._derived_access = encoding.access_type  # type: ignore[attr-defined]
        member._derived_type = encoding.type  # type: ignore[attr-defined]
        member._derived_width = encoding.width  # type: ignore[attr-defined]
        member._derived_high = encoding.access_type is AccessType.HIGH  # type: ignore[attr-defined]
    for member in VmcsField:
        member._derived_mask = ones(member.bits)  # type: ignore[attr-defined]
        member._derived_full = VmcsField(int(member) & ~1) if member.is_high else member  # type: ignore[attr-defined]


_derive()


def full_fields() -> tuple[VmcsField, ...]:
    """Every field once (high-access encodings are views, not storage)."""
    return tuple(f for f in VmcsField if not f.is_high)


class GuestSegment(IntEnum):
    """Guest segment registers in VMCS index order (Tables B-2, B-10, B-14).

    ES..GS are also the SDM's segment-register numbers (Vol. 2 "Sreg"), which the instruction-
    information field uses; LDTR and TR follow GS in every guest segment field group.
    """

    ES = 0
    CS = 1
    SS = 2
    DS = 3
    FS = 4
    GS = 5
    LDTR = 6
    TR = 7


@dataclass(frozen=True)
class SegmentFields:
    """The four guest-state fields of one segment register (SDM 24.4.1)."""

    selector: VmcsField
    base: VmcsField
    limit: VmcsField
    access_rights: VmcsField


def guest_segment_fields(segment: GuestSegment) -> SegmentFields:
    """Fields of a guest segment, derived from its index in each field group (Appendix B).

    Each group (selectors 0800h, limits 4800h, access rights 4814h, bases 6806h) lists ES, CS,
    SS, DS, FS, GS, LDTR, TR at consecutive indexes, so the segment number is an index offset.
    """
    step = 2 * int(segment)
    return SegmentFields(
        selector=VmcsField(VmcsField.GUEST_ES_SELECTOR + step),
        base=VmcsField(VmcsField.GUEST_ES_BASE + step),
        limit=VmcsField(VmcsField.GUEST_ES_LIMIT + step),
        access_rights=VmcsField(VmcsField.GUEST_ES_AR_BYTES + step),
    )


def highest_index(fields: Iterable[VmcsField]) -> int:
    """The largest index (bits 9:1) used by any of `fields`, as IA32_VMX_VMCS_ENUM reports (A.9)."""
    return max(f.index for f in fields)
