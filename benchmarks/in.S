# in: one iteration = IN AL, 80h (a read of the POST port, which answers FFh) plus the loop's inc/cmp/jb.
# Port input: under VT-x an I/O-instruction exit (SDM Vol. 3C 26.1.3, I/O bitmaps with every
# bit set); under binary translation a callout to the same device model.

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
    in al, 0x80
    BENCH_LOOP_END

bench_name:
    .ascii "in"
    .byte 0
BENCH_TAIL 0
