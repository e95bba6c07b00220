"""VM-entry checks (SDM 26.2.1 controls, 26.3.1 guest state) as pure functions of VMCS + capabilities.

Each rule is a small function stating one SDM requirement; it returns None when the VMCS meets
it and a sentence describing the violation otherwise. Rules are registered in SDM order, and
`check_controls` / `check_guest_state` report the first one that fails, the way the processor
reports one failure per VM entry:

* a control-field failure is VMfailValid with VM-instruction error 7, "VM entry with invalid
  control field(s)" (SDM 26.2, 30.4);
* a guest-state failure is a VM-entry failure (SDM 26.8): exit reason 33 with bit 31 set and an
  exit qualification (0 by default, 2 for PDPTEs, 4 for the VMCS link pointer).

Where the SDM leaves behaviour model-specific or undefined, the rule says what vtemu chose.
Host-state checks (26.2.2-26.2.4) are not here: vtemu's host is the Python hypervisor, which
never executes host-state code. VM entry re-runs both checks when `Vmcs.dirty` is non-empty
(control checks read guest CR0 too, so a guest-state write can change their outcome).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum

from vtemu.vmx.bits import bit_range, is_canonical, ones, within_physical_width
from vtemu.vmx.controls import (
    EPTP_RESERVED_LOW,
    ControlKind,
    EntryControls,
    EptVpidCap,
    Eptp,
    ExitControls,
    PinBasedControls,
    PrimaryProcessorControls,
    SecondaryProcessorControls,
    VmxCapabilities,
)
from vtemu.vmx.errors import VmInstructionErrorNumber
from vtemu.vmx.fields import GuestSegment, VmcsField, guest_segment_fields
from vtemu.vmx.interruption import (
    RESERVED_INTERRUPTION_TYPE,
    ExceptionVector,
    InterruptionInfo,
    InterruptionType,
    error_code_vectors,
)
from vtemu.vmx.reasons import ExitReason, ExitReasonField
from vtemu.vmx.state_formats import (
    ACCESS_RIGHTS_RESERVED,
    CODE_TYPES_ACCESSED,
    CODE_TYPES_CONFORMING,
    IA32_EFER_DEFINED,
    INTERRUPTIBILITY_RESERVED,
    PENDING_DEBUG_RESERVED,
    RFLAGS_RESERVED_ZERO,
    TYPE_BUSY_TSS_16,
    TYPE_BUSY_TSS_32,
    TYPE_DATA_READ_WRITE_ACCESSED,
    TYPE_LDT,
    AccessRights,
    ActivityState,
    Cr0,
    Cr4,
    Efer,
    Interruptibility,
    PendingDebugExceptions,
    Rflags,
)
from vtemu.vmx.vmcs import Vmcs


class FailureKind(Enum):
    INVALID_CONTROLS = "VMfailValid: VM entry with invalid control field(s)"
    INVALID_GUEST_STATE = "VM-entry failure due to invalid guest state"


class EntryFailureQualification(IntEnum):
    """Exit qualification of a VM-entry failure with exit reason 33 (SDM 26.8, 27.2.1)."""

    DEFAULT = 0
    PDPTE_LOAD = 2
    NMI_INJECTION_BLOCKED_BY_STI = 3
    INVALID_VMCS_LINK_POINTER = 4


@dataclass(frozen=True)
class EntryCheckFailure:
    """The first VM-entry check that failed, and how the processor reports it."""

    kind: FailureKind
    section: str
    rule: str
    message: str
    qualification: EntryFailureQualification = EntryFailureQualification.DEFAULT

    @property
    def instruction_error(self) -> VmInstructionErrorNumber | None:
        if self.kind is FailureKind.INVALID_CONTROLS:
            return VmInstructionErrorNumber.ENTRY_INVALID_CONTROL_FIELDS
        return None

    @property
    def exit_reason(self) -> ExitReasonField | None:
        if self.kind is FailureKind.INVALID_GUEST_STATE:
            return ExitReasonField.entry_failed(ExitReason.ENTRY_FAILURE_GUEST_STATE)
        return None

    def __str__(self) -> str:
        return f"{self.kind.value}: SDM {self.section} [{self.rule}] {self.message}"


# --- a memoising view of the VMCS --------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    selector: int
    base: int
    limit: int
    access_rights: AccessRights
    raw_access_rights: int

    @property
    def rpl(self) -> int:
        return self.selector & 3

    @property
    def ti(self) -> bool:
        return bool(self.selector & 4)


class _View:
    """Reads each field at most once per check run (guest fields may cost a vCPU register read)."""

    def __init__(self, vmcs: Vmcs, caps: VmxCapabilities) -> None:
        self.vmcs = vmcs
        self.caps = caps
        self._cache: dict[VmcsField, int] = {}

    def __getitem__(self, field: VmcsField) -> int:
        if field not in self._cache:
            self._cache[field] = self.vmcs.read(field)
        return self._cache[field]

    # controls
    @property
    def pin(self) -> PinBasedControls:
        return PinBasedControls(self[VmcsField.PIN_BASED_VM_EXEC_CONTROL])

    @property
    def primary(self) -> PrimaryProcessorControls:
        return PrimaryProcessorControls(self[VmcsField.CPU_BASED_VM_EXEC_CONTROL])

    @property
    def secondary(self) -> SecondaryProcessorControls:
        """SDM 24.6.2: with "activate secondary controls" = 0 every secondary control is 0."""
        if not self.primary & PrimaryProcessorControls.ACTIVATE_SECONDARY_CONTROLS:
            return SecondaryProcessorControls(0)
        return SecondaryProcessorControls(self[VmcsField.SECONDARY_VM_EXEC_CONTROL])

    @property
    def exit(self) -> ExitControls:
        return ExitControls(self[VmcsField.VM_EXIT_CONTROLS])

    @property
    def entry(self) -> EntryControls:
        return EntryControls(self[VmcsField.VM_ENTRY_CONTROLS])

    @property
    def unrestricted(self) -> bool:
        return bool(self.secondary & SecondaryProcessorControls.UNRESTRICTED_GUEST)

    @property
    def ia32e_guest(self) -> bool:
        return bool(self.entry & EntryControls.IA32E_MODE_GUEST)

    @property
    def injection_raw(self) -> int:
        return self[VmcsField.VM_ENTRY_INTR_INFO_FIELD]

    @property
    def injection(self) -> InterruptionInfo | None:
        """The event VM entry injects, or None (only decoded after the type was checked)."""
        raw = self.injection_raw
        return InterruptionInfo.decode(raw) if raw >> 31 else None

    def injects(self, *types: InterruptionType) -> bool:
        event = self.injection
        return event is not None and event.type in types

    # guest state
    @property
    def cr0(self) -> int:
        return self[VmcsField.GUEST_CR0]

    @property
    def cr4(self) -> int:
        return self[VmcsField.GUEST_CR4]

    @property
    def rflags(self) -> int:
        return self[VmcsField.GUEST_RFLAGS]

    @property
    def v8086(self) -> bool:
        return bool(self.rflags & Rflags.VM)

    @property
    def interruptibility(self) -> int:
        return self[VmcsField.GUEST_INTERRUPTIBILITY_INFO]

    @property
    def sti_or_mov_ss_blocking(self) -> bool:
        both = Interruptibility.BLOCKING_BY_STI | Interruptibility.BLOCKING_BY_MOV_SS
        return bool(self.interruptibility & both)

    @property
    def activity_state(self) -> int:
        return self[VmcsField.GUEST_ACTIVITY_STATE]

    def segment(self, segment: GuestSegment) -> _Segment:
        fields = guest_segment_fields(segment)
        raw = self[fields.access_rights]
        selector, base, limit = self[fields.selector], self[fields.base], self[fields.limit]
        return _Segment(selector, base, limit, AccessRights.decode(raw), raw)


Check = Callable[[_View], str | None]


@dataclass(frozen=True)
class Rule:
    section: str
    check: Check
    qualification: EntryFailureQualification = EntryFailureQualification.DEFAULT

    @property
    def name(self) -> str:
        return self.check.__name__


CONTROL_RULES: list[Rule] = []
GUEST_STATE_RULES: list[Rule] = []


def _rule(
    rules: list[Rule],
    section: str,
    qualification: EntryFailureQualification = EntryFailureQualification.DEFAULT,
) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        rules.append(Rule(section, check, qualification))
        return check

    return register


def check_controls(vmcs: Vmcs, caps: VmxCapabilities) -> EntryCheckFailure | None:
    """SDM 26.2.1: checks on VM-execution, VM-exit and VM-entry control fields."""
    return _first_failure(CONTROL_RULES, FailureKind.INVALID_CONTROLS, _View(vmcs, caps))


def check_guest_state(vmcs: Vmcs, caps: VmxCapabilities) -> EntryCheckFailure | None:
    """SDM 26.3.1: checks on the guest-state area (run only after the control checks passed)."""
    return _first_failure(GUEST_STATE_RULES, FailureKind.INVALID_GUEST_STATE, _View(vmcs, caps))


def _first_failure(rules: list[Rule], kind: FailureKind, view: _View) -> EntryCheckFailure | None:
    for rule in rules:
        message = rule.check(view)
        if message is not None:
            return EntryCheckFailure(kind, rule.section, rule.name, message, rule.qualification)
    return None


# --- shared predicates --------------------------------------------------------------------------


def _reserved_control_bits(view: _View, kind: ControlKind, value: int) -> str | None:
    violations = view.caps.capability(kind).violations(value)
    if violations:
        return f"{kind.value} {value:#010x} violate the allowed settings in bits {violations:#010x}"
    return None


def _page_address(view: _View, field: VmcsField, what: str) -> str | None:
    """A 4-KiB-aligned physical address within the physical-address width."""
    address = view[field]
    if address & ones(12) or not within_physical_width(address, view.caps.physical_address_width):
        return f"{what} {address:#x} must be 4-KiB aligned and below 2^{view.caps.physical_address_width}"
    return None


def _msr_area(view: _View, count_field: VmcsField, address_field: VmcsField, what: str) -> str | None:
    """26.2.1.2/26.2.1.3: a non-empty MSR list is 16-byte aligned and lies within the physical
    width; vtemu also refuses lists longer than IA32_VMX_MISC's recommended maximum (A.6 leaves
    that undefined)."""
    count = view[count_field]
    if count == 0:
        return None
    address = view[address_field]
    last_byte = address + count * 16 - 1
    width = view.caps.physical_address_width
    if address & ones(4):
        return f"{what} address {address:#x} must have bits 3:0 clear"
    if not within_physical_width(address, width) or not within_physical_width(last_byte, width):
        return f"{what} area {address:#x}..{last_byte:#x} must lie below 2^{width}"
    if count > view.caps.max_msr_list_entries:
        return f"{what} count {count} exceeds the supported maximum {view.caps.max_msr_list_entries} (A.6)"
    return None


def _granularity_consistent(limit: int, access_rights: AccessRights) -> bool:
    """26.3.1.2: G must be 0 unless limit bits 11:0 are all 1, and 1 if any of bits 31:20 is 1."""
    if limit & ones(12) != ones(12) and access_rights.granularity:
        return False
    if limit >> 20 and not access_rights.granularity:
        return False
    return True


_DATA_SEGMENTS = (GuestSegment.DS, GuestSegment.ES, GuestSegment.FS, GuestSegment.GS)
_CODE_AND_DATA_SEGMENTS = (GuestSegment.CS, GuestSegment.SS) + _DATA_SEGMENTS


def _checked_segments(view: _View) -> list[tuple[GuestSegment, _Segment]]:
    """CS always, SS/DS/ES/FS/GS when usable: the registers most 26.3.1.2 access-rights rules cover."""
    result = []
    for segment in _CODE_AND_DATA_SEGMENTS:
        state = view.segment(segment)
        if segment is GuestSegment.CS or state.access_rights.usable:
            result.append((segment, state))
    return result


# === 26.2.1.1 VM-execution control fields ========================================================


@_rule(CONTROL_RULES, "26.2.1.1")
def pin_based_reserved_bits(view: _View) -> str | None:
    return _reserved_control_bits(view, ControlKind.PIN, view.pin)


@_rule(CONTROL_RULES, "26.2.1.1")
def primary_reserved_bits(view: _View) -> str | None:
    return _reserved_control_bits(view, ControlKind.PRIMARY, view.primary)


@_rule(CONTROL_RULES, "26.2.1.1")
def secondary_reserved_bits(view: _View) -> str | None:
    """Checked only when "activate secondary controls" is 1 (otherwise the field is ignored)."""
    if not view.primary & PrimaryProcessorControls.ACTIVATE_SECONDARY_CONTROLS:
        return None
    return _reserved_control_bits(view, ControlKind.SECONDARY, view.secondary)


@_rule(CONTROL_RULES, "26.2.1.1")
def cr3_target_count(view: _View) -> str | None:
    count = view[VmcsField.CR3_TARGET_COUNT]
    if count > view.caps.cr3_target_count:
        return f"CR3-target count {count} exceeds {view.caps.cr3_target_count}"
    return None


@_rule(CONTROL_RULES, "26.2.1.1")
def io_bitmap_addresses(view: _View) -> str | None:
    if not view.primary & PrimaryProcessorControls.USE_IO_BITMAPS:
        return None
    return _page_address(view, VmcsField.IO_BITMAP_A, "I/O bitmap A address") or _page_address(
        view, VmcsField.IO_BITMAP_B, "I/O bitmap B address"
    )


@_rule(CONTROL_RULES, "26.2.1.1")
def msr_bitmap_address(view: _View) -> str | None:
    if not view.primary & PrimaryProcessorControls.USE_MSR_BITMAPS:
        return None
    return _page_address(view, VmcsField.MSR_BITMAP, "MSR-bitmap address")


@_rule(CONTROL_RULES, "26.2.1.1")
def virtual_nmis_require_nmi_exiting(view: _View) -> str | None:
    if view.pin & PinBasedControls.VIRTUAL_NMIS and not view.pin & PinBasedControls.NMI_EXITING:
        return '"virtual NMIs" must be 0 when "NMI exiting" is 0'
    return None


@_rule(CONTROL_RULES, "26.2.1.1")
def nmi_window_requires_virtual_nmis(view: _View) -> str | None:
    nmi_window = view.primary & PrimaryProcessorControls.NMI_WINDOW_EXITING
    if nmi_window and not view.pin & PinBasedControls.VIRTUAL_NMIS:
        return '"NMI-window exiting" must be 0 when "virtual NMIs" is 0'
    return None


@_rule(CONTROL_RULES, "26.2.1.1")
def vpid_nonzero(view: _View) -> str | None:
    if view.secondary & SecondaryProcessorControls.ENABLE_VPID and view[VmcsField.VIRTUAL_PROCESSOR_ID] == 0:
        return 'with "enable VPID" the VPID must not be 0000H'
    return None


def _eptp(view: _View) -> Eptp | None:
    if not view.secondary & SecondaryProcessorControls.ENABLE_EPT:
        return None
    return Eptp.decode(view[VmcsField.EPT_POINTER])


@_rule(CONTROL_RULES, "26.2.1.1")
def eptp_memory_type(view: _View) -> str | None:
    eptp = _eptp(view)
    if eptp is not None and eptp.memory_type not in view.caps.ept_memory_types():
        return f"EPTP memory type {eptp.memory_type} is not supported (IA32_VMX_EPT_VPID_CAP bits 8, 14)"
    return None


@_rule(CONTROL_RULES, "26.2.1.1")
def eptp_walk_length(view: _View) -> str | None:
    eptp = _eptp(view)
    if eptp is not None and eptp.walk_length not in view.caps.ept_walk_lengths():
        supported = sorted(view.caps.ept_walk_lengths())
        return f"EPTP bits 5:3 give a {eptp.walk_length}-level walk; supported: {supported}"
    return None


@_rule(CONTROL_RULES, "26.2.1.1")
def eptp_accessed_dirty(view: _View) -> str | None:
    eptp = _eptp(view)
    if eptp is not None and eptp.accessed_dirty and not view.caps.ept_vpid & EptVpidCap.ACCESSED_DIRTY:
        return "EPTP bit 6 (A/D flags) must be 0: IA32_VMX_EPT_VPID_CAP bit 21 is 0"
    return None


@_rule(CONTROL_RULES, "26.2.1.1")
def eptp_reserved_bits(view: _View) -> str | None:
    eptp = _eptp(view)
    if eptp is None:
        return None
    raw = view[VmcsField.EPT_POINTER]
    shadow_stack_supported = bool(view.caps.ept_vpid & EptVpidCap.SUPERVISOR_SHADOW_STACK)
    shadow_stack_unsupported = eptp.supervisor_shadow_stack and not shadow_stack_supported
    if raw & EPTP_RESERVED_LOW or shadow_stack_unsupported:
        return f"EPTP {raw:#x}: bits 11:8 are reserved (and bit 7 without supervisor shadow-stack support)"
    if not within_physical_width(raw, view.caps.physical_address_width):
        return f"EPTP {raw:#x} sets bits beyond the physical-address width {view.caps.physical_address_width}"
    return None


@_rule(CONTROL_RULES, "26.2.1.1")
def unrestricted_guest_requires_ept(view: _View) -> str | None:
    if view.unrestricted and not view.secondary & SecondaryProcessorControls.ENABLE_EPT:
        return '"unrestricted guest" requires "enable EPT"'
    return None


# === 26.2.1.2 VM-exit control fields ============================================================


@_rule(CONTROL_RULES, "26.2.1.2")
def exit_reserved_bits(view: _View) -> str | None:
    return _reserved_control_bits(view, ControlKind.EXIT, view.exit)


@_rule(CONTROL_RULES, "26.2.1.2")
def save_timer_requires_timer(view: _View) -> str | None:
    timer = view.pin & PinBasedControls.ACTIVATE_PREEMPTION_TIMER
    if view.exit & ExitControls.SAVE_PREEMPTION_TIMER and not timer:
        return '"save VMX-preemption timer value" must be 0 when "activate VMX-preemption timer" is 0'
    return None


@_rule(CONTROL_RULES, "26.2.1.2")
def exit_msr_store_area(view: _View) -> str | None:
    count, address = VmcsField.VM_EXIT_MSR_STORE_COUNT, VmcsField.VM_EXIT_MSR_STORE_ADDR
    return _msr_area(view, count, address, "VM-exit MSR-store")


@_rule(CONTROL_RULES, "26.2.1.2")
def exit_msr_load_area(view: _View) -> str | None:
    count, address = VmcsField.VM_EXIT_MSR_LOAD_COUNT, VmcsField.VM_EXIT_MSR_LOAD_ADDR
    return _msr_area(view, count, address, "VM-exit MSR-load")


# === 26.2.1.3 VM-entry control fields ===========================================================


@_rule(CONTROL_RULES, "26.2.1.3")
def entry_reserved_bits(view: _View) -> str | None:
    return _reserved_control_bits(view, ControlKind.ENTRY, view.entry)


@_rule(CONTROL_RULES, "26.2.1.3")
def injection_type_not_reserved(view: _View) -> str | None:
    """Type 1 is always reserved; type 7 ("other event") needs the monitor trap flag."""
    raw = view.injection_raw
    if not raw >> 31:
        return None
    kind = bit_range(raw, 10, 8)
    if kind == RESERVED_INTERRUPTION_TYPE:
        return "interruption type 1 is reserved"
    mtf_supported = view.caps.supports(PrimaryProcessorControls.MONITOR_TRAP_FLAG)
    if kind == InterruptionType.OTHER_EVENT and not mtf_supported:
        return 'interruption type 7 (other event) needs support for "monitor trap flag"'
    return None


@_rule(CONTROL_RULES, "26.2.1.3")
def injection_reserved_bits(view: _View) -> str | None:
    raw = view.injection_raw
    if raw >> 31 and bit_range(raw, 30, 12):
        return f"interruption-information bits 30:12 must be 0 (field {raw:#010x})"
    return None


@_rule(CONTROL_RULES, "26.2.1.3")
def injection_vector_matches_type(view: _View) -> str | None:
    event = view.injection
    if event is None:
        return None
    if event.type is InterruptionType.NMI and event.vector != ExceptionVector.NMI:
        return f"an NMI must use vector 2, not {event.vector}"
    if event.type is InterruptionType.HARDWARE_EXCEPTION and event.vector > 31:
        return f"a hardware exception must have a vector of at most 31, not {event.vector}"
    if event.type is InterruptionType.OTHER_EVENT and event.vector != 0:
        return f"an other event must use vector 0 (pending MTF VM exit), not {event.vector}"
    return None


@_rule(CONTROL_RULES, "26.2.1.3")
def injection_error_code_matches_vector(view: _View) -> str | None:
    """Deliver-error-code is 1 iff (unrestricted guest = 0 or guest CR0.PE = 1) and the event is a
    hardware exception whose vector pushes an error code (#CP only with CET). Later editions drop
    the unrestricted-guest clause and add IA32_VMX_BASIC[56]; vtemu reports [56] = 0."""
    event = view.injection
    if event is None:
        return None
    protected = not view.unrestricted or bool(view.cr0 & Cr0.PE)
    cet = view.caps.supports(EntryControls.LOAD_CET_STATE)
    hardware_exception = protected and event.type is InterruptionType.HARDWARE_EXCEPTION
    expected = hardware_exception and event.vector in error_code_vectors(cet=cet)
    if view.caps.any_exception_error_code and event.deliver_error_code:
        expected = hardware_exception
    if event.deliver_error_code != expected:
        return f"deliver-error-code must be {int(expected)} for type {event.type.name}, vector {event.vector}"
    return None


@_rule(CONTROL_RULES, "26.2.1.3")
def injection_error_code_reserved_bits(view: _View) -> str | None:
    """Bits 31:16 of the VM-entry exception error code must be 0 (31:15 in the 2016 edition)."""
    event = view.injection
    if event is None or not event.deliver_error_code:
        return None
    error_code = view[VmcsField.VM_ENTRY_EXCEPTION_ERROR_CODE]
    if error_code >> 16:
        return f"VM-entry exception error code {error_code:#x} must have bits 31:16 clear"
    return None


@_rule(CONTROL_RULES, "26.2.1.3")
def injection_instruction_length(view: _View) -> str | None:
    """Software interrupts and exceptions need a length of 1..15 (0 only if IA32_VMX_MISC[30])."""
    event = view.injection
    if event is None or not event.type.is_software:
        return None
    length = view[VmcsField.VM_ENTRY_INSTRUCTION_LEN]
    minimum = 0 if view.caps.zero_length_injection else 1
    if not minimum <= length <= 15:
        return f"VM-entry instruction length {length} is outside {minimum}..15 for a {event.type.name}"
    return None


@_rule(CONTROL_RULES, "26.2.1.3")
def entry_msr_load_area(view: _View) -> str | None:
    count, address = VmcsField.VM_ENTRY_MSR_LOAD_COUNT, VmcsField.VM_ENTRY_MSR_LOAD_ADDR
    return _msr_area(view, count, address, "VM-entry MSR-load")


# === 26.3.1.1 guest control registers, debug registers and MSRs ================================


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def cr0_fixed_bits(view: _View) -> str | None:
    """IA32_VMX_CR0_FIXED0/1 (A.7); "unrestricted guest" exempts PE and PG from FIXED0."""
    must_be_one = view.caps.cr0_fixed0
    if view.unrestricted:
        must_be_one &= ~int(Cr0.PE | Cr0.PG)
    cr0 = view.cr0
    if cr0 & must_be_one != must_be_one or cr0 & ~view.caps.cr0_fixed1:
        return f"guest CR0 {cr0:#x} violates FIXED0 {must_be_one:#x} / FIXED1 {view.caps.cr0_fixed1:#x}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def cr0_pg_requires_pe(view: _View) -> str | None:
    if view.cr0 & Cr0.PG and not view.cr0 & Cr0.PE:
        return "guest CR0.PG = 1 requires CR0.PE = 1"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def cr4_fixed_bits(view: _View) -> str | None:
    cr4, fixed0, fixed1 = view.cr4, view.caps.cr4_fixed0, view.caps.cr4_fixed1
    if cr4 & fixed0 != fixed0 or cr4 & ~fixed1:
        return f"guest CR4 {cr4:#x} violates FIXED0 {fixed0:#x} / FIXED1 {fixed1:#x}"
    return None


# vtemu's IA32_DEBUGCTL implements LBR (bit 0) and BTF (bit 1); every other bit is reserved for it
# (SDM Vol. 3B 17.4.1), so "load debug controls" requires them to be 0.
IA32_DEBUGCTL_SUPPORTED = 0b11


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def debugctl_reserved_bits(view: _View) -> str | None:
    if not view.entry & EntryControls.LOAD_DEBUG_CONTROLS:
        return None
    debugctl = view[VmcsField.GUEST_IA32_DEBUGCTL]
    if debugctl & ~IA32_DEBUGCTL_SUPPORTED:
        return f"guest IA32_DEBUGCTL {debugctl:#x} sets reserved bits"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def ia32e_guest_requires_paging(view: _View) -> str | None:
    if view.ia32e_guest and not (view.cr0 & Cr0.PG and view.cr4 & Cr4.PAE):
        return '"IA-32e mode guest" requires guest CR0.PG = 1 and CR4.PAE = 1'
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def pcide_requires_ia32e_guest(view: _View) -> str | None:
    if not view.ia32e_guest and view.cr4 & Cr4.PCIDE:
        return 'guest CR4.PCIDE must be 0 when "IA-32e mode guest" is 0'
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def cr3_within_physical_width(view: _View) -> str | None:
    cr3 = view[VmcsField.GUEST_CR3]
    if not within_physical_width(cr3, view.caps.physical_address_width):
        return f"guest CR3 {cr3:#x} sets bits beyond the physical-address width"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def dr7_upper_bits(view: _View) -> str | None:
    if view.entry & EntryControls.LOAD_DEBUG_CONTROLS and view[VmcsField.GUEST_DR7] >> 32:
        return "guest DR7 bits 63:32 must be 0 with \"load debug controls\""
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def sysenter_addresses_canonical(view: _View) -> str | None:
    for field in (VmcsField.GUEST_SYSENTER_ESP, VmcsField.GUEST_SYSENTER_EIP):
        if not is_canonical(view[field], view.caps.linear_address_width):
            return f"{field.name} {view[field]:#x} is not canonical"
    return None


_VALID_PAT_TYPES = frozenset({0, 1, 4, 5, 6, 7})  # UC, WC, WT, WP, WB, UC- (Vol. 3A 11.12.2)


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def pat_entries_valid(view: _View) -> str | None:
    if not view.entry & EntryControls.LOAD_IA32_PAT:
        return None
    pat = view[VmcsField.GUEST_IA32_PAT]
    for entry in range(8):
        if bit_range(pat, 8 * entry + 7, 8 * entry) not in _VALID_PAT_TYPES:
            return f"guest IA32_PAT {pat:#018x}: PA{entry} is not 0, 1, 4, 5, 6 or 7"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def efer_reserved_bits(view: _View) -> str | None:
    if view.entry & EntryControls.LOAD_IA32_EFER and view[VmcsField.GUEST_IA32_EFER] & ~IA32_EFER_DEFINED:
        return f"guest IA32_EFER {view[VmcsField.GUEST_IA32_EFER]:#x} sets reserved bits"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def efer_lma_matches_ia32e_guest(view: _View) -> str | None:
    if not view.entry & EntryControls.LOAD_IA32_EFER:
        return None
    lma = bool(view[VmcsField.GUEST_IA32_EFER] & Efer.LMA)
    if lma != view.ia32e_guest:
        return f'guest IA32_EFER.LMA = {int(lma)} must equal "IA-32e mode guest" = {int(view.ia32e_guest)}'
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.1")
def efer_lme_matches_lma_with_paging(view: _View) -> str | None:
    if not view.entry & EntryControls.LOAD_IA32_EFER or not view.cr0 & Cr0.PG:
        return None
    efer = view[VmcsField.GUEST_IA32_EFER]
    if bool(efer & Efer.LMA) != bool(efer & Efer.LME):
        return f"guest IA32_EFER {efer:#x}: with CR0.PG = 1, LMA must equal LME"
    return None


# === 26.3.1.2 guest segment registers ==========================================================


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def tr_selector_ti(view: _View) -> str | None:
    if view.segment(GuestSegment.TR).ti:
        return "TR selector must have TI = 0 (the TSS descriptor lives in the GDT)"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def ldtr_selector_ti(view: _View) -> str | None:
    ldtr = view.segment(GuestSegment.LDTR)
    if ldtr.access_rights.usable and ldtr.ti:
        return "a usable LDTR selector must have TI = 0"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def ss_rpl_matches_cs_rpl(view: _View) -> str | None:
    if view.v8086 or view.unrestricted:
        return None
    ss, cs = view.segment(GuestSegment.SS), view.segment(GuestSegment.CS)
    if ss.rpl != cs.rpl:
        return f"SS.RPL {ss.rpl} must equal CS.RPL {cs.rpl}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def virtual_8086_segments(view: _View) -> str | None:
    """In virtual-8086 mode each of CS, SS, DS, ES, FS, GS has base = selector * 16, limit FFFFh and
    access rights F3h."""
    if not view.v8086:
        return None
    for segment in _CODE_AND_DATA_SEGMENTS:
        state = view.segment(segment)
        if state.base != state.selector << 4 or state.limit != 0xFFFF or state.raw_access_rights != 0xF3:
            found = f"base {state.base:#x}, limit {state.limit:#x}, AR {state.raw_access_rights:#x}"
            return f"virtual-8086 {segment.name} needs base = selector * 16, limit FFFFh, AR F3h: {found}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def segment_bases_canonical(view: _View) -> str | None:
    """TR, FS, GS bases (and LDTR's when usable) must be canonical."""
    for segment in (GuestSegment.TR, GuestSegment.FS, GuestSegment.GS, GuestSegment.LDTR):
        state = view.segment(segment)
        if segment is GuestSegment.LDTR and state.access_rights.unusable:
            continue
        if not is_canonical(state.base, view.caps.linear_address_width):
            return f"{segment.name} base {state.base:#x} is not canonical"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def segment_bases_32bit(view: _View) -> str | None:
    """Bits 63:32 of the CS base (and of SS, DS, ES bases when usable) must be 0."""
    for segment in (GuestSegment.CS, GuestSegment.SS, GuestSegment.DS, GuestSegment.ES):
        state = view.segment(segment)
        if (segment is GuestSegment.CS or state.access_rights.usable) and state.base >> 32:
            return f"{segment.name} base {state.base:#x} must have bits 63:32 clear"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def cs_type(view: _View) -> str | None:
    if view.v8086:
        return None
    allowed = set(CODE_TYPES_ACCESSED)
    if view.unrestricted:
        allowed.add(TYPE_DATA_READ_WRITE_ACCESSED)
    cs = view.segment(GuestSegment.CS).access_rights
    if cs.type not in allowed:
        return f"CS type {cs.type} must be one of {sorted(allowed)}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def ss_type(view: _View) -> str | None:
    ss = view.segment(GuestSegment.SS).access_rights
    if not view.v8086 and ss.usable and ss.type not in (3, 7):
        return f"a usable SS must be a read/write accessed data segment (type 3 or 7), not {ss.type}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def data_segment_types(view: _View) -> str | None:
    """Usable DS, ES, FS, GS: accessed, and readable if they are code segments."""
    if view.v8086:
        return None
    for segment in _DATA_SEGMENTS:
        ar = view.segment(segment).access_rights
        if ar.usable and (not ar.accessed or (ar.code and not ar.readable_or_writable)):
            return f"{segment.name} type {ar.type} must be accessed (and readable if code)"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def code_data_s_bit(view: _View) -> str | None:
    if view.v8086:
        return None
    for segment, state in _checked_segments(view):
        if not state.access_rights.s:
            return f"{segment.name} must be a code or data segment (S = 1)"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def cs_dpl(view: _View) -> str | None:
    """Type 3 (unrestricted guest): DPL 0; non-conforming code: DPL = SS.DPL; conforming: DPL <= SS.DPL."""
    if view.v8086:
        return None
    cs = view.segment(GuestSegment.CS).access_rights
    ss_dpl = view.segment(GuestSegment.SS).access_rights.dpl
    if cs.type == TYPE_DATA_READ_WRITE_ACCESSED and cs.dpl != 0:
        return f"CS type 3 requires DPL 0, not {cs.dpl}"
    if cs.type in CODE_TYPES_ACCESSED - CODE_TYPES_CONFORMING and cs.dpl != ss_dpl:
        return f"non-conforming CS DPL {cs.dpl} must equal SS.DPL {ss_dpl}"
    if cs.type in CODE_TYPES_CONFORMING and cs.dpl > ss_dpl:
        return f"conforming CS DPL {cs.dpl} must not exceed SS.DPL {ss_dpl}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def ss_dpl(view: _View) -> str | None:
    """Without unrestricted guest SS.DPL = SS.RPL; with CS type 3 or CR0.PE = 0 it must be 0."""
    if view.v8086:
        return None
    ss = view.segment(GuestSegment.SS)
    if not view.unrestricted and ss.access_rights.dpl != ss.rpl:
        return f"SS.DPL {ss.access_rights.dpl} must equal SS.RPL {ss.rpl}"
    cs_is_data = view.segment(GuestSegment.CS).access_rights.type == TYPE_DATA_READ_WRITE_ACCESSED
    real_mode_like = cs_is_data or not view.cr0 & Cr0.PE
    if real_mode_like and ss.access_rights.dpl != 0:
        return f"SS.DPL must be 0 when CS type is 3 or CR0.PE = 0, not {ss.access_rights.dpl}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def data_segment_dpl(view: _View) -> str | None:
    """Without unrestricted guest, usable DS/ES/FS/GS of types 0-11 need DPL >= RPL."""
    if view.v8086 or view.unrestricted:
        return None
    for segment in _DATA_SEGMENTS:
        state = view.segment(segment)
        ar = state.access_rights
        if ar.usable and ar.type <= 11 and ar.dpl < state.rpl:
            return f"{segment.name} DPL {ar.dpl} is below its RPL {state.rpl}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def code_data_present(view: _View) -> str | None:
    if view.v8086:
        return None
    for segment, state in _checked_segments(view):
        if not state.access_rights.present:
            return f"{segment.name} must be present (P = 1)"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def code_data_reserved_bits(view: _View) -> str | None:
    if view.v8086:
        return None
    for segment, state in _checked_segments(view):
        if state.raw_access_rights & ACCESS_RIGHTS_RESERVED:
            rights = state.raw_access_rights
            return f"{segment.name} access rights {rights:#x} set reserved bits 11:8 or 31:17"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def cs_db_in_64bit_mode(view: _View) -> str | None:
    cs = view.segment(GuestSegment.CS).access_rights
    if not view.v8086 and view.ia32e_guest and cs.long and cs.default_big:
        return "in IA-32e mode a 64-bit CS (L = 1) must have D/B = 0"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def code_data_granularity(view: _View) -> str | None:
    if view.v8086:
        return None
    for segment, state in _checked_segments(view):
        if not _granularity_consistent(state.limit, state.access_rights):
            granularity = int(state.access_rights.granularity)
            return f"{segment.name} limit {state.limit:#x} is inconsistent with G = {granularity}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def tr_type(view: _View) -> str | None:
    """TR must hold a busy TSS: 16-bit (3) or 32-bit (11) outside IA-32e mode, 64-bit (11) in it."""
    tr_type_value = view.segment(GuestSegment.TR).access_rights.type
    allowed = (TYPE_BUSY_TSS_32,) if view.ia32e_guest else (TYPE_BUSY_TSS_16, TYPE_BUSY_TSS_32)
    if tr_type_value not in allowed:
        return f"TR type {tr_type_value} must be one of {list(allowed)}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def tr_descriptor(view: _View) -> str | None:
    tr = view.segment(GuestSegment.TR)
    ar = tr.access_rights
    if ar.s or not ar.present or ar.unusable or tr.raw_access_rights & ACCESS_RIGHTS_RESERVED:
        return f"TR access rights {tr.raw_access_rights:#x}: need S = 0, P = 1, usable, reserved bits 0"
    if not _granularity_consistent(tr.limit, ar):
        return f"TR limit {tr.limit:#x} is inconsistent with G = {int(ar.granularity)}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.2")
def ldtr_descriptor(view: _View) -> str | None:
    ldtr = view.segment(GuestSegment.LDTR)
    ar = ldtr.access_rights
    if ar.unusable:
        return None
    if ar.type != TYPE_LDT or ar.s or not ar.present or ldtr.raw_access_rights & ACCESS_RIGHTS_RESERVED:
        rights = ldtr.raw_access_rights
        return f"usable LDTR access rights {rights:#x}: need type 2, S = 0, P = 1, reserved bits 0"
    if not _granularity_consistent(ldtr.limit, ar):
        return f"LDTR limit {ldtr.limit:#x} is inconsistent with G = {int(ar.granularity)}"
    return None


# === 26.3.1.3 descriptor-table registers =======================================================


@_rule(GUEST_STATE_RULES, "26.3.1.3")
def descriptor_table_bases_canonical(view: _View) -> str | None:
    for field in (VmcsField.GUEST_GDTR_BASE, VmcsField.GUEST_IDTR_BASE):
        if not is_canonical(view[field], view.caps.linear_address_width):
            return f"{field.name} {view[field]:#x} is not canonical"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.3")
def descriptor_table_limits(view: _View) -> str | None:
    for field in (VmcsField.GUEST_GDTR_LIMIT, VmcsField.GUEST_IDTR_LIMIT):
        if view[field] >> 16:
            return f"{field.name} {view[field]:#x} must have bits 31:16 clear"
    return None


# === 26.3.1.4 RIP and RFLAGS ====================================================================


@_rule(GUEST_STATE_RULES, "26.3.1.4")
def rip_upper_bits(view: _View) -> str | None:
    """Bits 63:32 are 0 unless the guest is in 64-bit mode; in 64-bit mode bits 63:N (N = linear-
    address width) are identical. That is the SDM's wording, weaker than canonical (bit N-1 is
    free): a RIP that passes but is not canonical faults on the first fetch, as on hardware."""
    rip = view[VmcsField.GUEST_RIP]
    width = view.caps.linear_address_width
    in_64bit_mode = view.ia32e_guest and view.segment(GuestSegment.CS).access_rights.long
    if not in_64bit_mode and rip >> 32:
        return f"guest RIP {rip:#x} must have bits 63:32 clear outside 64-bit mode"
    if in_64bit_mode and bit_range(rip, 63, width) not in (0, ones(64 - width)):
        return f"guest RIP {rip:#x} must have bits 63:{width} identical"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.4")
def rflags_reserved_bits(view: _View) -> str | None:
    rflags = view.rflags
    if rflags & RFLAGS_RESERVED_ZERO or not rflags & Rflags.FIXED1:
        return f"guest RFLAGS {rflags:#x}: bits 63:22, 15, 5, 3 must be 0 and bit 1 must be 1"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.4")
def rflags_vm_outside_protected_mode(view: _View) -> str | None:
    if view.v8086 and (view.ia32e_guest or not view.cr0 & Cr0.PE):
        return "RFLAGS.VM must be 0 in IA-32e mode and when CR0.PE = 0"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.4")
def rflags_if_for_external_interrupt(view: _View) -> str | None:
    if view.injects(InterruptionType.EXTERNAL_INTERRUPT) and not view.rflags & Rflags.IF:
        return "injecting an external interrupt requires RFLAGS.IF = 1"
    return None


# === 26.3.1.5 non-register state ================================================================


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def activity_state_supported(view: _View) -> str | None:
    state = view.activity_state
    defined = state in ActivityState.__members__.values()
    if not defined or not view.caps.supports_activity_state(ActivityState(state)):
        return f"activity state {state} is not supported (IA32_VMX_MISC bits 8:6)"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def hlt_requires_ss_dpl_0(view: _View) -> str | None:
    if view.activity_state == ActivityState.HLT and view.segment(GuestSegment.SS).access_rights.dpl != 0:
        return "the HLT activity state requires SS.DPL = 0"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def active_when_blocking_by_sti_or_mov_ss(view: _View) -> str | None:
    if view.sti_or_mov_ss_blocking and view.activity_state != ActivityState.ACTIVE:
        return "blocking by STI or MOV SS requires the active activity state"
    return None


def _injectable_in(state: int, event: InterruptionInfo) -> bool:
    """Events VM entry may inject into a non-active activity state (26.3.1.5)."""
    if state == ActivityState.HLT:
        if event.type in (InterruptionType.EXTERNAL_INTERRUPT, InterruptionType.NMI):
            return True
        if event.type is InterruptionType.HARDWARE_EXCEPTION:
            return event.vector in (ExceptionVector.DB, ExceptionVector.MC)
        return event.type is InterruptionType.OTHER_EVENT and event.vector == 0
    if state == ActivityState.SHUTDOWN:
        return event.type is InterruptionType.NMI or (
            event.type is InterruptionType.HARDWARE_EXCEPTION and event.vector == ExceptionVector.MC
        )
    return state == ActivityState.ACTIVE


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def injection_allowed_in_activity_state(view: _View) -> str | None:
    """HLT: external interrupts, NMIs, #DB, #MC, MTF; shutdown: NMIs and #MC; wait-for-SIPI: none."""
    event = view.injection
    if event is not None and not _injectable_in(view.activity_state, event):
        state = view.activity_state
        return f"cannot inject {event.type.name} vector {event.vector} in activity state {state}"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def interruptibility_reserved_bits(view: _View) -> str | None:
    """Bits 31:5 are reserved; bit 4 (enclave interruption) needs SGX, which vtemu lacks."""
    value = view.interruptibility
    if value & (INTERRUPTIBILITY_RESERVED | Interruptibility.ENCLAVE_INTERRUPTION):
        return f"interruptibility state {value:#x} sets reserved bits (31:5, and bit 4 without SGX)"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def sti_and_mov_ss_blocking_exclusive(view: _View) -> str | None:
    both = Interruptibility.BLOCKING_BY_STI | Interruptibility.BLOCKING_BY_MOV_SS
    if view.interruptibility & both == both:
        return "blocking by STI and blocking by MOV SS cannot both be 1"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def sti_blocking_requires_if(view: _View) -> str | None:
    if view.interruptibility & Interruptibility.BLOCKING_BY_STI and not view.rflags & Rflags.IF:
        return "blocking by STI requires RFLAGS.IF = 1"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def external_interrupt_injection_unblocked(view: _View) -> str | None:
    if view.injects(InterruptionType.EXTERNAL_INTERRUPT) and view.sti_or_mov_ss_blocking:
        return "injecting an external interrupt requires no blocking by STI or MOV SS"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def nmi_injection_not_blocked_by_mov_ss(view: _View) -> str | None:
    """vtemu does not impose the optional "no blocking by STI" rule for NMIs (qualification 3)."""
    if view.injects(InterruptionType.NMI) and view.interruptibility & Interruptibility.BLOCKING_BY_MOV_SS:
        return "injecting an NMI requires no blocking by MOV SS"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def smi_blocking_outside_smm(view: _View) -> str | None:
    """vtemu never runs VM entry from SMM, so blocking by SMI must be 0."""
    if view.interruptibility & Interruptibility.BLOCKING_BY_SMI:
        return "blocking by SMI must be 0 outside SMM"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def virtual_nmi_injection_unblocked(view: _View) -> str | None:
    if (
        view.pin & PinBasedControls.VIRTUAL_NMIS
        and view.injects(InterruptionType.NMI)
        and view.interruptibility & Interruptibility.BLOCKING_BY_NMI
    ):
        return 'with "virtual NMIs", injecting an NMI requires blocking by NMI = 0'
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def pending_debug_reserved_bits(view: _View) -> str | None:
    """Bits 11:4, 13, 15, 63:17 are reserved; bit 16 (RTM) needs RTM, which vtemu lacks."""
    value = view[VmcsField.GUEST_PENDING_DBG_EXCEPTIONS]
    if value & (PENDING_DEBUG_RESERVED | PendingDebugExceptions.RTM):
        return f"pending debug exceptions {value:#x} set reserved bits"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5")
def pending_debug_single_step(view: _View) -> str | None:
    """With STI/MOV-SS blocking or HLT, BS must be 1 iff RFLAGS.TF = 1 and IA32_DEBUGCTL.BTF = 0."""
    if not view.sti_or_mov_ss_blocking and view.activity_state != ActivityState.HLT:
        return None
    btf = bool(view[VmcsField.GUEST_IA32_DEBUGCTL] & 0b10)
    expected = bool(view.rflags & Rflags.TF) and not btf
    bs = bool(view[VmcsField.GUEST_PENDING_DBG_EXCEPTIONS] & PendingDebugExceptions.BS)
    if bs != expected:
        return f"pending-debug BS must be {int(expected)} (RFLAGS.TF and not IA32_DEBUGCTL.BTF)"
    return None


NO_VMCS_LINK = ones(64)


@_rule(GUEST_STATE_RULES, "26.3.1.5", EntryFailureQualification.INVALID_VMCS_LINK_POINTER)
def vmcs_link_pointer_format(view: _View) -> str | None:
    link = view[VmcsField.VMCS_LINK_POINTER]
    if link == NO_VMCS_LINK:
        return None
    if link & ones(12) or not within_physical_width(link, view.caps.physical_address_width):
        return f"VMCS link pointer {link:#x} must be 4-KiB aligned and within the physical-address width"
    return None


@_rule(GUEST_STATE_RULES, "26.3.1.5", EntryFailureQualification.INVALID_VMCS_LINK_POINTER)
def vmcs_link_pointer_unused(view: _View) -> str | None:
    """vtemu has no VMCS shadowing and no SMM, so a linked VMCS is never valid: the pointer must be
    FFFFFFFF_FFFFFFFFh (the SDM would next check the revision identifier at that address)."""
    link = view[VmcsField.VMCS_LINK_POINTER]
    if link != NO_VMCS_LINK:
        return f"VMCS link pointer {link:#x} must be FFFFFFFF_FFFFFFFFh (vtemu has no VMCS shadowing)"
    return None


# === 26.3.1.6 PDPTEs (PAE paging with EPT: the VMCS PDPTE fields) ================================

_PDPTE_RESERVED_LOW = (ones(2) << 1) | (ones(4) << 5)  # bits 2:1 and 8:5 (Vol. 3A 4.4.1 Table 4-8)
_PDPTE_FIELDS = (
    VmcsField.GUEST_PDPTE0, VmcsField.GUEST_PDPTE1, VmcsField.GUEST_PDPTE2, VmcsField.GUEST_PDPTE3
)


@_rule(GUEST_STATE_RULES, "26.3.1.6", EntryFailureQualification.PDPTE_LOAD)
def pdptes_valid(view: _View) -> str | None:
    """With EPT, a PAE-paging guest's PDPTE fields must pass MOV-to-CR3's checks. (Without EPT the
    PDPTEs come from guest memory; the VM-entry code that loads them reports qualification 2.)"""
    pae_paging = view.cr0 & Cr0.PG and view.cr4 & Cr4.PAE and not view.ia32e_guest
    if not pae_paging or not view.secondary & SecondaryProcessorControls.ENABLE_EPT:
        return None
    for field in _PDPTE_FIELDS:
        pdpte = view[field]
        beyond_width = not within_physical_width(pdpte, view.caps.physical_address_width)
        reserved = pdpte & _PDPTE_RESERVED_LOW or beyond_width
        if pdpte & 1 and reserved:
            return f"{field.name} {pdpte:#x} is present with reserved bits set"
    return None
