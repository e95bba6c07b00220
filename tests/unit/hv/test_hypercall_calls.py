"""The hypercalls of --mode pv with good and bad arguments: batched page-table updates (and
their coherence with the guest's own translations), address-space switch, TLB flushes, long
spin waits, console, port writes, idle and shutdown."""

from __future__ import annotations

import struct

import pytest
import unicorn.x86_const as U

from tests.unit.hv.fakes import PAGING, PTE_P, PTE_RW, run
from tests.unit.hv.pvrig import PARAMS, PvRig
from vtemu.hv.hypercalls import HvStatus, input_value, result_value
from vtemu.hv.outcome import Halt, Resume

SWITCH, FLUSH_SPACE, FLUSH_LIST, SPIN = 0x0001, 0x0002, 0x0003, 0x0008
MMU_UPDATE, CONSOLE, SHUTDOWN, PORT_WRITE, IDLE = 0x8001, 0x8002, 0x8003, 0x8004, 0x8005
PT = PAGING + 0x3000          # the rig's long-mode page table (identity map of the first 2 MiB)
INVLPG, FLUSH, LOAD_CR3, CLEAR = 1, 2, 3, 4
RFLAGS_IF = 1 << 9


@pytest.fixture
def rig() -> PvRig:
    rig = PvRig()
    rig.long_mode()
    rig.enable()
    return rig


def elements(rig: PvRig, *pairs: tuple[int, int]) -> int:
    rig.poke(PARAMS, b"".join(struct.pack("<QQ", ptr, value) for ptr, value in pairs))
    return len(pairs)


def status(result: int) -> int:
    return result & 0xFFFF


# --- VtemuCallMmuUpdate -------------------------------------------------------------------------
def test_mmu_update_applies_every_entry_in_order(rig: PvRig) -> None:
    count = elements(rig, (PARAMS + 0x800, 1), (PARAMS + 0x808, 2), (PARAMS + 0x800, 3))
    assert rig.call(MMU_UPDATE, PARAMS, rep_count=count) == result_value(HvStatus.SUCCESS, 3)
    assert (rig.u64(PARAMS + 0x800), rig.u64(PARAMS + 0x808)) == (3, 2)


def test_a_remapped_page_is_seen_by_the_guest_after_the_batched_invalidate(rig: PvRig) -> None:
    """Real guest code: read page 0x70000, remap it to 0x71000 and invalidate in one call,
    read again. The stale translation must not survive."""
    rig.poke(0x70000, struct.pack("<Q", 0xAAAA))
    rig.poke(0x71000, struct.pack("<Q", 0xBBBB))
    elements(rig, (PT + 8 * 0x70, 0x71000 | PTE_P | PTE_RW), (INVLPG, 0x70000))
    run(rig, f"""
        mov eax, 0x70000
        mov r14, [rax]
        mov rcx, {input_value(MMU_UPDATE, rep_count=2)}
        mov edx, {PARAMS}
        xor r8d, r8d
        mov eax, 0x50000
        call rax
        mov r13, rax
        mov eax, 0x70000
        mov r15, [rax]
        hlt
    """)
    assert (rig.get("r14"), rig.get("r13"), rig.get("r15")) == (0xAAAA, result_value(0, 2), 0xBBBB)


@pytest.mark.parametrize("ptr, value, expected", [
    (0xA0000, 0, HvStatus.INVALID_PARAMETER),                 # the legacy hole: not RAM
    (0xFFFF0000, 0, HvStatus.INVALID_PARAMETER),              # the ROM
    (1 << 40, 0, HvStatus.INVALID_PARAMETER),                 # far beyond the partition
    (0x50000, 0, HvStatus.ACCESS_DENIED),                     # the hypercall page
    (PARAMS + 0x800, PTE_P | 1 << 51, HvStatus.INVALID_PARAMETER),   # frame beyond MAXPHYADDR
    (INVLPG | 8, 0x1000, HvStatus.INVALID_PARAMETER),         # an operation with a pointer
    (FLUSH, 5, HvStatus.INVALID_PARAMETER),                   # a flush with a value
    (LOAD_CR3, 1 << 60, HvStatus.INVALID_PARAMETER),          # CR3 reserved bits
    (6, 0, HvStatus.INVALID_PARAMETER),                       # no such operation
    (CLEAR, 0x70001, HvStatus.INVALID_ALIGNMENT),              # a frame not page aligned
    (CLEAR, 0xFFFF0000, HvStatus.INVALID_PARAMETER),           # the ROM
    (CLEAR, 0x50000, HvStatus.ACCESS_DENIED),                  # the hypercall page
])
def test_mmu_update_rejects_bad_elements(rig: PvRig, ptr: int, value: int, expected: HvStatus) -> None:
    count = elements(rig, (PARAMS + 0x900, 7), (ptr, value))
    result = rig.call(MMU_UPDATE, PARAMS, rep_count=count)
    assert result == result_value(expected, 1)
    assert rig.u64(PARAMS + 0x900) == 7                       # the first element was applied


def test_mmu_update_clears_a_frame(rig: PvRig) -> None:
    rig.poke(0x70000, b"\xff" * 4096)
    elements(rig, (CLEAR, 0x70000))
    assert rig.call(MMU_UPDATE, PARAMS, rep_count=1) == result_value(HvStatus.SUCCESS, 1)
    assert rig.peek(0x70000, 4096) == bytes(4096)


def test_a_not_present_entry_may_hold_any_bits(rig: PvRig) -> None:
    elements(rig, (PARAMS + 0x800, 1 << 51))
    assert rig.call(MMU_UPDATE, PARAMS, rep_count=1) == result_value(HvStatus.SUCCESS, 1)


def test_mmu_update_list_must_fit_its_page(rig: PvRig) -> None:
    assert status(rig.call(MMU_UPDATE, PARAMS + 4080, rep_count=2)) == HvStatus.INVALID_ALIGNMENT


def test_mmu_update_load_cr3_switches_address_space(rig: PvRig) -> None:
    elements(rig, (LOAD_CR3, PAGING + 0x8000))
    assert rig.call(MMU_UPDATE, PARAMS, rep_count=1) == result_value(HvStatus.SUCCESS, 1)
    assert rig.vcpu.read(U.UC_X86_REG_CR3) == PAGING + 0x8000


# --- HvCallSwitchVirtualAddressSpace ------------------------------------------------------------
def test_switch_address_space_fast_and_memory(rig: PvRig) -> None:
    assert rig.call(SWITCH, PAGING + 0x9000, fast=True) == 0
    assert rig.vcpu.read(U.UC_X86_REG_CR3) == PAGING + 0x9000
    rig.qwords(PARAMS, PAGING)
    assert rig.call(SWITCH, PARAMS) == 0
    assert rig.vcpu.read(U.UC_X86_REG_CR3) == PAGING


def test_switch_to_a_cr3_with_reserved_bits_is_refused(rig: PvRig) -> None:
    assert rig.call(SWITCH, 1 << 55 | PAGING, fast=True) == HvStatus.INVALID_PARAMETER
    assert rig.vcpu.read(U.UC_X86_REG_CR3) == PAGING


# --- TLB flushes --------------------------------------------------------------------------------
def test_flush_address_space_checks_its_flags(rig: PvRig) -> None:
    rig.qwords(PARAMS, PAGING, 0b111, 1)
    assert rig.call(FLUSH_SPACE, PARAMS) == 0
    rig.qwords(PARAMS, PAGING, 1 << 3, 1)                     # extended ranges: not offered
    assert rig.call(FLUSH_SPACE, PARAMS) == HvStatus.INVALID_PARAMETER


def test_flush_address_list_counts_its_reps(rig: PvRig) -> None:
    rig.qwords(PARAMS, PAGING, 1, 0, 0x70000 | 3, 0x200000)
    assert rig.call(FLUSH_LIST, PARAMS, rep_count=2) == result_value(HvStatus.SUCCESS, 2)


# --- HvCallNotifyLongSpinWait -------------------------------------------------------------------
def test_long_spin_wait_is_counted_and_reported(rig: PvRig) -> None:
    heard: list[tuple[int, int]] = []
    rig.service.spin_wait_listeners.append(lambda cpu, spins: heard.append((cpu.index, spins)))
    assert rig.call(SPIN, 0xFFF, fast=True) == 0
    rig.qwords(PARAMS, 0x2000)
    assert rig.call(SPIN, PARAMS) == 0
    assert rig.service.long_spin_waits[0] == 2 and heard == [(0, 0xFFF), (0, 0x2000)]


# --- console, ports, idle, shutdown ---------------------------------------------------------------
def test_console_write_reaches_com1(rig: PvRig) -> None:
    rig.poke(PARAMS, b"enlightened\n")
    assert rig.call(CONSOLE, PARAMS, 12, fast=True) == 0
    assert bytes(rig.serial) == b"enlightened\n"


@pytest.mark.parametrize("gpa, length", [(PARAMS, 4097), (0x9FFF0, 0x20), (16 << 20, 1)])
def test_console_write_refuses_bad_buffers(rig: PvRig, gpa: int, length: int) -> None:
    assert rig.call(CONSOLE, gpa, length, fast=True) == HvStatus.INVALID_PARAMETER
    assert rig.serial == b""


def test_port_write_goes_to_the_device(rig: PvRig) -> None:
    assert rig.call(PORT_WRITE, 0x3F8 | 1 << 16, ord("x"), fast=True) == 0
    assert rig.serial == b"x"


@pytest.mark.parametrize("port, value", [(0x3F8 | 3 << 16, 0), (0xFFFF | 2 << 16, 0), (0x3F8 | 1 << 16, 0x100)])
def test_port_write_refuses_bad_sizes_and_values(rig: PvRig, port: int, value: int) -> None:
    assert rig.call(PORT_WRITE, port, value, fast=True) == HvStatus.INVALID_PARAMETER


def test_idle_enables_interrupts_and_halts(rig: PvRig) -> None:
    rig.set(rflags=0x2)
    outcome = rig.vmcall(input_value(IDLE, fast=True))
    assert isinstance(outcome, Halt) and rig.rflags() & RFLAGS_IF and rig.advanced()
    assert rig.result() == 0


def test_idle_with_an_interrupt_pending_resumes(rig: PvRig) -> None:
    rig.init_pic()
    rig.raise_irq(0)
    assert isinstance(rig.vmcall(input_value(IDLE, fast=True)), Resume)


def test_shutdown_ends_the_run_with_the_exit_code(rig: PvRig) -> None:
    insn = rig.place("vmcall")
    rig.set(rcx=input_value(SHUTDOWN, fast=True), rdx=42, r8=0)
    from vtemu.vmx.reasons import ExitReason
    rig.dispatch(rig.exit_for(ExitReason.VMCALL, insn))
    assert rig.partition.result is not None and rig.partition.result.exit_code == 42


def test_shutdown_refuses_codes_above_255(rig: PvRig) -> None:
    assert rig.call(SHUTDOWN, 256, fast=True) == HvStatus.INVALID_PARAMETER
    assert rig.partition.result is None
