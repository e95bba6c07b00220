# segaccess: a timer interrupt taken while CS and DS-SS come from GDT descriptors whose
# accessed bit is clear (code type 0xA, data type 0x2), as many kernels write them.
#
# Loading a segment register sets the descriptor's accessed bit (SDM Vol. 3A 3.4.5.1), in the
# GDT and in the segment's descriptor cache, so a processor's CS is always "accessed" and the
# VM-entry check that demands it (SDM Vol. 3C 26.3.1.2, CS type 9, 11, 13 or 15) holds for any
# state a guest can reach. The guest takes one IRQ 0 from the 8254 (on vtemu a VM exit and an
# event injection, so a full VM entry with its guest-state checks) and prints the tick.
# (QEMU's TCG does not set the accessed bit for a far jump's CS load; the guest therefore does
# not print its GDT, whose bytes differ between QEMU and silicon.)

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"

.equ CODE_SEL, 0x08
.equ DATA_SEL, 0x10

.code32
_start:
    cli
    LGDT32 gdt_desc
    LJMP32 CODE_SEL, reload_cs
reload_cs:
    mov ax, DATA_SEL
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, stack_top
    SERIAL_INIT
    PUTS msg_start

    # IDT entry 20h: the timer handler
    mov eax, irq0_handler
    mov edx, idt + 0x20 * 8
    mov word ptr [edx], ax
    mov word ptr [edx + 2], CODE_SEL
    mov word ptr [edx + 4], 0x8E00
    shr eax, 16
    mov word ptr [edx + 6], ax
    LIDT32 idt_desc

    # 8259: vectors 20h/28h, only IRQ 0 unmasked; 8254 channel 0 at 100 Hz
    mov al, 0x11
    out 0x20, al
    out 0xA0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x02
    out 0xA1, al
    mov al, 0x01
    out 0x21, al
    out 0xA1, al
    mov al, 0xFE
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al
    mov al, 0x34
    out 0x43, al
    mov al, 0x9C
    out 0x40, al
    mov al, 0x2E
    out 0x40, al
    sti
wait_tick:
    hlt
    cmp dword ptr [ticks], 0
    je wait_tick
    cli
    PUTS msg_tick
    EXIT 0

irq0_handler:
    push eax
    inc dword ptr [ticks]
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd

SERIAL_ROUTINES

    .balign 8
gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF     # 0x08 code, execute/read, accessed bit clear
    .quad 0x00CF92000000FFFF     # 0x10 data, read/write, accessed bit clear
gdt_end:
    .balign 4
    .word 0
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
    .balign 4
    .word 0
idt_desc:
    .word 256 * 8 - 1
    .long idt

msg_start:
    .ascii "segaccess: CS and SS from descriptors with the accessed bit clear\n"
    .byte 0
msg_tick:
    .ascii "tick with unaccessed descriptors\n"
    .byte 0

.balign 8
MULTIBOOT_IMAGE_END 0x2000
.equ idt, _image_end
.equ ticks, _image_end + 0x800
.equ stack_top, _bss_end
