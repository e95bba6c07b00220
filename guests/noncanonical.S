# noncanonical: 64-bit data accesses to non-canonical addresses must raise #GP(0) (SDM Vol. 3A
# 3.3.7.1). A read and a write each fault; the handler prints the error code, checks the
# saved RIP and resumes after the instruction. (A non-canonical stack reference raises #SS(0)
# on silicon but #GP on QEMU's TCG, so this guest does not try one: its output must match.)

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.macro EXPECT fault, resume
    mov eax, \fault
    mov [expected_rip], rax
    mov eax, \resume
    mov [resume_rip], rax
.endm

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    PUTS msg_start
    IDT64_FILL unexpected
    SET_GATE 13, gp_handler, GATE_INTERRUPT
    call idt_load

    mov rbx, 0x8000000000000000
    EXPECT read_fault, read_resume
read_fault:
    mov rax, [rbx]
read_resume:
    EXPECT write_fault, write_resume
write_fault:
    mov qword ptr [rbx + 8], 1
write_resume:
    PUTS msg_done
    EXIT 0

gp_handler:
    PUTS msg_gp
    mov rax, [rsp]
    call serial_hex32
    PUTS msg_rip
    mov rax, [rsp + 8]
    cmp rax, [expected_rip]
    jne rip_bad
    PUTS msg_ok
    jmp rip_done
rip_bad:
    PUTS msg_bad
rip_done:
    mov rax, [resume_rip]
    mov [rsp + 8], rax
    add rsp, 8
    iretq

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "noncanonical: 64-bit IDT loaded\n"
    .byte 0
msg_gp:
    .ascii "#GP error "
    .byte 0
msg_rip:
    .ascii " rip "
    .byte 0
msg_ok:
    .ascii "ok\n"
    .byte 0
msg_bad:
    .ascii "BAD\n"
    .byte 0
msg_done:
    .ascii "noncanonical done\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x2000
LONG64_BSS
.equ expected_rip, _image_end + LONG64_BSS_SIZE
.equ resume_rip, _image_end + LONG64_BSS_SIZE + 8
.equ stack_top, _bss_end
