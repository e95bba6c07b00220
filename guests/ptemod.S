# ptemod: rewriting a live PTE, with INVLPG (or MOV CR3) after each change, in long mode.
#
# One virtual page V (1 GiB, through the guest's own PDPT[1] -> PD -> PT) is remapped again
# and again to one of K = 8 physical frames, each filled beforehand with its own pattern
# (frame k, qword j holds (k + 1) * 0x0101010101010101 XOR j). A linear congruential
# generator picks the frame; the offset touched moves through the page. Every iteration
# rewrites the PTE and flushes V from the TLB, then, by iteration number mod 4:
#
#   0  reads through V and checks it sees the new frame's pattern (every other time the
#      flush is MOV CR3 instead of INVLPG)
#   1  reads, then writes a value through V and reads it back through the frame's identity
#      address (the write went to the new frame), then restores the pattern through V
#   2  clears P: the read through V must raise #PF with error code 0 (not present, read,
#      supervisor) and CR2 = the address read; the handler skips the instruction
#   3  clears R/W (CR0.WP = 1): a read works, the write must raise #PF with error code 3
#      (present, write, supervisor) and the right CR2, and the frame must be unchanged
#
# Built with PV (pvops.inc) the PTE write and the flush that follows it are one batched
# hypercall, the console is the console hypercall.
#
# Exit codes: 0 success, 1 unexpected exception, 2 wrong error code, 3 wrong CR2, 4 wrong
# saved RIP, 5 a read through V saw the wrong data, 6 a write through V did not reach the
# frame, 7 an expected #PF did not happen, 8 a faulting write changed memory.

.include "multiboot.inc"
.include "serial.inc"
.include "pvops.inc"
.include "x86.inc"
.include "long64.inc"

.equ V, 0x40000000               # PML4[0] -> PDPT[1] -> pd_v[0] -> pt_v[0]
.equ FRAMES, 8
.equ ITERATIONS, 512
.equ PF_WRITE_PROTECT, 3
.equ BYTE_PATTERN, 0x0101010101010101
.equ MARK, 0x5EED0000FACE0000

.code32
_start:
    mov esp, stack_top
    PV_SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    IDT64_FILL unexpected
    SET_GATE 14, pf_handler, GATE_INTERRUPT
    call idt_load
    # V's tables: PDPT[1] -> pd_v, pd_v[0] -> pt_v; pt_v[0] is the PTE under test
    mov eax, pd_v
    or eax, PTE_P + PTE_RW
    mov edi, pdpt
    mov [rdi + 8], rax
    mov eax, pt_v
    or eax, PTE_P + PTE_RW
    mov edi, pd_v
    mov [rdi], rax
    # frame k, qword j := (k + 1) * BYTE_PATTERN ^ j
    mov edi, frames
    xor ecx, ecx
fill_frame:
    lea rax, [rcx + 1]
    mov rdx, BYTE_PATTERN
    imul rax, rdx
    xor edx, edx
fill_qword:
    mov rsi, rax
    xor rsi, rdx
    mov [rdi + rdx * 8], rsi
    inc edx
    cmp edx, 512
    jb fill_qword
    add edi, 4096
    inc ecx
    cmp ecx, FRAMES
    jb fill_frame
    PUTS msg_start

    mov dword ptr [lcg], 20240611
    xor r12d, r12d                   # iteration
remap_loop:
    # frame k from the LCG; offset (i * 0x38) & 0xFF8
    imul eax, [lcg], 1103515245
    add eax, 12345
    mov [lcg], eax
    shr eax, 16
    and eax, FRAMES - 1
    mov r13d, eax                    # k
    shl eax, 12
    add eax, frames
    mov r14, rax                     # the frame's identity address
    imul eax, r12d, 0x38
    and eax, 0xFF8
    mov r15, rax                     # offset
    mov ebx, r12d
    and ebx, 3
    # the PTE: P|RW except P=0 for kind 2 and RW=0 for kind 3
    mov rax, r14
    cmp ebx, 2
    je pte_ready
    or rax, PTE_P
    cmp ebx, 3
    je pte_ready
    or rax, PTE_RW
pte_ready:
    mov edi, pt_v
    PV_SET_PTE rdi, rax
    inc dword ptr [remaps]
    # flush: MOV CR3 on kind 0 with bit 2 of i set, INVLPG otherwise
    mov eax, r12d
    and eax, 7
    cmp eax, 4
    jne flush_invlpg
    PV_FLUSH_TLB rax
    inc dword ptr [cr3_flushes]
    jmp flushed
flush_invlpg:
    mov eax, V
    PV_INVLPG rax
    inc dword ptr [invlpgs]
flushed:
    mov eax, V
    lea rsi, [rax + r15]             # rsi = V + offset
    call expected_value              # rdx = the pattern of frame k at the offset
    cmp ebx, 2
    je kind_not_present
    # kinds 0, 1, 3: the read sees the new frame
    mov rax, [rsi]
    cmp rax, rdx
    jne wrong_data
    inc dword ptr [reads]
    cmp ebx, 1
    je kind_write
    cmp ebx, 3
    je kind_read_only
    jmp next_iteration

kind_write:
    mov rax, MARK
    or rax, r12
    mov [rsi], rax
    cmp rax, [r14 + r15]
    jne write_lost
    mov [rsi], rdx                   # restore the pattern through V
    cmp rdx, [r14 + r15]
    jne write_lost
    inc dword ptr [writes]
    jmp next_iteration

kind_not_present:
    mov qword ptr [expected_error], 0
    mov [expected_cr2], rsi
    mov eax, np_read
    mov [expected_rip], rax
    mov eax, np_resume
    mov [resume_rip], rax
    mov ebp, [pf_count]
np_read:
    mov rax, [rsi]
    jmp no_fault
np_resume:
    inc ebp
    cmp ebp, [pf_count]
    jne no_fault
    inc dword ptr [np_faults]
    jmp next_iteration

kind_read_only:
    mov qword ptr [expected_error], PF_WRITE_PROTECT
    mov [expected_cr2], rsi
    mov eax, ro_write
    mov [expected_rip], rax
    mov eax, ro_resume
    mov [resume_rip], rax
    mov ebp, [pf_count]
    mov rax, MARK
ro_write:
    mov [rsi], rax
    jmp no_fault
ro_resume:
    inc ebp
    cmp ebp, [pf_count]
    jne no_fault
    cmp rdx, [r14 + r15]
    jne write_went_through
    inc dword ptr [wp_faults]

next_iteration:
    inc r12d
    cmp r12d, ITERATIONS
    jb remap_loop

    PUTS msg_remaps
    mov eax, [remaps]
    call serial_dec32
    PUTS msg_invlpg
    mov eax, [invlpgs]
    call serial_dec32
    PUTS msg_cr3
    mov eax, [cr3_flushes]
    call serial_dec32
    PUTS msg_close
    PUTS msg_reads
    mov eax, [reads]
    call serial_dec32
    PUTS newline
    PUTS msg_writes
    mov eax, [writes]
    call serial_dec32
    PUTS newline
    PUTS msg_np
    mov eax, [np_faults]
    call serial_dec32
    PUTS newline
    PUTS msg_wp
    mov eax, [wp_faults]
    call serial_dec32
    PUTS newline
    PUTS msg_done
    PV_EXIT 0

# expected_value: RDX := frame r13's qword at offset r15 (clobbers rax)
expected_value:
    lea rax, [r13 + 1]
    mov rdx, BYTE_PATTERN
    imul rdx, rax
    mov rax, r15
    shr rax, 3
    xor rdx, rax
    ret

# --- #PF: check what was reported, count it, continue at resume_rip --------------------------
.equ PF_SAVED, 8
.equ PF_ERROR, PF_SAVED
.equ PF_RIP, PF_SAVED + 8

pf_handler:
    push rax
    mov rax, [rsp + PF_ERROR]
    cmp rax, [expected_error]
    jne wrong_error
    mov rax, cr2
    cmp rax, [expected_cr2]
    jne wrong_cr2
    mov rax, [rsp + PF_RIP]
    cmp rax, [expected_rip]
    jne wrong_rip
    mov rax, [resume_rip]
    mov [rsp + PF_RIP], rax
    mov qword ptr [expected_rip], 0  # a second #PF fails the RIP check
    inc dword ptr [pf_count]
    pop rax
    add rsp, 8
    iretq

# --- failures ------------------------------------------------------------------------------------
wrong_error:
    PUTS msg_wrong_error
    mov rax, [rsp + PF_ERROR]
    call serial_hex32
    PUTS newline
    PV_EXIT 2
wrong_cr2:
    PUTS msg_wrong_cr2
    mov rax, cr2
    call serial_hex64
    PUTS newline
    PV_EXIT 3
wrong_rip:
    PUTS msg_wrong_rip
    mov rax, [rsp + PF_RIP]
    call serial_hex64
    PUTS newline
    PV_EXIT 4
wrong_data:
    PUTS msg_wrong_data
    mov eax, r12d
    call serial_dec32
    PUTS newline
    PV_EXIT 5
write_lost:
    PUTS msg_write_lost
    mov eax, r12d
    call serial_dec32
    PUTS newline
    PV_EXIT 6
no_fault:
    PUTS msg_no_fault
    mov eax, r12d
    call serial_dec32
    PUTS newline
    PV_EXIT 7
write_went_through:
    PUTS msg_write_through
    mov eax, r12d
    call serial_dec32
    PUTS newline
    PV_EXIT 8
unexpected:
    PUTS msg_unexpected
    PV_EXIT 1

PVOPS_ROUTINES64
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "ptemod: V = 0x40000000 remapped among 8 frames, 512 iterations\n"
    .byte 0
msg_remaps:
    .ascii "PTE rewrites "
    .byte 0
msg_invlpg:
    .ascii " (INVLPG "
    .byte 0
msg_cr3:
    .ascii ", MOV CR3 "
    .byte 0
msg_close:
    .ascii ")\n"
    .byte 0
msg_reads:
    .ascii "reads through V saw the new frame: "
    .byte 0
msg_writes:
    .ascii "writes through V reached the new frame: "
    .byte 0
msg_np:
    .ascii "#PF not present (error 0, CR2 ok): "
    .byte 0
msg_wp:
    .ascii "#PF write to read-only (error 3, CR2 ok): "
    .byte 0
msg_done:
    .ascii "ptemod done\n"
    .byte 0
msg_wrong_error:
    .ascii "#PF with wrong error code "
    .byte 0
msg_wrong_cr2:
    .ascii "#PF with wrong CR2 "
    .byte 0
msg_wrong_rip:
    .ascii "#PF at unexpected RIP "
    .byte 0
msg_wrong_data:
    .ascii "stale or wrong data through V, iteration "
    .byte 0
msg_write_lost:
    .ascii "write through V missed the frame, iteration "
    .byte 0
msg_no_fault:
    .ascii "no #PF, iteration "
    .byte 0
msg_write_through:
    .ascii "write to a read-only page changed memory, iteration "
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0xD000
LONG64_BSS
.equ pd_v, _image_end + LONG64_BSS_SIZE
.equ pt_v, _image_end + LONG64_BSS_SIZE + 0x1000
.equ frames, _image_end + LONG64_BSS_SIZE + 0x2000
.equ vars, _image_end + LONG64_BSS_SIZE + 0xA000
.equ expected_error, vars
.equ expected_cr2, vars + 8
.equ expected_rip, vars + 16
.equ resume_rip, vars + 24
.equ lcg, vars + 32
.equ remaps, vars + 36
.equ invlpgs, vars + 40
.equ cr3_flushes, vars + 44
.equ reads, vars + 48
.equ writes, vars + 52
.equ np_faults, vars + 56
.equ wp_faults, vars + 60
.equ pf_count, vars + 64
.equ stack_top, _bss_end
