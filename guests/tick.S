# tick: timer interrupts in 32-bit protected mode. The guest loads its own GDT and IDT, remaps
# the 8259 pair to vectors 20h-2Fh (ICW1-ICW4) with every line but IRQ 0 masked, programs 8254
# channel 0 as a 100 Hz rate generator (mode 2, divisor 11932), enables interrupts and idles
# in HLT. The IRQ 0 handler counts ticks and sends a non-specific EOI; the idle loop prints a
# line every 10 ticks and ends after 50. Any other vector is a failure (exit 3).
#
# On vtemu guest time follows guest progress and jumps to the next timer deadline while the
# vCPU halts, so every run takes the same exits at the same instructions.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"

.equ CODE_SEL, 0x08
.equ DATA_SEL, 0x10
.equ PIC1_CMD, 0x20
.equ PIC1_DATA, 0x21
.equ PIC2_CMD, 0xA0
.equ PIC2_DATA, 0xA1
.equ PIT_CH0, 0x40
.equ PIT_CMD, 0x43
.equ PIT_DIVISOR, 11932          # 1193182 Hz / 11932 = 100.0 Hz
.equ IRQ_BASE, 0x20
.equ TICKS, 50
.equ REPORT_EVERY, 10

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
    mov fs, ax
    mov gs, ax
    mov esp, stack_top
    SERIAL_INIT
    PUTS msg_start

    # IDT: every vector to `unexpected`, vector 20h to the timer handler
    xor ebx, ebx
fill_idt:
    mov eax, unexpected
    call set_gate
    inc ebx
    cmp ebx, 256
    jb fill_idt
    mov ebx, IRQ_BASE
    mov eax, irq0_handler
    call set_gate
    LIDT32 idt_desc

    # 8259 pair: ICW1 (edge, cascade, ICW4 needed), ICW2 (vector base), ICW3 (slave on IR2),
    # ICW4 (8086 mode), then OCW1 masks: only IRQ 0 unmasked.
    mov al, 0x11
    out PIC1_CMD, al
    out PIC2_CMD, al
    mov al, IRQ_BASE
    out PIC1_DATA, al
    mov al, IRQ_BASE + 8
    out PIC2_DATA, al
    mov al, 0x04
    out PIC1_DATA, al
    mov al, 0x02
    out PIC2_DATA, al
    mov al, 0x01
    out PIC1_DATA, al
    out PIC2_DATA, al
    mov al, 0xFE
    out PIC1_DATA, al
    mov al, 0xFF
    out PIC2_DATA, al

    # 8254 channel 0: lobyte/hibyte access, mode 2 (rate generator), binary
    mov al, 0x34
    out PIT_CMD, al
    mov al, PIT_DIVISOR & 0xFF
    out PIT_CH0, al
    mov al, PIT_DIVISOR >> 8
    out PIT_CH0, al
    PUTS msg_armed

    mov dword ptr [next_report], REPORT_EVERY
    sti
idle:
    hlt
    mov eax, [ticks]
    cmp eax, [next_report]
    jb idle
    PUTS msg_tick
    mov eax, [next_report]
    call serial_dec32
    PUTS newline
    mov eax, [next_report]
    cmp eax, TICKS
    jae finished
    add dword ptr [next_report], REPORT_EVERY
    jmp idle

finished:
    cli
    mov eax, [ticks]
    call serial_dec32
    PUTS msg_done
    EXIT 0

# set_gate: IDT entry EBX := 32-bit interrupt gate to EAX (clobbers eax, edx)
set_gate:
    lea edx, [idt + ebx * 8]
    mov word ptr [edx], ax
    mov word ptr [edx + 2], CODE_SEL
    mov word ptr [edx + 4], 0x8E00   # present, DPL 0, 32-bit interrupt gate
    shr eax, 16
    mov word ptr [edx + 6], ax
    ret

irq0_handler:
    push eax
    inc dword ptr [ticks]
    mov al, 0x20                 # non-specific EOI
    out PIC1_CMD, al
    pop eax
    iretd

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES

    .balign 8
gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF     # 0x08 code: base 0, 4 GiB, 32-bit, accessed
    .quad 0x00CF93000000FFFF     # 0x10 data, accessed
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
    .ascii "tick: own GDT and IDT loaded\n"
    .byte 0
msg_armed:
    .ascii "PIC remapped to 0x20, PIT at 100 Hz\n"
    .byte 0
msg_tick:
    .ascii "tick "
    .byte 0
msg_done:
    .ascii " ticks\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected interrupt\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 8
MULTIBOOT_IMAGE_END 0x2000
.equ idt, _image_end
.equ ticks, _image_end + 0x800
.equ next_report, _image_end + 0x804
.equ stack_top, _bss_end
