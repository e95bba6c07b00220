# stringio: string port I/O, each instruction one VM exit on vtemu that the hypervisor
# performs whole (every iteration, RSI/RDI/RCX updated as the processor would).
#
#   1. a line printed with a single REP OUTSB to COM1's data port
#   2. a line printed with REP OUTSB and DF = 1 (stored reversed, sent from its last byte down)
#   3. fw_cfg: select key 0 (a 16-bit OUT of 0 to port 510h), read the 4-byte signature with
#      REP INSB from port 511h into a buffer that straddles a 4 KiB boundary, print it ("QEMU")
#   4. the registers REP INSB left behind: ECX = 0, EDI advanced by 4
#
# The UART accepts bytes as fast as they come on both vtemu and QEMU, so the OUTSB lines do
# not poll LSR.THRE between bytes.

.include "multiboot.inc"
.include "serial.inc"

.equ FW_CFG_SELECTOR, 0x510
.equ FW_CFG_DATA, 0x511
.equ FW_CFG_SIGNATURE, 0x0000

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT

    # 1. forwards
    cld
    mov esi, msg_forward
    mov ecx, msg_forward_end - msg_forward
    mov dx, COM1
    rep outsb

    # 2. backwards: DF = 1 sends [esi], [esi-1], ...
    std
    mov esi, msg_backward_end - 1
    mov ecx, msg_backward_end - msg_backward
    mov dx, COM1
    rep outsb
    cld

    # 3. fw_cfg signature, into a buffer across a page boundary
    mov dx, FW_CFG_SELECTOR
    mov ax, FW_CFG_SIGNATURE
    out dx, ax
    mov edi, signature
    mov ecx, 4
    mov dx, FW_CFG_DATA
    rep insb
    mov [after_ecx], ecx
    mov [after_edi], edi
    mov byte ptr [signature + 4], 0
    PUTS msg_signature
    PUTS signature
    PUTS newline

    # 4. what REP INSB left in ECX and EDI
    PUTS msg_ecx
    mov eax, [after_ecx]
    call serial_hex32
    PUTS msg_edi
    mov eax, [after_edi]
    sub eax, signature
    call serial_hex32
    PUTS newline
    PUTS msg_done
    EXIT 0

SERIAL_ROUTINES

msg_forward:
    .ascii "one REP OUTSB printed this line\n"
msg_forward_end:
msg_backward:
    .ascii "\n)1 = FD( sdrawkcab BSTUO PER"
msg_backward_end:
msg_signature:
    .ascii "fw_cfg signature: "
    .byte 0
msg_ecx:
    .ascii "after REP INSB: ecx "
    .byte 0
msg_edi:
    .ascii ", edi advanced by "
    .byte 0
msg_done:
    .ascii "stringio done\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END 0x3000
.equ signature, _image_end + 0x1000 - 2    # 2 bytes on one page, 2 (and the NUL) on the next
.equ after_ecx, _image_end + 0x1100
.equ after_edi, _image_end + 0x1104
.equ stack_top, _bss_end
