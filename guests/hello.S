# hello: the smallest vtemu guest. Multiboot entry in 32-bit protected mode, a greeting on
# COM1, and a clean exit through isa-debug-exit with value 0. Built with PV (pvops.inc) it
# prints through the console hypercall and ends with the shutdown hypercall.

.include "multiboot.inc"
.include "serial.inc"
.include "pvops.inc"

.code32
_start:
    mov esp, stack_top
    PV_SERIAL_INIT
    PUTS greeting
    PV_EXIT 0

PVOPS_ROUTINES32

greeting:
    .ascii "Hello from a vtemu guest!\n"
    .byte 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
