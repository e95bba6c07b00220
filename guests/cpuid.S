# cpuid: what CPUID reports to the guest. The vendor string (leaf 0), family/model/stepping
# and the hypervisor-present bit (leaf 1, ECX[31]), then the hypervisor leaves: 40000000h
# (highest hypervisor leaf and 12-byte vendor id in EBX:ECX:EDX, "VtemuVirtCPU" on vtemu)
# and 40000001h..40000006h as raw EAX..EDX. Every CPUID is a VM exit on vtemu; the output
# differs from QEMU's by design (another CPU model, another hypervisor).

.include "multiboot.inc"
.include "serial.inc"

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT

    # leaf 0: max basic leaf in EAX, vendor in EBX:EDX:ECX
    xor eax, eax
    xor ecx, ecx
    cpuid
    mov [text], ebx
    mov [text + 4], edx
    mov [text + 8], ecx
    mov byte ptr [text + 12], 0
    mov [max_leaf], eax
    PUTS msg_vendor
    PUTS text
    PUTS msg_max
    mov eax, [max_leaf]
    call serial_hex32
    PUTS newline

    # leaf 1: EAX = stepping 3:0, model 7:4, family 11:8, ext model 19:16, ext family 27:20
    mov eax, 1
    xor ecx, ecx
    cpuid
    mov [leaf1_eax], eax
    mov [leaf1_ecx], ecx
    mov ebx, eax
    shr ebx, 8
    and ebx, 0xF                # family
    mov [family], ebx
    mov ebx, eax
    shr ebx, 4
    and ebx, 0xF                # model
    mov [model], ebx
    cmp dword ptr [family], 0xF
    jne family_done
    mov ebx, eax
    shr ebx, 20
    and ebx, 0xFF
    add [family], ebx           # family 0Fh adds the extended family
family_done:
    cmp dword ptr [family], 6
    je add_ext_model
    cmp dword ptr [family], 0xF
    jb model_done
add_ext_model:
    mov ebx, eax
    shr ebx, 12
    and ebx, 0xF0               # extended model << 4
    add [model], ebx
model_done:
    PUTS msg_family
    mov eax, [family]
    call serial_hex32
    PUTS msg_model
    mov eax, [model]
    call serial_hex32
    PUTS msg_stepping
    mov eax, [leaf1_eax]
    and eax, 0xF
    call serial_hex32
    PUTS newline
    PUTS msg_hv_bit
    test dword ptr [leaf1_ecx], 0x80000000
    jz hv_clear
    PUTS msg_set
    jmp hv_done
hv_clear:
    PUTS msg_clear
hv_done:

    # 40000000h: highest hypervisor leaf, vendor id EBX:ECX:EDX (Hyper-V TLFS 2.4)
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    mov [text], ebx
    mov [text + 4], ecx
    mov [text + 8], edx
    mov byte ptr [text + 12], 0
    push eax
    PUTS msg_hv_max
    pop eax
    call serial_hex32
    PUTS msg_hv_vendor
    # the vendor id printed byte by byte, NULs as '.', so any 12 bytes print
    mov ebx, text
hv_vendor_byte:
    mov al, [ebx]
    test al, al
    jnz hv_vendor_print
    mov al, '.'
hv_vendor_print:
    call serial_putc
    inc ebx
    cmp ebx, text + 12
    jb hv_vendor_byte
    PUTS msg_quote_nl

    # 40000001h..40000006h
    mov dword ptr [leaf], 0x40000001
hv_leaf:
    mov eax, [leaf]
    xor ecx, ecx
    cpuid
    mov [regs], eax
    mov [regs + 4], ebx
    mov [regs + 8], ecx
    mov [regs + 12], edx
    mov eax, [leaf]
    call serial_hex32
    PUTS msg_colon
    mov eax, [regs]
    call serial_hex32
    mov al, ' '
    call serial_putc
    mov eax, [regs + 4]
    call serial_hex32
    mov al, ' '
    call serial_putc
    mov eax, [regs + 8]
    call serial_hex32
    mov al, ' '
    call serial_putc
    mov eax, [regs + 12]
    call serial_hex32
    PUTS newline
    inc dword ptr [leaf]
    cmp dword ptr [leaf], 0x40000006
    jbe hv_leaf

    PUTS msg_done
    EXIT 0

SERIAL_ROUTINES

msg_vendor:
    .ascii "vendor: "
    .byte 0
msg_max:
    .ascii ", max basic leaf "
    .byte 0
msg_family:
    .ascii "family "
    .byte 0
msg_model:
    .ascii " model "
    .byte 0
msg_stepping:
    .ascii " stepping "
    .byte 0
msg_hv_bit:
    .ascii "hypervisor bit (1:ECX[31]): "
    .byte 0
msg_set:
    .ascii "set\n"
    .byte 0
msg_clear:
    .ascii "clear\n"
    .byte 0
msg_hv_max:
    .ascii "40000000: max leaf "
    .byte 0
msg_hv_vendor:
    .ascii ", vendor \""
    .byte 0
msg_quote_nl:
    .ascii "\"\n"
    .byte 0
msg_colon:
    .ascii ": "
    .byte 0
msg_done:
    .ascii "cpuid done\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

MULTIBOOT_IMAGE_END 0x2000
.equ text, _image_end
.equ max_leaf, _image_end + 16
.equ leaf1_eax, _image_end + 20
.equ leaf1_ecx, _image_end + 24
.equ family, _image_end + 28
.equ model, _image_end + 32
.equ leaf, _image_end + 36
.equ regs, _image_end + 48
.equ stack_top, _bss_end
