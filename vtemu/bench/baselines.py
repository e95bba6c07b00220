"""Baselines measured in the same run as the matrix: raw Unicorn and QEMU TCG.

raw-unicorn (exit-free benchmarks only: compute, callret, pause). What is compared: the very
bytes of the guest's measured loop (bench_loop up to bench_loop_end of the assembled image) on
a bare Unicorn engine in 64-bit mode, no VMM, entered with r12 = the count, r13 = r14 = 0 and
RSP = stack_top, and timed around `emu_start` with the host clock; the loop's own checks (r13 =
count, compute's prime count in r14) are verified after. Memory is flat (linear = physical,
the image at its load address, RAM up to the end of its bss). The one hook is a TLB-miss hook
that installs those identity translations, with the image's pages read+execute and the rest
read+write, as vtemu's own fills never map a page of translated code writable: a page that is
both is what Unicorn guards against self-modifying code, and with plain `mem_map` RAM (every
page writable and executable) the memory-touching loops ran 3-4x slower on this project's
machine (compute ~1 ms instead of ~0.25 ms per iteration), which would make the "ceiling" a
floor. The hook runs once per page (a handful of times per run), never inside the loop.
vtemu's figure for the same loop includes its two mark exits and first-pass TLB fills; raw
Unicorn's includes one `emu_start`.

qemu-tcg (compute and boot, when qemu-system-x86_64 is on the PATH). The same multiboot image
under `qemu-system-x86_64 -accel tcg -kernel` with isa-debug-exit, timed as a host process.
QEMU has no bench port, so the fixed cost (QEMU's start-up, its firmware, the guest's boot)
is removed by differencing: ns per iteration = (t(2N) - t(N)) / N, with N 20 times the
count vtemu runs (matrix.py QEMU_ITERATION_FACTOR: QEMU is faster, and the difference must
stand above process start-up noise). `boot` is one whole
process run (QEMU's own start-up included, which vtemu's boot figure does not have).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import unicorn
import unicorn.x86_const as U

from vtemu.asm.build import GUEST_BASE, assemble_file

QEMU = "qemu-system-x86_64"
QEMU_TIMEOUT_S = 300.0
PRIMES_BELOW_SIEVE = 1028          # benchmarks/compute.S checks the same figure
TWO_MIB = 0x200000


class BaselineError(RuntimeError):
    """A baseline could not run or gave a wrong result (one line, for the report)."""


@dataclass(frozen=True)
class BaselineSample:
    wall_ns: int
    iterations: int


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


class RawUnicornLoop:
    """One benchmark's loop bytes on a bare engine, ready to run any number of times."""

    def __init__(self, source: Path, defines: dict[str, str] | None = None) -> None:
        image = assemble_file(source, GUEST_BASE, defines or {})
        symbols = image.symbols
        missing = [name for name in ("bench_loop", "bench_loop_end", "stack_top", "_bss_end")
                   if name not in symbols]
        if missing:
            raise BaselineError(f"{source.name}: no {', '.join(missing)} (see guests/include/bench.inc)")
        self.name = source.stem
        self.loop, self.loop_end = symbols["bench_loop"], symbols["bench_loop_end"]
        self.stack_top = symbols["stack_top"]
        self.code = range(GUEST_BASE, GUEST_BASE + len(image.data))
        self.engine = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        self.engine.mem_map(0, (symbols["_bss_end"] + TWO_MIB - 1) & ~(TWO_MIB - 1))
        self.engine.mem_write(GUEST_BASE, image.data)
        self.engine.ctl_set_tlb_mode(unicorn.UC_TLB_VIRTUAL)
        self.engine.hook_add(unicorn.UC_HOOK_TLB_FILL, self._identity_fill)

    def _identity_fill(self, uc: unicorn.Uc, linear: int, access: int, entry, user_data: object) -> bool:
        page = linear & ~0xFFF
        entry.paddr = page
        entry.perms = (unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC if page in self.code
                       else unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
        return True

    def run(self, iterations: int) -> BaselineSample:
        engine = self.engine
        for register, value in ((U.UC_X86_REG_R12, iterations), (U.UC_X86_REG_R13, 0),
                                (U.UC_X86_REG_R14, 0), (U.UC_X86_REG_RSP, self.stack_top)):
            engine.reg_write(register, value)
        start = time.perf_counter_ns()
        engine.emu_start(self.loop, self.loop_end)
        wall = time.perf_counter_ns() - start
        self._check(iterations)
        return BaselineSample(wall, iterations)

    def _check(self, iterations: int) -> None:
        done = self.engine.reg_read(U.UC_X86_REG_R13)
        if done != iterations:
            raise BaselineError(f"raw Unicorn {self.name}: the loop ran {done} of {iterations} iterations")
        primes = self.engine.reg_read(U.UC_X86_REG_R14)
        if self.name == "compute" and primes != PRIMES_BELOW_SIEVE * iterations:
            raise BaselineError(f"raw Unicorn compute counted {primes} primes, not "
                                f"{PRIMES_BELOW_SIEVE * iterations}")


def qemu_run_ns(image: bytes, cmdline: str, disk: Path | None = None,
                timeout_s: float = QEMU_TIMEOUT_S) -> tuple[int, str]:
    """Wall ns of one QEMU process running the image to its isa-debug-exit, and its COM1 text."""
    with tempfile.TemporaryDirectory(prefix="vtemu-bench-qemu-") as tmp:
        kernel = Path(tmp) / "kernel.bin"
        kernel.write_bytes(image)
        command = [QEMU, "-accel", "tcg", "-kernel", str(kernel), "-append", cmdline,
                   "-serial", "stdio", "-display", "none", "-nodefaults", "-no-reboot",
                   "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4"]
        if disk is not None:
            command += ["-drive", f"file={disk},format=raw,if=ide,index=0,media=disk"]
        start = time.perf_counter_ns()
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout_s, env={**os.environ, "LC_ALL": "C"})
        except subprocess.TimeoutExpired:
            raise BaselineError(f"QEMU did not finish within {timeout_s:g} s") from None
        wall = time.perf_counter_ns() - start
    if done.returncode != 1:             # (0 << 1) | 1: the guest wrote 0 to isa-debug-exit
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise BaselineError(f"QEMU exited {done.returncode}" + (f": {detail[-1]}" if detail else ""))
    return wall, done.stdout.decode(errors="replace")


def qemu_loop_sample(image: bytes, iterations: int, whole_run: bool) -> BaselineSample:
    """ns for `iterations`, net of the fixed cost (two runs differenced), or one whole run."""
    if whole_run:
        wall, _ = qemu_run_ns(image, "iterations=1")
        return BaselineSample(wall, 1)
    single, text = qemu_run_ns(image, f"iterations={iterations}")
    double, _ = qemu_run_ns(image, f"iterations={2 * iterations}")
    if f": {iterations} iterations" not in text:
        raise BaselineError(f"QEMU: the guest did not report {iterations} iterations")
    return BaselineSample(max(0, double - single), iterations)
