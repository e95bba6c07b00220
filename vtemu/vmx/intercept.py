"""Does this instruction or event exit? Decided from the VM-execution controls (SDM 25.1-25.2).

`Intercepts` is the processor's copy of the execution controls, taken at VM entry (the
hypervisor cannot change them while the guest runs), plus views of the I/O and MSR bitmaps
in host memory where the VMCS points. Every question the processor asks at a sensitive
instruction is one small method here, each citing the rule it implements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from vtemu.machine.sites import SiteKind
from vtemu.vmx.bitmaps import io_access_exits, msr_access_exits
from vtemu.vmx.controls import ExitControls, PinBasedControls, PrimaryProcessorControls as P
from vtemu.vmx.controls import SecondaryProcessorControls as S
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.vmcs import Vmcs

PAGE_FAULT = 14
CR0_TS = 1 << 3

_ZERO_PAGE = bytes(4096)


@dataclass
class Intercepts:
    pin: PinBasedControls
    primary: P
    secondary: S
    exit_controls: ExitControls
    exception_bitmap: int
    pfec_mask: int
    pfec_match: int
    cr0_mask: int
    cr0_shadow: int
    cr4_mask: int
    cr4_shadow: int
    cr3_targets: tuple[int, ...]
    tsc_offset: int
    io_bitmap_a: bytes | memoryview
    io_bitmap_b: bytes | memoryview
    msr_bitmap: bytes | memoryview
    ple_gap: int = 0
    ple_window: int = 0

    def __post_init__(self) -> None:
        # IntFlag membership tests cost about a microsecond each; the hot ones are kept as bools.
        self.use_io_bitmaps = P.USE_IO_BITMAPS in self.primary
        self.unconditional_io = P.UNCONDITIONAL_IO_EXITING in self.primary
        self.use_msr_bitmaps = P.USE_MSR_BITMAPS in self.primary
        self.window_exiting = P.INTERRUPT_WINDOW_EXITING in self.primary

    @classmethod
    def from_vmcs(cls, vmcs: Vmcs, host_page: Callable[[int], memoryview]) -> "Intercepts":
        primary = P(vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL))
        secondary = S(vmcs.read(F.SECONDARY_VM_EXEC_CONTROL)) if P.ACTIVATE_SECONDARY_CONTROLS in primary else S(0)
        count = min(vmcs.read(F.CR3_TARGET_COUNT), 4)
        targets = tuple(vmcs.read(F(F.CR3_TARGET_VALUE0 + 2 * i)) for i in range(count))
        return cls(
            pin=PinBasedControls(vmcs.read(F.PIN_BASED_VM_EXEC_CONTROL)),
            primary=primary, secondary=secondary,
            exit_controls=ExitControls(vmcs.read(F.VM_EXIT_CONTROLS)),
            exception_bitmap=vmcs.read(F.EXCEPTION_BITMAP),
            pfec_mask=vmcs.read(F.PAGE_FAULT_ERROR_CODE_MASK),
            pfec_match=vmcs.read(F.PAGE_FAULT_ERROR_CODE_MATCH),
            cr0_mask=vmcs.read(F.CR0_GUEST_HOST_MASK), cr0_shadow=vmcs.read(F.CR0_READ_SHADOW),
            cr4_mask=vmcs.read(F.CR4_GUEST_HOST_MASK), cr4_shadow=vmcs.read(F.CR4_READ_SHADOW),
            cr3_targets=targets,
            tsc_offset=vmcs.read(F.TSC_OFFSET) if P.USE_TSC_OFFSETTING in primary else 0,
            io_bitmap_a=_bitmap(vmcs, F.IO_BITMAP_A, P.USE_IO_BITMAPS in primary, host_page),
            io_bitmap_b=_bitmap(vmcs, F.IO_BITMAP_B, P.USE_IO_BITMAPS in primary, host_page),
            msr_bitmap=_bitmap(vmcs, F.MSR_BITMAP, P.USE_MSR_BITMAPS in primary, host_page),
            ple_gap=vmcs.read(F.PLE_GAP) if S.PAUSE_LOOP_EXITING in secondary else 0,
            ple_window=vmcs.read(F.PLE_WINDOW) if S.PAUSE_LOOP_EXITING in secondary else 0,
        )

    # --- I/O and MSRs (25.1.3) ------------------------------------------------------------
    def io_exits(self, port: int, size: int) -> bool:
        """Unconditional I/O exiting applies only while I/O bitmaps are off."""
        if self.use_io_bitmaps:
            return io_access_exits(self.io_bitmap_a, self.io_bitmap_b, port, size)
        return self.unconditional_io

    def msr_exits(self, msr: int, write: bool) -> bool:
        """Without MSR bitmaps every RDMSR/WRMSR exits."""
        if not self.use_msr_bitmaps:
            return True
        return msr_access_exits(self.msr_bitmap, msr, write)

    # --- control registers (25.1.3, 26.6 for shadows) -------------------------------------
    def cr_write_exits(self, cr: int, value: int) -> bool:
        if cr == 0:
            return bool(self.cr0_mask & (value ^ self.cr0_shadow))
        if cr == 4:
            return bool(self.cr4_mask & (value ^ self.cr4_shadow))
        if cr == 3:
            return P.CR3_LOAD_EXITING in self.primary and value not in self.cr3_targets
        if cr == 8:
            return P.CR8_LOAD_EXITING in self.primary
        return False

    def cr_read_exits(self, cr: int) -> bool:
        if cr == 3:
            return P.CR3_STORE_EXITING in self.primary
        if cr == 8:
            return P.CR8_STORE_EXITING in self.primary
        return False

    def shadowed(self, cr: int, real: int) -> int:
        """MOV from CR0/CR4 and SMSW: host-owned bits read from the read shadow (SDM 26.6.x)."""
        mask, shadow = (self.cr0_mask, self.cr0_shadow) if cr == 0 else (self.cr4_mask, self.cr4_shadow)
        return (real & ~mask) | (shadow & mask)

    def clts_exits(self) -> bool:
        return bool(self.cr0_mask & self.cr0_shadow & CR0_TS)

    def lmsw_exits(self, source: int) -> bool:
        """LMSW exits if it would set a host-owned PE, or change host-owned MP/EM/TS (25.1.3)."""
        if self.cr0_mask & 1 and not self.cr0_shadow & 1 and source & 1:
            return True
        return bool(self.cr0_mask & 0xE & (self.cr0_shadow ^ source))

    # --- exceptions (25.2) ----------------------------------------------------------------
    def exception_exits(self, vector: int, error_code: int | None) -> bool:
        bit = bool(self.exception_bitmap >> vector & 1)
        if vector != PAGE_FAULT:
            return bit
        matches = ((error_code or 0) & self.pfec_mask) == self.pfec_match
        return bit if matches else not bit

    # --- which sensitive instructions need a hook at all -----------------------------------
    def site_kinds(self) -> frozenset[SiteKind]:
        """Instruction classes the processor must look at, given these controls.

        RDMSR/WRMSR, MOV CR, SYSCALL/SYSENTER, port I/O, CPUID and RDTSC(P) always need vtemu's
        hand (its MSR model, CR8/TPR, CR0/CR4 shadows, the ring transition Unicorn skips, I/O
        permission checks, deterministic TSC, exits that must stop at the instruction); the
        rest only when a control makes them exit.
        """
        kinds = {SiteKind.RDMSR, SiteKind.WRMSR, SiteKind.MOV_CR, SiteKind.SYSCALL,
                 SiteKind.SYSENTER, SiteKind.INVD, SiteKind.XSETBV, SiteKind.IO,
                 SiteKind.STRING_IO, SiteKind.CPUID, SiteKind.RDTSC, SiteKind.RDTSCP,
                 SiteKind.VMX}
        optional = {
            SiteKind.INVLPG: P.INVLPG_EXITING in self.primary,
            SiteKind.MOV_DR: P.MOV_DR_EXITING in self.primary,
            SiteKind.PAUSE: P.PAUSE_EXITING in self.primary or S.PAUSE_LOOP_EXITING in self.secondary,
            SiteKind.MWAIT: P.MWAIT_EXITING in self.primary,
            SiteKind.MONITOR: P.MONITOR_EXITING in self.primary,
            SiteKind.RDPMC: P.RDPMC_EXITING in self.primary,
            SiteKind.WBINVD: S.WBINVD_EXITING in self.secondary,
            SiteKind.DESCRIPTOR_TABLE: S.DESCRIPTOR_TABLE_EXITING in self.secondary,
            SiteKind.LDTR_TR: S.DESCRIPTOR_TABLE_EXITING in self.secondary,
            SiteKind.CLTS: bool(self.cr0_mask & CR0_TS),
            SiteKind.LMSW: bool(self.cr0_mask & 0xF),
            SiteKind.SMSW: bool(self.cr0_mask & 0xFFFF),
        }
        return frozenset(kinds | {kind for kind, needed in optional.items() if needed})


def _bitmap(vmcs: Vmcs, field: F, used: bool, host_page: Callable[[int], memoryview]
            ) -> bytes | memoryview:
    """The 4 KiB bitmap at the HPA in `field`, read in place from host memory."""
    if not used:
        return _ZERO_PAGE
    return host_page(vmcs.read(field))
