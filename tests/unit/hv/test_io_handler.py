"""I/O-instruction exits (30) fed to the hypervisor: IN/OUT reach the partition's port bus,
INS/OUTS are performed whole (every iteration, SDM Vol. 2 INS/OUTS and REP) with faults
reported at the iteration that faulted."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import DATA, RFLAGS_DF, RecordingPortDevice, Rig
from vtemu.hv.outcome import Resume
from vtemu.machine.cpustate import Seg
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionType
from vtemu.vmx.qualifications import IoDirection, IoQualification
from vtemu.vmx.reasons import ExitReason

PORT = 0x500   # no device of the reference machine lives here
IN, OUT = IoDirection.IN, IoDirection.OUT


def _qualification(size: int, direction: IoDirection, port: int = PORT, *, string: bool = False,
                   rep: bool = False, immediate: bool = False) -> int:
    return IoQualification(size, direction, string, rep, immediate, port).encode()


def _rig(mode: str = "protected", device: RecordingPortDevice | None = None, **mode_args: object) -> Rig:
    rig = Rig()
    getattr(rig, f"{mode}_mode" if mode != "paging32" else mode)(**mode_args)
    if device is not None:
        rig.partition.ports.attach("dummy", PORT, 4, device, byte_wide=False)
    return rig


def _io(rig: Rig, code: str | bytes, size: int, direction: IoDirection, **flags: bool) -> None:
    insn = rig.place(code)
    exit = rig.exit_for(ExitReason.IO_INSTRUCTION, insn, _qualification(size, direction, **flags))
    assert isinstance(rig.handle(exit), Resume)


# --- IN / OUT --------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "size", "expected"), [
    ("in al, dx", 1, 0x1111_2222_3333_44EF),
    ("in ax, dx", 2, 0x1111_2222_3333_BEEF),
    ("in eax, dx", 4, 0xDEAD_BEEF),
])
def test_in_writes_al_ax_eax(code: str, size: int, expected: int) -> None:
    device = RecordingPortDevice(reads=[0xDEADBEEF])
    rig = _rig(device=device)
    insn = rig.place(code)
    rig.set(rax=0x1111_2222_3333_4444 if size < 4 else 0x3333_4444, rdx=PORT)
    rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn, _qualification(size, IN)))
    assert rig.get("rax") == expected
    assert device.reads == [(0, size)]
    assert rig.get("rip") == insn.address + insn.size


def test_in_eax_zero_extends_into_rax_in_64_bit_mode() -> None:
    device = RecordingPortDevice(reads=[0x12345678])
    rig = _rig("long", device=device)
    insn = rig.place("in eax, dx")
    rig.set(rax=0xAAAA_AAAA_0000_0000, rdx=PORT)
    rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn, _qualification(4, IN)))
    assert rig.get("rax") == 0x12345678


@pytest.mark.parametrize(("code", "size"), [("out dx, al", 1), ("out dx, ax", 2), ("out dx, eax", 4)])
def test_out_reaches_the_device_with_the_accumulator_part(code: str, size: int) -> None:
    device = RecordingPortDevice()
    rig = _rig(device=device)
    insn = rig.place(code)
    rig.set(rax=0x8877_6655, rdx=PORT)
    rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn, _qualification(size, OUT)))
    assert device.writes == [(0, size, 0x8877_6655 & ((1 << (8 * size)) - 1))]
    assert rig.get("rax") == 0x8877_6655
    assert rig.get("rip") == insn.address + insn.size


def test_immediate_port_and_device_offset() -> None:
    device = RecordingPortDevice()
    rig = Rig()
    rig.protected_mode()
    rig.partition.ports.attach("dummy", 0xE0, 4, device, byte_wide=False)
    insn = rig.place("out 0xe2, al")
    rig.set(rax=0x5A)
    rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn,
                            _qualification(1, OUT, 0xE2, immediate=True)))
    assert device.writes == [(2, 1, 0x5A)]     # devices see offsets from their base
    assert rig.get("rip") == insn.address + 2


def test_unclaimed_port_reads_all_ones_and_drops_writes() -> None:
    rig = _rig()
    insn = rig.place("in ax, dx")
    rig.set(rax=0, rdx=0x6000)
    rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn, _qualification(2, IN, 0x6000)))
    assert rig.get("rax") == 0xFFFF
    assert rig.partition.ports.unclaimed_accesses[0x6000] == 1


def test_wide_out_to_a_byte_wide_device_is_split_into_byte_accesses() -> None:
    device = RecordingPortDevice()
    rig = Rig()
    rig.protected_mode()
    rig.partition.ports.attach("isa", PORT, 4, device, byte_wide=True)
    insn = rig.place("out dx, ax")
    rig.set(rax=0xBBAA, rdx=PORT)
    rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn, _qualification(2, OUT)))
    assert device.writes == [(0, 1, 0xAA), (1, 1, 0xBB)]


# --- INS / OUTS ------------------------------------------------------------------------------

def test_rep_insb_fills_es_edi_and_counts_rcx_down() -> None:
    device = RecordingPortDevice(reads=[1, 2, 3, 4, 5])
    rig = _rig(device=device)
    rig.set(rdi=DATA, rcx=5, rdx=PORT)
    _io(rig, "rep insb", 1, IN, string=True, rep=True)
    assert rig.peek(DATA, 6) == bytes([1, 2, 3, 4, 5, 0])
    assert (rig.get("rdi"), rig.get("rcx")) == (DATA + 5, 0)
    assert rig.get("rip") == 0x10002


def test_ins_writes_es_even_with_a_segment_override() -> None:
    """INS always stores to ES:rDI; a prefix cannot override ES (SDM Vol. 2 INS)."""
    device = RecordingPortDevice(reads=[0x11223344])
    rig = _rig(device=device)
    rig.load_segment(Seg.ES, 0x10, 0x1000, 0xFFFFFFFF)
    rig.load_segment(Seg.FS, 0x10, 0x2000, 0xFFFFFFFF)
    rig.set(rdi=DATA, rdx=PORT)
    _io(rig, bytes.fromhex("64 6d"), 4, IN, string=True)     # fs insd (the prefix is ignored)
    assert rig.u32(0x1000 + DATA) == 0x11223344
    assert rig.u32(0x2000 + DATA) == 0
    assert rig.get("rdi") == DATA + 4


def test_outs_honours_a_segment_override() -> None:
    device = RecordingPortDevice()
    rig = _rig(device=device)
    rig.load_segment(Seg.FS, 0x10, 0x3000, 0xFFFFFFFF)
    rig.poke(0x3000 + DATA, b"\x42\x43")
    rig.set(rsi=DATA, rcx=2, rdx=PORT)
    _io(rig, bytes.fromhex("64 f3 6e"), 1, OUT, string=True, rep=True)   # rep outsb fs:[esi]
    assert device.writes == [(0, 1, 0x42), (0, 1, 0x43)]
    assert rig.get("rsi") == DATA + 2


def test_rep_outsw_with_df_set_walks_down() -> None:
    device = RecordingPortDevice()
    rig = _rig(device=device)
    rig.poke(DATA, bytes.fromhex("0100 0200 0300"))
    rig.set(rsi=DATA + 4, rcx=3, rdx=PORT, rflags=0x2 | RFLAGS_DF)
    _io(rig, "rep outsw", 2, OUT, string=True, rep=True)
    assert [value for _, _, value in device.writes] == [3, 2, 1]
    assert (rig.get("rsi"), rig.get("rcx")) == (DATA - 2, 0)


def test_rep_insd_with_df_set_stores_the_first_element_highest() -> None:
    device = RecordingPortDevice(reads=[0xA, 0xB, 0xC])
    rig = _rig(device=device)
    rig.set(rdi=DATA + 8, rcx=3, rdx=PORT, rflags=0x2 | RFLAGS_DF)
    _io(rig, "rep insd", 4, IN, string=True, rep=True)
    assert [rig.u32(DATA + 4 * i) for i in range(3)] == [0xC, 0xB, 0xA]
    assert rig.get("rdi") == DATA - 4


def test_rep_with_zero_count_does_nothing_but_complete() -> None:
    device = RecordingPortDevice()
    rig = _rig(device=device)
    rig.set(rsi=DATA, rcx=0, rdx=PORT)
    _io(rig, "rep outsb", 1, OUT, string=True, rep=True)
    assert device.writes == [] and rig.get("rsi") == DATA
    assert rig.get("rip") == 0x10002


def test_string_io_without_rep_moves_one_element_and_keeps_rcx() -> None:
    device = RecordingPortDevice(reads=[0x77, 0x88])
    rig = _rig(device=device)
    rig.set(rdi=DATA, rcx=9, rdx=PORT)
    _io(rig, "insb", 1, IN, string=True)
    assert rig.peek(DATA, 2) == b"\x77\x00"
    assert (rig.get("rdi"), rig.get("rcx")) == (DATA + 1, 9)


def test_16_bit_address_size_uses_si_cx_and_the_segment_base() -> None:
    """Real mode: DS:SI with DS = 4000h, SI/CX updated as 16-bit registers (upper bits kept)."""
    device = RecordingPortDevice()
    rig = _rig("real", device=device)
    rig.load_segment(Seg.DS, 0x4000, 0x40000)
    rig.poke(0x40010, b"xyz")
    rig.set(rsi=0xABCD_0010, rcx=0x5555_0003, rdx=PORT)
    _io(rig, "rep outsb", 1, OUT, string=True, rep=True)
    assert [value for _, _, value in device.writes] == list(b"xyz")
    assert (rig.get("rsi"), rig.get("rcx")) == (0xABCD_0013, 0x5555_0000)


def test_16_bit_offset_wraps_within_the_segment_at_a_page_boundary() -> None:
    device = RecordingPortDevice()
    rig = _rig("real", device=device)
    rig.load_segment(Seg.DS, 0x4000, 0x40000)
    rig.poke(0x4FFFF, b"A")
    rig.poke(0x40000, b"B")
    rig.set(rsi=0xFFFF, rcx=2, rdx=PORT)
    _io(rig, "rep outsb", 1, OUT, string=True, rep=True)
    assert [value for _, _, value in device.writes] == [ord("A"), ord("B")]
    assert rig.get("rsi") == 1


def test_16_bit_offset_wraps_within_the_segment_inside_a_page() -> None:
    """DS base 40800h is not page aligned: DS:FFFE..DS:0001 are 507FEh, 507FFh, 40800h, 40801h."""
    device = RecordingPortDevice()
    rig = _rig("real", device=device)
    rig.load_segment(Seg.DS, 0x4080, 0x40800)
    rig.poke(0x507FE, b"ab")
    rig.poke(0x40800, b"cd")
    rig.poke(0x50800, b"XY")
    rig.set(rsi=0xFFFE, rcx=4, rdx=PORT)
    _io(rig, "rep outsb", 1, OUT, string=True, rep=True)
    assert bytes(value for _, _, value in device.writes) == b"abcd"
    assert rig.get("rsi") == 2


def test_64_bit_address_size() -> None:
    device = RecordingPortDevice(reads=[0x1111, 0x2222])
    rig = _rig("long", device=device)
    rig.set(rdi=DATA, rcx=2, rdx=PORT)
    _io(rig, "rep insw", 2, IN, string=True, rep=True)
    assert rig.peek(DATA, 4) == bytes.fromhex("1111 2222")
    assert (rig.get("rdi"), rig.get("rcx")) == (DATA + 4, 0)


def test_32_bit_address_size_in_64_bit_mode_uses_esi_and_ecx() -> None:
    device = RecordingPortDevice()
    rig = _rig("long", device=device)
    rig.poke(DATA, b"abc")
    rig.set(rsi=0xFFFF_FFFF_0000_0000 | DATA, rdx=PORT, rcx=0x1_0000_0003)
    _io(rig, bytes.fromhex("67 f3 6e"), 1, OUT, string=True, rep=True)    # addr32 rep outsb
    assert bytes(value for _, _, value in device.writes) == b"abc"


def test_32_bit_address_size_in_64_bit_mode_zero_extends_rsi_and_rcx() -> None:
    device = RecordingPortDevice()
    rig = _rig("long", device=device)
    rig.poke(DATA, b"abc")
    rig.set(rsi=0xFFFF_FFFF_0000_0000 | DATA, rdx=PORT, rcx=0x1_0000_0003)
    _io(rig, bytes.fromhex("67 f3 6e"), 1, OUT, string=True, rep=True)
    assert (rig.get("rsi"), rig.get("rcx")) == (DATA + 3, 0)


def test_page_crossing_buffer_follows_the_guest_page_tables() -> None:
    """Linear 41000h is mapped to GPA 60000h: a word straddling the boundary is split there."""
    device = RecordingPortDevice(reads=[0xA1A0, 0xB1B0, 0xC1C0])
    rig = _rig("paging32", device=device, remap={0x41000: 0x60000})
    rig.set(rdi=0x40FFD, rcx=3, rdx=PORT)
    _io(rig, "rep insw", 2, IN, string=True, rep=True)
    assert rig.peek(0x40FFD, 3) == bytes.fromhex("a0a1b0")
    assert rig.peek(0x60000, 3) == bytes.fromhex("b1c0c1")
    assert rig.peek(0x41000, 3) == bytes(3)
    assert (rig.get("rdi"), rig.get("rcx")) == (0x41003, 0)


def test_outs_page_crossing_buffer() -> None:
    device = RecordingPortDevice()
    rig = _rig("paging32", device=device, remap={0x41000: 0x60000})
    rig.poke(0x40FFE, b"\x01\x02")
    rig.poke(0x60000, b"\x03\x04")
    rig.set(rsi=0x40FFE, rcx=2, rdx=PORT)
    _io(rig, "rep outsw", 2, OUT, string=True, rep=True)
    assert [value for _, _, value in device.writes] == [0x0201, 0x0403]


def test_page_fault_mid_string_stops_at_the_faulting_iteration() -> None:
    """REP INSB of 20h bytes from 40FF0h with page 41000h not present: 16 iterations retire,
    then #PF(write, not present) with CR2 = 41000h; RIP stays at the instruction so REP
    resumes there after the guest maps the page."""
    device = RecordingPortDevice(reads=list(range(1, 0x21)))
    rig = _rig("paging32", device=device, missing=(0x41000,))
    rig.set(rdi=0x40FF0, rcx=0x20, rdx=PORT)
    insn = rig.place("rep insb")
    outcome = rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn,
                                      _qualification(1, IN, string=True, rep=True)))
    assert isinstance(outcome, Resume)
    assert rig.peek(0x40FF0, 16) == bytes(range(1, 17))
    assert len(device.reads) == 16                  # no port read for the faulting element
    assert (rig.get("rdi"), rig.get("rcx")) == (0x41000, 0x10)
    assert rig.get("rip") == insn.address
    assert rig.get("cr2") == 0x41000
    info = rig.injected()
    assert info is not None and info.vector == 14
    assert info.type is InterruptionType.HARDWARE_EXCEPTION and info.deliver_error_code
    assert rig.cpu.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0x80000B0E
    assert rig.injected_error() == 0x2              # supervisor write to a not-present page


def _descending_outs_into_a_missing_page() -> tuple[Rig, RecordingPortDevice, int]:
    device = RecordingPortDevice()
    rig = _rig("paging32", device=device, missing=(0x40000,))
    rig.poke(0x41000, b"\x09\x08")
    rig.set(rsi=0x41002, rcx=5, rdx=PORT, rflags=0x2 | RFLAGS_DF)
    insn = rig.place("rep outsw")
    rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn,
                            _qualification(2, OUT, string=True, rep=True)))
    return rig, device, insn.address


def test_page_fault_mid_outs_descending_keeps_the_completed_iterations() -> None:
    rig, device, address = _descending_outs_into_a_missing_page()
    assert [value for _, _, value in device.writes] == [0, 0x0809]   # 41002h, then 41000h
    assert (rig.get("rsi"), rig.get("rcx")) == (0x40FFE, 3)
    assert rig.get("rip") == address
    info = rig.injected()
    assert info is not None and info.vector == 14
    assert rig.injected_error() == 0x0              # supervisor read, not present
    assert rig.get("cr2") & ~0xFFF == 0x40000


def test_page_fault_mid_outs_descending_reports_the_faulting_element_in_cr2() -> None:
    rig, _, _ = _descending_outs_into_a_missing_page()
    assert rig.get("cr2") == 0x40FFE


def test_ins_element_straddling_into_a_missing_page_faults_before_reading_the_port() -> None:
    device = RecordingPortDevice(reads=[0xAAAA, 0xBBBB])
    rig = _rig("paging32", device=device, missing=(0x41000,))
    rig.set(rdi=0x40FFF, rcx=1, rdx=PORT)
    insn = rig.place("rep insw")
    rig.handle(rig.exit_for(ExitReason.IO_INSTRUCTION, insn,
                            _qualification(2, IN, string=True, rep=True)))
    assert rig.get("cr2") == 0x41000 and rig.injected() is not None
    assert (rig.get("rdi"), rig.get("rcx")) == (0x40FFF, 1)
    assert device.reads == []                       # the element is read again after the fault
