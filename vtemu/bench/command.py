"""`vtemu bench`: the benchmark matrix (suites all, micro, macro, paper, kvm) and the older
single-purpose suites (exit-cost, paging, disk-io), with their outputs.

Output files are opened before anything runs, so a bad path fails at once; a cell that cannot
run is a row of the report, not an error: the command succeeds once the matrix has run.
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vtemu.bench import catalog
from vtemu.bench.cost_model import default_model, load_model
from vtemu.errors import BadInput

if TYPE_CHECKING:
    from vtemu.bench.matrix import Matrix, MatrixConfig, MatrixResult

QUICK_DIVISOR = 50          # --quick: every default count / 50 (at least 2), one round, no warm-up


def add_arguments(parser: argparse.ArgumentParser, positive_int) -> None:
    """The options of `vtemu bench` beyond --suite, --repeat, --quick and --json."""
    parser.add_argument("--list", action="store_true", help="list the benchmarks and what one iteration is")
    parser.add_argument("--benchmarks", metavar="A,B",
                        help="only these benchmarks (default: the whole suite)")
    parser.add_argument("--modes", metavar="A,B", help="CPU virtualization modes (default: every mode)")
    parser.add_argument("--paging", metavar="A,B", help="paging schemes (default: every scheme)")
    parser.add_argument("--iterations", type=positive_int, metavar="N",
                        help="iterations per run for every benchmark (default: each one's own)")
    parser.add_argument("--warmup", type=int, default=None, metavar="N",
                        help="warm-up rounds, discarded (default: 1)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="host-time limit of one run; a cell over it fails (default: %(default)s)")
    parser.add_argument("--csv", dest="csv_path", type=Path, metavar="FILE", help="every raw sample as CSV")
    parser.add_argument("--plot", dest="plot_path", type=Path, metavar="FILE.png",
                        help="PNG bar charts: FILE (measured time) and FILE.modeled.png (modeled cycles)")
    parser.add_argument("--markdown", dest="markdown_path", type=Path, metavar="FILE",
                        help="markdown summary with the comparison to Adams & Agesen")
    parser.add_argument("--cost-model", dest="cost_model", type=Path, metavar="FILE",
                        help="per-event cycle costs (JSON or TOML) over the defaults")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the raw-Unicorn and QEMU baselines")


def suite_names() -> list[str]:
    from vtemu.bench.suites import SUITES as LEGACY
    return [*catalog.SUITES, *LEGACY]


def run_bench(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.list:
        print_list(out)
        return 0
    if args.suite not in catalog.SUITES:
        return _legacy_suite(args, out)
    if args.quick and args.iterations is not None:
        raise BadInput("--quick and --iterations both set the iteration counts: give one")
    config = matrix_config(args)
    with ExitStack() as files:
        csv_stream = _open(files, args.csv_path)
        markdown_stream = _open(files, args.markdown_path)
        json_stream = _open(files, args.json_path)
        if args.plot_path is not None:
            args.plot_path.parent.mkdir(parents=True, exist_ok=True)
        from vtemu.bench.matrix import Matrix
        result = _run_with_progress(Matrix(config), err)
        from vtemu.bench import matrix_report
        matrix_report.print_matrix(result, out)
        if json_stream is not None:
            json_stream.write(json.dumps(matrix_report.matrix_json(result), indent=2) + "\n")
        if csv_stream is not None:
            matrix_report.write_csv(result, csv_stream)
        if markdown_stream is not None:
            markdown_stream.write(matrix_report.markdown_summary(result))
        if args.plot_path is not None:
            from vtemu.bench.plot import write_plots
            for path in write_plots(result, args.plot_path):
                print(f"plot: {path}", file=out)
    return 0


def matrix_config(args: argparse.Namespace) -> "MatrixConfig":
    from vtemu.bench.matrix import MatrixConfig
    from vtemu.hv.paging import PAGING
    from vtemu.modes import MODES
    names = catalog.SUITES[args.suite]
    if args.benchmarks is not None:
        names = tuple(_choose(args.benchmarks, catalog.BENCHMARKS, "benchmark", "--benchmarks"))
    benchmarks = [catalog.BENCHMARKS[name] for name in names]
    quick = bool(args.quick)
    config = MatrixConfig(
        benchmarks=benchmarks,
        modes=_choose(args.modes, MODES, "mode", "--modes", default=DEFAULT_MODES),
        pagings=_choose(args.paging, PAGING, "paging scheme", "--paging"),
        repeats=args.repeat or (1 if quick else 3),
        warmup=args.warmup if args.warmup is not None else (0 if quick else 1),
        iterations=args.iterations,
        scale=QUICK_DIVISOR if quick and args.iterations is None else 1,
        timeout_s=args.timeout,
        raw_unicorn=not args.no_baselines,
        qemu=not args.no_baselines,
        cost_model=load_model(args.cost_model) if args.cost_model else default_model())
    if config.warmup < 0:
        raise BadInput("--warmup must be 0 or more")
    if args.timeout <= 0:
        raise BadInput("--timeout must be positive")
    return config


# The matrix compares the three ways of virtualizing the CPU; deprivileged mode (32-bit
# kernels only, the benchmarks are 64-bit) is there to show leaks, and runs when named.
DEFAULT_MODES = ("vtx", "bt", "pv")


def _choose(text: str | None, available: dict, what: str, option: str,
            default: tuple[str, ...] | None = None) -> list[str]:
    if text is None:
        return [name for name in available if default is None or name in default]
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise BadInput(f"{option}: no {what} given")
    for name in names:
        if name not in available:
            raise BadInput(f"{option}: unknown {what} {name!r} (available: {', '.join(available)})")
    return list(dict.fromkeys(names))


def _open(files: ExitStack, path: Path | None) -> TextIO | None:
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return files.enter_context(path.open("w", newline=""))
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror or error}") from None


def _run_with_progress(matrix: "Matrix", err: TextIO) -> "MatrixResult":
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    console = Console(file=err, highlight=False)
    columns = (TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False, disable=not err.isatty()) as progress:
        task = progress.add_task("benchmarks", total=matrix.runs_planned())
        matrix.progress = lambda description: progress.update(task, advance=1, description=description)
        result = matrix.run()
        progress.update(task, completed=matrix.runs_planned(), description="done")
    return result


def print_list(out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="vtemu bench: benchmarks (benchmarks/NAME.S)", title_justify="left")
    for column in ("benchmark", "kind", "default iterations", "one iteration is", "suites"):
        table.add_column(column, overflow="fold")
    for name, benchmark in catalog.BENCHMARKS.items():
        suites = [suite for suite, names in catalog.SUITES.items() if name in names]
        extra = " (raw-Unicorn baseline)" if benchmark.exit_free else ""
        table.add_row(name, benchmark.kind + extra, str(benchmark.default_iterations), benchmark.iteration,
                      ", ".join(suites))
    Console(file=out, highlight=False, width=None if out.isatty() else 150).print(table)
    from vtemu.bench.suites import SUITES as LEGACY
    print(f"other suites: {', '.join(LEGACY)} (see README \"Measuring\")", file=out)


def _legacy_suite(args: argparse.Namespace, out: TextIO) -> int:
    from vtemu.bench.suites import SUITES as LEGACY
    if args.suite not in LEGACY:
        raise BadInput(f"--suite: unknown suite {args.suite!r} (available: "
                       f"{', '.join([*catalog.SUITES, *LEGACY])})")
    results = LEGACY[args.suite](args.quick, args.repeat, out)
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0

