# hello: the smallest vtemu guest. Multiboot entry in 32-bit protected mode, a greeting on
# COM1, and a clean exit through isa-debug-exit with value 0.

.include "multiboot.inc"
.include "serial.inc"

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    PUTS greeting
    EXIT 0

SERIAL_ROUTINES

greeting:
    .ascii "Hello from a vtemu guest!\n"
    .byte 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
