# wrmsr: one iteration = WRMSR of IA32_KERNEL_GS_BASE (C0000102h) with 0 plus the loop's inc/cmp/jb.
# The MSR bitmap has every bit set, so every WRMSR exits (SDM Vol. 3C 24.6.9).

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
    mov ecx, 0xC0000102
    xor eax, eax
    xor edx, edx
    wrmsr
    BENCH_LOOP_END

bench_name:
    .ascii "wrmsr"
    .byte 0
BENCH_TAIL 0
