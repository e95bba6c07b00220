# ioperm: I/O permission from ring 3 (SDM Vol. 1 18.5; Vol. 3C 25.1.1: the IOPL and I/O
# permission bitmap checks come before any I/O-instruction VM exit).
#
#   1. IOPL 0 and no I/O permission bitmap (TSS I/O map base beyond the limit): OUT to COM1
#      and IN from COM1's LSR each raise #GP(0); the byte must not reach COM1
#   2. (INT 80h, function 1) the kernel gives the TSS an I/O permission bitmap that allows
#      only ports 3F8h-3FFh and reloads TR: ring 3 now prints through COM1 itself, and an OUT
#      to the POST port 80h still raises #GP(0)
#   3. (INT 80h, function 2) the kernel returns with RFLAGS.IOPL = 3: the bitmap no longer
#      matters, ring 3 writes port 80h and finally isa-debug-exit (exit 0) itself
#
# The #GP handler prints which instruction faulted and skips it (OUT/IN DX are one byte).

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.equ USER_CS_RPL3, USER_CS + 3
.equ USER_DS_RPL3, USER_DS + 3
.equ IOMAP_BYTES, 8192           # one bit per port, 65536 ports
.equ TSS_WITH_MAP_LIMIT, TSS64_SIZE + IOMAP_BYTES   # the map plus its trailing 0xFF byte
.equ POST_PORT, 0x80

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    LONG64_ENTER kernel_main

.code64
kernel_main:
    mov rsp, stack_top
    PUTS msg_start
    IDT64_FILL unexpected
    SET_GATE 13, gp_handler, GATE_INTERRUPT
    SET_GATE 0x80, int80_handler, GATE_INTERRUPT_USER
    call idt_load
    mov eax, rsp0_top
    mov edi, tss64
    mov [rdi + TSS64_RSP0], rax
    call tss_install             # I/O map base = 104 = limit + 1: no bitmap

    push USER_DS_RPL3
    mov eax, user_stack_top
    push rax
    push 0x2                     # IOPL 0
    push USER_CS_RPL3
    mov eax, user_main
    push rax
    iretq

# --- ring 3 ----------------------------------------------------------------------------------
user_main:
    mov dx, COM1
    mov al, 'X'
user_out_denied:
    out dx, al
    mov dx, COM1_LSR
user_in_denied:
    in al, dx
    mov eax, 1
    int 0x80                     # the kernel installs the bitmap
    mov esi, msg_user_bitmap
    call serial_puts             # ring 3 polls LSR and writes THR itself
    mov dx, POST_PORT
    mov al, 0x55
user_post_denied:
    out dx, al
    mov eax, 2
    int 0x80                     # the kernel returns with IOPL 3
    mov esi, msg_user_iopl
    call serial_puts
    mov dx, POST_PORT
    mov al, 0x56
    out dx, al
    mov esi, msg_user_exit
    call serial_puts
    mov dx, DEBUG_EXIT_PORT
    xor eax, eax
    out dx, eax
    ud2

# --- kernel ----------------------------------------------------------------------------------
int80_handler:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    cmp eax, 1
    je install_bitmap
    # function 2: IOPL 3 in the RFLAGS IRETQ restores (frame: 6 saved registers, then RIP,
    # CS, RFLAGS)
    PUTS msg_iopl
    or qword ptr [rsp + 6 * 8 + 16], 3 << 12
    jmp int80_done
install_bitmap:
    PUTS msg_bitmap
    mov edi, iomap
    mov eax, 0xFFFFFFFF
    mov ecx, IOMAP_BYTES / 4 + 1 # every port denied, plus the trailing 0xFF byte
    cld
    rep stosd
    mov edi, iomap + COM1 / 8
    mov byte ptr [rdi], 0        # ports 3F8h-3FFh allowed
    mov edi, tss64
    mov word ptr [rdi + TSS64_IOMAP], TSS64_SIZE
    # a new limit takes effect at LTR; LTR needs the descriptor's busy bit clear
    mov edi, gdt64 + TSS_SEL
    mov word ptr [rdi], TSS_WITH_MAP_LIMIT
    mov byte ptr [rdi + 5], 0x89
    mov ax, TSS_SEL
    ltr ax
int80_done:
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    iretq

# frame: error code, RIP, CS, RFLAGS, RSP, SS
gp_handler:
    push rax
    push rdx
    push rsi
    push rdi
    push rcx
    PUTS msg_gp
    mov rax, [rsp + 5 * 8 + 8]
    mov ecx, user_out_denied
    cmp rax, rcx
    je gp_out
    mov ecx, user_in_denied
    cmp rax, rcx
    je gp_in
    mov ecx, user_post_denied
    cmp rax, rcx
    je gp_post
    PUTS msg_where_unknown
    EXIT 2
gp_out:
    PUTS msg_out_com1
    jmp gp_report
gp_in:
    PUTS msg_in_lsr
    jmp gp_report
gp_post:
    PUTS msg_out_post
gp_report:
    PUTS msg_error
    mov rax, [rsp + 5 * 8]
    call serial_hex32
    PUTS msg_cpl
    mov rax, [rsp + 5 * 8 + 16]
    and eax, 3
    call serial_hex32
    PUTS newline
    add qword ptr [rsp + 5 * 8 + 8], 1
    pop rcx
    pop rdi
    pop rsi
    pop rdx
    pop rax
    add rsp, 8
    iretq

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "ioperm: ring 3 with IOPL 0 and no I/O bitmap\n"
    .byte 0
msg_gp:
    .ascii "#GP at "
    .byte 0
msg_out_com1:
    .ascii "out 0x3f8"
    .byte 0
msg_in_lsr:
    .ascii "in 0x3fd"
    .byte 0
msg_out_post:
    .ascii "out 0x80"
    .byte 0
msg_where_unknown:
    .ascii "an unexpected place\n"
    .byte 0
msg_error:
    .ascii ": error "
    .byte 0
msg_cpl:
    .ascii " from cpl "
    .byte 0
msg_bitmap:
    .ascii "kernel: I/O bitmap allows 0x3f8-0x3ff\n"
    .byte 0
msg_user_bitmap:
    .ascii "ring 3 prints through the I/O bitmap\n"
    .byte 0
msg_iopl:
    .ascii "kernel: IOPL 3\n"
    .byte 0
msg_user_iopl:
    .ascii "ring 3 with IOPL 3 writes port 0x80\n"
    .byte 0
msg_user_exit:
    .ascii "ring 3 writes isa-debug-exit\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x6000
LONG64_BSS
.equ iomap, tss64 + TSS64_SIZE     # runs 0x1068 bytes past LONG64_BSS into the bss below
.equ user_stack_top, _image_end + LONG64_BSS_SIZE + 0x4000
.equ rsp0_top, _image_end + LONG64_BSS_SIZE + 0x5000
.equ stack_top, _bss_end
