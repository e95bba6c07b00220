# pause: one iteration = PAUSE plus the loop's inc/cmp/jb.
# PAUSE-loop exiting is not enabled by the vtx VMCS: exit-free.

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
    pause
    BENCH_LOOP_END

bench_name:
    .ascii "pause"
    .byte 0
BENCH_TAIL 0
