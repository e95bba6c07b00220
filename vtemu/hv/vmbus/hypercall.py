"""HvCallPostMessage (005Ch) and HvCallSignalEvent (005Dh): the guest's two ways into the
channel host, registered in the hypercall table (vtemu/hv/hypercalls).

TLFS 6.0 11.10.1 HvPostMessage, memory input (256 bytes, 8-byte aligned, within one page):
    +0 ConnectionId u32   +4 RsvdZ u32   +8 MessageType u32   +12 PayloadSize u32
    +16 Payload[240]
TLFS 6.0 11.10.2 HvSignalEvent, fast (RDX, or EBX:ECX in 32-bit code) or memory input:
    +0 ConnectionId u32   +4 FlagNumber u16   +6 RsvdZ u16

A reserved field that is not zero is HV_STATUS_INVALID_HYPERCALL_INPUT; a payload size over
240, HV_STATUS_INVALID_PARAMETER; the channel's own statuses are in channel.py. Interrupts
the host raises during the call (a packet in an empty inbound ring) go to the calling vCPU,
injected as the VMCALL completes, or as soon as the guest's IF allows.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from vtemu.hv.handlers.events import inject_pending_interrupt
from vtemu.hv.hypercalls.abi import HvStatus, HypercallInput
from vtemu.hv.hypercalls.params import read_parameters
from vtemu.hv.hypercalls.table import HypercallResult, register
from vtemu.hv.vmbus import vmbus_of
from vtemu.hv.vmbus.channel import MAX_MESSAGE_PAYLOAD

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

POST_MESSAGE = 0x005C
SIGNAL_EVENT = 0x005D
POST_MESSAGE_INPUT = struct.Struct("<IIII")       # then the payload
POST_MESSAGE_INPUT_SIZE = POST_MESSAGE_INPUT.size + MAX_MESSAGE_PAYLOAD   # 256
SIGNAL_EVENT_INPUT = struct.Struct("<IHH")


def post_message(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    block = read_parameters(partition, call.input_gpa, POST_MESSAGE_INPUT_SIZE)
    connection, reserved, message_type, size = POST_MESSAGE_INPUT.unpack_from(block)
    if reserved:
        return HypercallResult(HvStatus.INVALID_HYPERCALL_INPUT)
    if size > MAX_MESSAGE_PAYLOAD:
        return HypercallResult(HvStatus.INVALID_PARAMETER)
    payload = block[POST_MESSAGE_INPUT.size:POST_MESSAGE_INPUT.size + size]
    channel_bus = vmbus_of(partition)
    status = channel_bus.host.post_message(connection, message_type, payload)
    _raise_interrupts(partition, cpu, channel_bus.take_raised())
    return HypercallResult(HvStatus(status))


def signal_event(partition: "Partition", cpu: "VmxCpu", call: HypercallInput) -> HypercallResult:
    if call.fast:
        data = (call.input & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    else:
        data = read_parameters(partition, call.input_gpa, SIGNAL_EVENT_INPUT.size)
    connection, flag, reserved = SIGNAL_EVENT_INPUT.unpack(data)
    if reserved:
        return HypercallResult(HvStatus.INVALID_HYPERCALL_INPUT)
    channel_bus = vmbus_of(partition)
    status = channel_bus.host.signal_event(connection, flag)
    _raise_interrupts(partition, cpu, channel_bus.take_raised())
    return HypercallResult(HvStatus(status))


def _raise_interrupts(partition: "Partition", cpu: "VmxCpu", vectors: list[int]) -> None:
    if vectors:
        partition.pending_vectors(cpu).extend(vectors)
        inject_pending_interrupt(cpu, partition)


register(POST_MESSAGE, "HvCallPostMessage", post_message, fast=False)
register(SIGNAL_EVENT, "HvCallSignalEvent", signal_event)
