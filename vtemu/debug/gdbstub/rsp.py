"""GDB Remote Serial Protocol framing (gdb manual, "Overview" of the remote protocol).

A packet is `$data#cc` (cc: the modulo-256 sum of data, two hex digits), acknowledged with
`+`; `}` escapes `#`, `$`, `}` and `*` in binary data as the byte XOR 0x20; a lone 0x03 byte
is an interrupt request.
"""

from __future__ import annotations

import socket

INTERRUPT = b"\x03"
_ESCAPED = frozenset(b"#$}*")


def checksum(data: bytes) -> bytes:
    return f"{sum(data) & 0xFF:02x}".encode()


def frame(data: bytes) -> bytes:
    return b"$" + data + b"#" + checksum(data)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    escape = False
    for byte in data:
        if escape:
            out.append(byte ^ 0x20)
            escape = False
        elif byte == ord("}"):
            escape = True
        else:
            out.append(byte)
    return bytes(out)


def escape(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        if byte in _ESCAPED:
            out += bytes((ord("}"), byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


class Connection:
    """Packets in and out of one gdb connection; `read_packet` returns None at EOF and
    INTERRUPT for a Ctrl-C that arrives between packets."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self.no_ack = False

    def _fill(self) -> bool:
        chunk = self.sock.recv(4096)
        self._buffer += chunk
        return bool(chunk)

    def read_packet(self) -> bytes | None:
        while True:
            start = self._skip_to_packet()
            if start == INTERRUPT:
                return INTERRUPT
            if start is None:
                if not self._fill():
                    return None
                continue
            end = self._buffer.find(b"#")
            if end < 0 or len(self._buffer) < end + 3:
                if not self._fill():
                    return None
                continue
            data, sent = self._buffer[1:end], self._buffer[end + 1:end + 3]
            self._buffer = self._buffer[end + 3:]
            if sent.lower() != checksum(data):
                self._send_raw(b"-")
                continue
            if not self.no_ack:
                self._send_raw(b"+")
            return unescape(data)

    def _skip_to_packet(self) -> bytes | None:
        """Drop acks; report a 0x03; None until a `$` starts the buffer."""
        while self._buffer:
            first = self._buffer[:1]
            if first == b"$":
                return b"$"
            self._buffer = self._buffer[1:]
            if first == INTERRUPT:
                return INTERRUPT
        return None

    def send(self, data: bytes) -> None:
        self._send_raw(frame(data))

    def _send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)
