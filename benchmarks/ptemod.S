# ptemod: one iteration = rewrite a live PTE (V = 1 GiB flips between two frames), INVLPG V,
# and read through V, checking the new frame is seen (Adams & Agesen 2006, ptemod: a guest
# page-table write). With EPT: no exit, one TLB fill. With shadow paging the table page is
# write-protected once shadowed: the write traps and INVLPG exits.
# Enlightened build (pv): the PTE write and the INVLPG go to the hypervisor as one
# VtemuCallMmuUpdate hypercall (guests/include/pvops.inc).
# Exit codes: 0 done, 1 unexpected exception, 2 a read through V saw the old frame.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.equ V, 0x40000000                 # PML4[0] -> PDPT[1] -> pd_v[0] -> pt_v[0]
.equ MARK_A, 0xAAAA
.equ MARK_B, 0xBBBB

.code32
_start:
    BENCH_ENTER32 main, 20000

.code64
main:
    BENCH_SETUP64
    mov eax, pd_v
    or eax, PTE_P + PTE_RW
    mov edi, pdpt
    mov [rdi + 8], rax
    mov eax, pt_v
    or eax, PTE_P + PTE_RW
    mov edi, pd_v
    mov [rdi], rax
    mov eax, frame_a
    mov qword ptr [rax], MARK_A
    mov eax, frame_b
    mov qword ptr [rax], MARK_B
    mov r8d, frame_a
    or r8d, PTE_P + PTE_RW         # r8: the PTE, now frame A
    mov r9d, frame_a
    xor r9d, frame_b               # r9: flips the PTE's frame
    mov r10d, MARK_A
    xor r10d, MARK_B               # r10: flips the mark expected
    mov r11d, MARK_A               # r11: the mark expected through V
    mov edi, pt_v
    mov [rdi], r8
    mov esi, V
    BENCH_LOOP_BEGIN
    xor r8, r9
    PV_SET_PTE rdi, r8
    PV_INVLPG rsi
    xor r11, r10
    mov rax, [rsi]
    cmp rax, r11
    jne stale
    BENCH_LOOP_END
stale:
    BENCH_FAIL 2

bench_name:
    .ascii "ptemod"
    .byte 0
BENCH_TAIL 0x4000
.equ pd_v, bench_bss
.equ pt_v, bench_bss + 0x1000
.equ frame_a, bench_bss + 0x2000
.equ frame_b, bench_bss + 0x3000
