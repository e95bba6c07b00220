# rdtsc: one iteration = RDTSC plus the loop's inc/cmp/jb.
# Guest time is guest progress (README "Time and determinism"): the first RDTSC makes the
# clock live, so from then on every instruction is counted.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.code32
_start:
    BENCH_ENTER32 main, 20000

.code64
main:
    BENCH_SETUP64

    BENCH_LOOP_BEGIN
    rdtsc
    BENCH_LOOP_END

bench_name:
    .ascii "rdtsc"
    .byte 0
BENCH_TAIL 0
