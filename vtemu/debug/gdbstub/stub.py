"""The gdb stub: a debugger Session driven by gdb's remote protocol over TCP.

`vtemu run IMAGE --gdb [HOST:]PORT` boots the guest to its reset state and waits for one
gdb (`target remote :PORT`). Addresses in m/M/X/Z packets are linear, through the guest's
own paging (registers.py: $pc is linear too). Z0/Z1 breakpoints never write guest memory:
the session checks each instruction's address before it runs. Z2/Z3/Z4 watchpoints stop
after the accessing instruction. `s` is one guest instruction (a faulting one lands in its
handler), `bs`/`bc` step and continue backwards by re-execution (stepping.py), and a 0x03
from gdb while the guest runs stops it at the next instruction. `monitor` (qRcmd) offers
exits, vmcs, regs, break-exit REASON [F=V ...], stepirq on|off, and the debugger's other
inspection commands.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import TextIO

from vtemu.debug.commands import Commands
from vtemu.debug.gdbstub import registers
from vtemu.debug.gdbstub.rsp import INTERRUPT, Connection, escape
from vtemu.debug.stepping import Session, Stop, StopKind
from vtemu.errors import BadInput, VtemuError
from vtemu.machine.translation import TranslationFault

SIGTRAP, SIGINT = 5, 2
_WATCH_KINDS = {"2": "write", "3": "read", "4": "access"}
_WATCH_LABELS = {"write": "watch", "read": "rwatch", "access": "awatch"}
_MONITOR_ALIASES = {"break-exit": "be"}


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, :PORT or PORT; the host defaults to loopback."""
    host, colon, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise BadInput(f"--gdb {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1234") from None
    if not 0 <= number <= 65535:
        raise BadInput(f"--gdb {text!r}: port out of range")
    return (host or "127.0.0.1") if colon else "127.0.0.1", number


def serve(session: Session, host: str, port: int, log: TextIO) -> int:
    """Accept one gdb, serve it until it detaches or kills; the guest's exit status."""
    try:
        listener = socket.create_server((host, port))
    except OSError as error:
        raise BadInput(f"--gdb {host}:{port}: {error.strerror}") from None
    with listener:
        print(f"vtemu: waiting for gdb on {host}:{listener.getsockname()[1]} "
              f"(gdb -ex 'target remote {host}:{listener.getsockname()[1]}')", file=log, flush=True)
        connection, _ = listener.accept()
    with connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        GdbStub(session, Connection(connection)).serve()
    result = session.partition.result
    return 0 if result is None else result.exit_code & 0xFF


class GdbStub:
    def __init__(self, session: Session, connection: Connection) -> None:
        self.session = session
        self.connection = connection
        self.commands = Commands(session)
        self._done = False

    def serve(self) -> None:
        while not self._done:
            packet = self.connection.read_packet()
            if packet is None:
                return
            if packet == INTERRUPT:
                self.connection.send(b"S%02x" % SIGINT)
                continue
            reply = self.handle(packet.decode("latin-1"))
            if reply is not None:
                self.connection.send(reply.encode("latin-1"))

    # --- dispatch ----------------------------------------------------------------------------
    def handle(self, packet: str) -> str | None:
        try:
            return self._dispatch(packet)
        except (TranslationFault, MemoryError):
            return "E14"          # EFAULT: the address is not mapped
        except (ValueError, IndexError, VtemuError):
            return "E22"          # EINVAL: a malformed packet

    def _dispatch(self, packet: str) -> str | None:
        head = packet[:1]
        if packet.startswith("q"):
            return self._query(packet)
        if packet.startswith("vCont"):
            return self._vcont(packet)
        if packet.startswith("QStartNoAckMode"):
            self.connection.send(b"OK")
            self.connection.no_ack = True
            return None
        simple = {"?": lambda: f"T{SIGTRAP:02x}thread:1;",   # where gdb attached: a plain stop
                  "g": lambda: registers.all_registers_hex(self.session.vcpu),
                  "H": lambda: "OK", "T": lambda: "OK",
                  "c": lambda: self._resume(self.session.cont),
                  "s": lambda: self._resume(lambda: self.session.step(1)),
                  "D": self._detach, "k": self._kill}
        if packet in ("bs", "bc"):
            return self._resume(self.session.reverse_step if packet == "bs" else self.session.reverse_continue)
        if head in simple:
            return simple[head]()
        handlers = {"p": self._read_register, "P": self._write_register, "m": self._read_memory,
                    "M": self._write_memory, "X": self._write_binary, "Z": self._insert, "z": self._remove}
        handler = handlers.get(head)
        return handler(packet[1:]) if handler is not None else ""

    def _query(self, packet: str) -> str:
        name = packet.split(":", 1)[0].split(",", 1)[0]
        if name == "qSupported":
            return ("PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;"
                    "ReverseStep+;ReverseContinue+;QStartNoAckMode+;vContSupported+")
        if packet.startswith("qXfer:features:read:target.xml:"):
            return self._xfer(registers.target_xml().encode(), packet.rsplit(":", 1)[1])
        if name == "qRcmd":
            return self._monitor(bytes.fromhex(packet.split(",", 1)[1]).decode("latin-1"))
        return {"qAttached": "1", "qC": "QC1", "qfThreadInfo": "m1", "qsThreadInfo": "l",
                "qSymbol": "OK"}.get(name, "")

    def _xfer(self, document: bytes, window: str) -> str:
        offset, length = (int(part, 16) for part in window.split(","))
        chunk = document[offset:offset + length]
        marker = "l" if offset + length >= len(document) else "m"
        return marker + escape(chunk).decode("latin-1")

    # --- running -----------------------------------------------------------------------------
    def _vcont(self, packet: str) -> str:
        if packet == "vCont?":
            return "vCont;c;C;s;S"
        action = packet.split(";")[1][:1]
        if action in ("s", "S"):
            return self._resume(lambda: self.session.step(1))
        return self._resume(self.session.cont)

    def _resume(self, run) -> str:  # noqa: ANN001 - a Session method
        """Run while a thread watches the socket for gdb's interrupt byte."""
        running = threading.Event()
        running.set()
        watcher = threading.Thread(target=self._watch_interrupt, args=(running,), daemon=True)
        watcher.start()
        try:
            stop = run()
        finally:
            running.clear()
            watcher.join()
        return self._stop_reply(stop)

    def _watch_interrupt(self, running: threading.Event) -> None:
        sock = self.connection.sock
        while running.is_set():
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready and running.is_set():
                data = sock.recv(1, socket.MSG_PEEK)
                if data == INTERRUPT:
                    sock.recv(1)
                    self.session.interrupt()
                elif not data:
                    self.session.interrupt()   # gdb went away: stop the guest
                    return
                else:
                    return  # a packet: the main loop reads it after the stop

    def _stop_reply(self, stop: Stop) -> str:
        if stop.kind is StopKind.ENDED:
            result = self.session.partition.result
            return f"W{(result.exit_code if result else 0) & 0xFF:02x}"
        if stop.kind is StopKind.INTERRUPTED:
            return f"T{SIGINT:02x}thread:1;"
        if stop.kind is StopKind.START:
            return f"T{SIGTRAP:02x}replaylog:begin;"
        if stop.kind is StopKind.WATCH and stop.address is not None:
            kind = self.session.watchpoints.get(stop.address, (0, "write"))[1]
            return f"T{SIGTRAP:02x}{_WATCH_LABELS[kind]}:{stop.address:x};thread:1;"
        if stop.kind is StopKind.BREAKPOINT:
            return f"T{SIGTRAP:02x}swbreak:;thread:1;"
        return f"T{SIGTRAP:02x}thread:1;"

    def _detach(self) -> str:
        self._done = True
        return "OK"

    def _kill(self) -> None:
        self._done = True
        return None

    # --- registers and memory ----------------------------------------------------------------
    def _read_register(self, text: str) -> str:
        number = int(text, 16)
        if number >= len(registers.REGISTERS):
            return "E45"
        return registers.register_hex(self.session.vcpu, number)

    def _write_register(self, text: str) -> str:
        number_text, value_text = text.split("=")
        number = int(number_text, 16)
        if number >= len(registers.REGISTERS):
            return "E45"
        value = int.from_bytes(bytes.fromhex(value_text), "little")
        vcpu = self.session.vcpu
        if number == registers.PC:
            import unicorn.x86_const as U
            from vtemu.machine.cpustate import Seg
            self.session.write_register(U.UC_X86_REG_RIP, value - vcpu.segment(Seg.CS).base)
            return "OK"
        unicorn_id = registers.writable_register(number)
        if unicorn_id is None:
            return "E01"   # segment, x87 and vector registers are read-only here
        self.session.write_register(unicorn_id, value)
        return "OK"

    def _read_memory(self, text: str) -> str:
        address, length = (int(part, 16) for part in text.split(","))
        return self.session.vcpu.read_linear(address, length).hex()

    def _write_memory(self, text: str) -> str:
        where, data = text.split(":", 1)
        address, length = (int(part, 16) for part in where.split(","))
        payload = bytes.fromhex(data)
        if len(payload) != length:
            return "E22"
        if length:
            self.session.write_memory(address, payload)
        return "OK"

    def _write_binary(self, text: str) -> str:
        where, data = text.split(":", 1)
        address, length = (int(part, 16) for part in where.split(","))
        payload = data.encode("latin-1")
        if len(payload) != length:
            return "E22"
        if length:
            self.session.write_memory(address, payload)
        return "OK"

    # --- breakpoints and watchpoints ---------------------------------------------------------
    def _insert(self, text: str) -> str:
        kind, address_text, length_text = text.split(";")[0].split(",")
        address = int(address_text, 16)
        if kind in ("0", "1"):
            self.session.breakpoints.add(address)
            return "OK"
        if kind in _WATCH_KINDS:
            self.session.add_watchpoint(address, max(1, int(length_text, 16)), _WATCH_KINDS[kind])
            return "OK"
        return ""

    def _remove(self, text: str) -> str:
        kind, address_text, _ = text.split(";")[0].split(",")
        address = int(address_text, 16)
        if kind in ("0", "1"):
            self.session.breakpoints.discard(address)
            return "OK"
        if kind in _WATCH_KINDS:
            self.session.remove_watchpoint(address)
            return "OK"
        return ""

    # --- monitor -------------------------------------------------------------------------------
    def _monitor(self, command: str) -> str:
        words = command.split()
        if words and words[0] in _MONITOR_ALIASES:
            words[0] = _MONITOR_ALIASES[words[0]]
        if words and words[0] == "stepirq":
            words.insert(0, "set")
        if words and words[0] in ("si", "se", "c", "rs", "rc", "q", "quit"):
            lines = ["use gdb's own stepi/continue/reverse-stepi here"]
        else:
            try:
                lines = self.commands.execute(" ".join(words) or "help").lines
            except VtemuError as error:
                lines = [f"error: {error}"]
        return ("\n".join(lines) + "\n").encode().hex()
