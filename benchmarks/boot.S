# boot: one iteration = one whole boot: the reset vector, vtemu's firmware (real -> protected
# mode, the kernel over fw_cfg, the multiboot hand-off), COM1 set-up, a greeting, and the exit
# through isa-debug-exit. The harness times the whole run (there is no loop to bracket), so
# the iteration count on the command line is ignored: the guest always reports 1.

.include "multiboot.inc"
.include "serial.inc"
.include "bench.inc"

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    PUTS msg_hello
    mov dx, BENCH_COUNT_PORT
    mov eax, 1
    out dx, eax
    PUTS bench_name
    PUTS msg_report
    EXIT 0

SERIAL_ROUTINES

bench_name:
    .ascii "boot"
    .byte 0
msg_hello:
    .ascii "Hello from the boot benchmark\n"
    .byte 0
msg_report:
    .ascii ": 1 iterations\n"
    .byte 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
