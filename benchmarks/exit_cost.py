"""Exit-cost benchmark (issue 2): median µs per VM-exit round trip for OUT, CPUID and VMCALL
loops, and an exit-free loop's throughput as a ratio to raw Unicorn, measured in one run.

    .venv/bin/python benchmarks/exit_cost.py [--quick]     (the same as `vtemu bench`)

Writes build/bench/exit_cost.json next to the table.
"""

import sys
from pathlib import Path

from vtemu.cli import main

if __name__ == "__main__":
    json_path = Path(__file__).resolve().parent.parent / "build" / "bench" / "exit_cost.json"
    raise SystemExit(main(["bench", "--suite", "exit-cost", "--json", str(json_path), *sys.argv[1:]]))
