# dma_attack: a hostile guest aims the copy engine at memory that is not its own, by the host
# addresses where vtemu keeps it (vtemu/machine/layout.py): partition 0's RAM (10_0000_0000h),
# partition 1's RAM (14_0000_0000h, its own RAM but not at a guest address), the firmware ROM
# (7F_0000_0000h), the hypervisor's private memory with the EPT and remapping tables
# (80_0000_0000h), and an address above the 48-bit remapping width. Every copy must fail
# with a remapping fault; a read of another partition's RAM into this one must not land.
# Exit 0 when all are blocked, 1 if any copy went through.

.include "multiboot.inc"
.include "serial.inc"
.include "dma.inc"

.equ BUFFER, 0x200000

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    mov esi, BUFFER
    xor ebx, ebx
    xor edi, edi
    mov ebp, 0x10                   # write into partition 0's RAM
    call attack
    mov ebp, 0x14                   # write into partition 1's RAM by host address
    call attack
    mov ebp, 0x80                   # write into the hypervisor's private memory
    call attack
    mov ebp, 0x7F                   # write into the firmware ROM
    call attack
    mov ebp, 0x10000                # above the 48-bit address width
    call attack
    mov ebx, 0x10                   # read partition 0's RAM into our buffer
    xor esi, esi
    mov edi, BUFFER
    xor ebp, ebp
    call attack
    mov ebx, 0x80                   # read the hypervisor's private memory
    call attack
    PUTS msg_done
    mov eax, [leaks]
    call serial_dec32
    PUTS msg_newline
    mov eax, [leaks]
    test eax, eax
    jnz leaked
    EXIT 0
leaked:
    EXIT 1

# one copy of 4096 bytes from EBX:ESI to EBP:EDI that must fail
attack:
    push ebx
    push esi
    push edi
    push ebp
    mov ecx, 4096
    call dma_copy
    mov [fault_info], edx
    cmp eax, DMA_STATUS_ERROR
    je attack_blocked
    inc dword ptr [leaks]
    PUTS msg_leak
    jmp attack_done
attack_blocked:
    PUTS msg_blocked
    mov eax, [fault_info]
    call serial_hex32
    PUTS msg_newline
attack_done:
    pop ebp
    pop edi
    pop esi
    pop ebx
    ret

SERIAL_ROUTINES
DMA_ROUTINES

msg_blocked: .ascii "dma_attack: blocked, fault info "
    .byte 0
msg_leak: .ascii "dma_attack: copy WENT THROUGH\n"
    .byte 0
msg_done: .ascii "dma_attack: copies that went through: "
    .byte 0
msg_newline: .ascii "\n"
    .byte 0

    .balign 4096
leaks: .long 0
fault_info: .long 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
