"""The gdb stub's protocol layer: framing, the register file, packets answered on a real guest."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET

import unicorn.x86_const as U

from tests.unit.debug.test_debugger_stepping import session_for
from vtemu.debug.gdbstub import registers
from vtemu.debug.gdbstub.rsp import Connection, escape, frame, unescape
from vtemu.debug.gdbstub.stub import GdbStub, parse_address


def test_framing_checksums_and_escapes() -> None:
    assert frame(b"OK") == b"$OK#9a"
    data = bytes(range(256))
    assert unescape(escape(data)) == data
    assert b"#" not in escape(b"a#b$c}d*")


def test_a_connection_reads_packets_acks_them_and_sees_interrupts() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"+" + frame(b"g") + b"\x03$m0,1#00" + frame(b"m0,1"))
        connection = Connection(ours)
        assert connection.read_packet() == b"g"
        assert connection.read_packet() == b"\x03"
        assert connection.read_packet() == b"m0,1"
        assert theirs.recv(16) == b"+-+"          # the bad checksum is refused


def test_target_description_has_the_amd64_core_and_sse_registers() -> None:
    root = ET.fromstring(registers.target_xml().split("\n", 2)[2])
    names = [reg.get("name") for reg in root.iter("reg")]
    assert names[:17] == ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                          "r11", "r12", "r13", "r14", "r15", "rip"]
    assert names[-1] == "mxcsr" and len(names) == len(registers.REGISTERS) == 57
    assert root.find("architecture").text == "i386:x86-64"


def test_packets_on_a_guest_in_real_mode_and_after_stepping() -> None:
    session = session_for("hello")
    ours, theirs = socket.socketpair()
    stub = GdbStub(session, Connection(ours))   # the peer stays quiet: no interrupt byte
    supported = stub.handle("qSupported:multiprocess+;swbreak+")
    assert "ReverseStep+" in supported and "ReverseContinue+" in supported
    assert stub.handle("p10") == (0xFFFFFFF0).to_bytes(8, "little").hex()   # $pc = CS.base + IP
    g = stub.handle("g")
    assert len(g) == 2 * sum(r.size for r in registers.REGISTERS)
    assert stub.handle("Z0,100039,1") == "OK"
    assert stub.handle("c").startswith("T05swbreak:")
    assert stub.handle("p10") == (0x100039).to_bytes(8, "little").hex()
    assert stub.handle("m100000,4") == "02b0ad1b"
    assert stub.handle("P0=2a00000000000000") == "OK"
    assert session.vcpu.read(U.UC_X86_REG_RAX) == 0x2A
    assert stub.handle("s") == "T05thread:1;"
    assert stub.handle("bs") == "T05thread:1;"
    assert session.vcpu.read(U.UC_X86_REG_RAX) == 0x2A     # the write is re-applied on the way
    assert stub.handle("mc0000000,4") == "E14"               # no RAM there: EPT refuses
    assert bytes.fromhex(stub.handle("qRcmd," + b"exits 1".hex())).startswith(b"#")
    assert parse_address("1234") == ("127.0.0.1", 1234)
    assert parse_address("0.0.0.0:99") == ("0.0.0.0", 99)
    ours.close()
    theirs.close()
