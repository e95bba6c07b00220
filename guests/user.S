# user: ring 3 in 64-bit long mode, and the ways back into the kernel.
#
# The kernel builds a GDT with kernel and user segments, a 64-bit TSS whose RSP0 is a
# dedicated interrupt stack, an IDT with a DPL 3 gate for INT 80h, and SYSCALL state:
# IA32_STAR (SYSCALL CS 08h, SYSRET base 18h), IA32_LSTAR (the entry), IA32_FMASK (TF, IF,
# DF) and EFER.SCE. It enters ring 3 with IRETQ (CS 2Bh, SS 23h). From ring 3 the user code:
#
#   1. SYSCALL 1 with DF set: the kernel entry checks it runs on CS 08h/SS 08h+8, that the
#      caller's CS (passed in RDI) has RPL 3, RCX = the return address, R11 = the caller's
#      RFLAGS (DF set) while RFLAGS.DF is now clear (FMASK), prints "syscall from ring 3",
#      and returns with SYSRET, which restores DF from R11
#   2. HLT: #GP(0) at CPL 3; the #GP handler checks it runs on the RSP0 stack with a saved
#      CS of RPL 3, prints, and skips the instruction (ioperm.S does the same for I/O)
#   3. INT 80h with the CS and SS it saw after SYSRET in RDI/RSI: the handler checks the
#      RSP0 stack and the saved CS/SS (RPL 3), prints, and returns with IRETQ
#   4. SYSCALL 2 (caller's CS in RDI again): the kernel prints and exits 0
#
# Unicorn does not perform SYSCALL's and SYSRET's ring transitions; vtemu emulates them.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.equ IA32_STAR, 0xC0000081
.equ IA32_LSTAR, 0xC0000082
.equ IA32_FMASK, 0xC0000084
.equ RFLAGS_TF, 1 << 8
.equ RFLAGS_IF, 1 << 9
.equ RFLAGS_DF, 1 << 10
.equ USER_CS_RPL3, USER_CS + 3
.equ USER_DS_RPL3, USER_DS + 3
.equ SYS_PRINT, 1
.equ SYS_EXIT, 2

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    LONG64_ENTER kernel_main

.code64
kernel_main:
    mov rsp, stack_top
    PUTS msg_start
    IDT64_FILL unexpected
    SET_GATE 13, gp_handler, GATE_INTERRUPT
    SET_GATE 0x80, int80_handler, GATE_INTERRUPT_USER
    call idt_load
    mov eax, rsp0_top
    mov edi, tss64
    mov [rdi + TSS64_RSP0], rax
    call tss_install

    # SYSCALL: STAR[47:32] = kernel CS (SS = +8), STAR[63:48] = SYSRET base (CS = +16, SS = +8)
    mov ecx, IA32_STAR
    xor eax, eax
    mov edx, 0x001B0008          # SYSRET base 0x18 | RPL 3, SYSCALL CS 0x08
    wrmsr
    mov ecx, IA32_LSTAR
    mov eax, syscall_entry
    xor edx, edx
    wrmsr
    mov ecx, IA32_FMASK
    mov eax, RFLAGS_TF + RFLAGS_IF + RFLAGS_DF
    xor edx, edx
    wrmsr
    mov ecx, IA32_EFER
    rdmsr
    or eax, EFER_SCE
    wrmsr

    # into ring 3: IRETQ pops RIP, CS, RFLAGS, RSP, SS
    PUTS msg_iret
    push USER_DS_RPL3
    mov eax, user_stack_top
    push rax
    push 0x2                     # RFLAGS: IF clear (nothing to take), IOPL 0
    push USER_CS_RPL3
    mov eax, user_main
    push rax
    iretq

# --- ring 3 ------------------------------------------------------------------------------------
user_main:
    mov edi, cs
    std
    mov eax, SYS_PRINT
    syscall
user_after_syscall:
    pushfq
    pop r12                      # RFLAGS after SYSRET (DF restored from R11)
    cld
    mov r13d, cs
    mov r14d, ss
    # privileged in ring 3: #GP
    mov eax, user_after_hlt
    mov [gp_resume], rax
user_hlt:
    hlt
user_after_hlt:
    mov edi, r13d
    mov esi, r14d
    mov rdx, r12
    int 0x80
    mov edi, cs
    mov eax, SYS_EXIT
    syscall
    ud2

# --- kernel entries ----------------------------------------------------------------------------
syscall_entry:
    mov [user_rsp], rsp
    mov rsp, syscall_stack_top
    mov [saved_rcx], rcx
    mov [saved_r11], r11
    mov [saved_rdi], rdi
    mov [saved_rax], rax
    pushfq
    pop rax
    mov [saved_rflags], rax
    cmp qword ptr [saved_rax], SYS_EXIT
    je sys_exit
    PUTS msg_syscall
    PUTS msg_cs
    mov eax, cs
    call serial_hex32
    PUTS msg_ss
    mov eax, ss
    call serial_hex32
    PUTS msg_caller_rpl
    mov rax, [saved_rdi]
    and eax, 3
    call serial_hex32
    PUTS msg_rcx
    mov eax, user_after_syscall
    cmp rax, [saved_rcx]
    call print_ok
    PUTS msg_r11_df
    test qword ptr [saved_r11], RFLAGS_DF
    setnz al
    movzx eax, al
    call serial_hex32
    PUTS msg_rflags_df
    test qword ptr [saved_rflags], RFLAGS_DF
    setnz al
    movzx eax, al
    call serial_hex32
    PUTS newline
    mov rcx, [saved_rcx]
    mov r11, [saved_r11]
    mov rsp, [user_rsp]
    .byte 0x48, 0x0F, 0x07       # sysretq (REX.W: return to 64-bit code)

sys_exit:
    PUTS msg_exit
    PUTS msg_caller_rpl
    mov rax, [saved_rdi]
    and eax, 3
    call serial_hex32
    PUTS newline
    EXIT 0

# frame: RIP, CS, RFLAGS, RSP, SS at [rsp] (no error code)
int80_handler:
    mov [frame_rsp], rsp
    mov rsp, syscall_stack_top
    mov [saved_rdi], rdi
    mov [saved_rsi], rsi
    mov [saved_rdx], rdx
    PUTS msg_int80
    PUTS msg_on_rsp0
    mov eax, rsp0_top - 40
    cmp rax, [frame_rsp]
    call print_ok
    mov rbx, [frame_rsp]
    PUTS msg_saved_cs
    mov rax, [rbx + 8]
    call serial_hex32
    PUTS msg_saved_ss
    mov rax, [rbx + 32]
    call serial_hex32
    PUTS msg_saved_rsp
    mov eax, user_stack_top
    cmp rax, [rbx + 24]
    call print_ok
    PUTS newline
    PUTS msg_after_sysret
    mov rax, [saved_rdi]
    call serial_hex32
    PUTS msg_ss
    mov rax, [saved_rsi]
    call serial_hex32
    PUTS msg_df
    mov rax, [saved_rdx]
    shr eax, 10
    and eax, 1
    call serial_hex32
    PUTS newline
    mov rsp, [frame_rsp]
    iretq

# frame: error code, RIP, CS, RFLAGS, RSP, SS
gp_handler:
    mov [frame_rsp], rsp
    mov rsp, syscall_stack_top
    mov rbx, [frame_rsp]
    PUTS msg_gp
    mov rax, [rbx + 8]
    mov ecx, user_hlt
    cmp rax, rcx
    je gp_hlt
    PUTS msg_where_unknown
    EXIT 2
gp_hlt:
    PUTS msg_hlt
    PUTS msg_error
    mov rax, [rbx]
    call serial_hex32
    PUTS msg_on_rsp0
    mov eax, rsp0_top - 48
    cmp rax, rbx
    call print_ok
    PUTS msg_saved_cs
    mov rax, [rbx + 16]
    call serial_hex32
    PUTS newline
    mov rax, [gp_resume]
    mov [rbx + 8], rax
    mov rsp, rbx
    add rsp, 8
    iretq

# print_ok: "ok" if ZF is set, else "BAD" (clobbers rax, rdx, rsi)
print_ok:
    jne print_bad
    PUTS msg_ok
    ret
print_bad:
    PUTS msg_bad
    ret

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "user: kernel in 64-bit mode\n"
    .byte 0
msg_iret:
    .ascii "IRETQ to ring 3\n"
    .byte 0
msg_syscall:
    .ascii "syscall from ring 3:"
    .byte 0
msg_cs:
    .ascii " cs "
    .byte 0
msg_ss:
    .ascii " ss "
    .byte 0
msg_caller_rpl:
    .ascii " caller cpl "
    .byte 0
msg_rcx:
    .ascii " rcx "
    .byte 0
msg_r11_df:
    .ascii " r11.df "
    .byte 0
msg_rflags_df:
    .ascii " rflags.df "
    .byte 0
msg_exit:
    .ascii "exit syscall from ring 3:"
    .byte 0
msg_int80:
    .ascii "int 0x80 from ring 3:"
    .byte 0
msg_on_rsp0:
    .ascii " rsp0 stack "
    .byte 0
msg_saved_cs:
    .ascii " saved cs "
    .byte 0
msg_saved_ss:
    .ascii " saved ss "
    .byte 0
msg_saved_rsp:
    .ascii " saved rsp "
    .byte 0
msg_after_sysret:
    .ascii "after sysret: cs "
    .byte 0
msg_df:
    .ascii " rflags.df "
    .byte 0
msg_gp:
    .ascii "#GP from ring 3 at "
    .byte 0
msg_hlt:
    .ascii "hlt:"
    .byte 0
msg_where_unknown:
    .ascii "an unexpected place\n"
    .byte 0
msg_error:
    .ascii " error "
    .byte 0
msg_ok:
    .ascii "ok"
    .byte 0
msg_bad:
    .ascii "BAD"
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
.equ user_rsp, _image_end + LONG64_BSS_SIZE
.equ saved_rcx, _image_end + LONG64_BSS_SIZE + 0x08
.equ saved_r11, _image_end + LONG64_BSS_SIZE + 0x10
.equ saved_rdi, _image_end + LONG64_BSS_SIZE + 0x18
.equ saved_rsi, _image_end + LONG64_BSS_SIZE + 0x20
.equ saved_rdx, _image_end + LONG64_BSS_SIZE + 0x28
.equ saved_rax, _image_end + LONG64_BSS_SIZE + 0x30
.equ saved_rflags, _image_end + LONG64_BSS_SIZE + 0x38
.equ frame_rsp, _image_end + LONG64_BSS_SIZE + 0x40
.equ gp_resume, _image_end + LONG64_BSS_SIZE + 0x48
.equ user_stack_top, _image_end + LONG64_BSS_SIZE + 0x2000
.equ rsp0_top, _image_end + LONG64_BSS_SIZE + 0x3000
.equ syscall_stack_top, _image_end + LONG64_BSS_SIZE + 0x4000
.equ stack_top, _bss_end
