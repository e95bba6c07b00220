# callret: one iteration = CALL to a function that only returns (CALL rel32 + RET) plus the
# loop's inc/cmp/jb. Exit-free under every technique; under binary translation the RET is an
# indirect branch the translated code must look up (Adams & Agesen 2006, call/ret).
# The loop takes no input but r12/r13 and the stack: the raw-Unicorn baseline runs it as is.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.code32
_start:
    BENCH_ENTER32 main, 2000000

.code64
main:
    BENCH_SETUP64
    BENCH_LOOP_BEGIN
    call callee
    BENCH_LOOP_END

callee:
    ret

bench_name:
    .ascii "callret"
    .byte 0
BENCH_TAIL 0
