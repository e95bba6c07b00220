"""EPT violations (48) and misconfigurations (49) fed to the hypervisor: the faulting instruction
is emulated against MMIO devices, open bus or the ROM; anything else ends the run clearly."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import RecordingMmioDevice, Rig
from vtemu.hv.outcome import Resume, RunEnd, Shutdown
from vtemu.machine import layout
from vtemu.vmx.exit import VmExit
from vtemu.vmx.reasons import ExitReason

MMIO = 0xFED0_0000
READ, WRITE, FETCH, LINEAR_VALID, FINAL = 1, 2, 4, 1 << 7, 1 << 8


def _violation(rig: Rig, code: str | bytes, gpa: int, access: int) -> tuple[object, int]:
    insn = rig.place(code)
    exit = VmExit(ExitReason.EPT_VIOLATION, insn.address, qualification=access | LINEAR_VALID | FINAL,
                  guest_physical=gpa, guest_linear=gpa)
    return rig.handle(exit), insn.address + insn.size


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


@pytest.fixture
def device(rig: Rig) -> RecordingMmioDevice:
    device = RecordingMmioDevice({0x10: 0x8765_4321, 0x20: 0x80})
    rig.partition.mmio.attach("dummy", MMIO, 0x1000, device)
    return device


def test_mmio_read_returns_the_device_value(rig: Rig, device: RecordingMmioDevice) -> None:
    rig.set(rax=0)
    outcome, next_rip = _violation(rig, "mov eax, dword ptr [0xfed00010]", MMIO + 0x10, READ)
    assert isinstance(outcome, Resume)
    assert rig.get("rax") == 0x8765_4321
    assert device.reads == [(0x10, 4)]
    assert rig.get("rip") == next_rip


def test_mmio_byte_read_into_a_byte_register_keeps_the_rest(rig: Rig, device: RecordingMmioDevice) -> None:
    rig.set(rbx=0x1111_1111)
    _violation(rig, "mov bl, byte ptr [0xfed00010]", MMIO + 0x10, READ)
    assert rig.get("rbx") == 0x1111_1121


def test_mmio_movzx_and_movsx(rig: Rig, device: RecordingMmioDevice) -> None:
    _violation(rig, "movzx ecx, byte ptr [0xfed00020]", MMIO + 0x20, READ)
    assert rig.get("rcx") == 0x80
    _violation(rig, "movsx edx, byte ptr [0xfed00020]", MMIO + 0x20, READ)
    assert rig.get("rdx") == 0xFFFF_FF80


def test_mmio_read_in_64_bit_mode_zero_extends_a_32_bit_destination(device: RecordingMmioDevice) -> None:
    rig = Rig()
    rig.partition.mmio.attach("dummy", MMIO, 0x1000, device)
    rig.long_mode()
    rig.set(rax=2**64 - 1, rbx=MMIO)
    _violation(rig, "mov eax, dword ptr [rbx + 0x10]", MMIO + 0x10, READ)
    assert rig.get("rax") == 0x8765_4321


def test_mmio_write_from_a_register_reaches_the_device(rig: Rig, device: RecordingMmioDevice) -> None:
    rig.set(rsi=0xCAFE_F00D, rdi=MMIO)
    outcome, next_rip = _violation(rig, "mov dword ptr [edi + 8], esi", MMIO + 8, WRITE)
    assert isinstance(outcome, Resume)
    assert device.writes == [(8, 4, 0xCAFE_F00D)]
    assert rig.get("rip") == next_rip


def test_mmio_write_of_an_immediate(rig: Rig, device: RecordingMmioDevice) -> None:
    _violation(rig, "mov word ptr [0xfed00040], 0xbeef", MMIO + 0x40, WRITE)
    assert device.writes == [(0x40, 2, 0xBEEF)]


def test_open_bus_reads_all_ones(rig: Rig) -> None:
    rig.set(rax=0)
    outcome, next_rip = _violation(rig, "mov ax, word ptr [0xe0000000]", 0xE000_0000, READ)
    assert isinstance(outcome, Resume)
    assert rig.get("rax") == 0xFFFF
    assert rig.get("rip") == next_rip


def test_rom_write_is_discarded(rig: Rig) -> None:
    before = rig.partition.host.read(layout.ROM_HPA, 16)
    rig.set(rax=0x1234_5678)
    outcome, next_rip = _violation(rig, "mov dword ptr [0xffff0000], eax", layout.ROM_GPA, WRITE)
    assert isinstance(outcome, Resume)
    assert rig.partition.host.read(layout.ROM_HPA, 16) == before
    assert rig.get("rip") == next_rip


def test_unsupported_instruction_on_mmio_ends_with_a_clear_reason(rig: Rig, device: RecordingMmioDevice) -> None:
    rig.set(rax=1)
    outcome, _ = _violation(rig, "add dword ptr [0xfed00010], eax", MMIO + 0x10, READ | WRITE)
    assert isinstance(outcome, Shutdown)
    assert outcome.exit_code == RunEnd.UNHANDLED_EXIT
    assert "add" in outcome.reason and f"{MMIO + 0x10:#x}" in outcome.reason
    assert device.writes == []
    assert rig.get("rip") == 0x10000


def test_fetch_from_unbacked_memory_ends_the_run(rig: Rig) -> None:
    exit = VmExit(ExitReason.EPT_VIOLATION, 0xE000_0000, qualification=FETCH | LINEAR_VALID | FINAL,
                  guest_physical=0xE000_0000)
    outcome = rig.handle(exit)
    assert isinstance(outcome, Shutdown) and outcome.exit_code == RunEnd.UNHANDLED_EXIT
    assert "executed" in outcome.reason


def test_guest_page_tables_in_unbacked_memory_end_the_run(rig: Rig) -> None:
    exit = VmExit(ExitReason.EPT_VIOLATION, 0x10000, qualification=READ | LINEAR_VALID,
                  guest_physical=0xE000_0000)
    outcome = rig.handle(exit)
    assert isinstance(outcome, Shutdown) and "page tables" in outcome.reason


def test_misconfiguration_ends_the_run(rig: Rig) -> None:
    outcome = rig.handle(VmExit(ExitReason.EPT_MISCONFIG, 0x10000, guest_physical=0x5000))
    assert isinstance(outcome, Shutdown) and outcome.exit_code == RunEnd.UNHANDLED_EXIT
    assert "misconfiguration" in outcome.reason
