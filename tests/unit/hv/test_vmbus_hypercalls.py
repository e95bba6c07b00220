"""HvCallPostMessage (005Ch) and HvCallSignalEvent (005Dh) through the partition's real
hypercall service: made-up VMCALL exits, statuses in RAX / EDX:EAX, interrupts injected."""

from __future__ import annotations

import struct

import pytest

from tests.unit.hv.fakes import DATA, RFLAGS_IF, Rig
from vtemu.hv.hypercalls import HvStatus, input_value
from vtemu.hv.hypercalls.page import HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_HYPERCALL
from vtemu.hv.vmbus import vmbus_of
from vtemu.hv.vmbus.channel import ChannelMessage
from vtemu.hv.vmbus.ring import Ring
from vtemu.machine.addr import PAGE_SIZE
from vtemu.modes import pv
from vtemu.vmx.controls import PrimaryProcessorControls as P
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.interruption import InterruptionType
from vtemu.vmx.reasons import ExitReason

HYPERCALL_PAGE = 0x80000
INPUT = DATA                    # the PostMessage input page
MESSAGE_RING = (0x90000, 0x91000)
VECTOR = 0x50
POST, SIGNAL = 0x5C, 0x5D


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    pv.configure(rig.cpu, rig.partition)
    service = rig.partition.hypercalls
    service.page.write_msr(rig.cpu, HV_X64_MSR_GUEST_OS_ID, 1)
    service.page.write_msr(rig.cpu, HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE | 1)
    rig.long_mode()
    rig.set(rflags=RFLAGS_IF | 2)
    return rig


def contact_input(connection: int = 1, reserved: int = 0, message_type: int = 1,
                  size: int | None = None) -> bytes:
    body = struct.pack("<IIIIII", ChannelMessage.INITIATE_CONTACT, 0, 1, VECTOR, 2, 0) + \
        struct.pack("<2Q", *MESSAGE_RING)
    header = struct.pack("<IIII", connection, reserved, message_type,
                         len(body) if size is None else size)
    return (header + body).ljust(256, b"\0")


def vmcall(rig: Rig, **registers: int) -> int:
    """One VMCALL with these registers through the dispatcher; the status (RAX 15:0)."""
    rig.set(**registers)
    insn = rig.place("vmcall")
    rig.dispatch(rig.exit_for(ExitReason.VMCALL, insn))
    return rig.get("rax") & 0xFFFF


def test_post_message_makes_contact_and_the_answer_interrupts(rig: Rig) -> None:
    rig.poke(INPUT, contact_input())
    assert vmcall(rig, rcx=input_value(POST), rdx=INPUT, r8=0) == HvStatus.SUCCESS
    ring = Ring(vmbus_of(rig.partition).host.memory, list(MESSAGE_RING))
    packet = ring.read_packet()
    assert packet is not None
    assert struct.unpack_from("<IIII", packet.payload) == (ChannelMessage.VERSION_RESPONSE, 0, 1, 1)
    injected = rig.injected()
    assert injected is not None and injected.vector == VECTOR
    assert injected.type is InterruptionType.EXTERNAL_INTERRUPT
    assert rig.partition.hypercalls.calls[POST] == 1


@pytest.mark.parametrize("registers, status", [
    (dict(rcx=input_value(POST), rdx=INPUT + 4), HvStatus.INVALID_ALIGNMENT),        # TLFS 3.7
    (dict(rcx=input_value(POST), rdx=INPUT + PAGE_SIZE - 8), HvStatus.INVALID_ALIGNMENT),  # crosses
    (dict(rcx=input_value(POST), rdx=16 << 20), HvStatus.INVALID_PARAMETER),         # past RAM
    (dict(rcx=input_value(POST), rdx=0xA0000), HvStatus.INVALID_PARAMETER),          # the hole
    (dict(rcx=input_value(POST, fast=True), rdx=1), HvStatus.INVALID_HYPERCALL_INPUT),
    (dict(rcx=input_value(POST, rep_count=1), rdx=INPUT), HvStatus.INVALID_HYPERCALL_INPUT),
])
def test_post_message_parameter_checks(rig: Rig, registers: dict[str, int], status: HvStatus) -> None:
    rig.poke(INPUT, contact_input())
    assert vmcall(rig, r8=0, **registers) == status
    assert vmbus_of(rig.partition).host.message_ring is None
    assert rig.injected() is None


@pytest.mark.parametrize("fields, status", [
    (dict(reserved=1), HvStatus.INVALID_HYPERCALL_INPUT),
    (dict(size=241), HvStatus.INVALID_PARAMETER),
    (dict(connection=7), HvStatus.INVALID_CONNECTION_ID),
    (dict(message_type=0x80000001), HvStatus.INVALID_PARAMETER),
])
def test_post_message_input_fields(rig: Rig, fields: dict[str, int], status: HvStatus) -> None:
    rig.poke(INPUT, contact_input(**fields))
    assert vmcall(rig, rcx=input_value(POST), rdx=INPUT, r8=0) == status


def test_a_bad_ring_gpa_in_the_message_is_a_status(rig: Rig) -> None:
    body = struct.pack("<IIIIII", ChannelMessage.INITIATE_CONTACT, 0, 1, VECTOR, 2, 0) + \
        struct.pack("<2Q", 0x90000, 0x91001)
    rig.poke(INPUT, (struct.pack("<IIII", 1, 0, 1, len(body)) + body).ljust(256, b"\0"))
    assert vmcall(rig, rcx=input_value(POST), rdx=INPUT, r8=0) == HvStatus.INVALID_ALIGNMENT


def test_signal_event_fast_and_from_memory(rig: Rig) -> None:
    assert vmcall(rig, rcx=input_value(SIGNAL, fast=True), rdx=0x11, r8=0) \
        == HvStatus.INVALID_CONNECTION_ID
    assert vmcall(rig, rcx=input_value(SIGNAL, fast=True), rdx=0x11 | 1 << 48, r8=0) \
        == HvStatus.INVALID_HYPERCALL_INPUT
    rig.poke(INPUT, struct.pack("<IHH", 0x11, 0, 0))
    assert vmcall(rig, rcx=input_value(SIGNAL), rdx=INPUT, r8=0) == HvStatus.INVALID_CONNECTION_ID
    assert vmbus_of(rig.partition).host.stats.signals == 0


def test_the_x86_register_convention(rig: Rig) -> None:
    """32-bit code: EDX:EAX input value, EBX:ECX input GPA (TLFS 3.7), status in EAX."""
    rig.protected_mode()
    rig.set(rflags=RFLAGS_IF | 2)
    rig.poke(INPUT, contact_input())
    assert vmcall(rig, edx=0, eax=input_value(POST), ebx=0, ecx=INPUT, edi=0, esi=0) \
        == HvStatus.SUCCESS
    assert vmcall(rig, edx=0, eax=input_value(SIGNAL, fast=True), ebx=0, ecx=0x11,
                  edi=0, esi=0) == HvStatus.INVALID_CONNECTION_ID


def test_with_interrupts_off_the_vector_waits_for_the_window(rig: Rig) -> None:
    rig.set(rflags=2)
    rig.poke(INPUT, contact_input())
    assert vmcall(rig, rcx=input_value(POST), rdx=INPUT, r8=0) == HvStatus.SUCCESS
    assert rig.injected() is None
    assert rig.partition.pending_vectors(rig.cpu) == [VECTOR]
    assert rig.cpu.vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL) & P.INTERRUPT_WINDOW_EXITING


def test_the_hypercall_page_is_not_a_ring_page(rig: Rig) -> None:
    """The guest may not write its hypercall page, so neither may the host on its behalf."""
    body = struct.pack("<IIIIII", ChannelMessage.INITIATE_CONTACT, 0, 1, VECTOR, 2, 0) + \
        struct.pack("<2Q", HYPERCALL_PAGE, 0x91000)
    rig.poke(INPUT, (struct.pack("<IIII", 1, 0, 1, len(body)) + body).ljust(256, b"\0"))
    code = rig.peek(HYPERCALL_PAGE, 16)
    assert vmcall(rig, rcx=input_value(POST), rdx=INPUT, r8=0) == HvStatus.ACCESS_DENIED
    assert rig.peek(HYPERCALL_PAGE, 16) == code
