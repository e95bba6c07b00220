# tick: timer interrupts in 32-bit protected mode. The guest loads its own GDT and IDT, remaps
# the 8259 pair to vectors 20h-2Fh (ICW1-ICW4) with every line but IRQ 0 masked, programs 8254
# channel 0 as a 100 Hz rate generator (mode 2, divisor 11932), enables interrupts and idles
# in HLT. The IRQ 0 handler counts ticks and sends a non-specific EOI; the idle loop prints a
# line every 10 ticks and ends after 50. Any other vector is a failure (exit 3).
#
# On vtemu guest time follows guest progress and jumps to the next timer deadline while the
# vCPU halts, so every run takes the same exits at the same instructions. Built with PV
# (pvops.inc), the PIT programming, the EOI and the idle HLT are hypercalls.

.include "multiboot.inc"
.include "serial.inc"
.include "pvops.inc"
.include "x86.inc"
.include "pm32.inc"

.equ PIT_CH0, 0x40
.equ PIT_CMD, 0x43
.equ PIT_DIVISOR, 11932          # 1193182 Hz / 11932 = 100.0 Hz
.equ IRQ_BASE, 0x20
.equ TICKS, 50
.equ REPORT_EVERY, 10

.code32
_start:
    PM32_ENTER
    PV_SERIAL_INIT
    PUTS msg_start

    # IDT: every vector to `unexpected`, vector 20h to the timer handler
    PM32_IDT_FILL unexpected
    PM32_GATE IRQ_BASE, irq0_handler

    # 8259 pair: vectors 20h-2Fh, only IRQ 0 unmasked
    PIC_REMAP IRQ_BASE, 0xFE, 0xFF

    # 8254 channel 0: lobyte/hibyte access, mode 2 (rate generator), binary
    mov al, 0x34
    PV_OUT_IMM PIT_CMD
    mov al, PIT_DIVISOR & 0xFF
    PV_OUT_IMM PIT_CH0
    mov al, PIT_DIVISOR >> 8
    PV_OUT_IMM PIT_CH0
    PUTS msg_armed

    mov dword ptr [next_report], REPORT_EVERY
    PV_STI
idle:
    PV_HLT
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
    PV_CLI
    mov eax, [ticks]
    call serial_dec32
    PUTS msg_done
    PV_EXIT 0

irq0_handler:
    push eax
    inc dword ptr [ticks]
    mov al, 0x20                     # non-specific EOI (PIC_EOI, pm32.inc)
    PV_OUT_IMM PIC1_CMD
    pop eax
    iretd

unexpected:
    PUTS msg_unexpected
    PV_EXIT 3

PVOPS_ROUTINES32
PM32_ROUTINES
PM32_TABLES

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
