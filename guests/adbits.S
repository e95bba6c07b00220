# adbits: the accessed and dirty flags the processor sets in the guest's own PTEs (SDM 4.8).
#
# Three pages of PT0 (1C0000h, 1C1000h, 1C2000h: identity-mapped, never touched before) get
# their A and D flags cleared (PTE write + INVLPG). The guest then reads the first, writes
# the second, leaves the third alone, and prints each PTE's A and D: "A D" is 1 0, 1 1 and
# 0 0. Then it clears D of the written page again, reads it (D must stay 0), writes it (D
# must come back): the dirty flag is set by the first write after the flag was cleared, even
# when the TLB already held the page for reading. Exit 0 when all of this holds, 1 for an
# unexpected exception, 2 for a wrong flag.
#
# Under shadow paging none of these accesses is seen by the guest's tables directly: the
# hypervisor's walks on hidden faults must set exactly what the processor would.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.equ PAGE_R, 0x1C0000            # read
.equ PAGE_W, 0x1C1000            # written
.equ PAGE_N, 0x1C2000            # not touched
.equ PTE_A, 1 << 5
.equ PTE_D, 1 << 6

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    IDT64_FILL unexpected
    call idt_load
    PUTS msg_start
    mov edi, PAGE_R
    call clear_ad
    mov edi, PAGE_W
    call clear_ad
    mov edi, PAGE_N
    call clear_ad

    mov eax, [PAGE_R + 0x10]         # read
    mov dword ptr [PAGE_W + 0x20], 0x5A5A5A5A   # write

    mov edi, PAGE_R
    mov ebx, 0x10                    # expect A=1 D=0
    call check_ad
    mov edi, PAGE_W
    mov ebx, 0x11
    call check_ad
    mov edi, PAGE_N
    mov ebx, 0x00
    call check_ad

    # D cleared again: a read keeps it clear, the next write sets it
    mov edi, PAGE_W
    call clear_d
    mov eax, [PAGE_W + 0x30]
    mov edi, PAGE_W
    mov ebx, 0x10
    call check_ad
    mov dword ptr [PAGE_W + 0x40], 0xA5A5A5A5
    mov edi, PAGE_W
    mov ebx, 0x11
    call check_ad

    PUTS msg_done
    EXIT 0

# clear_ad: clear A and D in the PT0 entry of page EDI, INVLPG it (clobbers rax, rcx)
clear_ad:
    mov ecx, edi
    shr ecx, 12
    mov rax, ~(PTE_A + PTE_D)
    mov esi, pt0
    and [rsi + rcx * 8], rax
    invlpg [rdi]
    ret

# clear_d: clear D only, INVLPG (clobbers rax, rcx)
clear_d:
    mov ecx, edi
    shr ecx, 12
    mov rax, ~PTE_D
    mov esi, pt0
    and [rsi + rcx * 8], rax
    invlpg [rdi]
    ret

# check_ad: print "page XXXXXXXX A a D d" for page EDI; exit 2 unless BL = (A << 4) | D
check_ad:
    push rdi
    mov esi, msg_page
    call serial_puts
    mov eax, [rsp]
    call serial_hex32
    mov ecx, [rsp]
    shr ecx, 12
    mov esi, pt0
    mov rax, [rsi + rcx * 8]
    xor edx, edx
    test eax, PTE_A
    jz no_a
    or edx, 0x10
no_a:
    test eax, PTE_D
    jz no_d
    or edx, 0x01
no_d:
    push rdx
    mov esi, msg_a
    call serial_puts
    mov eax, [rsp]
    shr eax, 4
    add al, '0'
    call serial_putc
    mov esi, msg_d
    call serial_puts
    mov eax, [rsp]
    and eax, 1
    add al, '0'
    call serial_putc
    mov al, '\n'
    call serial_putc
    pop rdx
    pop rdi
    cmp edx, ebx
    jne wrong_flags
    ret

wrong_flags:
    PUTS msg_wrong
    EXIT 2

unexpected:
    PUTS msg_unexpected
    EXIT 1

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "adbits: accessed and dirty flags in the guest's PTEs\n"
    .byte 0
msg_page:
    .ascii "page "
    .byte 0
msg_a:
    .ascii " A "
    .byte 0
msg_d:
    .ascii " D "
    .byte 0
msg_done:
    .ascii "adbits: done\n"
    .byte 0
msg_wrong:
    .ascii "adbits: wrong flags\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x2000
LONG64_BSS
.equ stack_top, _bss_end
