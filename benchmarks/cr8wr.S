# cr8wr: one iteration = MOV CR8, RAX with RAX = 0 (the task-priority register) plus the loop's inc/cmp/jb.
# Without a TPR shadow, CR8-load exiting makes every write exit (SDM Vol. 3C 26.1.3); binary
# translation emulates it inline as a store (Adams & Agesen 2006, cr8wr).

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
    mov cr8, rax
    BENCH_LOOP_END

bench_name:
    .ascii "cr8wr"
    .byte 0
BENCH_TAIL 0
