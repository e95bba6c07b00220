# sensitiveloop: a 64-bit kernel loop dominated by the instructions binary translation
# handles inline and VT-x handles badly. Each of ITERATIONS iterations runs
#     sti; pushfq; cli; mov cr8, rax; mov rbx, cr8; popfq
# i.e. two interrupt-flag changes, a flags save and restore, and a TPR write and read.
# Under --mode vtx the CR8 accesses are VM exits (no TPR shadow: CR8-load and CR8-store
# exiting), two per iteration; CLI/STI/PUSHF/POPF never exit on VT-x. Under --mode bt all
# six run from the translation cache: CLI/STI/PUSHF/POPF natively (the TC runs at CPL 0 with
# the guest's own IF), MOV CR8 on the virtual TPR in the translator's data page. The loop
# checks that every TPR value reads back and prints a checksum, so a wrong translation
# cannot pass unnoticed.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.ifndef ITERATIONS
.equ ITERATIONS, 20000          # `vtemu asm -D ITERATIONS=N` for another count
.endif

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    mov al, 0xFF                # no device interrupt while IF toggles: mask both 8259s
    out 0x21, al
    out 0xA1, al
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    PUTS msg_start
    mov eax, ITERATIONS
    call serial_hex64
    PUTS msg_body
    mov ecx, ITERATIONS
    xor r12, r12                # sum of the TPR values read back
    xor r13, r13                # iterations whose read-back differed
spin:
    mov eax, ecx
    and eax, 15
    sti
    pushfq
    cli
    mov cr8, rax
    mov rbx, cr8
    popfq
    add r12, rbx
    cmp rbx, rax
    je same
    inc r13
same:
    dec ecx
    jnz spin
    xor eax, eax
    mov cr8, rax
    cli
    PUTS msg_sum
    mov rax, r12
    call serial_hex64
    PUTS msg_bad
    mov rax, r13
    call serial_hex64
    PUTS newline
    test r13, r13
    jnz failed
    PUTS msg_done
    EXIT 0
failed:
    EXIT 1

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "sensitiveloop: "
    .byte 0
msg_body:
    .ascii " x (sti, pushfq, cli, mov cr8, mov from cr8, popfq)\n"
    .byte 0
msg_sum:
    .ascii "TPR sum "
    .byte 0
msg_bad:
    .ascii ", mismatches "
    .byte 0
msg_done:
    .ascii "sensitiveloop done\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x2000
LONG64_BSS
.equ stack_top, _bss_end
