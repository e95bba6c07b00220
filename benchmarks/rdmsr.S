# rdmsr: one iteration = RDMSR of IA32_EFER (C0000080h) plus the loop's inc/cmp/jb.
# The MSR bitmap has every bit set, so every RDMSR exits (SDM Vol. 3C 24.6.9).

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
    mov ecx, IA32_EFER
    rdmsr
    BENCH_LOOP_END

bench_name:
    .ascii "rdmsr"
    .byte 0
BENCH_TAIL 0
