"""vtemu's command line: run guests, assemble them, measure.

Every failure a user can cause ends with one line on stderr and a non-zero exit status
(README "Exit codes"); a guest's run ends with the value it wrote to isa-debug-exit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from vtemu.errors import BadInput, VtemuError
from vtemu.hv.outcome import RunEnd
from vtemu.machine import layout

MiB = 1024 * 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtemu", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="boot a guest kernel through the firmware")
    run.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                     help="multiboot image, or guest source (.S) assembled on the fly")
    run.add_argument("--mode", default="vtx", help="CPU virtualization technique (default: vtx)")
    run.add_argument("--memory", type=_positive_int, default=layout.DEFAULT_RAM_SIZE // MiB,
                     metavar="MiB", help="guest RAM (default: %(default)s)")
    run.add_argument("--cmdline", default="", help="kernel command line (multiboot)")
    run.add_argument("--stats", action="store_true", help="print VM-exit statistics on stderr")
    run.add_argument("--json", action="store_true", help="with --stats: JSON instead of a table")
    run.add_argument("--max-instructions", type=_positive_int, metavar="N",
                     help="end the run after N guest instructions (exact, counted)")
    run.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="end the run after this much host time")
    run.add_argument("--serial-in", metavar="FILE",
                     help="COM1 input: a file, or - for stdin (default: none, the line is idle)")
    run.add_argument("--firmware", type=Path, help="firmware ROM image (default: build or assemble)")
    run.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]",
                     help="define for guest sources assembled on the fly")
    run.set_defaults(command=_run)
    bench = commands.add_parser("bench", help="measure vtemu (benchmarks/, README \"Benchmarks\")")
    bench.add_argument("--suite", default="exit-cost", choices=["exit-cost"],
                       help="which measurements (default: %(default)s)")
    bench.add_argument("--repeat", type=_positive_int, metavar="N", help="repeats per measurement")
    bench.add_argument("--quick", action="store_true", help="small loops: a fast, noisier run")
    bench.add_argument("--json", dest="json_path", type=Path, metavar="FILE",
                       help="also write the results as JSON")
    bench.set_defaults(command=_bench)
    assemble = commands.add_parser("asm", help="assemble a guest (multiboot) or the firmware ROM")
    assemble.add_argument("source", type=Path)
    assemble.add_argument("-o", dest="output", type=Path, required=True)
    assemble.add_argument("--rom", action="store_true", help="assemble a 64 KiB firmware ROM")
    assemble.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]")
    assemble.set_defaults(command=_asm)
    return parser


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


def _asm(args: argparse.Namespace) -> int:
    from vtemu.asm import build_guest, write_image
    from vtemu.images import build_firmware
    if not args.source.is_file():
        raise BadInput(f"{args.source}: no such file")
    data = build_firmware(args.source) if args.rom else build_guest(args.source, _defines(args.defines))
    write_image(data, args.output)
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json
    from vtemu.bench.exit_cost import measure
    from vtemu.bench.report import print_exit_cost
    report = measure(quick=args.quick, repeats=args.repeat)
    print_exit_cost(report, sys.stdout)
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    from vtemu.hv.boot import build_partitions
    from vtemu.hv.partition import PartitionSpec
    from vtemu.hv.runloop import RunLimits, Runner
    from vtemu.hv.serial_input import open_serial_input
    from vtemu.images import firmware_image, kernel_image

    ram = args.memory * MiB
    if not layout.MIN_RAM_SIZE <= ram <= layout.MAX_RAM_SIZE:
        raise BadInput(f"--memory must be between {layout.MIN_RAM_SIZE // MiB} and "
                       f"{layout.MAX_RAM_SIZE // MiB} MiB")
    specs = [PartitionSpec(name=path.stem, kernel=kernel_image(path, _defines(args.defines)),
                           cmdline=args.cmdline, ram_size=ram, mode=args.mode)
             for path in args.images]
    firmware = firmware_image(args.firmware)
    consoles = _Consoles(prefix=len(specs) > 1)
    with open_serial_input(args.serial_in) as serial_input:
        specs[0].serial_input = serial_input   # the first partition's COM1 has the host's input
        partitions = build_partitions(specs, firmware, consoles.for_partition)
        runner = Runner(partitions, RunLimits(args.max_instructions, args.timeout))
        if serial_input is not None:
            serial_input.cancelled = lambda: runner.aborted
        runner.run()
    consoles.flush()
    return _report(partitions, runner.wall_s, args)


def _report(partitions: list, wall_s: float, args: argparse.Namespace) -> int:
    from vtemu.debug.report import print_stats, stats_json
    from vtemu.hv.dump import dump_partition
    for partition in partitions:
        result = partition.result
        assert result is not None
        if result.exit_code not in range(0, 256) or result.reason != "the guest wrote to isa-debug-exit":
            print(f"vtemu: {partition.name}: {result.reason}", file=sys.stderr)
        if result.dump:
            print(dump_partition(partition), file=sys.stderr)
    if args.stats:
        if args.json:
            print(stats_json(partitions, wall_s), file=sys.stderr)
        else:
            for partition in partitions:
                print_stats(partition, wall_s, sys.stderr)
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
