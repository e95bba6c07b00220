# pgfault: one iteration = a read of a not-present page (V = 1 GiB, PTE 0 in the guest's own
# tables): #PF (error code 0) delivered to the guest's handler, which checks CR2, counts the
# fault and returns past the 3-byte load with IRETQ (a true fault: Adams & Agesen 2006,
# pgfault). With EPT the guest takes it without an exit; with shadow paging every #PF exits
# and the hypervisor finds the guest's own entry not present and injects it.
# Exit codes: 0 done, 1 unexpected exception, 2 faults != iterations, 3 wrong CR2 or RIP.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.equ V, 0x40000000                 # PML4[0] -> PDPT[1] -> pd_v[0] -> pt_v[0] (not present)
.equ LOAD_LENGTH, 3                # 48 8B 06: mov rax, [rsi]

.code32
_start:
    BENCH_ENTER32 main, 20000

.code64
main:
    BENCH_SETUP64
    SET_GATE 14, pf_handler, GATE_INTERRUPT
    mov eax, pd_v
    or eax, PTE_P + PTE_RW
    mov edi, pdpt
    mov [rdi + 8], rax
    mov eax, pt_v
    or eax, PTE_P + PTE_RW
    mov edi, pd_v
    mov [rdi], rax
    mov esi, V
    BENCH_LOOP_BEGIN
pf_site:
    mov rax, [rsi]
    BENCH_LOOP_NEXT
    BENCH_MARK_END
    cmp r13d, [bench_events]
    jne wrong_count
    mov eax, [bench_events]
    jmp bench_report
wrong_count:
    BENCH_FAIL 2

pf_handler:
    push rax
    mov rax, cr2
    cmp rax, rsi
    jne wrong_site
    mov eax, pf_site
    cmp [rsp + 16], rax
    jne wrong_site
    add qword ptr [rsp + 16], LOAD_LENGTH
    inc dword ptr [bench_events]
    pop rax
    add rsp, 8                     # the error code
    iretq
wrong_site:
    BENCH_FAIL 3

bench_name:
    .ascii "pgfault"
    .byte 0
BENCH_TAIL 0x2000
.equ pd_v, bench_bss
.equ pt_v, bench_bss + 0x1000
