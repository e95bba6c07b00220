# exceptions: exception delivery in 64-bit long mode, checked from inside the guest.
#
# The IDT has 64-bit interrupt gates for #DE, #BP, #UD, #NP, #GP, #PF and #DF (#DF on IST1 of
# a 64-bit TSS); every other vector is a failure. Each test names the instruction expected to
# fault (`expected_rip`), where to resume (`resume_rip`) and the stack pointer at the fault;
# the common handler prints what the hardware reported (vector, error code, CR2 for #PF) and
# checks the frame: saved RIP, CS, RSP, and the 16-byte alignment of the frame that 64-bit
# delivery guarantees (SDM Vol. 3A 6.14.2; one test misaligns RSP on purpose).
#
#   #DE   DIV by zero                                    resume after the DIV
#   #BP   INT3 (a trap: saved RIP is after it)           resume there
#   #UD   UD2, with RSP misaligned by 8                  resume after the UD2
#   #GP   MOV DS with selector 0x0ff8 beyond the GDT     error code 0x0ff8, resume after it
#   #PF   read of a not-present page                     error 0, CR2; the handler maps the page
#                                                        and the read is retried
#   #PF   write to a read-only page (CR0.WP = 1)         error 3, CR2; fixed and retried
#   #DF   the #GP gate marked not present, then a #GP: delivering it raises #NP, a contributory
#         exception during a contributory one (SDM Table 6-5), so the CPU raises #DF (error
#         code 0) on the IST1 stack; that handler reports and exits 0.
#
# (#GP from non-canonical addresses has its own guest, noncanonical.S.)

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.equ NO_ERROR, 0xFFFFFFFF
.equ BAD_SELECTOR, 0x0FF8

.macro EXPECT fault, resume
    mov eax, \fault
    mov [expected_rip], rax
    mov eax, \resume
    mov [resume_rip], rax
    mov [expected_rsp], rsp
.endm

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    mov ax, KERNEL_DS
    mov ds, ax
    mov es, ax
    mov ss, ax
    PUTS msg_start

    # IDT: everything to `unexpected`, then the handlers under test
    IDT64_FILL unexpected
    SET_GATE 0, de_stub, GATE_INTERRUPT
    SET_GATE 3, bp_stub, GATE_INTERRUPT
    SET_GATE 6, ud_stub, GATE_INTERRUPT
    SET_GATE 8, df_handler, GATE_INTERRUPT + 1     # IST1
    SET_GATE 11, np_stub, GATE_INTERRUPT
    SET_GATE 13, gp_stub, GATE_INTERRUPT
    SET_GATE 14, pf_stub, GATE_INTERRUPT
    call idt_load
    mov eax, df_stack_top
    mov edi, tss64
    mov [rdi + TSS64_IST1], rax
    call tss_install

    # --- #DE ------------------------------------------------------------------------------
    EXPECT de_fault, de_resume
    mov eax, 1
    xor edx, edx
    xor ecx, ecx
de_fault:
    div ecx
de_resume:

    # --- #BP: a trap, the saved RIP is the next instruction ---------------------------------
    EXPECT bp_after, bp_after
    int3
bp_after:

    # --- #UD with a misaligned stack --------------------------------------------------------
    sub rsp, 8
    EXPECT ud_fault, ud_resume
ud_fault:
    ud2
ud_resume:
    add rsp, 8

    # --- #GP: a selector beyond the GDT limit -------------------------------------------------
    EXPECT gp_sel_fault, gp_sel_resume
    mov ax, BAD_SELECTOR
gp_sel_fault:
    mov ds, ax
gp_sel_resume:

    # --- #PF: read of a not-present page (fixed by the handler, then retried) ----------------
    mov dword ptr [np_page + 0x123], 0x600DF00D
    mov eax, np_page
    shr eax, 12
    and qword ptr [pt0 + rax * 8], -2        # clear P
    mov eax, np_page
    invlpg [rax]
    EXPECT pf_read_fault, pf_read_fault
pf_read_fault:
    mov eax, [np_page + 0x123]
    mov r12d, eax
    PUTS msg_read
    mov eax, r12d
    call serial_hex32
    PUTS newline

    # --- #PF: write to a read-only page with CR0.WP set -------------------------------------
    mov eax, ro_page
    shr eax, 12
    and qword ptr [pt0 + rax * 8], -3        # clear R/W
    mov eax, ro_page
    invlpg [rax]
    EXPECT pf_write_fault, pf_write_fault
pf_write_fault:
    mov dword ptr [ro_page + 0x456], 0xC0FFEE
    mov eax, [ro_page + 0x456]
    mov r12d, eax
    PUTS msg_written
    mov eax, r12d
    call serial_hex32
    PUTS newline

    # --- #DF: #GP whose gate is not present -> #NP during #GP delivery -> #DF ----------------
    PUTS msg_df
    mov edi, idt64 + 13 * 16
    and byte ptr [rdi + 5], 0x7F              # gate 13: P = 0
    mov [df_expected_rsp], rsp
    mov ax, BAD_SELECTOR
    mov ds, ax
    PUTS msg_no_df
    EXIT 1

# --- handlers ------------------------------------------------------------------------------
# Stubs give every frame the same shape: [rsp] vector, [rsp+8] error code (NO_ERROR if the
# exception has none), then the CPU's RIP, CS, RFLAGS, RSP, SS.
de_stub:
    push -1
    push 0
    jmp common
bp_stub:
    push -1
    push 3
    jmp common
ud_stub:
    push -1
    push 6
    jmp common
np_stub:
    push 11
    jmp common
gp_stub:
    push 13
    jmp common
pf_stub:
    push 14
    jmp common

.equ SAVED, 5 * 8                # rax, rcx, rdx, rsi, rdi
.equ F_VECTOR, SAVED
.equ F_ERROR, SAVED + 8
.equ F_RIP, SAVED + 16
.equ F_CS, SAVED + 24
.equ F_RSP, SAVED + 40
.equ F_END, SAVED + 56

common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    mov rax, [rsp + F_VECTOR]
    mov esi, [vector_names + rax * 4]
    call serial_puts
    PUTS msg_vector
    mov rax, [rsp + F_VECTOR]
    call serial_hex32
    PUTS msg_error
    mov rax, [rsp + F_ERROR]
    cmp eax, NO_ERROR
    jne print_error
    PUTS msg_none
    jmp error_done
print_error:
    call serial_hex32
error_done:
    cmp qword ptr [rsp + F_VECTOR], 14
    jne no_cr2
    PUTS msg_cr2
    mov rax, cr2
    call serial_hex64
no_cr2:
    # checks: RIP, CS, RSP as they were, frame top 16-byte aligned
    PUTS msg_rip
    mov rax, [rsp + F_RIP]
    cmp rax, [expected_rip]
    call print_ok
    PUTS msg_cs
    cmp qword ptr [rsp + F_CS], KERNEL_CS
    call print_ok
    PUTS msg_rsp
    mov rax, [rsp + F_RSP]
    cmp rax, [expected_rsp]
    call print_ok
    PUTS msg_aligned
    lea rax, [rsp + F_END]
    test eax, 0xF
    call print_ok
    PUTS newline
    # #PF: make the page present and writable again, the instruction is retried
    cmp qword ptr [rsp + F_VECTOR], 14
    jne resume
    mov rax, cr2
    mov rdi, rax
    shr rax, 12
    or qword ptr [pt0 + rax * 8], PTE_P + PTE_RW
    invlpg [rdi]
resume:
    mov rax, [resume_rip]
    mov [rsp + F_RIP], rax
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq

# print_ok: "ok" if ZF is set, else "BAD" (clobbers rax, rdx, rsi)
print_ok:
    jne print_bad
    PUTS msg_ok
    ret
print_bad:
    PUTS msg_bad
    ret

df_handler:
    PUTS msg_df_taken
    mov rax, [rsp]
    call serial_hex32
    PUTS msg_ist
    cmp rsp, df_stack_top
    jae df_not_ist
    cmp rsp, df_stack_top - 0x1000
    jb df_not_ist
    PUTS msg_ok
    jmp df_saved_rsp
df_not_ist:
    PUTS msg_bad
df_saved_rsp:
    PUTS msg_rsp
    mov rax, [rsp + 32]          # error code, RIP, CS, RFLAGS, then RSP
    cmp rax, [df_expected_rsp]
    call print_ok
    PUTS newline
    PUTS msg_bye
    EXIT 0

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

    .balign 4
vector_names:
    .long name_de, name_unknown, name_unknown, name_bp, name_unknown, name_unknown, name_ud
    .long name_unknown, name_unknown, name_unknown, name_unknown, name_np, name_unknown
    .long name_gp, name_pf
name_de:
    .ascii "#DE"
    .byte 0
name_bp:
    .ascii "#BP"
    .byte 0
name_ud:
    .ascii "#UD"
    .byte 0
name_np:
    .ascii "#NP"
    .byte 0
name_gp:
    .ascii "#GP"
    .byte 0
name_pf:
    .ascii "#PF"
    .byte 0
name_unknown:
    .ascii "#??"
    .byte 0
msg_start:
    .ascii "exceptions: 64-bit IDT loaded\n"
    .byte 0
msg_vector:
    .ascii " vector "
    .byte 0
msg_error:
    .ascii " error "
    .byte 0
msg_none:
    .ascii "none"
    .byte 0
msg_cr2:
    .ascii " cr2 "
    .byte 0
msg_rip:
    .ascii " rip "
    .byte 0
msg_cs:
    .ascii " cs "
    .byte 0
msg_rsp:
    .ascii " rsp "
    .byte 0
msg_aligned:
    .ascii " aligned "
    .byte 0
msg_ok:
    .ascii "ok"
    .byte 0
msg_bad:
    .ascii "BAD"
    .byte 0
msg_read:
    .ascii "read after #PF fix: "
    .byte 0
msg_written:
    .ascii "written after #PF fix: "
    .byte 0
msg_df:
    .ascii "#GP gate not present, raising #GP\n"
    .byte 0
msg_no_df:
    .ascii "no #DF!\n"
    .byte 0
msg_df_taken:
    .ascii "#DF error "
    .byte 0
msg_ist:
    .ascii " ist1 "
    .byte 0
msg_bye:
    .ascii "exceptions done\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x5000
LONG64_BSS
.equ np_page, _image_end + LONG64_BSS_SIZE
.equ ro_page, _image_end + LONG64_BSS_SIZE + 0x1000
.equ df_stack_top, _image_end + LONG64_BSS_SIZE + 0x3000
.equ expected_rip, _image_end + LONG64_BSS_SIZE + 0x3000
.equ resume_rip, _image_end + LONG64_BSS_SIZE + 0x3008
.equ expected_rsp, _image_end + LONG64_BSS_SIZE + 0x3010
.equ df_expected_rsp, _image_end + LONG64_BSS_SIZE + 0x3018
.equ stack_top, _bss_end
