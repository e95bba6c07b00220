"""Exits and host time per KiB: guests/disk on the emulated ATA disk (--mode vtx) against
the synthetic storage channel (--mode pv), in one run.

    .venv/bin/python benchmarks/disk_io.py [--repeats N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vtemu.bench.disk_io import format_table, measure  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    runs = measure(args.repeats)
    print(format_table(runs))
    checksums = {run.mode: [line for line in run.output.split(b"\n") if b"checksum" in line]
                 for run in runs}
    if any(run.exit_code for run in runs) or len({tuple(c) for c in checksums.values()}) != 1:
        print("the runs disagree: " + ", ".join(f"{r.mode} exit {r.exit_code}" for r in runs),
              file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([run.as_dict() for run in runs], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
