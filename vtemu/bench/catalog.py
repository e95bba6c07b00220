"""The benchmark guests (benchmarks/*.S) and the suites `vtemu bench --suite` runs.

Each guest loops a number of iterations given on its command line and brackets the loop with
marks on the bench port (guests/include/bench.inc); what one iteration is, is written in
the guest's header and repeated here for `vtemu bench --list`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BENCHMARK_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


@dataclass(frozen=True)
class Benchmark:
    name: str
    iteration: str                  # what one iteration is
    default_iterations: int         # the most a run does (matrix.py calibrates down to ~0.5 s)
    kind: str = "micro"             # micro or macro
    exit_free: bool = False         # its loop never exits: raw Unicorn is its ceiling
    whole_run: bool = False         # no loop to bracket: the whole run is one iteration
    disk_sectors: int = 0           # needs a disk image of this many sectors

    @property
    def source(self) -> Path:
        return BENCHMARK_DIR / f"{self.name}.S"


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("syscall", "SYSCALL from ring 3, SYSRETQ straight back (ring 3 -> 0 -> 3)", 5000),
    Benchmark("in", "IN AL, 80h (a port read the device model answers)", 10_000),
    Benchmark("cr8wr", "MOV CR8, RAX (task-priority register write)", 5000),
    Benchmark("callret", "CALL to a function that only returns", 1_000_000, exit_free=True),
    Benchmark("pgfault", "read of a not-present page: #PF to the guest's handler, IRETQ past it",
              2000),
    Benchmark("divzero", "DIV by zero: #DE to the guest's handler, IRETQ past it", 1000),
    Benchmark("ptemod", "rewrite a live PTE, INVLPG, read through the new mapping", 1000),
    Benchmark("cpuid", "CPUID leaf 0", 5000),
    Benchmark("vmcall", "VMCALL (vtx: #UD injected, the guest's #UD handler skips it; "
                        "pv: a hypercall with an invalid call code)", 1000),
    Benchmark("rdmsr", "RDMSR of IA32_EFER", 5000),
    Benchmark("wrmsr", "WRMSR of IA32_KERNEL_GS_BASE", 5000),
    Benchmark("rdtsc", "RDTSC (guest time then becomes live: every instruction counts)", 5000),
    Benchmark("cr3load", "MOV CR3 with the current root (non-global TLB flush)", 5000),
    Benchmark("pause", "PAUSE (no PAUSE-loop exiting)", 1_000_000, exit_free=True),
    Benchmark("compute", "sieve of Eratosthenes below 8192, no exits (~102k instructions as "
                         "counted: REP STOSQ counts once per element)", 500,
              kind="macro", exit_free=True),
    Benchmark("forkwait", "build a 4-level address space, map 16 pages, switch CR3, touch "
                          "them, switch back, tear it down", 500, kind="macro"),
    Benchmark("disk", "read one sector of the ATA disk by PIO with polling (the emulated device "
                      "in every mode; pv's synthetic disk: --suite disk-io)",
              1000, kind="macro", disk_sectors=64),
    Benchmark("boot", "reset vector -> firmware -> multiboot -> hello -> isa-debug-exit", 1,
              kind="macro", whole_run=True),
)}

# Adams & Agesen, ASPLOS 2006, Figure 4 ("nanobenchmarks"), in the paper's order.
PAPER = ("syscall", "in", "cr8wr", "callret", "pgfault", "divzero", "ptemod")
# The KVM community's exit microbenchmarks (kvm-unit-tests x86/vmexit.c's shape).
KVM = ("cpuid", "vmcall", "cr8wr", "in", "rdmsr", "wrmsr")
MICRO = tuple(name for name, b in BENCHMARKS.items() if b.kind == "micro")
MACRO = tuple(name for name, b in BENCHMARKS.items() if b.kind == "macro")

SUITES: dict[str, tuple[str, ...]] = {
    "all": MICRO + MACRO,
    "micro": MICRO,
    "macro": MACRO,
    "paper": PAPER,
    "kvm": KVM,
}
DEFAULT_SUITE = "all"
