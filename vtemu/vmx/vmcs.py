"""The VMCS as data: field values keyed by SDM encoding, with VMREAD/VMWRITE semantics.

`read`/`write` behave as VMREAD/VMWRITE do for software (SDM 30.3 and 24.11.2): unknown or
unsupported encodings fail with VM-instruction error 12, writes to VM-exit information fields
fail with error 13 (vtemu reports IA32_VMX_MISC[29] = 0), values are cut to the field's width
and a high access (odd encoding of a 64-bit field) reaches bits 63:32 only. The processor side
(VM exits recording their information, VM entry clearing the injection valid bit) uses
`record_exit_info` and `cpu_write`, which the SDM's software-visible refusals do not apply to.

Guest-state fields can live elsewhere: with a `GuestStateBackend` every guest-state access goes
to it (vtemu's backend maps them onto the live vCPU registers, so nothing is copied at VM entry
or exit); without one they are stored here like any other field.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from vtemu.vmx.bits import ones
from vtemu.vmx.controls import VmxCapabilities
from vtemu.vmx.errors import VmInstructionErrorNumber, VmxInstructionError
from vtemu.vmx.fields import FieldType, VmcsField


class GuestStateBackend(Protocol):
    """Where guest-state fields really live. Fields are always full (even) encodings."""

    def read_field(self, field: VmcsField) -> int: ...

    def write_field(self, field: VmcsField, value: int) -> None: ...


class ExitInformation(Protocol):
    """The fields of one VM exit's information area (SDM 24.9); None for fields it lacks."""

    def value(self, field: VmcsField) -> int | None: ...


class LaunchState(Enum):
    """SDM 24.1: VMCLEAR makes a VMCS clear, a successful VMLAUNCH makes it launched."""

    CLEAR = "clear"
    LAUNCHED = "launched"


class Vmcs:
    """One VMCS: storage, VMREAD/VMWRITE accessors and a record of what software changed.

    Dirty tracking: every successful `write` adds the (full) field to `dirty` until
    `clear_dirty()`. VM entry uses it to skip re-checking state nobody touched since the last
    successful entry: guest state saved by a VM exit was produced by the CPU and is valid, so
    only fields the hypervisor rewrote can break an entry check. Processor-side writes
    (`record_exit_info`, `cpu_write`) are therefore not tracked.
    """

    def __init__(
        self, guest_state: GuestStateBackend | None = None, *, capabilities: VmxCapabilities | None = None
    ) -> None:
        caps = capabilities if capabilities is not None else VmxCapabilities()
        self._supported = caps.supported_fields()
        self._vmwrite_any_field = caps.vmwrite_any_field
        self._guest_state = guest_state
        self._values: dict[VmcsField, int] = {}
        self._dirty: set[VmcsField] = set()
        self._exit_information: ExitInformation | None = None
        self.launch_state = LaunchState.CLEAR

    # --- VMREAD / VMWRITE -----------------------------------------------------------------
    def read(self, field: VmcsField | int) -> int:
        """VMREAD: the field's value (bits 63:32 for a high access)."""
        resolved = self._resolve(field)
        value = self._load(resolved.full)
        return value >> 32 if resolved.is_high else value

    def write(self, field: VmcsField | int, value: int) -> None:
        """VMWRITE: source bits beyond the field's width are ignored (SDM 24.11.2)."""
        resolved = self._resolve(field)
        if resolved.is_read_only and not self._vmwrite_any_field:
            raise VmxInstructionError(VmInstructionErrorNumber.VMWRITE_READ_ONLY_COMPONENT, resolved.name)
        self._store(resolved, value)
        self._dirty.add(resolved.full)

    def stored(self, field: VmcsField) -> int:
        """The processor's own fast read of a control field it keeps (no VMREAD checks)."""
        return self._values.get(field, 0)

    def supports(self, field: VmcsField | int) -> bool:
        """True if VMREAD/VMWRITE accept this encoding."""
        resolved = field if isinstance(field, VmcsField) else VmcsField.lookup(field)
        return resolved is not None and resolved in self._supported

    # --- processor-side writes ------------------------------------------------------------
    def record_exit_info(self, field: VmcsField, value: int) -> None:
        """Store a VM-exit information field, as VM exits and VMX instructions do (27.2, 30.2)."""
        if field.type is not FieldType.EXIT_INFORMATION:
            raise ValueError(f"{field.name} is not a VM-exit information field")
        self.cpu_write(field, value)

    def record_exit(self, information: "ExitInformation") -> None:
        """The VM-exit information of one exit (27.2), read from it when software asks:
        exits are frequent and most of their fields are never read."""
        self._exit_information = information

    def record_instruction_error(self, number: VmInstructionErrorNumber) -> None:
        """VMfailValid (SDM 30.2): the error number goes to the VM-instruction error field."""
        self.record_exit_info(VmcsField.VM_INSTRUCTION_ERROR, int(number))

    def cpu_write(self, field: VmcsField, value: int) -> None:
        """A write by the processor itself (e.g. VM exit saving guest state or clearing the
        valid bit of the VM-entry interruption-information field, 24.8.3): never refused,
        never marked dirty."""
        self._store(field, value)

    # --- dirty tracking -------------------------------------------------------------------
    @property
    def dirty(self) -> frozenset[VmcsField]:
        return frozenset(self._dirty)

    def is_dirty(self, *types: FieldType) -> bool:
        """Whether software wrote any field of the given types (any type if none given)."""
        if not types:
            return bool(self._dirty)
        return any(f.type in types for f in self._dirty)

    def clear_dirty(self) -> None:
        self._dirty.clear()

    # --- diagnostics ----------------------------------------------------------------------
    def dump(self, *, nonzero_only: bool = False) -> list[tuple[str, int]]:
        """Every supported field (full encodings, in encoding order) with its current value."""
        rows = []
        for field in sorted(f for f in self._supported if not f.is_high):
            value = self._load(field)
            if value or not nonzero_only:
                rows.append((field.name, value))
        return rows

    # --- internals ------------------------------------------------------------------------
    def _resolve(self, field: VmcsField | int) -> VmcsField:
        resolved = field if isinstance(field, VmcsField) else VmcsField.lookup(field)
        if resolved is None or resolved not in self._supported:
            error = VmInstructionErrorNumber.UNSUPPORTED_VMCS_COMPONENT
            raise VmxInstructionError(error, f"encoding {int(field):#x}")
        return resolved

    def _routed(self, full: VmcsField) -> GuestStateBackend | None:
        return self._guest_state if full.type is FieldType.GUEST_STATE else None

    def _load(self, full: VmcsField) -> int:
        backend = self._routed(full)
        if backend is not None:
            return backend.read_field(full) & full.mask
        if self._exit_information is not None and full.type is FieldType.EXIT_INFORMATION:
            value = self._exit_information.value(full)
            if value is not None:
                return value & full.mask
        return self._values.get(full, 0)

    def _store(self, field: VmcsField, value: int) -> None:
        full = field.full
        value &= field.mask
        if field.is_high:
            value = (self._load(full) & ones(32)) | value << 32
        backend = self._routed(full)
        if backend is not None:
            backend.write_field(full, value)
        else:
            self._values[full] = value
