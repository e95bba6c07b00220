# echo: COM1 input by interrupt. The guest loads its own GDT and IDT, remaps the 8259 pair to
# 20h-2Fh with only IRQ 4 (COM1) unmasked, enables the UART's received-data interrupt and
# idles in HLT. The IRQ 4 handler drains the receiver (LSR.DR, RBR) into a ring buffer; the
# main loop assembles lines and answers each with "> " and the line in upper case. The line
# "quit" ends the run with the number of lines read as the exit status; any other vector is
# a failure (exit 3).
#
#   vtemu run guests/echo.S --serial-in -        (type lines; "quit" ends)
#   printf 'abc\nquit\n' | vtemu run guests/echo.S --serial-in -

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "pm32.inc"

.equ IRQ_BASE, 0x20
.equ COM1_IRQ_VECTOR, IRQ_BASE + 4
.equ COM1_IER, COM1 + 1
.equ LSR_DR, 0x01
.equ IER_ERBFI, 0x01
.equ RING_MASK, 0xFFF            # 4 KiB ring of received bytes
.equ LINE_MAX, 200

.code32
_start:
    PM32_ENTER
    SERIAL_INIT
    PUTS msg_start
    PM32_IDT_FILL unexpected
    PM32_GATE COM1_IRQ_VECTOR, com1_handler
    PIC_REMAP IRQ_BASE, 0xEF, 0xFF          # only IRQ 4 unmasked

    mov dword ptr [ring_head], 0
    mov dword ptr [ring_tail], 0
    mov dword ptr [line_length], 0
    mov dword ptr [lines], 0
    mov dx, COM1_IER
    mov al, IER_ERBFI
    out dx, al                   # received-data interrupt on (OUT2 is set by SERIAL_INIT)
    sti

# Take the next received byte, sleeping while the ring is empty. CLI around the check and
# STI; HLT (the STI shadow covers HLT) so an interrupt cannot slip in between.
next_byte:
    cli
    mov eax, [ring_head]
    cmp eax, [ring_tail]
    jne have_byte
    sti
    hlt
    jmp next_byte
have_byte:
    sti
    movzx ecx, byte ptr [ring + eax]
    inc eax
    and eax, RING_MASK
    mov [ring_head], eax
    cmp cl, '\r'
    je next_byte
    cmp cl, '\n'
    je line_done
    mov eax, [line_length]
    cmp eax, LINE_MAX
    jae next_byte                # over-long lines are cut
    mov [line + eax], cl
    inc dword ptr [line_length]
    jmp next_byte

line_done:
    inc dword ptr [lines]
    mov al, '>'
    call serial_putc
    mov al, ' '
    call serial_putc
    xor ebx, ebx
print_line:
    cmp ebx, [line_length]
    jae line_printed
    mov al, [line + ebx]
    cmp al, 'a'
    jb print_char
    cmp al, 'z'
    ja print_char
    sub al, 'a' - 'A'
print_char:
    call serial_putc
    inc ebx
    jmp print_line
line_printed:
    mov al, '\n'
    call serial_putc
    cmp dword ptr [line_length], 4
    jne new_line
    cmp dword ptr [line], 0x74697571     # "quit"
    je finished
new_line:
    mov dword ptr [line_length], 0
    jmp next_byte

finished:
    cli
    PUTS msg_done
    mov eax, [lines]
    call serial_dec32
    PUTS msg_lines
    mov eax, [lines]
    mov dx, DEBUG_EXIT_PORT
    out dx, eax
    hlt

# IRQ 4: move every received byte into the ring, then a non-specific EOI
com1_handler:
    push eax
    push ebx
    push edx
drain:
    mov dx, COM1_LSR
    in al, dx
    test al, LSR_DR
    jz drained
    mov dx, COM1
    in al, dx
    mov ebx, [ring_tail]
    mov [ring + ebx], al
    inc ebx
    and ebx, RING_MASK
    mov [ring_tail], ebx
    jmp drain
drained:
    PIC_EOI
    pop edx
    pop ebx
    pop eax
    iretd

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES
PM32_ROUTINES
PM32_TABLES

msg_start:
    .ascii "echo: type lines, \"quit\" ends\n"
    .byte 0
msg_done:
    .ascii "echo: "
    .byte 0
msg_lines:
    .ascii " lines\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected interrupt\n"
    .byte 0

.balign 8
MULTIBOOT_IMAGE_END 0x3000
.equ idt, _image_end
.equ ring_head, _image_end + 0x800
.equ ring_tail, _image_end + 0x804
.equ line_length, _image_end + 0x808
.equ lines, _image_end + 0x80C
.equ line, _image_end + 0x810
.equ ring, _image_end + 0x1000
.equ stack_top, _bss_end
