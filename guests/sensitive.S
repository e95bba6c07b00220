# sensitive: Robin & Irvine's sensitive-but-unprivileged instructions (USENIX Security 2000),
# each run where its result betrays a deprivileged kernel. The kernel knows what bare
# hardware gives it at CPL 0 (its own GDT/IDT bases, TR and LDTR selectors, the CR0 it wrote,
# the IF it set, its RPL 0 selectors, its descriptors' DPL 0 and 4 GiB limits), runs each
# instruction, and prints one line per instruction:
#     NAME saw XXXXXXXX bare YYYYYYYY ok        (what bare hardware gives)
#     NAME saw XXXXXXXX bare YYYYYYYY LEAK      (the instruction betrayed virtualization)
# then "sensitive: N of 18 leaked" and exits 0 either way.
#
# Under --mode vtx and --mode bt (and on QEMU) nothing leaks. Under --mode deprivileged the
# kernel really runs at CPL 1 with the VMM's shadow tables loaded, and the leaks are the
# hardware's: SGDT/SIDT give the shadow tables' bases, STR the VMM's TSS selector, SMSW the
# CR0.NE the VMM keeps, PUSHF the real IF, POPF drops IF silently (seen by the frame of an
# emulated INT through a DPL 0 gate), LAR/LSL the compressed DPL 1 and truncated limit,
# VERR/VERW accept an RPL 1 selector, PUSH CS / PUSH SS / MOV from SS / far CALL / far JMP /
# far RET / INT through a DPL 3 gate show RPL 1. SLDT reads the null LDTR the guest loaded
# (the VMM uses no LDT of its own): no leak.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "pm32.inc"

.equ CODE, 0x08
.equ DATA, 0x10
.equ TSS_SEL, 0x18
.equ TSS_SIZE, 104
.equ CR0_WRITTEN, 0x00000011        # PE | ET: what the kernel writes to CR0
.equ SYSCALL_VECTOR, 0x80           # DPL 3 gate: INT runs without a trap anywhere
.equ KERNEL_VECTOR, 0x81            # DPL 0 gate: a deprivileged INT traps to the VMM
.equ RFLAGS_IF, 0x200
.equ LAR_MASK, 0x00F0FF00         # bits 19:16 are undefined (SDM Vol. 2 LAR)
.equ CHECKS, 18

.code32
_start:
    cli
    LGDT32 gdt_desc
    LJMP32 CODE, reload_cs
reload_cs:
    mov ax, DATA
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, stack_top
    SERIAL_INIT
    PUTS msg_start
    PM32_IDT_FILL unexpected
    PM32_GATE SYSCALL_VECTOR, frame_handler
    mov word ptr [idt + 0x404], 0xEE00   # vector 80h (8 bytes each): DPL 3
    PM32_GATE KERNEL_VECTOR, frame_handler
    PIC_REMAP 0x20, 0xFF, 0xFF                               # every IRQ masked
    call load_tss
    xor eax, eax
    lldt ax
    mov eax, CR0_WRITTEN
    mov cr0, eax

    # --- SGDT, SIDT, SLDT, SMSW, STR ---------------------------------------------------------
    .byte 0x0F, 0x01, 0x05               # sgdt [table_image]
    .long table_image
    mov eax, [table_image + 2]
    mov ebx, gdt
    mov esi, name_sgdt
    call report
    .byte 0x0F, 0x01, 0x0D               # sidt [table_image]
    .long table_image
    mov eax, [table_image + 2]
    mov ebx, idt
    mov esi, name_sidt
    call report
    xor eax, eax
    sldt ax
    xor ebx, ebx
    mov esi, name_sldt
    call report
    xor eax, eax
    smsw ax
    mov ebx, CR0_WRITTEN & 0xFFFF
    mov esi, name_smsw
    call report
    xor eax, eax
    str ax
    mov ebx, TSS_SEL
    mov esi, name_str
    call report

    # --- PUSHF, POPF -------------------------------------------------------------------------
    cli
    pushfd
    pop eax
    and eax, RFLAGS_IF
    xor ebx, ebx
    mov esi, name_pushf
    call report
    sti
    PUSHD32 0x002                        # IF = 0
    popfd
    int KERNEL_VECTOR                    # the frame holds the IF the processor has now
    cli
    mov eax, [frame_eflags]
    and eax, RFLAGS_IF
    xor ebx, ebx
    mov esi, name_popf
    call report

    # --- LAR, LSL, VERR, VERW ----------------------------------------------------------------
    mov ecx, CODE
    lar eax, ecx
    and eax, LAR_MASK
    mov ebx, 0x00C09B00
    mov esi, name_lar
    call report
    mov ecx, DATA
    lsl eax, ecx
    mov ebx, 0xFFFFFFFF
    mov esi, name_lsl
    call report
    mov ecx, CODE | 1                    # RPL 1 > DPL 0: refused at CPL 0
    xor eax, eax
    verr cx
    setz al
    xor ebx, ebx
    mov esi, name_verr
    call report
    mov ecx, DATA | 1
    xor eax, eax
    verw cx
    setz al
    xor ebx, ebx
    mov esi, name_verw
    call report

    # --- POP, PUSH, CALL, JMP, INT, RET, MOV with segment registers --------------------------
    PUSHD32 DATA
    POP_SS
    PUSH_SS
    pop eax
    and eax, 0xFFFF
    mov ebx, DATA
    mov esi, name_pop
    call report
    PUSH_CS
    pop eax
    and eax, 0xFFFF
    mov ebx, CODE
    mov esi, name_push
    call report
    .byte 0x9A                           # call far CODE:far_callee
    .long far_callee
    .word CODE
    mov eax, [frame_cs]
    mov ebx, CODE
    mov esi, name_call
    call report
    LJMP32 CODE, jumped
jumped:
    xor eax, eax
    mov ax, cs
    mov ebx, CODE
    mov esi, name_jmp
    call report
    int SYSCALL_VECTOR
    mov eax, [frame_cs]
    mov ebx, CODE
    mov esi, name_int
    call report
    PUSHD32 CODE
    mov eax, returned
    push eax
    .byte 0xCB                           # retf
returned:
    xor eax, eax
    mov ax, cs
    mov ebx, CODE
    mov esi, name_ret
    call report
    mov ax, DATA
    mov ss, ax
    xor eax, eax
    mov ax, ss
    mov ebx, DATA
    mov esi, name_mov
    call report

    PUTS msg_summary
    mov eax, [leaks]
    call serial_dec32
    PUTS msg_of
    mov eax, CHECKS
    call serial_dec32
    PUTS msg_leaked
    EXIT 0

# report: ESI = name, EAX = what the instruction gave, EBX = what bare hardware gives
report:
    push eax
    push ebx
    call serial_puts
    PUTS msg_saw
    mov eax, [esp + 4]
    call serial_hex32
    PUTS msg_bare
    mov eax, [esp]
    call serial_hex32
    pop ebx
    pop eax
    cmp eax, ebx
    jne report_leak
    PUTS msg_ok
    ret
report_leak:
    inc dword ptr [leaks]
    PUTS msg_leak
    ret

# frame_handler: records the CS and EFLAGS the processor pushed
frame_handler:
    push eax
    mov eax, [esp + 8]
    and eax, 0xFFFF
    mov [frame_cs], eax
    mov eax, [esp + 12]
    mov [frame_eflags], eax
    pop eax
    iretd

far_callee:
    mov eax, [esp + 4]
    and eax, 0xFFFF
    mov [frame_cs], eax
    .byte 0xCB                           # retf

# load_tss: the GDT's TSS descriptor gets the TSS's address, then LTR
load_tss:
    mov eax, tss
    mov word ptr [gdt_tss + 2], ax
    shr eax, 16
    mov byte ptr [gdt_tss + 4], al
    mov byte ptr [gdt_tss + 7], ah
    mov dword ptr [tss + 4], stack_top   # ESP0
    mov dword ptr [tss + 8], DATA        # SS0
    mov ax, TSS_SEL
    ltr ax
    ret

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES
PM32_ROUTINES

    .balign 8
gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF     # 08h code: base 0, 4 GiB, 32-bit, DPL 0, accessed
    .quad 0x00CF93000000FFFF     # 10h data, DPL 0, accessed
gdt_tss:
    .quad 0x0000890000000000 + TSS_SIZE - 1   # 18h 32-bit TSS, available (base set at run time)
gdt_end:
    .balign 4
    .word 0
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
    .balign 4
    .word 0
pm32_idt_desc:
    .word 256 * 8 - 1
    .long idt
table_image:
    .long 0
    .long 0
leaks:
    .long 0
frame_cs:
    .long 0
frame_eflags:
    .long 0

msg_start:
    .ascii "sensitive: Robin & Irvine's sensitive unprivileged instructions at CPL 0\n"
    .byte 0
msg_saw:
    .ascii " saw "
    .byte 0
msg_bare:
    .ascii " bare "
    .byte 0
msg_ok:
    .ascii " ok\n"
    .byte 0
msg_leak:
    .ascii " LEAK\n"
    .byte 0
msg_summary:
    .ascii "sensitive: "
    .byte 0
msg_of:
    .ascii " of "
    .byte 0
msg_leaked:
    .ascii " leaked\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception or interrupt\n"
    .byte 0
name_sgdt:
    .ascii "SGDT "
    .byte 0
name_sidt:
    .ascii "SIDT "
    .byte 0
name_sldt:
    .ascii "SLDT "
    .byte 0
name_smsw:
    .ascii "SMSW "
    .byte 0
name_str:
    .ascii "STR  "
    .byte 0
name_pushf:
    .ascii "PUSHF"
    .byte 0
name_popf:
    .ascii "POPF "
    .byte 0
name_lar:
    .ascii "LAR  "
    .byte 0
name_lsl:
    .ascii "LSL  "
    .byte 0
name_verr:
    .ascii "VERR "
    .byte 0
name_verw:
    .ascii "VERW "
    .byte 0
name_pop:
    .ascii "POP  "
    .byte 0
name_push:
    .ascii "PUSH "
    .byte 0
name_call:
    .ascii "CALL "
    .byte 0
name_jmp:
    .ascii "JMP  "
    .byte 0
name_int:
    .ascii "INT  "
    .byte 0
name_ret:
    .ascii "RET  "
    .byte 0
name_mov:
    .ascii "MOV  "
    .byte 0

.balign 8
MULTIBOOT_IMAGE_END 0x3000
.equ idt, _image_end
.equ tss, _image_end + 0x800
.equ stack_top, _bss_end
