# longmode: the way into 64-bit mode. A line from 32-bit protected mode, then the guest's own
# GDT and identity page tables, CR4.PAE, IA32_EFER.LME (WRMSR), CR0.PG, a far jump to a 64-bit
# code segment, and lines from 64-bit mode: EFER as the CPU reports it (LME and LMA set) and a
# 64-bit multiplication whose product needs all 64 bits of RAX.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    PUTS msg_protected
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    PUTS msg_long
    # EFER after the switch: LMA (bit 10) is set by the processor, LME (bit 8) by us.
    PUTS msg_efer
    mov ecx, IA32_EFER
    rdmsr
    call serial_hex32
    PUTS newline
    # 0x123456789 * 0x10001 = 0x123468ace6789 needs 49 bits; then a 64-bit rotate and an
    # XOR with a 64-bit immediate, which only 64-bit registers survive.
    PUTS msg_product
    mov rax, 0x123456789
    mov rbx, 0x10001
    imul rax, rbx
    mov r15, rax
    call serial_hex64
    PUTS newline
    PUTS msg_rotate
    mov rax, r15
    rol rax, 16
    mov r8, 0xFFFFFFFF00000000
    xor rax, r8
    call serial_hex64
    PUTS newline
    # CS is the 64-bit selector, and the stack is a 64-bit one.
    PUTS msg_cs
    mov eax, cs
    call serial_hex32
    PUTS newline
    PUTS msg_bye
    EXIT 0

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

msg_protected:
    .ascii "32-bit protected mode: entering long mode\n"
    .byte 0
msg_long:
    .ascii "64-bit long mode: hello\n"
    .byte 0
msg_efer:
    .ascii "EFER = "
    .byte 0
msg_product:
    .ascii "0x123456789 * 0x10001 = "
    .byte 0
msg_rotate:
    .ascii "rol 16, xor 0xffffffff00000000 = "
    .byte 0
msg_cs:
    .ascii "CS = "
    .byte 0
msg_bye:
    .ascii "long mode OK\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x2000
LONG64_BSS
.equ stack_top, _bss_end
