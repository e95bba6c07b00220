# pgfault: demand paging in 64-bit long mode, checked from inside the guest.
#
# A 16 MiB virtual region at 1 GiB (REGION) starts out unmapped: PDPT[1] is not present. The
# #PF handler is a demand pager. For each fault it checks what the processor reported
# against what the main loop announced (error code: not present, write or read, supervisor,
# no reserved bit, no instruction fetch; CR2: the exact byte address touched; the saved RIP:
# the touching instruction), then walks the guest's own tables from PDPT[1] down, allocating
# the page directory and page tables it finds missing, maps the faulting page to a fresh
# zeroed frame and returns: IRETQ re-executes the access, which now succeeds. No INVLPG: a
# not-present entry is never cached (SDM Vol. 3A 4.10.2.3). Frames come from a bump
# allocator over RAM the guest owns, from 32 MiB up.
#
# The main loop touches every 4 KiB page of the region once, at an offset that varies from
# page to page: every third page is read first (the fault is a read, and the new page must
# read as zero), the others are written first; each page then holds a 64-bit pattern derived
# from its address. Each touch must take exactly one fault. A second pass re-reads every
# pattern, checks that the rest of the page is still zero, and folds the values into a
# checksum; it must take no fault at all.
#
# Built with PV (pvops.inc) one batched hypercall per fault zeroes the new frame, writes the
# entries and rebuilds the page's translation for the retried access (a new table is zeroed
# and linked by a call of its own first), and the console is the console hypercall.
#
# Exit codes: 0 success, 1 unexpected exception, 2 wrong error code, 3 wrong CR2, 4 wrong
# saved RIP, 5 #PF on a page that is already mapped, 6 out of frames, 7 a fresh page did not
# read as zero, 8 a pattern or the zeroed rest of a page read back wrong, 9 wrong number of
# faults.

.include "multiboot.inc"
.include "serial.inc"
.include "pvops.inc"
.include "x86.inc"
.include "long64.inc"

.equ REGION, 0x40000000          # 1 GiB: PML4[0] -> PDPT[1], outside the identity map
.equ REGION_PAGES, 4096          # 16 MiB
.equ FRAME_BASE, 0x2000000       # 32 MiB
.equ FRAME_LIMIT, 0x4000000      # 64 MiB
.equ PF_WRITE, 2
.equ GOLDEN, 0x9E3779B97F4A7C15

.code32
_start:
    mov esp, stack_top
    PV_SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    IDT64_FILL unexpected
    SET_GATE 14, pf_handler, GATE_INTERRUPT
    call idt_load
    mov eax, FRAME_BASE
    mov [next_frame], rax
    mov dword ptr [faults], 0
    PUTS msg_start

    # --- first touch of every page ---------------------------------------------------------
    xor r12d, r12d                   # page index
    xor ebp, ebp                     # pages read first
touch_loop:
    call page_address                # r13 = address touched, r14 = its pattern
    mov [expected_cr2], r13
    mov ebx, [faults]
    mov eax, r12d
    xor edx, edx
    mov ecx, 3
    div ecx
    test edx, edx
    jnz write_first
    inc ebp
    mov qword ptr [expected_error], 0
    mov eax, touch_read
    mov [expected_rip], rax
touch_read:
    mov rax, [r13]
    test rax, rax
    jnz fresh_not_zero
    mov [r13], r14
    jmp touched
write_first:
    mov qword ptr [expected_error], PF_WRITE
    mov eax, touch_write
    mov [expected_rip], rax
touch_write:
    mov [r13], r14
touched:
    inc ebx
    cmp ebx, [faults]
    jne wrong_fault_count
    inc r12d
    cmp r12d, REGION_PAGES
    jb touch_loop

    PUTS msg_touched
    mov eax, r12d
    call serial_dec32
    PUTS msg_reads
    mov eax, ebp
    call serial_dec32
    PUTS msg_writes
    mov eax, r12d
    sub eax, ebp
    call serial_dec32
    PUTS msg_close

    # --- re-read everything: no fault may happen now -----------------------------------------
    mov qword ptr [expected_rip], 0  # any #PF now fails the RIP check
    xor r12d, r12d
    xor r15d, r15d                   # checksum
verify_loop:
    call page_address
    mov rax, [r13]
    cmp rax, r14
    jne bad_data
    rol r15, 7
    add r15, rax
    mov rax, r13
    xor rax, 0x800                   # the other half of the page: still zero
    mov rax, [rax]
    test rax, rax
    jne bad_data
    inc r12d
    cmp r12d, REGION_PAGES
    jb verify_loop
    cmp dword ptr [faults], REGION_PAGES
    jne wrong_fault_count

    PUTS msg_faults
    mov eax, [faults]
    call serial_dec32
    PUTS newline
    PUTS msg_frames
    mov rax, [next_frame]
    sub rax, FRAME_BASE
    shr rax, 12
    call serial_dec32
    PUTS newline
    PUTS msg_checksum
    mov rax, r15
    call serial_hex64
    PUTS newline
    PUTS msg_done
    PV_EXIT 0

# page_address: r13 := REGION + r12 * 4096 + ((r12 * 0x48) & 0xFF8), r14 := r13 * GOLDEN
# (clobbers rax)
page_address:
    mov r13, r12
    shl r13, 12
    imul eax, r12d, 0x48
    and eax, 0xFF8
    add r13, rax
    mov eax, REGION
    add r13, rax
    mov r14, GOLDEN
    imul r14, r13
    ret

# --- the demand pager ------------------------------------------------------------------------
.equ PF_SAVED, 6 * 8
.equ PF_ERROR, PF_SAVED
.equ PF_RIP, PF_SAVED + 8

pf_handler:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    mov rax, [rsp + PF_ERROR]
    cmp rax, [expected_error]
    jne wrong_error
    mov rax, cr2
    cmp rax, [expected_cr2]
    jne wrong_cr2
    mov rax, [rsp + PF_RIP]
    cmp rax, [expected_rip]
    jne wrong_rip
    mov rbx, cr2
    # PDPT entry -> page directory
    mov rax, rbx
    shr rax, 30
    and eax, 511
    lea rdi, [pdpt + rax * 8]
    call ensure_table
    # PD entry -> page table
    mov rdx, rbx
    shr rdx, 21
    and edx, 511
    lea rdi, [rax + rdx * 8]
    call ensure_table
    # PT entry -> the data frame
    mov rdx, rbx
    shr rdx, 12
    and edx, 511
    lea rdi, [rax + rdx * 8]
    test byte ptr [rdi], PTE_P
    jnz already_mapped
    call alloc_frame
    or rax, PTE_P + PTE_RW
    PV_SET_PTE rdi, rax
    inc dword ptr [faults]
.ifdef PV
    # the queued zeroing and entries, and the page made ready for the retried access: one call
    test byte ptr [expected_error], PF_WRITE
    jz pv_mapped_for_read
    PV_MAPPED_WRITE rbx
    jmp pv_mapped
pv_mapped_for_read:
    PV_MAPPED rbx
pv_mapped:
.endif
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 8                       # the error code
    iretq

# ensure_table: the paging-structure entry at RDI references a table; allocate a zeroed one if
# it is not present. Returns the table's address in RAX (clobbers rcx).
ensure_table:
    mov rax, [rdi]
    test al, PTE_P
    jnz ensure_table_present
    call alloc_frame
    or rax, PTE_P + PTE_RW
    PV_SET_PTE rdi, rax
    PV_PTE_COMMIT                    # PV: the new table is zero before the pager reads it
ensure_table_present:
    mov rcx, 0x000FFFFFFFFFF000
    and rax, rcx
    ret

# alloc_frame: RAX := a zeroed 4 KiB frame (clobbers rcx)
alloc_frame:
    mov rax, [next_frame]
    cmp rax, FRAME_LIMIT
    jae out_of_frames
    lea rcx, [rax + 4096]
    mov [next_frame], rcx
.ifdef PV
    PV_QUEUE_CLEAR_PAGE rax          # with the entries that map it, in one call
.else
    push rdi
    push rax
    mov rdi, rax
    xor eax, eax
    mov ecx, 512
    cld
    rep stosq
    pop rax
    pop rdi
.endif
    ret

# --- failures ----------------------------------------------------------------------------------
wrong_error:
    PUTS msg_wrong_error
    mov rax, [rsp + PF_ERROR]
    call serial_hex32
    PUTS newline
    PV_EXIT 2
wrong_cr2:
    PUTS msg_wrong_cr2
    mov rax, cr2
    call serial_hex64
    PUTS newline
    PV_EXIT 3
wrong_rip:
    PUTS msg_wrong_rip
    mov rax, [rsp + PF_RIP]
    call serial_hex64
    PUTS newline
    PV_EXIT 4
already_mapped:
    PUTS msg_already_mapped
    PV_EXIT 5
out_of_frames:
    PUTS msg_out_of_frames
    PV_EXIT 6
fresh_not_zero:
    PUTS msg_not_zero
    PV_EXIT 7
bad_data:
    PUTS msg_bad_data
    mov rax, r13
    call serial_hex64
    PUTS newline
    PV_EXIT 8
wrong_fault_count:
    PUTS msg_fault_count
    PV_EXIT 9
unexpected:
    PUTS msg_unexpected
    PV_EXIT 1

PVOPS_ROUTINES64
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "pgfault: 16 MiB at 0x40000000, not present; #PF maps frames from 32 MiB\n"
    .byte 0
msg_touched:
    .ascii "touched "
    .byte 0
msg_reads:
    .ascii " pages ("
    .byte 0
msg_writes:
    .ascii " read first, "
    .byte 0
msg_close:
    .ascii " written first)\n"
    .byte 0
msg_faults:
    .ascii "faults "
    .byte 0
msg_frames:
    .ascii "frames allocated "
    .byte 0
msg_checksum:
    .ascii "checksum "
    .byte 0
msg_done:
    .ascii "pgfault done\n"
    .byte 0
msg_wrong_error:
    .ascii "#PF with wrong error code "
    .byte 0
msg_wrong_cr2:
    .ascii "#PF with wrong CR2 "
    .byte 0
msg_wrong_rip:
    .ascii "#PF at unexpected RIP "
    .byte 0
msg_already_mapped:
    .ascii "#PF on a mapped page\n"
    .byte 0
msg_out_of_frames:
    .ascii "out of frames\n"
    .byte 0
msg_not_zero:
    .ascii "fresh page not zero\n"
    .byte 0
msg_bad_data:
    .ascii "bad data at "
    .byte 0
msg_fault_count:
    .ascii "wrong number of faults\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x3000
LONG64_BSS
.equ vars, _image_end + LONG64_BSS_SIZE
.equ expected_cr2, vars
.equ expected_error, vars + 8
.equ expected_rip, vars + 16
.equ next_frame, vars + 24
.equ faults, vars + 32
.equ stack_top, _bss_end
