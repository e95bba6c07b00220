# vmcall: one iteration = VMCALL with RAX = 0 (TLFS hypercall input: call code 0, a reserved
# code, no fast bit, no rep count; RCX = RDX = R8 = 0), plus the loop's inc/cmp/jb.
# Under vtx there is no hypercall interface: VMCALL exits (SDM Vol. 3C 26.1.2) and the
# hypervisor injects #UD, as a processor without VMX does; the guest's #UD handler counts it
# and returns past the 3-byte VMCALL. So under vtx one iteration is a VMCALL exit plus a #UD
# round trip through the guest's IDT. A mode with a hypercall interface (pv) returns a status
# in RAX instead and no #UD is taken. The guest prints how many #UDs it took.
# Exit codes: 0 done, 1 unexpected exception, 3 #UD at another RIP.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.equ VMCALL_LENGTH, 3              # 0F 01 C1

.code32
_start:
    BENCH_ENTER32 main, 20000

.code64
main:
    BENCH_SETUP64
    SET_GATE 6, ud_handler, GATE_INTERRUPT
    BENCH_LOOP_BEGIN
    xor eax, eax
    xor ecx, ecx
    xor edx, edx
    xor r8d, r8d
vmcall_site:
    vmcall
    BENCH_LOOP_NEXT
    BENCH_MARK_END
    PUTS msg_ud
    mov eax, [bench_events]
    call serial_dec32
    PUTS msg_newline
    mov eax, r13d
    jmp bench_report

ud_handler:
    push rax
    mov eax, vmcall_site
    cmp [rsp + 8], rax
    jne wrong_rip
    add qword ptr [rsp + 8], VMCALL_LENGTH
    inc dword ptr [bench_events]
    pop rax
    iretq
wrong_rip:
    BENCH_FAIL 3

msg_ud:
    .ascii "vmcall: #UD taken "
    .byte 0
msg_newline:
    .ascii "\n"
    .byte 0
bench_name:
    .ascii "vmcall"
    .byte 0
BENCH_TAIL 0
