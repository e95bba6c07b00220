# cr3load: one iteration = MOV CR3, RBX with the current root (a TLB flush of non-global entries) plus the loop's inc/cmp/jb.
# Enlightened build (pv): HvCallSwitchVirtualAddressSpace instead (pvops.inc PV_LOAD_CR3).
# EPT: no exit, but every flush costs TLB refills; shadow paging: every CR3 load exits.

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
    mov rbx, cr3
    BENCH_LOOP_BEGIN
    PV_LOAD_CR3 rbx
    BENCH_LOOP_END

bench_name:
    .ascii "cr3load"
    .byte 0
BENCH_TAIL 0
