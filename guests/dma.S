# dma: buffers copied by the bus-mastering copy engine, every access through the partition's
# DMA-remapping tables. Two legal copies (one inside a page, one across three pages) are
# checked byte for byte; a copy into the firmware ROM and one from the unbacked legacy hole
# must fail with the remapping fault reasons 5h (write not allowed) and 6h (read not allowed).
# Exit 0 when all four behave, 1 otherwise.

.include "multiboot.inc"
.include "serial.inc"
.include "dma.inc"

.equ SRC, 0x200000
.equ DST, 0x300000
.equ BIG_LENGTH, 9000

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    xor ebp, ebp
    xor ebx, ebx
    mov edi, SRC                    # fill the source: byte i = i * 7 + 3
    xor ecx, ecx
fill:
    lea eax, [ecx * 8]
    sub eax, ecx
    add eax, 3
    mov [edi + ecx], al
    inc ecx
    cmp ecx, BIG_LENGTH
    jb fill
    mov esi, SRC + 17
    mov edi, DST + 5
    mov ecx, 100
    call copy_and_check
    mov esi, SRC
    mov edi, DST + 0x2F00
    mov ecx, BIG_LENGTH
    call copy_and_check
    mov eax, msg_rom
    push eax
    mov esi, SRC
    mov edi, 0xF0000                # firmware ROM: in no DMA domain
    mov ecx, 16
    call expect_fault
    mov eax, msg_hole
    push eax
    mov esi, 0xA0000                # legacy hole: nothing there
    mov edi, DST
    mov ecx, 16
    call expect_fault
    mov eax, [failures]
    test eax, eax
    jnz failed
    PUTS msg_all_ok
    EXIT 0
failed:
    EXIT 1

# copy ECX bytes from ESI to EDI, then compare them
copy_and_check:
    push ecx
    push esi
    push edi
    call dma_copy
    pop edi
    pop esi
    pop ecx
    cmp eax, DMA_STATUS_DONE
    jne copy_bad
    mov [check_length], ecx
    repe cmpsb
    jne copy_bad
    PUTS msg_copy_ok
    mov eax, [check_length]
    call serial_dec32
    PUTS msg_bytes
    ret
copy_bad:
    inc dword ptr [failures]
    PUTS msg_copy_bad
    ret

# the copy must fail; the caller pushed the name of the target
expect_fault:
    call dma_copy
    mov [fault_info], edx
    pop edx                         # return address
    pop esi                         # the message
    push edx
    cmp eax, DMA_STATUS_ERROR
    jne fault_missing
    call serial_puts
    PUTS msg_blocked
    mov eax, [fault_info]
    call serial_hex32
    PUTS msg_newline
    ret
fault_missing:
    inc dword ptr [failures]
    call serial_puts
    PUTS msg_not_blocked
    ret

SERIAL_ROUTINES
DMA_ROUTINES

msg_copy_ok: .ascii "dma: copied and verified "
    .byte 0
msg_bytes: .ascii " bytes\n"
    .byte 0
msg_copy_bad: .ascii "dma: copy FAILED\n"
    .byte 0
msg_rom: .ascii "dma: write to the ROM"
    .byte 0
msg_hole: .ascii "dma: read of the legacy hole"
    .byte 0
msg_blocked: .ascii " blocked, fault info "
    .byte 0
msg_not_blocked: .ascii " NOT blocked\n"
    .byte 0
msg_newline: .ascii "\n"
    .byte 0
msg_all_ok: .ascii "dma: all ok\n"
    .byte 0

    .balign 4096
failures: .long 0
check_length: .long 0
fault_info: .long 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
