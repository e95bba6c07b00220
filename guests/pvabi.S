# pvabi: the hypercall interface of --mode pv seen from a guest, in 64-bit long mode.
#
# Only the enlightened build (PV=1: `vtemu asm --pv`, or `vtemu run --mode pv`) does the
# checks; the native build says so and exits 0, on vtemu and QEMU alike.
#
# The enlightened build enables the hypercall page (pvops.inc PV_SERIAL_INIT), then:
#   1  reads the page: it starts with the hypercall code `vmcall; ret` (0F 01 C1 C3)
#   2  stores a byte into it: #GP with error code 0 at the store, and the page is unchanged
#   3  calls an unknown call code: HV_STATUS_INVALID_HYPERCALL_CODE (2)
#   4  calls HvCallFlushVirtualAddressSpace with a misaligned input GPA: INVALID_ALIGNMENT (4)
#   5  calls it with the input GPA in the legacy hole (not RAM): INVALID_PARAMETER (5)
#   6  sets a reserved bit of the input value: INVALID_HYPERCALL_INPUT (3)
# Under EPT the store is an EPT violation, under shadow paging a #PF exit: the same #GP.
#
# Exit codes: 0 success, 1 unexpected exception, 2 wrong page contents, 3 no #GP or a wrong
# error code, 4 the store changed the page, 5 a wrong status (printed).

.include "multiboot.inc"
.include "serial.inc"
.include "pvops.inc"
.include "x86.inc"
.include "long64.inc"

.equ GP_VECTOR, 13
.equ VMCALL_RET, 0xC3C1010F      # the page's first dword, little-endian
.equ HV_CALL_FLUSH_VIRTUAL_ADDRESS_SPACE, 0x0002
.equ UNKNOWN_CALL, 0x7777
.equ LEGACY_HOLE, 0xA0000
.equ RESERVED_BIT_27, 0x8000000

.code32
_start:
    mov esp, stack_top
    PV_SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
.ifdef PV
    IDT64_FILL unexpected
    SET_GATE GP_VECTOR, gp_handler, GATE_INTERRUPT
    call idt_load
    PUTS msg_start

    # 1: the page holds the hypercall code
    mov eax, pv_hypercall_page
    cmp dword ptr [rax], VMCALL_RET
    jne wrong_page
    PUTS msg_page

    # 2: a store into it is #GP(0), resumed after the store
    mov dword ptr [gp_count], 0
    mov eax, pv_hypercall_page
gp_store:
    mov byte ptr [rax + 16], 0x90
gp_resume:
    cmp dword ptr [gp_count], 1
    jne no_gp
    cmp byte ptr [rax + 16], 0xCC
    jne store_went_through
    PUTS msg_gp

    # 3-6: statuses
    mov ebx, UNKNOWN_CALL
    xor esi, esi
    call raw_call
    mov edi, 2
    call expect_status
    mov ebx, HV_CALL_FLUSH_VIRTUAL_ADDRESS_SPACE
    mov esi, params + 4
    call raw_call
    mov edi, 4
    call expect_status
    mov ebx, HV_CALL_FLUSH_VIRTUAL_ADDRESS_SPACE
    mov esi, LEGACY_HOLE
    call raw_call
    mov edi, 5
    call expect_status
    mov ebx, HV_CALL_FLUSH_VIRTUAL_ADDRESS_SPACE + RESERVED_BIT_27
    mov esi, params
    call raw_call
    mov edi, 3
    call expect_status
    PUTS msg_done
.else
    PUTS msg_native
.endif
    PV_EXIT 0

.ifdef PV
# raw_call: the hypercall with input value EBX and input GPA ESI, output GPA 0; RAX := result
raw_call:
    push rcx
    push rdx
    push r8
    mov ecx, ebx
    mov edx, esi
    xor r8d, r8d
    call pv_hypercall_page
    pop r8
    pop rdx
    pop rcx
    ret

# expect_status: the status in AX must be EDI; print "status N"
expect_status:
    push rdi
    push rax
    PUTS msg_status
    pop rax
    push rax
    movzx eax, ax
    call serial_dec32
    PUTS newline
    pop rax
    pop rdi
    movzx eax, ax
    cmp eax, edi
    jne wrong_status
    ret

gp_handler:
    cmp qword ptr [rsp], 0
    jne no_gp
    mov rax, gp_store
    cmp [rsp + 8], rax
    jne unexpected
    mov rax, gp_resume
    mov [rsp + 8], rax
    inc dword ptr [gp_count]
    mov eax, pv_hypercall_page
    add rsp, 8
    iretq

wrong_page:
    PUTS msg_wrong_page
    PV_EXIT 2
no_gp:
    PUTS msg_no_gp
    PV_EXIT 3
store_went_through:
    PUTS msg_store
    PV_EXIT 4
wrong_status:
    PUTS msg_wrong_status
    PV_EXIT 5
.endif
unexpected:
    PUTS msg_unexpected
    PV_EXIT 1

PVOPS_ROUTINES64
LONG64_ROUTINES
LONG64_TABLES

msg_native:
    .ascii "pvabi: the native build has no hypercall interface to test\n"
    .byte 0
msg_start:
    .ascii "pvabi: hypercall page enabled\n"
    .byte 0
msg_page:
    .ascii "page holds vmcall; ret\n"
    .byte 0
msg_gp:
    .ascii "store into the page: #GP(0), page unchanged\n"
    .byte 0
msg_status:
    .ascii "status "
    .byte 0
msg_done:
    .ascii "pvabi done\n"
    .byte 0
msg_wrong_page:
    .ascii "the page does not hold the hypercall code\n"
    .byte 0
msg_no_gp:
    .ascii "no #GP(0) for the store\n"
    .byte 0
msg_store:
    .ascii "the store changed the page\n"
    .byte 0
msg_wrong_status:
    .ascii "wrong status\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
params:
    .quad 0, 0, 0, 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x2000
LONG64_BSS
.equ vars, _image_end + LONG64_BSS_SIZE
.equ gp_count, vars
.equ stack_top, _bss_end
