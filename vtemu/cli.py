"""vtemu's command line: run guests, assemble them, measure.

Every failure a user can cause ends with one line on stderr and a non-zero exit status
(README "Exit codes"); a guest's run ends with the value it wrote to isa-debug-exit.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NoReturn, Sequence, TextIO

from vtemu.bench import catalog as bench_catalog
from vtemu.bench import command as bench_command
from vtemu.errors import BadInput, VtemuError
from vtemu.hv.outcome import RunEnd
from vtemu.machine import layout

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition

MiB = 1024 * 1024
MAX_CPUS = 64       # APIC IDs fit xAPIC's 8-bit destination with room to spare


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "command", None) is not _trace or any(word.startswith("-") for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.images += [Path(word) for word in extra]   # payload filters after the options
    try:
        return int(args.command(args))
    except VtemuError as error:
        print(f"vtemu: {error}", file=sys.stderr)
        return RunEnd.BAD_INPUT
    except KeyboardInterrupt:
        print("vtemu: interrupted", file=sys.stderr)
        return RunEnd.INTERRUPTED
    except BrokenPipeError:
        return 0


class _OneLineErrors(argparse.ArgumentParser):
    """Bad options end with one line on stderr and exit code 2 (README "Exit codes"), not
    argparse's usage block; `vtemu COMMAND -h` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(RunEnd.BAD_INPUT, f"{self.prog}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="vtemu", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="boot a guest kernel through the firmware")
    _add_boot_options(run)
    run.add_argument("--stats", action="store_true", help="print VM-exit statistics on stderr")
    run.add_argument("--json", action="store_true", help="with --stats: JSON instead of a table")
    run.add_argument("--csv", type=Path, metavar="FILE",
                     help="with --stats: write the statistics as CSV to FILE instead of the table")
    run.add_argument("--gdb", metavar="HOST:PORT",
                     help="wait for gdb (target remote) on HOST:PORT; HOST defaults to 127.0.0.1")
    run.set_defaults(command=_run)
    debug = commands.add_parser("debug", help="the VM-exit debugger (si, se, b, be, bm, rs, ...)",
                                description="Boot a guest under the interactive VM-exit debugger; "
                                            "`help` at its prompt lists the commands.")
    _add_boot_options(debug)
    debug.add_argument("-x", dest="script", type=Path, metavar="FILE",
                       help="read the commands from FILE (batch: output on stdout), then quit")
    debug.set_defaults(command=_debug)
    trace = commands.add_parser("trace", help="boot a guest like run, and write a trace of its VM exits",
                                description="Boot like `vtemu run` and write one record per VM exit. "
                                "Trailing NAME=VALUE words filter by payload: port=0x3f8, "
                                "port=0x3f8..0x3ff, msr=0xc0000080, direction=in, vector=14, vcpu=0.")
    _add_boot_options(trace, images_help="multiboot image or guest source (.S); NAME=VALUE words "
                                         "filter exits by payload (port=0x3f8)")
    trace.add_argument("-o", dest="output", type=Path, required=True, metavar="FILE",
                       help="trace file: Chrome trace-event JSON (chrome://tracing, Perfetto)")
    trace.add_argument("--jsonl", action="store_true", help="write JSON Lines instead, one exit per line")
    trace.add_argument("--filter", action="append", default=[], metavar="REASONS",
                       help="keep only these exit reasons, comma-separated: SDM names (IO_INSTRUCTION), "
                            "numbers or aliases (io, hlt, cpuid, msr, cr, ept, ext, exc, vmcall, ...)")
    trace.set_defaults(command=_trace, stats=False, json=False, csv=None)
    bench = commands.add_parser("bench", help="measure vtemu (benchmarks/, README \"Benchmarks\")")
    bench.add_argument("--suite", default=bench_catalog.DEFAULT_SUITE, metavar="NAME",
                       help=f"the matrix suites {', '.join(bench_catalog.SUITES)}, or one of the older "
                            "suites listed by --list (default: %(default)s)")
    bench.add_argument("--repeat", type=_positive_int, metavar="N", help="repeats per measurement")
    bench.add_argument("--quick", action="store_true", help="small loops: a fast, noisier run")
    bench.add_argument("--json", dest="json_path", type=Path, metavar="FILE",
                       help="also write the results as JSON (the matrix: every raw sample)")
    bench_command.add_arguments(bench, _positive_int)
    bench.set_defaults(command=_bench)
    assemble = commands.add_parser("asm", help="assemble a guest (multiboot) or the firmware ROM")
    assemble.add_argument("source", type=Path)
    assemble.add_argument("-o", dest="output", type=Path, required=True)
    assemble.add_argument("--rom", action="store_true", help="assemble a 64 KiB firmware ROM")
    assemble.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]")
    assemble.add_argument("--pv", action="store_true",
                          help="the enlightened build (PV=1 for guests/include/pvops.inc)")
    assemble.set_defaults(command=_asm)
    return parser


def _add_boot_options(parser: argparse.ArgumentParser,
                      images_help: str = "multiboot image, or guest source (.S) assembled on the fly") -> None:
    """What `run` and `trace` share: the images, the machine, limits and COM1 input."""
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help=images_help)
    parser.add_argument("--mode", default="vtx", help="CPU virtualization technique (default: vtx)")
    parser.add_argument("--paging", default="ept",
                        help="memory virtualization: ept (nested paging) or shadow (default: ept)")
    parser.add_argument("--memory", type=_positive_int, default=layout.DEFAULT_RAM_SIZE // MiB,
                        metavar="MiB", help="guest RAM (default: %(default)s)")
    parser.add_argument("--cmdline", default="", help="kernel command line (multiboot)")
    parser.add_argument("--max-instructions", type=_positive_int, metavar="N",
                        help="end the run after N guest instructions (exact, counted)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="end the run after this much host time")
    parser.add_argument("--serial-in", metavar="FILE",
                        help="COM1 input: a file, or - for stdin (default: none, the line is idle)")
    parser.add_argument("--record", metavar="FILE",
                        help="with --serial-in: record what the guest received, for --replay")
    parser.add_argument("--replay", metavar="FILE",
                        help="COM1 input from a --record log, exactly as recorded (no stdin)")
    parser.add_argument("--disk", type=Path, metavar="FILE",
                        help="raw disk image as the primary-master ATA disk (writes go to the file)")
    parser.add_argument("--firmware", type=Path, help="firmware ROM image (default: build or assemble)")
    parser.add_argument("--cpus", type=_positive_int, default=1, metavar="N",
                        help="vCPUs per partition (default: 1; APs wait for INIT-SIPI-SIPI)")
    parser.add_argument("--slice", type=_positive_int, default=None, metavar="N",
                        help="with several vCPUs: each vCPU's turn, in guest instructions "
                             "(default: 20000)")
    parser.add_argument("--ple", action="store_true",
                        help="PAUSE-loop exiting (PLE_Gap 128, PLE_Window 4096): a spinning vCPU "
                             "yields its turn")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                        help="define for guest sources assembled on the fly")


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _defines(items: list[str]) -> dict[str, str | None]:
    defines: dict[str, str | None] = {}
    for item in items:
        name, _, value = item.partition("=")
        defines[name] = value or None
    return defines


def _mode_defines(args: argparse.Namespace) -> dict[str, str | None]:
    """-D defines over the mode's own (`--mode pv` assembles a source's enlightened build)."""
    from vtemu.modes import SOURCE_DEFINES
    return {**SOURCE_DEFINES.get(args.mode, {}), **_defines(args.defines)}


def _asm(args: argparse.Namespace) -> int:
    from vtemu.asm import build_guest, write_image
    from vtemu.images import build_firmware
    from vtemu.modes import SOURCE_DEFINES
    if not args.source.is_file():
        raise BadInput(f"{args.source}: no such file")
    defines = {**(SOURCE_DEFINES["pv"] if args.pv else {}), **_defines(args.defines)}
    data = build_firmware(args.source) if args.rom else build_guest(args.source, defines)
    write_image(data, args.output)
    return 0


def _bench(args: argparse.Namespace) -> int:
    return bench_command.run_bench(args, sys.stdout, sys.stderr)


def _boot(args: argparse.Namespace,
          instrument: Callable[[list[Partition]], None] | None = None) -> tuple[list[Partition], float]:
    """Build the partitions `args` describe, let `instrument` attach diagnostics, run them."""
    from vtemu.hv.boot import build_partitions
    from vtemu.hv.runloop import RunLimits, Runner
    from vtemu.images import firmware_image

    specs = _partition_specs(args)
    firmware = firmware_image(args.firmware)
    consoles = _Consoles(prefix=len(specs) > 1)
    with _host_input(args) as host_input:
        specs[0].serial_input = host_input.source   # the first partition's COM1 has the host's input
        specs[0].disk = args.disk                   # and the disk, if any
        partitions = build_partitions(specs, firmware, consoles.for_partition)
        if instrument is not None:
            instrument(partitions)
        runner = Runner(partitions, RunLimits(args.max_instructions, args.timeout))
        host_input.attach(partitions[0], lambda: runner.aborted)
        runner.run()
    consoles.flush()
    return partitions, runner.wall_s


def _partition_specs(args: argparse.Namespace) -> list:
    """One PartitionSpec per image, with the machine options (`run`, `trace`, `debug`)."""
    from vtemu.hv.partition import PartitionSpec
    from vtemu.images import kernel_image

    ram = args.memory * MiB
    if not layout.MIN_RAM_SIZE <= ram <= layout.MAX_RAM_SIZE:
        raise BadInput(f"--memory must be between {layout.MIN_RAM_SIZE // MiB} and "
                       f"{layout.MAX_RAM_SIZE // MiB} MiB")
    if args.cpus > MAX_CPUS:
        raise BadInput(f"--cpus must be at most {MAX_CPUS}")
    smp = {"vcpus": args.cpus, "ple": args.ple}
    if args.slice is not None:
        smp["slice_instructions"] = args.slice
    return [PartitionSpec(name=path.stem, kernel=kernel_image(path, _mode_defines(args)),
                          cmdline=args.cmdline, ram_size=ram, mode=args.mode, paging=args.paging,
                          **smp)  # type: ignore[arg-type]
            for path in args.images]


class _HostInput:
    """COM1's host end: --serial-in, perhaps recorded (--record), or a --replay log."""

    def __init__(self, source: Callable[[bool], int | None] | None, serial: object = None,
                 logged: object = None) -> None:
        self.source = source
        self.serial = serial      # the SerialInput reading the host (a run that ends stops its waits)
        self.logged = logged      # the RecordingInput or ReplayInput (it stamps each byte)

    def attach(self, partition: Partition, aborted: Callable[[], bool]) -> None:
        from vtemu.hv.input_log import partition_position
        if self.serial is not None:
            self.serial.cancelled = aborted  # type: ignore[attr-defined]
        if self.logged is not None:
            self.logged.position = partition_position(partition)  # type: ignore[attr-defined]


@contextmanager
def _host_input(args: argparse.Namespace) -> Iterator[_HostInput]:
    from vtemu.debug.trace_export import open_output
    from vtemu.hv.input_log import InputLog, RecordingInput, ReplayInput
    from vtemu.hv.serial_input import open_serial_input
    if args.replay is not None:
        if args.serial_in is not None or args.record is not None:
            raise BadInput("--replay gives COM1 its input: it cannot be combined with --serial-in or --record")
        replay = ReplayInput(InputLog.load(args.replay), args.replay)
        yield _HostInput(replay, logged=replay)
        return
    if args.record is not None and args.serial_in is None:
        raise BadInput("--record needs --serial-in (the input to record)")
    record = open_output(args.record) if args.record is not None else None
    try:
        with open_serial_input(args.serial_in) as serial_input:
            if record is None or serial_input is None:
                yield _HostInput(serial_input, serial_input)
                return
            recorder = RecordingInput(serial_input)
            recorder.log.source = "terminal" if serial_input.interactive else "pipe or file"
            try:
                yield _HostInput(recorder, serial_input, recorder)
            finally:
                recorder.log.save(record)   # also after a failed or interrupted run
    finally:
        if record is not None:
            record.close()


def _debug_session(args: argparse.Namespace, console: Callable[[bytes], None]):  # noqa: ANN202
    """A debugger Session for `debug` and `run --gdb`: one guest, rebuilt for reverse steps."""
    from vtemu.debug.debugger import build_for
    from vtemu.debug.stepping import Session
    from vtemu.images import firmware_image
    if len(args.images) != 1:
        raise BadInput("the debugger takes one image")
    unsupported = [name for name in ("serial_in", "replay", "record", "disk", "max_instructions", "timeout")
                   if getattr(args, name, None) is not None]
    if unsupported:
        option = "--" + unsupported[0].replace("_", "-")
        raise BadInput(f"{option} is not available under the debugger (runs must re-execute exactly)")
    return Session(build_for(_partition_specs(args), firmware_image(args.firmware)), console)


def _debug(args: argparse.Namespace) -> int:
    from vtemu.debug.debugger import Debugger, console_to
    session = _debug_session(args, console_to(sys.stdout))
    debugger = Debugger(session, sys.stdout, colour=sys.stdout.isatty())
    if args.script is not None:
        try:
            lines = args.script.read_text().splitlines()
        except OSError as error:
            raise BadInput(f"{args.script}: {error.strerror}") from None
        return debugger.run(lines, echo=True)
    return debugger.interactive()


def _gdb(args: argparse.Namespace) -> int:
    from vtemu.debug.gdbstub.stub import parse_address, serve
    host, port = parse_address(args.gdb)
    session = _debug_session(args, _Consoles(prefix=False).for_partition(0, None))
    return serve(session, host, port, sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if args.gdb is not None:
        return _gdb(args)
    from vtemu.debug.breakdown import collect_breakdowns
    from vtemu.debug.trace_export import open_output
    csv_file: list[TextIO] = []

    def instrument(partitions: list[Partition]) -> None:
        if args.csv is not None:
            csv_file.append(open_output(args.csv))   # before the run: a bad path fails at once
        if args.stats or args.csv is not None:
            collect_breakdowns(partitions)

    try:
        partitions, wall_s = _boot(args, instrument)
        return _report(partitions, wall_s, args, csv_file[0] if csv_file else None)
    finally:
        for stream in csv_file:
            stream.close()


def _trace(args: argparse.Namespace) -> int:
    from vtemu.debug.filters import build_filter
    from vtemu.debug.trace import TraceSession
    from vtemu.debug.trace_export import open_writer
    args.images, words = _images_and_filters(args.images)
    exit_filter = build_filter(args.filter, words)
    sessions: list[TraceSession] = []

    def instrument(partitions: list[Partition]) -> None:
        writer = open_writer(args.output, {p.index: p.name for p in partitions}, args.jsonl)
        sessions.append(TraceSession(partitions, exit_filter, writer))

    try:
        partitions, wall_s = _boot(args, instrument)
    finally:
        for session in sessions:
            session.close()     # a run that failed still leaves a readable trace
    return _report(partitions, wall_s, args)


def _images_and_filters(words: list[Path]) -> tuple[list[Path], list[str]]:
    """`vtemu trace IMAGE port=0x3f8`: NAME=VALUE words that are not files are filters."""
    images = [word for word in words if "=" not in word.name or word.exists()]
    filters = [str(word) for word in words if word not in images]
    if not images:
        raise BadInput("no image given (NAME=VALUE words are payload filters)")
    return images, filters


def _report(partitions: list, wall_s: float, args: argparse.Namespace,
            csv_stream: TextIO | None = None) -> int:
    from vtemu.debug.report import print_stats, stats_json, write_stats_csv
    from vtemu.hv.dump import dump_partition
    from vtemu.hv.smp import report_lines
    for partition in partitions:
        result = partition.result
        assert result is not None
        if result.exit_code not in range(0, 256) or result.reason != "the guest wrote to isa-debug-exit":
            print(f"vtemu: {partition.name}: {result.reason}", file=sys.stderr)
        if result.dump:
            print(dump_partition(partition), file=sys.stderr)
    if csv_stream is not None:
        write_stats_csv(partitions, csv_stream)
    elif args.stats:
        if args.json:
            print(stats_json(partitions, wall_s), file=sys.stderr)
        else:
            for partition in partitions:
                print_stats(partition, wall_s, sys.stderr)
                for line in report_lines(partition):
                    print(line, file=sys.stderr)
    first = partitions[0].result
    return first.exit_code & 0xFF


class _Consoles:
    """COM1 output of each partition on stdout; prefixed by partition name when there are several."""

    def __init__(self, prefix: bool) -> None:
        self.prefix = prefix
        self._pending: dict[int, bytearray] = {}
        self._names: dict[int, str] = {}

    def for_partition(self, index: int, spec: object) -> Callable[[bytes], None]:
        self._names[index] = getattr(spec, "name", str(index))
        buffer = self._pending.setdefault(index, bytearray())

        def write(data: bytes) -> None:
            buffer.extend(data)
            if b"\n" in data:
                self._emit(index)
        return write

    def _emit(self, index: int) -> None:
        buffer = self._pending[index]
        out = sys.stdout.buffer
        if self.prefix:
            *lines, rest = buffer.split(b"\n")
            for line in lines:
                out.write(f"[{self._names[index]}] ".encode() + line + b"\n")
            buffer[:] = rest
        else:
            out.write(bytes(buffer))
            buffer.clear()
        out.flush()

    def flush(self) -> None:
        for index, buffer in self._pending.items():
            if buffer:
                if self.prefix:
                    buffer.extend(b"\n")
                self._emit(index)


if __name__ == "__main__":
    raise SystemExit(main())
