"""The debugger's commands: parse one line, act on the Session, return lines to print.

Addresses are linear (GVA) numbers (`0x100000`), or `SEL:OFF` in real mode (`f000:fff0`,
linear = SEL*16 + OFF); `p:ADDR` in `x` means guest-physical. Bad input raises BadInput,
which the debugger prints as one line and carries on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from vtemu.debug import views
from vtemu.debug.filters import build_filter
from vtemu.debug.report import stats_rows
from vtemu.debug.stepping import Session, Stop, StopKind
from vtemu.errors import BadInput
from vtemu.machine.translation import TranslationFault

HELP = """\
si [N]            execute exactly N guest instructions (default 1); a faulting instruction is
                  a step that lands in its handler
se [N]            run to the next N VM exits, printing each decoded
c                 continue to a breakpoint, the end of the guest, or Ctrl-C
b ADDR            break before the instruction at linear ADDR (or SEL:OFF in real mode)
be REASON [F=V..] break after a VM exit: REASON as in --filter (io, hlt, cpuid, msr, cr, ept,
                  ext, exc, IO_INSTRUCTION, 30, ...), F=V payload filters (port=0x3f8,
                  msr=0xc0000080, cr=3, vector=14, leaf=0x40000000, code=0x1, direction=out)
bm                break when the CPU mode changes (real/protected/long, paging on/off)
bi N              break when N guest instructions have retired
info b            list breakpoints;  d [N|all]  delete breakpoint N (numbers from info b)
set stepirq on|off  let interrupts in while stepping (si), or hold them (default on)
regs              registers, segments, control registers
vmcs [all]        the VMCS, decoded (non-zero fields unless `all`)
x/N[bwdq] ADDR    N bytes/words/dwords/qwords at linear ADDR, or p:ADDR (guest-physical)
disas [ADDR] [N]  N instructions (default 8) in the CPU's current mode, from RIP or ADDR
exits [N]         the last N VM exits (default 10)
stats             VM exits by reason so far
rs [N]            reverse-step N instructions (default 1)
rc                reverse-continue to the previous breakpoint stop (or to reset)
where             position, instruction count, mode and the next instruction
help              this text;  q  quit"""


@dataclass
class Result:
    lines: list[str]
    quit: bool = False


class Commands:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._table: dict[str, Callable[[list[str]], list[str]]] = {
            "si": self._si, "stepi": self._si, "se": self._se, "c": self._c, "continue": self._c,
            "b": self._b, "break": self._b, "be": self._be, "bm": self._bm, "bi": self._bi,
            "info": self._info, "d": self._delete, "delete": self._delete, "set": self._set,
            "regs": self._regs, "vmcs": self._vmcs, "disas": self._disas, "exits": self._exits,
            "stats": self._stats, "rs": self._rs, "rc": self._rc, "where": self._where,
            "help": lambda args: HELP.splitlines(),
        }

    def execute(self, line: str) -> Result:
        words = line.split("#", 1)[0].split()
        if not words:
            return Result([])
        name, args = words[0], words[1:]
        if name in ("q", "quit", "exit"):
            return Result([], quit=True)
        if name.startswith("x/") or name == "x":
            return Result(self._examine(name, args))
        command = self._table.get(name)
        if command is None:
            raise BadInput(f"unknown command {name!r} (try help)")
        return Result(command(args))

    # --- running ---------------------------------------------------------------------------
    def _si(self, args: list[str]) -> list[str]:
        return self._report(self.session.step(_count(args)))

    def _se(self, args: list[str]) -> list[str]:
        count = _count(args)
        before = self.session.exits_seen
        stop = self.session.next_exits(count)
        taken = min(self.session.exits_seen - before, len(self.session.history))
        records = list(self.session.history)[-taken:] if taken else []
        return [views.record_line(record) for record in records] + self._report(stop, show_exit=False)

    def _c(self, args: list[str]) -> list[str]:
        return self._report(self.session.cont())

    def _rs(self, args: list[str]) -> list[str]:
        return self._report(self.session.reverse_step(_count(args)))

    def _rc(self, args: list[str]) -> list[str]:
        return self._report(self.session.reverse_continue())

    # --- breakpoints ----------------------------------------------------------------------
    def _b(self, args: list[str]) -> list[str]:
        address = self._address(_one(args, "b ADDR"))
        self.session.breakpoints.add(address)
        return [f"breakpoint at {address:#x}"]

    def _be(self, args: list[str]) -> list[str]:
        if not args:
            raise BadInput("be REASON [NAME=VALUE ...], e.g. be io port=0x3f8")
        reasons = [word for word in args if "=" not in word]
        fields = [word for word in args if "=" in word]
        exit_filter = build_filter(reasons, [_field_alias(word) for word in fields])
        text = " ".join(args)
        self.session.exit_breaks.append((text, exit_filter))
        return [f"exit breakpoint: {text}"]

    def _bm(self, args: list[str]) -> list[str]:
        self.session.break_on_mode = True
        return [f"break on mode change (now {self.session.mode().describe()})"]

    def _bi(self, args: list[str]) -> list[str]:
        count = _number(_one(args, "bi N"))
        self.session.count_breaks.add(count)
        return [f"break at instruction count {count}"]

    def _breakpoint_list(self) -> list[tuple[str, Callable[[], None]]]:
        session = self.session
        items: list[tuple[str, Callable[[], None]]] = []
        for address in sorted(session.breakpoints):
            items.append((f"address {address:#x}", lambda a=address: session.breakpoints.discard(a)))
        for entry in list(session.exit_breaks):
            items.append((f"exit {entry[0]}", lambda e=entry: session.exit_breaks.remove(e)))
        if session.break_on_mode:
            items.append(("mode change", lambda: setattr(session, "break_on_mode", False)))
        for count in sorted(session.count_breaks):
            items.append((f"instruction count {count}", lambda n=count: session.count_breaks.discard(n)))
        return items

    def _info(self, args: list[str]) -> list[str]:
        if args[:1] not in (["b"], ["break"], ["breakpoints"]):
            raise BadInput("info b: list breakpoints")
        items = self._breakpoint_list()
        return [f"{number}: {text}" for number, (text, _) in enumerate(items, 1)] or ["no breakpoints"]

    def _delete(self, args: list[str]) -> list[str]:
        items = self._breakpoint_list()
        if not args or args == ["all"]:
            for _, remove in items:
                remove()
            return ["all breakpoints deleted"]
        number = _number(args[0])
        if not 1 <= number <= len(items):
            raise BadInput(f"no breakpoint {number} (see info b)")
        items[number - 1][1]()
        return [f"deleted {items[number - 1][0]}"]

    def _set(self, args: list[str]) -> list[str]:
        if len(args) != 2 or args[0] != "stepirq" or args[1] not in ("on", "off"):
            raise BadInput("set stepirq on|off")
        self.session.step_interrupts = args[1] == "on"
        return [f"interrupts while stepping: {args[1]}"]

    # --- looking ---------------------------------------------------------------------------
    def _regs(self, args: list[str]) -> list[str]:
        return views.register_lines(self.session.vcpu)

    def _vmcs(self, args: list[str]) -> list[str]:
        return views.vmcs_lines(self.session.cpu, everything=args[:1] == ["all"])

    def _examine(self, name: str, args: list[str]) -> list[str]:
        match = re.fullmatch(r"x(?:/(\d*)([bwdq]?))?", name)
        if match is None or len(args) != 1:
            raise BadInput("x/N[bwdq] ADDR (ADDR linear, or p:ADDR guest-physical)")
        count = int(match.group(1) or 1)
        unit = match.group(2) or "b"
        physical = args[0].startswith("p:")
        address = _number(args[0][2:]) if physical else self._address(args[0])
        try:
            return views.memory_lines(self.session.vcpu, address, count, unit, physical)
        except (TranslationFault, MemoryError, ValueError) as fault:
            raise BadInput(f"cannot read {args[0]}: {fault or type(fault).__name__}") from None

    def _disas(self, args: list[str]) -> list[str]:
        address = self._address(args[0]) if args else None
        count = _number(args[1]) if len(args) > 1 else 8
        return views.disassembly_lines(self.session.vcpu, address, count)

    def _exits(self, args: list[str]) -> list[str]:
        count = _count(args, default=10)
        records = list(self.session.history)[-count:]
        return [views.record_line(record) for record in records] or ["no VM exits yet"]

    def _stats(self, args: list[str]) -> list[str]:
        rows = stats_rows(self.session.partition)
        lines = [f"{'reason':<28} {'#':>3} {'count':>7} {'%':>6}"]
        for row in rows:
            lines.append(f"{row['reason']:<28} {row['number']:>3} {row['count']:>7} {row['percent']:>6}")
        return lines if rows else ["no VM exits yet"]

    def _where(self, args: list[str]) -> list[str]:
        return self._position_lines()

    # --- output ----------------------------------------------------------------------------
    def _report(self, stop: Stop, show_exit: bool = True) -> list[str]:
        lines = [_stop_line(stop)]
        if stop.record is not None and show_exit:
            lines.append("  " + views.record_line(stop.record))
        return lines + self._position_lines()

    def _position_lines(self) -> list[str]:
        session = self.session
        header = (f"  position {session.position}, {session.retired} instructions, "
                  f"{session.mode().describe()}")
        if session.ended:
            return [header]
        return [header] + views.disassembly_lines(session.vcpu, None, 1)

    def _address(self, text: str) -> int:
        selector, colon, offset = text.partition(":")
        if colon:
            return (_number(selector, 16) << 4) + _number(offset, 16)
        return _number(text)


def _stop_line(stop: Stop) -> str:
    text = {StopKind.STEP: "stepped", StopKind.START: "at reset (start of history)"}.get(
        stop.kind, f"stopped: {stop.kind.value}")
    return text + (f": {stop.detail}" if stop.detail else "")


_FIELD_ALIASES = {"code": "hypercall"}


def _field_alias(word: str) -> str:
    name, _, value = word.partition("=")
    return f"{_FIELD_ALIASES.get(name.lower(), name)}={value}"


def _number(text: str, base: int = 0) -> int:
    try:
        return int(text, base)
    except ValueError:
        raise BadInput(f"{text!r} is not a number") from None


def _count(args: list[str], default: int = 1) -> int:
    if not args:
        return default
    count = _number(args[0])
    if count <= 0:
        raise BadInput(f"{args[0]} must be positive")
    return count


def _one(args: list[str], usage: str) -> str:
    if len(args) != 1:
        raise BadInput(f"usage: {usage}")
    return args[0]
