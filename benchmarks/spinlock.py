"""Spin iterations wasted and wall time of guests/spinlock at 2 and 4 vCPUs: no mitigation,
PAUSE-loop exiting (--ple) and enlightened (--mode pv), in one run.

    .venv/bin/python benchmarks/spinlock.py [--repeats N] [--slice N] [--iterations N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vtemu.bench.spinlock import DEFAULT_ITERATIONS, format_table, measure  # noqa: E402
from vtemu.hv.scheduler import DEFAULT_SLICE  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slice", type=int, action="append",
                        help=f"scheduler slice in guest instructions (repeatable; default {DEFAULT_SLICE})")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                        help=f"lock acquisitions per processor (-D ITERATIONS; default {DEFAULT_ITERATIONS})")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    slices = args.slice or [DEFAULT_SLICE]
    if any(value < 1 for value in slices) or args.iterations < 1:
        parser.error("--slice and --iterations must be at least 1")
    results = []
    for slice_instructions in slices:
        runs = measure(args.repeats, slice_instructions, args.iterations)
        print(format_table(runs) + "\n")
        results.extend(runs)
    bad = [run for run in results if run.exit_code != 0]
    if bad:
        print("wrong final count: " + ", ".join(f"{r.vcpus} vCPUs {r.cure} exit {r.exit_code}"
                                                for r in bad), file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([run.as_dict() for run in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
