# cpuid: one iteration = CPUID leaf 0 (xor eax, eax; cpuid) plus the loop's inc/cmp/jb.
# CPUID exits unconditionally under VT-x (SDM Vol. 3C 26.1.2); the KVM exit microbenchmark.

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
    xor eax, eax
    cpuid
    BENCH_LOOP_END

bench_name:
    .ascii "cpuid"
    .byte 0
BENCH_TAIL 0
