"""The processor's exit decisions from the VM-execution controls (vmx/intercept.py, SDM 25.1-25.2):
I/O and MSR bitmaps read in place from host memory, CR0/CR4 guest/host masks and shadows,
CR3-target values, the exception bitmap with the #PF error-code mask/match, the TSC offset,
and which instruction sites the controls require."""

from __future__ import annotations

import pytest

from vtemu.machine.sites import SiteKind
from vtemu.vmx.bitmaps import IoBitmaps, MsrBitmap
from vtemu.vmx.controls import PinBasedControls
from vtemu.vmx.controls import PrimaryProcessorControls as P
from vtemu.vmx.controls import SecondaryProcessorControls as S
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.intercept import Intercepts
from vtemu.vmx.vmcs import Vmcs

IO_A, IO_B, MSR = 0x1000, 0x2000, 0x3000
ALWAYS = {SiteKind.RDMSR, SiteKind.WRMSR, SiteKind.MOV_CR, SiteKind.SYSCALL, SiteKind.SYSENTER,
          SiteKind.INVD, SiteKind.XSETBV, SiteKind.IO, SiteKind.STRING_IO, SiteKind.CPUID,
          SiteKind.RDTSC, SiteKind.RDTSCP}


class Pages:
    """Host memory for the bitmaps: HPA -> a 4 KiB page."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def __call__(self, hpa: int) -> memoryview:
        return memoryview(self.pages.setdefault(hpa, bytearray(4096)))


def _intercepts(primary: int = 0, secondary: int = 0, pages: Pages | None = None,
                **fields: int) -> Intercepts:
    vmcs = Vmcs()
    if secondary:
        primary |= P.ACTIVATE_SECONDARY_CONTROLS
    vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, primary)
    vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, secondary)
    vmcs.write(F.IO_BITMAP_A, IO_A)
    vmcs.write(F.IO_BITMAP_B, IO_B)
    vmcs.write(F.MSR_BITMAP, MSR)
    for name, value in fields.items():
        vmcs.write(F[name], value)
    return Intercepts.from_vmcs(vmcs, pages if pages is not None else Pages())


# --- I/O (25.1.3) ----------------------------------------------------------------------------

def _io_pages(*ports: int) -> Pages:
    bitmaps = IoBitmaps()
    for port in ports:
        bitmaps.set(port)
    pages = Pages()
    pages.pages[IO_A] = bitmaps.a
    pages.pages[IO_B] = bitmaps.b
    return pages


@pytest.mark.parametrize(("port", "size", "exits"), [
    (0x3F8, 1, False), (0x3F9, 1, True),
    (0x3F8, 2, True),            # 3F8h-3F9h: touches the set bit of 3F9h
    (0x3F6, 4, True),            # 3F6h-3F9h
    (0x3F5, 4, False),           # 3F5h-3F8h: all clear
    (0x3FA, 2, False),
    (0x7FFF, 2, True),           # A's last port + B's first (8000h is set)
    (0x7FFE, 2, False),
    (0xFFFF, 1, False), (0xFFFF, 2, True),   # wraps the I/O space: always exits
])
def test_io_bitmaps_any_set_bit_of_the_access_exits(port: int, size: int, exits: bool) -> None:
    intercepts = _intercepts(P.USE_IO_BITMAPS, pages=_io_pages(0x3F9, 0x8000))
    assert intercepts.io_exits(port, size) is exits


def test_io_bitmaps_are_read_in_place_from_host_memory() -> None:
    pages = _io_pages()
    intercepts = _intercepts(P.USE_IO_BITMAPS, pages=pages)
    assert not intercepts.io_exits(0x60, 1)
    pages.pages[IO_A][0x60 >> 3] |= 1 << (0x60 & 7)
    assert intercepts.io_exits(0x60, 1)


def test_unconditional_io_exiting_applies_only_without_bitmaps() -> None:
    assert _intercepts(P.UNCONDITIONAL_IO_EXITING).io_exits(0x80, 1)
    assert not _intercepts(0).io_exits(0x80, 1)
    both = _intercepts(P.UNCONDITIONAL_IO_EXITING | P.USE_IO_BITMAPS, pages=_io_pages())
    assert not both.io_exits(0x80, 1)            # the (empty) bitmaps decide


# --- MSRs (25.1.3) ---------------------------------------------------------------------------

def _msr_pages(reads: tuple[int, ...] = (), writes: tuple[int, ...] = ()) -> Pages:
    bitmap = MsrBitmap()
    for msr in reads:
        bitmap.set(msr, write=False)
    for msr in writes:
        bitmap.set(msr, read=False)
    pages = Pages()
    pages.pages[MSR] = bitmap.data
    return pages


def test_without_msr_bitmaps_every_access_exits() -> None:
    intercepts = _intercepts(0)
    assert intercepts.msr_exits(0x10, write=False) and intercepts.msr_exits(0xC0000080, write=True)


@pytest.mark.parametrize(("msr", "write", "exits"), [
    (0x0000_0010, False, True), (0x0000_0010, True, False),      # read bitmap, low range
    (0x0000_1FFF, True, True), (0x0000_1FFF, False, False),      # write bitmap, low range end
    (0xC000_0080, False, False), (0xC000_0080, True, True),      # high range: EFER writes
    (0xC000_1FFF, False, True),                                  # high range end
    (0x0000_2000, False, True), (0x4000_0000, True, True),       # outside both: always
    (0xBFFF_FFFF, False, True), (0xC000_2000, True, True),
])
def test_msr_bitmap_ranges(msr: int, write: bool, exits: bool) -> None:
    pages = _msr_pages(reads=(0x10, 0xC0001FFF), writes=(0x1FFF, 0xC0000080))
    assert _intercepts(P.USE_MSR_BITMAPS, pages=pages).msr_exits(msr, write) is exits


# --- control registers (25.1.3, 26.6) --------------------------------------------------------

CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_NE, CR0_CD = 1, 2, 4, 8, 0x20, 1 << 30


@pytest.mark.parametrize(("value", "exits"), [
    (CR0_TS | CR0_PE, False),        # owned bits equal the shadow (TS = 1, CD = 0)
    (CR0_TS | CR0_PE | CR0_NE, False),   # guest-owned bits change freely
    (CR0_PE, True),                  # clears TS: differs from the shadow
    (CR0_TS | CR0_CD, True),         # sets CD
])
def test_cr0_write_exits_when_an_owned_bit_differs_from_the_shadow(value: int, exits: bool) -> None:
    intercepts = _intercepts(CR0_GUEST_HOST_MASK=CR0_TS | CR0_CD, CR0_READ_SHADOW=CR0_TS | CR0_MP)
    assert intercepts.cr_write_exits(0, value) is exits


def test_cr4_write_exits_on_owned_bits_only() -> None:
    intercepts = _intercepts(CR4_GUEST_HOST_MASK=1 << 13, CR4_READ_SHADOW=0)
    assert not intercepts.cr_write_exits(4, 0x20 | 0x80)
    assert intercepts.cr_write_exits(4, 1 << 13)


def test_reads_of_owned_bits_come_from_the_shadow() -> None:
    intercepts = _intercepts(CR0_GUEST_HOST_MASK=CR0_TS | CR0_EM, CR0_READ_SHADOW=CR0_EM,
                             CR4_GUEST_HOST_MASK=1 << 13, CR4_READ_SHADOW=0)
    real_cr0 = CR0_PE | CR0_TS | CR0_NE
    assert intercepts.shadowed(0, real_cr0) == CR0_PE | CR0_EM | CR0_NE
    assert intercepts.shadowed(4, (1 << 13) | 0x20) == 0x20


def test_clts_exits_only_if_ts_is_owned_and_set_in_the_shadow() -> None:
    assert _intercepts(CR0_GUEST_HOST_MASK=CR0_TS, CR0_READ_SHADOW=CR0_TS).clts_exits()
    assert not _intercepts(CR0_GUEST_HOST_MASK=CR0_TS, CR0_READ_SHADOW=0).clts_exits()
    assert not _intercepts(CR0_GUEST_HOST_MASK=0, CR0_READ_SHADOW=CR0_TS).clts_exits()


@pytest.mark.parametrize(("mask", "shadow", "source", "exits"), [
    (CR0_PE, 0, CR0_PE, True),             # would set an owned PE that the shadow has clear
    (CR0_PE, CR0_PE, 0, False),            # LMSW cannot clear PE: no exit
    (CR0_PE, 0, 0, False),
    (CR0_MP | CR0_EM | CR0_TS, CR0_MP, CR0_MP, False),
    (CR0_MP | CR0_EM | CR0_TS, CR0_MP, CR0_MP | CR0_TS, True),
    (CR0_TS, 0, 0xFFF0, False),            # bits above 3 are not loaded by LMSW
])
def test_lmsw_exit_rule(mask: int, shadow: int, source: int, exits: bool) -> None:
    assert _intercepts(CR0_GUEST_HOST_MASK=mask, CR0_READ_SHADOW=shadow).lmsw_exits(source) is exits


def test_cr3_load_exits_unless_the_value_is_a_cr3_target() -> None:
    intercepts = _intercepts(P.CR3_LOAD_EXITING, CR3_TARGET_COUNT=2, CR3_TARGET_VALUE0=0x1000,
                             CR3_TARGET_VALUE1=0x5000, CR3_TARGET_VALUE2=0x9000)
    assert not intercepts.cr_write_exits(3, 0x1000)
    assert not intercepts.cr_write_exits(3, 0x5000)
    assert intercepts.cr_write_exits(3, 0x9000)    # beyond CR3_TARGET_COUNT: not a target
    assert intercepts.cr_write_exits(3, 0x2000)


def test_cr3_and_cr8_exits_follow_their_controls() -> None:
    none = _intercepts(0, CR3_TARGET_COUNT=0)
    assert not none.cr_write_exits(3, 0x1000) and not none.cr_read_exits(3)
    assert not none.cr_write_exits(8, 1) and not none.cr_read_exits(8)
    every = _intercepts(P.CR3_LOAD_EXITING | P.CR3_STORE_EXITING | P.CR8_LOAD_EXITING | P.CR8_STORE_EXITING)
    assert every.cr_write_exits(3, 0) and every.cr_read_exits(3)
    assert every.cr_write_exits(8, 0) and every.cr_read_exits(8)
    assert not every.cr_read_exits(0) and not every.cr_read_exits(4)   # never exit (26.6)


# --- exceptions (25.2) -----------------------------------------------------------------------

def test_exception_bitmap_selects_vectors() -> None:
    intercepts = _intercepts(EXCEPTION_BITMAP=(1 << 3) | (1 << 13))
    assert intercepts.exception_exits(3, None) and intercepts.exception_exits(13, 0)
    assert not intercepts.exception_exits(6, None) and not intercepts.exception_exits(0, None)


@pytest.mark.parametrize(("bit14", "error_code", "exits"), [
    # PFEC_MASK = P | W (03h), PFEC_MATCH = W (02h): "write to a not-present page" matches.
    (True, 0x2, True), (True, 0x6, True),       # matches (U/S is not in the mask)
    (True, 0x3, False), (True, 0x0, False),      # no match: bit set -> no exit
    (False, 0x2, False), (False, 0x6, False),    # matches: bit clear -> no exit
    (False, 0x3, True), (False, 0x0, True),      # no match: bit clear -> exit
])
def test_page_fault_error_code_mask_and_match(bit14: bool, error_code: int, exits: bool) -> None:
    """SDM 25.2: with bit 14 set, a #PF exits iff PFEC & MASK == MATCH; with it clear, iff not."""
    intercepts = _intercepts(EXCEPTION_BITMAP=(1 << 14) if bit14 else 0,
                             PAGE_FAULT_ERROR_CODE_MASK=0x3, PAGE_FAULT_ERROR_CODE_MATCH=0x2)
    assert intercepts.exception_exits(14, error_code) is exits


def test_page_fault_mask_zero_match_zero_is_the_plain_bitmap_bit() -> None:
    assert _intercepts(EXCEPTION_BITMAP=1 << 14).exception_exits(14, 0x1F)
    assert not _intercepts(EXCEPTION_BITMAP=0).exception_exits(14, 0x1F)
    # mask 0 and a non-zero match never match: the bit's sense is inverted for every #PF
    inverted = _intercepts(EXCEPTION_BITMAP=1 << 14, PAGE_FAULT_ERROR_CODE_MATCH=0xFFFF_FFFF)
    assert not inverted.exception_exits(14, 0x2)


# --- TSC offset (25.3) -----------------------------------------------------------------------

def test_tsc_offset_applies_only_with_tsc_offsetting() -> None:
    assert _intercepts(P.USE_TSC_OFFSETTING, TSC_OFFSET=1234).tsc_offset == 1234
    assert _intercepts(0, TSC_OFFSET=1234).tsc_offset == 0


# --- sites the controls require --------------------------------------------------------------

def test_minimal_controls_plant_only_the_always_needed_sites() -> None:
    kinds = _intercepts(0).site_kinds()
    assert ALWAYS <= kinds
    assert not kinds & {SiteKind.INVLPG, SiteKind.MOV_DR, SiteKind.PAUSE, SiteKind.MWAIT,
                        SiteKind.MONITOR, SiteKind.RDPMC, SiteKind.WBINVD, SiteKind.DESCRIPTOR_TABLE,
                        SiteKind.LDTR_TR, SiteKind.CLTS, SiteKind.LMSW, SiteKind.SMSW}


@pytest.mark.parametrize(("primary", "secondary", "fields", "planted"), [
    (P.INVLPG_EXITING, 0, {}, {SiteKind.INVLPG}),
    (P.MOV_DR_EXITING, 0, {}, {SiteKind.MOV_DR}),
    (P.PAUSE_EXITING, 0, {}, {SiteKind.PAUSE}),
    (0, S.PAUSE_LOOP_EXITING, {}, {SiteKind.PAUSE}),
    (P.MWAIT_EXITING | P.MONITOR_EXITING, 0, {}, {SiteKind.MWAIT, SiteKind.MONITOR}),
    (P.RDPMC_EXITING, 0, {}, {SiteKind.RDPMC}),
    (0, S.WBINVD_EXITING, {}, {SiteKind.WBINVD}),
    (0, S.DESCRIPTOR_TABLE_EXITING, {}, {SiteKind.DESCRIPTOR_TABLE, SiteKind.LDTR_TR}),
    (0, 0, {"CR0_GUEST_HOST_MASK": CR0_TS}, {SiteKind.CLTS, SiteKind.LMSW, SiteKind.SMSW}),
    (0, 0, {"CR0_GUEST_HOST_MASK": CR0_PE}, {SiteKind.LMSW, SiteKind.SMSW}),
    (0, 0, {"CR0_GUEST_HOST_MASK": CR0_NE}, {SiteKind.SMSW}),
    (0, 0, {"CR0_GUEST_HOST_MASK": CR0_CD}, set()),     # above bit 15: SMSW cannot see it
])
def test_optional_sites_follow_their_controls(primary: int, secondary: int, fields: dict[str, int],
                                              planted: set[SiteKind]) -> None:
    kinds = _intercepts(primary, secondary, **fields).site_kinds()
    optional = kinds - ALWAYS - {SiteKind.VMX}
    assert optional == planted


def test_the_vtx_mode_plants_its_controls_on_the_vcpu() -> None:
    from tests.unit.hv.fakes import Rig
    rig = Rig()
    rig.cpu.reload_controls()                      # what VM entry does
    kinds = rig.vcpu.sites.kinds
    assert kinds == rig.cpu.intercepts.site_kinds()
    assert SiteKind.MOV_DR in kinds and SiteKind.WBINVD in kinds and SiteKind.RDPMC in kinds
    assert SiteKind.MWAIT in kinds and SiteKind.MONITOR in kinds
    assert SiteKind.INVLPG not in kinds and SiteKind.DESCRIPTOR_TABLE not in kinds
    assert PinBasedControls.EXTERNAL_INTERRUPT_EXITING in rig.cpu.intercepts.pin
