"""VM-entry checks: every rule passes on valid baselines and fails on a one-field change.

Each failing case names the rule it must trip; the meta-test at the end makes sure every rule in
CONTROL_RULES and GUEST_STATE_RULES has at least one failing case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from vtemu.vmx.controls import (
    EptVpidCap,
    PinBasedControls,
    PrimaryProcessorControls,
    SecondaryProcessorControls,
    VmxCapabilities,
)
from vtemu.vmx.entry_checks import (
    CONTROL_RULES,
    GUEST_STATE_RULES,
    EntryFailureQualification,
    FailureKind,
    check_controls,
    check_guest_state,
)
from vtemu.vmx.errors import VmInstructionErrorNumber
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.reasons import ExitReason
from vtemu.vmx.state_formats import ActivityState, Cr4
from vtemu.vmx.vmcs import Vmcs

from .builders import (
    AR_CODE64,
    AR_DATA32,
    BASELINES,
    CAPS,
    ENTRY,
    EPTP_WB_4LEVEL,
    EXIT,
    PIN,
    PRIMARY,
    SECONDARY,
)


@dataclass(frozen=True)
class Case:
    rule: str
    base: str
    writes: dict[F, int]
    caps: VmxCapabilities = field(default=CAPS)
    label: str = ""


ENTRY_64 = ENTRY | 1 << 9  # "IA-32e mode guest"
MTF_CAPS = VmxCapabilities(primary=CAPS.primary | PrimaryProcessorControls.MONITOR_TRAP_FLAG)
NO_MTF_CAPS = VmxCapabilities(primary=CAPS.primary & ~PrimaryProcessorControls.MONITOR_TRAP_FLAG)
NO_AD_CAPS = VmxCapabilities(ept_vpid=CAPS.ept_vpid & ~EptVpidCap.ACCESSED_DIRTY)
PCIDE_CAPS = VmxCapabilities(cr4_fixed1=CAPS.cr4_fixed1 | Cr4.PCIDE)
NON_CANONICAL = 0x0000_8000_0000_0000
NMI = 0x8000_0202
EXTINT_0x20 = 0x8000_0020
GP_WITH_CODE = 0x8000_0B0D
PIN_DEFAULT1 = 0x16

CONTROL_CASES = [
    Case(
        "pin_based_reserved_bits",
        "long",
        {F.PIN_BASED_VM_EXEC_CONTROL: PIN & ~0x16},
        label="default1 cleared",
    ),
    Case(
        "pin_based_reserved_bits",
        "long",
        {F.PIN_BASED_VM_EXEC_CONTROL: PIN | PinBasedControls.PROCESS_POSTED_INTERRUPTS},
    ),
    Case(
        "primary_reserved_bits",
        "long",
        {F.CPU_BASED_VM_EXEC_CONTROL: PRIMARY | PrimaryProcessorControls.USE_TPR_SHADOW},
    ),
    Case(
        "secondary_reserved_bits",
        "long",
        {F.SECONDARY_VM_EXEC_CONTROL: SECONDARY | SecondaryProcessorControls.VIRTUALIZE_APIC_ACCESSES},
    ),
    Case("cr3_target_count", "long", {F.CR3_TARGET_COUNT: 5}),
    Case("io_bitmap_addresses", "long", {F.IO_BITMAP_B: 0x11001}, label="misaligned"),
    Case("io_bitmap_addresses", "long", {F.IO_BITMAP_A: 1 << 40}, label="beyond width"),
    Case("msr_bitmap_address", "long", {F.MSR_BITMAP: 1 << 40}),
    Case(
        "virtual_nmis_require_nmi_exiting",
        "long",
        {F.PIN_BASED_VM_EXEC_CONTROL: PIN_DEFAULT1 | PinBasedControls.VIRTUAL_NMIS},
    ),
    Case(
        "nmi_window_requires_virtual_nmis",
        "long",
        {
            F.PIN_BASED_VM_EXEC_CONTROL: PIN_DEFAULT1 | PinBasedControls.NMI_EXITING,
            F.CPU_BASED_VM_EXEC_CONTROL: PRIMARY | PrimaryProcessorControls.NMI_WINDOW_EXITING,
        },
    ),
    Case("vpid_nonzero", "long", {F.VIRTUAL_PROCESSOR_ID: 0}),
    Case("eptp_memory_type", "long", {F.EPT_POINTER: EPTP_WB_4LEVEL & ~7 | 1}, label="WC"),
    Case("eptp_walk_length", "long", {F.EPT_POINTER: EPTP_WB_4LEVEL & ~0x38 | 4 << 3}, label="5-level"),
    Case("eptp_accessed_dirty", "long", {F.EPT_POINTER: EPTP_WB_4LEVEL | 1 << 6}, NO_AD_CAPS),
    Case("eptp_reserved_bits", "long", {F.EPT_POINTER: EPTP_WB_4LEVEL | 1 << 8}, label="bit 8"),
    Case("eptp_reserved_bits", "long", {F.EPT_POINTER: EPTP_WB_4LEVEL | 1 << 7}, label="shadow stack"),
    Case("eptp_reserved_bits", "long", {F.EPT_POINTER: EPTP_WB_4LEVEL | 1 << 45}, label="beyond width"),
    Case(
        "unrestricted_guest_requires_ept",
        "real",
        {F.SECONDARY_VM_EXEC_CONTROL: SecondaryProcessorControls.UNRESTRICTED_GUEST},
    ),
    Case("exit_reserved_bits", "long", {F.VM_EXIT_CONTROLS: EXIT | 1 << 29}, label="load PKRS"),
    Case("save_timer_requires_timer", "long", {F.VM_EXIT_CONTROLS: EXIT | 1 << 22}),
    Case("exit_msr_store_area", "long", {F.VM_EXIT_MSR_STORE_COUNT: 1, F.VM_EXIT_MSR_STORE_ADDR: 0x1008}),
    Case(
        "exit_msr_load_area",
        "long",
        {F.VM_EXIT_MSR_LOAD_COUNT: 1, F.VM_EXIT_MSR_LOAD_ADDR: (1 << 40) - 8},
        label="last byte",
    ),
    Case("entry_reserved_bits", "long", {F.VM_ENTRY_CONTROLS: ENTRY_64 | 1 << 10}, label="entry to SMM"),
    Case("injection_type_not_reserved", "long", {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0100}, label="type 1"),
    Case(
        "injection_type_not_reserved",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0700},
        NO_MTF_CAPS,
        label="type 7 without MTF",
    ),
    Case("injection_reserved_bits", "long", {F.VM_ENTRY_INTR_INFO_FIELD: EXTINT_0x20 | 1 << 12}),
    Case(
        "injection_vector_matches_type",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0203},
        label="NMI vector 3",
    ),
    Case(
        "injection_vector_matches_type",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0320},
        label="exception 32",
    ),
    Case(
        "injection_vector_matches_type",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0701},
        MTF_CAPS,
        label="other event 1",
    ),
    Case(
        "injection_error_code_matches_vector",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_030D},
        label="#GP without",
    ),
    Case(
        "injection_error_code_matches_vector",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0B06},
        label="#UD with",
    ),
    Case(
        "injection_error_code_matches_vector",
        "real",
        {F.VM_ENTRY_INTR_INFO_FIELD: GP_WITH_CODE},
        label="real mode",
    ),
    Case(
        "injection_error_code_matches_vector",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0B15},
        label="#CP without CET",
    ),
    Case(
        "injection_error_code_reserved_bits",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: GP_WITH_CODE, F.VM_ENTRY_EXCEPTION_ERROR_CODE: 0x1_0000},
    ),
    Case(
        "injection_instruction_length",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0480, F.VM_ENTRY_INSTRUCTION_LEN: 0},
    ),
    Case(
        "injection_instruction_length",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0603, F.VM_ENTRY_INSTRUCTION_LEN: 16},
    ),
    Case(
        "entry_msr_load_area",
        "long",
        {F.VM_ENTRY_MSR_LOAD_COUNT: 513, F.VM_ENTRY_MSR_LOAD_ADDR: 0x2000},
        label="too many",
    ),
]

GUEST_CASES = [
    Case("cr0_fixed_bits", "long", {F.GUEST_CR0: 0x8000_0030}, label="PE clear without unrestricted guest"),
    Case("cr0_fixed_bits", "long", {F.GUEST_CR0: 0x1_8000_0031}, label="bit 32"),
    Case("cr0_fixed_bits", "v8086", {F.GUEST_CR0: 0x31}, label="PG clear without unrestricted guest"),
    Case("cr0_pg_requires_pe", "real", {F.GUEST_CR0: 0x8000_0030}),
    Case("cr4_fixed_bits", "long", {F.GUEST_CR4: 0x2020}, label="VMXE set"),
    Case("cr4_fixed_bits", "long", {F.GUEST_CR4: 0x20 | Cr4.SMEP}, label="SMEP"),
    Case("debugctl_reserved_bits", "long", {F.GUEST_IA32_DEBUGCTL: 1 << 6}),
    Case("ia32e_guest_requires_paging", "long", {F.GUEST_CR4: 0}),
    Case("pcide_requires_ia32e_guest", "real", {F.GUEST_CR4: Cr4.PCIDE}, PCIDE_CAPS),
    Case("cr3_within_physical_width", "long", {F.GUEST_CR3: 1 << 40}),
    Case("dr7_upper_bits", "long", {F.GUEST_DR7: 1 << 32 | 0x400}),
    Case("sysenter_addresses_canonical", "long", {F.GUEST_SYSENTER_EIP: NON_CANONICAL}),
    Case(
        "pat_entries_valid",
        "long",
        {F.VM_ENTRY_CONTROLS: ENTRY_64 | 1 << 14, F.GUEST_IA32_PAT: 0x0007_0406_0007_0402},
    ),
    Case("efer_reserved_bits", "long", {F.GUEST_IA32_EFER: 0x502}),
    Case("efer_lma_matches_ia32e_guest", "long", {F.GUEST_IA32_EFER: 0x100}),
    Case("efer_lme_matches_lma_with_paging", "long", {F.GUEST_IA32_EFER: 0x400}),
    Case("tr_selector_ti", "long", {F.GUEST_TR_SELECTOR: 0x1C}),
    Case("ldtr_selector_ti", "real", {F.GUEST_LDTR_SELECTOR: 0x4}),
    Case("ss_rpl_matches_cs_rpl", "long", {F.GUEST_SS_SELECTOR: 0x13}),
    Case("virtual_8086_segments", "v8086", {F.GUEST_CS_LIMIT: 0xF_FFFF}, label="limit"),
    Case("virtual_8086_segments", "v8086", {F.GUEST_DS_BASE: 0}, label="base"),
    Case("virtual_8086_segments", "v8086", {F.GUEST_SS_AR_BYTES: 0x93}, label="access rights"),
    Case("segment_bases_canonical", "long", {F.GUEST_FS_BASE: NON_CANONICAL}),
    Case("segment_bases_canonical", "real", {F.GUEST_LDTR_BASE: NON_CANONICAL}, label="usable LDTR"),
    Case("segment_bases_32bit", "real", {F.GUEST_DS_BASE: 1 << 32}),
    Case("segment_bases_32bit", "long", {F.GUEST_CS_BASE: 1 << 32}, label="CS"),
    Case("cs_type", "long", {F.GUEST_CS_AR_BYTES: 0xA093}, label="data type without unrestricted guest"),
    Case("cs_type", "real", {F.GUEST_CS_AR_BYTES: 0x9A}, label="not accessed"),
    Case("ss_type", "long", {F.GUEST_SS_AR_BYTES: 0xC09B}),
    Case("data_segment_types", "long", {F.GUEST_DS_AR_BYTES: 0xC092}, label="not accessed"),
    Case("data_segment_types", "long", {F.GUEST_ES_AR_BYTES: 0xC099}, label="execute-only code"),
    Case("code_data_s_bit", "long", {F.GUEST_DS_AR_BYTES: 0xC083}),
    Case("cs_dpl", "long", {F.GUEST_CS_AR_BYTES: AR_CODE64 | 3 << 5}, label="non-conforming"),
    Case("cs_dpl", "long", {F.GUEST_CS_AR_BYTES: 0xA0FF}, label="conforming above SS.DPL"),
    Case("cs_dpl", "real", {F.GUEST_CS_AR_BYTES: 0xB3}, label="type 3 with DPL 1"),
    Case("ss_dpl", "long", {F.GUEST_CS_SELECTOR: 0x0B, F.GUEST_SS_SELECTOR: 0x13}, label="DPL != RPL"),
    Case("ss_dpl", "real", {F.GUEST_CS_AR_BYTES: 0xFB, F.GUEST_SS_AR_BYTES: 0xF3}, label="real mode DPL 3"),
    Case("data_segment_dpl", "long", {F.GUEST_DS_SELECTOR: 0x13}),
    Case("code_data_present", "long", {F.GUEST_DS_AR_BYTES: 0xC013}),
    Case("code_data_reserved_bits", "long", {F.GUEST_DS_AR_BYTES: AR_DATA32 | 1 << 8}),
    Case("code_data_reserved_bits", "long", {F.GUEST_CS_AR_BYTES: AR_CODE64 | 1 << 20}, label="bit 20"),
    Case("cs_db_in_64bit_mode", "long", {F.GUEST_CS_AR_BYTES: AR_CODE64 | 1 << 14}),
    Case("code_data_granularity", "long", {F.GUEST_DS_LIMIT: 0xF_FFFE}, label="G=1, low bits not all 1"),
    Case("code_data_granularity", "real", {F.GUEST_ES_LIMIT: 0x10_0000}, label="G=0, limit above 1 MiB"),
    Case("tr_type", "long", {F.GUEST_TR_AR_BYTES: 0x83}, label="16-bit TSS in IA-32e"),
    Case("tr_type", "real", {F.GUEST_TR_AR_BYTES: 0x89}, label="available TSS"),
    Case("tr_descriptor", "long", {F.GUEST_TR_AR_BYTES: 0x0B}, label="not present"),
    Case("tr_descriptor", "long", {F.GUEST_TR_AR_BYTES: 0x1_008B}, label="unusable"),
    Case("tr_descriptor", "long", {F.GUEST_TR_LIMIT: 0x10_0000}, label="granularity"),
    Case("ldtr_descriptor", "real", {F.GUEST_LDTR_AR_BYTES: 0x83}, label="type 3"),
    Case("ldtr_descriptor", "real", {F.GUEST_LDTR_LIMIT: 0x10_0000}, label="granularity"),
    Case("descriptor_table_bases_canonical", "long", {F.GUEST_GDTR_BASE: NON_CANONICAL}),
    Case("descriptor_table_limits", "long", {F.GUEST_IDTR_LIMIT: 0x1_0000}),
    Case("rip_upper_bits", "real", {F.GUEST_RIP: 1 << 32}),
    Case("rip_upper_bits", "long", {F.GUEST_RIP: 0x0001_0000_0000_0000}, label="64-bit bits 63:48"),
    Case("rflags_reserved_bits", "long", {F.GUEST_RFLAGS: 0}, label="bit 1 clear"),
    Case("rflags_reserved_bits", "long", {F.GUEST_RFLAGS: 0x2 | 1 << 3}, label="bit 3"),
    Case("rflags_reserved_bits", "long", {F.GUEST_RFLAGS: 0x2 | 1 << 22}, label="bit 22"),
    Case(
        "rflags_vm_outside_protected_mode",
        "v8086",
        {F.VM_ENTRY_CONTROLS: ENTRY_64, F.GUEST_IA32_EFER: 0x500, F.GUEST_CR4: 0x20},
    ),
    Case("rflags_if_for_external_interrupt", "long", {F.VM_ENTRY_INTR_INFO_FIELD: EXTINT_0x20}),
    Case(
        "activity_state_supported",
        "long",
        {F.GUEST_ACTIVITY_STATE: ActivityState.SHUTDOWN},
        label="unsupported",
    ),
    Case("activity_state_supported", "long", {F.GUEST_ACTIVITY_STATE: 4}, label="undefined"),
    Case(
        "hlt_requires_ss_dpl_0",
        "long",
        {
            F.GUEST_ACTIVITY_STATE: ActivityState.HLT,
            F.GUEST_CS_SELECTOR: 0x0B,
            F.GUEST_CS_AR_BYTES: AR_CODE64 | 3 << 5,
            F.GUEST_SS_SELECTOR: 0x13,
            F.GUEST_SS_AR_BYTES: AR_DATA32 | 3 << 5,
        },
    ),
    Case(
        "active_when_blocking_by_sti_or_mov_ss",
        "long",
        {F.GUEST_ACTIVITY_STATE: ActivityState.HLT, F.GUEST_INTERRUPTIBILITY_INFO: 2},
    ),
    Case(
        "injection_allowed_in_activity_state",
        "long",
        {F.GUEST_ACTIVITY_STATE: ActivityState.HLT, F.VM_ENTRY_INTR_INFO_FIELD: GP_WITH_CODE},
    ),
    Case("interruptibility_reserved_bits", "long", {F.GUEST_INTERRUPTIBILITY_INFO: 1 << 5}),
    Case(
        "interruptibility_reserved_bits",
        "long",
        {F.GUEST_INTERRUPTIBILITY_INFO: 1 << 4},
        label="enclave without SGX",
    ),
    Case(
        "sti_and_mov_ss_blocking_exclusive", "long", {F.GUEST_INTERRUPTIBILITY_INFO: 3, F.GUEST_RFLAGS: 0x202}
    ),
    Case("sti_blocking_requires_if", "long", {F.GUEST_INTERRUPTIBILITY_INFO: 1}),
    Case(
        "external_interrupt_injection_unblocked",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: EXTINT_0x20, F.GUEST_RFLAGS: 0x202, F.GUEST_INTERRUPTIBILITY_INFO: 1},
    ),
    Case(
        "nmi_injection_not_blocked_by_mov_ss",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: NMI, F.GUEST_INTERRUPTIBILITY_INFO: 2},
    ),
    Case("smi_blocking_outside_smm", "long", {F.GUEST_INTERRUPTIBILITY_INFO: 4}),
    Case(
        "virtual_nmi_injection_unblocked",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: NMI, F.GUEST_INTERRUPTIBILITY_INFO: 8},
    ),
    Case("pending_debug_reserved_bits", "long", {F.GUEST_PENDING_DBG_EXCEPTIONS: 1 << 4}),
    Case("pending_debug_reserved_bits", "long", {F.GUEST_PENDING_DBG_EXCEPTIONS: 1 << 16}, label="RTM"),
    Case(
        "pending_debug_single_step",
        "long",
        {F.GUEST_INTERRUPTIBILITY_INFO: 2, F.GUEST_RFLAGS: 0x102},
        label="TF without BS",
    ),
    Case(
        "pending_debug_single_step",
        "long",
        {F.GUEST_INTERRUPTIBILITY_INFO: 2, F.GUEST_PENDING_DBG_EXCEPTIONS: 1 << 14},
        label="BS without TF",
    ),
    Case("vmcs_link_pointer_format", "long", {F.VMCS_LINK_POINTER: 0x1000_0001}),
    Case("vmcs_link_pointer_unused", "long", {F.VMCS_LINK_POINTER: 0x1000_0000}),
    Case("pdptes_valid", "pae", {F.GUEST_PDPTE2: 0x5003}, label="bit 1"),
    Case("pdptes_valid", "pae", {F.GUEST_PDPTE3: 1 << 41 | 1}, label="beyond width"),
]

PASSING_VARIANTS = [
    Case(
        "secondary ignored without activation",
        "long",
        {
            F.CPU_BASED_VM_EXEC_CONTROL: PRIMARY & ~PrimaryProcessorControls.ACTIVATE_SECONDARY_CONTROLS,
            F.SECONDARY_VM_EXEC_CONTROL: 0xFFFF_FFFF,
        },
    ),
    Case(
        "bitmap addresses ignored without the controls",
        "long",
        {
            F.CPU_BASED_VM_EXEC_CONTROL: PRIMARY
            & ~(PrimaryProcessorControls.USE_IO_BITMAPS | PrimaryProcessorControls.USE_MSR_BITMAPS),
            F.IO_BITMAP_A: 1,
            F.MSR_BITMAP: 1,
        },
    ),
    Case(
        "CR3-load exiting may be 0 under the TRUE MSRs",
        "long",
        {F.CPU_BASED_VM_EXEC_CONTROL: PRIMARY & ~(3 << 15)},
    ),
    Case("A/D flags with A/D support", "long", {F.EPT_POINTER: EPTP_WB_4LEVEL | 1 << 6}),
    Case("UC EPT paging structures", "long", {F.EPT_POINTER: EPTP_WB_4LEVEL & ~7}),
    Case("empty MSR lists are not checked", "long", {F.VM_EXIT_MSR_STORE_ADDR: 0x1008}),
    Case("512 MSRs", "long", {F.VM_ENTRY_MSR_LOAD_COUNT: 512, F.VM_ENTRY_MSR_LOAD_ADDR: 0x2000}),
    Case(
        "valid #PF injection",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0B0E, F.VM_ENTRY_EXCEPTION_ERROR_CODE: 0x7},
    ),
    Case("#GP without error code in real mode", "real", {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_030D}),
    Case(
        "INT 80h with length 2",
        "long",
        {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0480, F.VM_ENTRY_INSTRUCTION_LEN: 2},
    ),
    Case("MTF event with MTF support", "long", {F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0700}, MTF_CAPS),
    Case("unused invalid injection bits are ignored", "long", {F.VM_ENTRY_INTR_INFO_FIELD: 0x7FFF_FFFF}),
    Case("valid PAT", "long", {F.VM_ENTRY_CONTROLS: ENTRY_64 | 1 << 14}),
    Case(
        "conforming CS below SS.DPL",
        "long",
        {
            F.GUEST_CS_AR_BYTES: 0xA09F,
            F.GUEST_SS_AR_BYTES: AR_DATA32 | 3 << 5,
            F.GUEST_SS_SELECTOR: 0x13,
            F.GUEST_CS_SELECTOR: 0x0B,
        },
    ),
    Case("16-bit busy TSS outside IA-32e mode", "real", {F.GUEST_TR_AR_BYTES: 0x83}),
    Case("unusable LDTR is not checked", "long", {F.GUEST_LDTR_AR_BYTES: 0x1_0003, F.GUEST_LDTR_SELECTOR: 4}),
    Case("non-canonical RIP passes the bits 63:N rule", "long", {F.GUEST_RIP: NON_CANONICAL}),
    Case(
        "HLT with #DB injection",
        "long",
        {F.GUEST_ACTIVITY_STATE: ActivityState.HLT, F.VM_ENTRY_INTR_INFO_FIELD: 0x8000_0301},
    ),
    Case(
        "shutdown when supported",
        "long",
        {F.GUEST_ACTIVITY_STATE: ActivityState.SHUTDOWN},
        VmxCapabilities(activity_states=frozenset({ActivityState.HLT, ActivityState.SHUTDOWN})),
    ),
    Case("STI blocking with IF", "long", {F.GUEST_INTERRUPTIBILITY_INFO: 1, F.GUEST_RFLAGS: 0x202}),
    Case(
        "TF with BS under MOV-SS blocking",
        "long",
        {F.GUEST_INTERRUPTIBILITY_INFO: 2, F.GUEST_RFLAGS: 0x102, F.GUEST_PENDING_DBG_EXCEPTIONS: 1 << 14},
    ),
    Case("not-present PDPTE with reserved bits", "pae", {F.GUEST_PDPTE1: 0x6}),
    Case(
        "PDPTEs unchecked without EPT",
        "pae",
        {
            F.SECONDARY_VM_EXEC_CONTROL: SecondaryProcessorControls.ENABLE_VPID,
            F.GUEST_PDPTE2: 0x5003,
        },
    ),
]


def build(case: Case) -> Vmcs:
    vmcs = BASELINES[case.base]()
    for vmcs_field, value in case.writes.items():
        vmcs.write(vmcs_field, value)
    return vmcs


def case_id(case: Case) -> str:
    return f"{case.rule}[{case.label}]" if case.label else case.rule


@pytest.mark.parametrize("base", sorted(BASELINES))
def test_baselines_pass_every_rule(base: str) -> None:
    vmcs = BASELINES[base]()
    assert check_controls(vmcs, CAPS) is None
    assert check_guest_state(vmcs, CAPS) is None


@pytest.mark.parametrize("case", CONTROL_CASES, ids=case_id)
def test_control_rule_fails(case: Case) -> None:
    failure = check_controls(build(case), case.caps)
    assert failure is not None
    assert failure.rule == case.rule, str(failure)
    assert failure.kind is FailureKind.INVALID_CONTROLS
    assert failure.instruction_error is VmInstructionErrorNumber.ENTRY_INVALID_CONTROL_FIELDS == 7
    assert failure.exit_reason is None
    assert failure.section.startswith("26.2.1.")


@pytest.mark.parametrize("case", GUEST_CASES, ids=case_id)
def test_guest_state_rule_fails(case: Case) -> None:
    vmcs = build(case)
    assert check_controls(vmcs, case.caps) is None, "guest-state cases must keep the controls valid"
    failure = check_guest_state(vmcs, case.caps)
    assert failure is not None
    assert failure.rule == case.rule, str(failure)
    assert failure.kind is FailureKind.INVALID_GUEST_STATE
    assert failure.instruction_error is None
    assert failure.exit_reason is not None
    assert failure.exit_reason.encode() == 0x8000_0021  # basic reason 33 with bit 31 set
    assert failure.exit_reason.basic is ExitReason.ENTRY_FAILURE_GUEST_STATE
    assert failure.section.startswith("26.3.1.")


@pytest.mark.parametrize("case", PASSING_VARIANTS, ids=lambda case: case.rule)
def test_valid_variants_pass(case: Case) -> None:
    vmcs = build(case)
    assert check_controls(vmcs, case.caps) is None
    assert check_guest_state(vmcs, case.caps) is None


def test_every_rule_has_a_failing_case() -> None:
    covered = {case.rule for case in CONTROL_CASES + GUEST_CASES}
    assert covered == {rule.name for rule in CONTROL_RULES + GUEST_STATE_RULES}


def test_rules_are_in_sdm_order() -> None:
    """The first failure reported must follow the SDM's order of sections."""
    for rules in (CONTROL_RULES, GUEST_STATE_RULES):
        sections = [tuple(int(part) for part in rule.section.split(".")) for rule in rules]
        assert sections == sorted(sections)


def test_first_failing_rule_wins() -> None:
    vmcs = BASELINES["long"]()
    vmcs.write(F.CR3_TARGET_COUNT, 9)
    vmcs.write(F.VIRTUAL_PROCESSOR_ID, 0)
    failure = check_controls(vmcs, CAPS)
    assert failure is not None and failure.rule == "cr3_target_count"


@pytest.mark.parametrize(
    ("link", "rule"), [(0x1000_0001, "vmcs_link_pointer_format"), (0x2000, "vmcs_link_pointer_unused")]
)
def test_link_pointer_failures_report_qualification_4(link: int, rule: str) -> None:
    vmcs = BASELINES["long"]()
    vmcs.write(F.VMCS_LINK_POINTER, link)
    failure = check_guest_state(vmcs, CAPS)
    assert failure is not None and failure.rule == rule
    assert failure.qualification is EntryFailureQualification.INVALID_VMCS_LINK_POINTER == 4


def test_pdpte_failure_reports_qualification_2() -> None:
    vmcs = BASELINES["pae"]()
    vmcs.write(F.GUEST_PDPTE0, 0x3003)
    failure = check_guest_state(vmcs, CAPS)
    assert failure is not None and failure.qualification == 2


def test_ordinary_guest_failure_reports_qualification_0() -> None:
    vmcs = BASELINES["long"]()
    vmcs.write(F.GUEST_RFLAGS, 0)
    failure = check_guest_state(vmcs, CAPS)
    assert failure is not None and failure.qualification == 0
    assert "26.3.1.4" in str(failure) and "rflags_reserved_bits" in str(failure)


def test_checks_read_each_field_once_through_the_backend() -> None:
    """Guest reads may be vCPU register reads: the view memoises them."""

    class CountingBackend:
        def __init__(self, source: Vmcs) -> None:
            self.source = source
            self.reads: dict[F, int] = {}

        def read_field(self, vmcs_field: F) -> int:
            self.reads[vmcs_field] = self.reads.get(vmcs_field, 0) + 1
            return self.source.read(vmcs_field)

        def write_field(self, vmcs_field: F, value: int) -> None:
            raise AssertionError("checks never write")

    source = BASELINES["long"]()
    backend = CountingBackend(source)
    vmcs = Vmcs(backend)
    for vmcs_field in (
        F.PIN_BASED_VM_EXEC_CONTROL,
        F.CPU_BASED_VM_EXEC_CONTROL,
        F.SECONDARY_VM_EXEC_CONTROL,
        F.VM_EXIT_CONTROLS,
        F.VM_ENTRY_CONTROLS,
        F.IO_BITMAP_A,
        F.IO_BITMAP_B,
        F.MSR_BITMAP,
        F.VIRTUAL_PROCESSOR_ID,
        F.EPT_POINTER,
    ):
        vmcs.write(vmcs_field, source.read(vmcs_field))
    assert check_controls(vmcs, CAPS) is None
    assert check_guest_state(vmcs, CAPS) is None
    assert backend.reads and max(backend.reads.values()) == 1
