# triplefault: a triple fault on purpose. After one line on COM1 the guest loads an IDT with
# limit 0 and divides by zero: #DE finds no gate within the limit, so its delivery raises #GP;
# #GP finds no gate either (a contributory exception during a contributory one, SDM Vol. 3A
# Table 6-5), which makes #DF, whose delivery fails the same way: triple fault, shutdown.
#
# vtemu ends the run with its triple-fault exit code (70) and a state dump on stderr; QEMU
# with -no-reboot shuts down and exits with status 0. Nothing after the fault is printed.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    PUTS msg
    LIDT32 empty_idt
    xor edx, edx
    mov eax, 1
    xor ecx, ecx
    div ecx
    PUTS msg_survived
    EXIT 1

SERIAL_ROUTINES

    .balign 4
    .word 0
empty_idt:
    .word 0                      # limit 0: not even vector 0 fits
    .long 0

msg:
    .ascii "triplefault: IDT limit 0, dividing by zero\n"
    .byte 0
msg_survived:
    .ascii "survived a triple fault?\n"
    .byte 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
