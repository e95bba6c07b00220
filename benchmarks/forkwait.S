# forkwait: one iteration = the address-space life cycle of a fork + exit + wait, in small:
# build a fresh 4-level address space (a PML4 that shares the kernel's PML4[0] and maps 16
# pages at 512 GiB through its own PDPT, PD and PT), switch CR3 to it, write and read back
# one qword in each of the 16 pages, switch back to the kernel's CR3, and tear it down
# (clear every entry written). The table pages come round-robin from 4 sets, the 16 data
# frames are the same every time. 2 MOV CR3, 20 page-table writes to build, 20 to tear down,
# at least 16 TLB fills. Enlightened build (pv): the table writes are queued and sent in
# batches, the CR3 loads are hypercalls (guests/include/pvops.inc).
# Exit codes: 0 done, 1 unexpected exception, 2 a page read back the wrong value.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.equ PAGES, 16
.equ SETS, 4
.equ SET_SIZE, 0x4000              # PML4, PDPT, PD, PT
.equ PTE_USER_RW, PTE_P + PTE_RW + PTE_US

.code32
_start:
    BENCH_ENTER32 main, 2000

.code64
main:
    BENCH_SETUP64
    mov r15, cr3                   # the kernel's root
    BENCH_LOOP_BEGIN
    # create: rdi = this iteration's table set
    mov eax, r13d
    and eax, SETS - 1
    shl eax, 14
    add eax, tables
    mov edi, eax
    mov rax, [r15]                 # PML4[0]: the kernel's identity map, shared
    PV_SET_PTE rdi, rax
    lea rax, [rdi + 0x1000 + PTE_USER_RW]
    lea rdx, [rdi + 8]
    PV_SET_PTE rdx, rax            # PML4[1] -> PDPT
    lea rax, [rdi + 0x2000 + PTE_USER_RW]
    lea rdx, [rdi + 0x1000]
    PV_SET_PTE rdx, rax            # PDPT[0] -> PD
    lea rax, [rdi + 0x3000 + PTE_USER_RW]
    lea rdx, [rdi + 0x2000]
    PV_SET_PTE rdx, rax            # PD[0] -> PT
    mov eax, frames
    or eax, PTE_USER_RW
    lea rdx, [rdi + 0x3000]
    xor ecx, ecx
map_page:
    PV_SET_PTE rdx, rax            # PT[j] -> frame j
    add rax, 0x1000
    add rdx, 8
    inc ecx
    cmp ecx, PAGES
    jb map_page
    # switch and touch
    PV_LOAD_CR3 rdi
    mov rbx, 0x8000000000
    xor ecx, ecx
touch_page:
    mov [rbx], r13
    cmp [rbx], r13
    jne wrong_value
    add rbx, 0x1000
    inc ecx
    cmp ecx, PAGES
    jb touch_page
    # switch back and tear down
    PV_LOAD_CR3 r15
    xor eax, eax
    PV_SET_PTE rdi, rax
    lea rdx, [rdi + 8]
    PV_SET_PTE rdx, rax
    lea rdx, [rdi + 0x1000]
    PV_SET_PTE rdx, rax
    lea rdx, [rdi + 0x2000]
    PV_SET_PTE rdx, rax
    lea rdx, [rdi + 0x3000]
    xor ecx, ecx
unmap_page:
    PV_SET_PTE rdx, rax
    add rdx, 8
    inc ecx
    cmp ecx, PAGES
    jb unmap_page
    PV_PTE_COMMIT
    BENCH_LOOP_END
wrong_value:
    PV_LOAD_CR3 r15
    BENCH_FAIL 2

bench_name:
    .ascii "forkwait"
    .byte 0
BENCH_TAIL SETS * SET_SIZE + PAGES * 0x1000
.equ tables, bench_bss
.equ frames, bench_bss + SETS * SET_SIZE
