# divzero: one iteration = DIV ECX with ECX = 0: #DE delivered through the guest's IDT to its
# handler, which checks the saved RIP, counts the fault and returns past the DIV with IRETQ
# (Adams & Agesen 2006, divzero). The count reported is the handler's.
# Exit codes: 0 done, 1 unexpected exception, 2 faults != iterations, 3 wrong saved RIP.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.equ DIV_ECX_LENGTH, 2             # F7 F1

.code32
_start:
    BENCH_ENTER32 main, 20000

.code64
main:
    BENCH_SETUP64
    SET_GATE 0, de_handler, GATE_INTERRUPT
    xor ecx, ecx
    BENCH_LOOP_BEGIN
    xor edx, edx
    xor eax, eax
de_site:
    div ecx
    BENCH_LOOP_NEXT
    BENCH_MARK_END
    cmp r13d, [bench_events]
    jne wrong_count
    mov eax, [bench_events]
    jmp bench_report
wrong_count:
    BENCH_FAIL 2

de_handler:
    push rax
    mov eax, de_site
    cmp [rsp + 8], rax
    jne wrong_rip
    add qword ptr [rsp + 8], DIV_ECX_LENGTH
    inc dword ptr [bench_events]
    pop rax
    iretq
wrong_rip:
    BENCH_FAIL 3

bench_name:
    .ascii "divzero"
    .byte 0
BENCH_TAIL 0
