# paging32: 32-bit paging without PAE (SDM Vol. 3A 4.3), 4 MiB pages (CR4.PSE) and 4 KiB
# pages, and #PF in 32-bit protected mode.
#
# The page directory maps 0-4 MiB through a page table of 4 KiB identity pages (the kernel),
# 4-128 MiB as 4 MiB identity pages, and three alias windows:
#   0x80000000  PDE 200h, 201h: 4 MiB pages on 20 MiB and 8 MiB (swapped)
#   0x80800000  PDE 202h: not present at first
#   0xC0000000  PDE 300h -> a page table: PTE i (i < 16) maps the 4 KiB frame 12 MiB +
#               (15 - i) * 4 KiB (reversed); PTEs 16 and 17 not present; PTE 18 read-only
# Every frame involved holds, at a few offsets, its own physical address XOR 5A5A0000h,
# written through the identity map before paging changes anything; reads through the aliases
# must find the values of the frames the entries name (the 22-bit offset of a 4 MiB page
# included), and writes through the aliases must land in those frames.
#
# The #PF handler (a 32-bit interrupt gate; the frame is error code, EIP, CS, EFLAGS) checks
# the error code, CR2 and the saved EIP against what the main code announced, writes the
# entry the main code named, counts, and returns with IRETD to the faulting instruction,
# which then completes:
#   read through PTE 16 (not present)           error 0  -> PTE 16 mapped
#   write through PTE 17 (not present)          error 2  -> PTE 17 mapped
#   read through PDE 202h (not present)         error 0  -> a 4 MiB page on 24 MiB
#   write through PTE 18 (read-only, CR0.WP=1)  error 3  -> R/W set
#
# Exit codes: 0 success, 1 unexpected exception, 2 wrong error code, 3 wrong CR2, 4 #PF at an
# unexpected EIP, 5 wrong data through an alias, 6 a write through an alias missed its frame,
# 7 an expected #PF did not happen.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "pm32.inc"

.equ PG_P, 1
.equ PG_RW, 2
.equ PG_PS, 0x80
.equ CR4_PSE, 1 << 4
.equ CR0_PG_WP, 0x80010000
.equ TAG_XOR, 0x5A5A0000
.equ ALIAS_4M, 0x80000000
.equ ALIAS_4M_NP, 0x80800000
.equ ALIAS_4K, 0xC0000000
.equ FRAME_4K, 0xC00000          # 12 MiB
.equ FRAME_4M_A, 0x1400000       # 20 MiB, behind PDE 200h
.equ FRAME_4M_B, 0x800000        # 8 MiB, behind PDE 201h
.equ FRAME_4M_C, 0x1800000       # 24 MiB, behind PDE 202h once mapped
.equ PF_WRITE, 2
.equ PF_WRITE_PROTECT, 3

.code32
_start:
    PM32_ENTER
    SERIAL_INIT
    PM32_IDT_FILL unexpected
    PM32_GATE 14, pf_handler
    PUTS msg_start

    # --- tag the frames through the still unpaged (identity) memory ---------------------------
    mov ebx, 0
tag_4m:
    mov eax, [frames_4m + ebx * 4]
    mov ecx, 0
tag_4m_offset:
    mov edx, [offsets_4m + ecx * 4]
    add edx, eax
    call tag_at
    inc ecx
    cmp ecx, 4
    jb tag_4m_offset
    inc ebx
    cmp ebx, 3
    jb tag_4m
    mov eax, FRAME_4K
tag_4k:
    lea edx, [eax + 0x7B4]
    call tag_at
    lea edx, [eax + 0xFFC]
    call tag_at
    add eax, 0x1000
    cmp eax, FRAME_4K + 19 * 0x1000
    jb tag_4k

    # --- page directory, page tables ---------------------------------------------------------------
    mov edi, pt_low                  # 0-4 MiB: 4 KiB identity pages
    mov eax, PG_P + PG_RW
pt_low_fill:
    mov [edi], eax
    add edi, 4
    add eax, 0x1000
    cmp eax, 0x400000
    jb pt_low_fill
    mov edi, pd
    mov eax, pt_low
    or eax, PG_P + PG_RW
    mov [edi], eax
    mov eax, PG_P + PG_RW + PG_PS + 0x400000    # 4-128 MiB: 4 MiB identity pages
    mov ecx, 1
pd_fill:
    mov [edi + ecx * 4], eax
    add eax, 0x400000
    inc ecx
    cmp ecx, 32
    jb pd_fill
    mov dword ptr [edi + 0x200 * 4], FRAME_4M_A + PG_P + PG_RW + PG_PS
    mov dword ptr [edi + 0x201 * 4], FRAME_4M_B + PG_P + PG_RW + PG_PS
    mov eax, pt_alias
    or eax, PG_P + PG_RW
    mov [edi + 0x300 * 4], eax
    mov edi, pt_alias                # PTE i -> 12 MiB + (15 - i) * 4 KiB
    mov ecx, 0
pt_alias_fill:
    mov eax, 15
    sub eax, ecx
    shl eax, 12
    add eax, FRAME_4K + PG_P + PG_RW
    mov [edi + ecx * 4], eax
    inc ecx
    cmp ecx, 16
    jb pt_alias_fill
    mov dword ptr [edi + 18 * 4], FRAME_4K + 18 * 0x1000 + PG_P   # read-only

    # --- paging on: CR4.PSE, CR3, CR0.PG | WP ------------------------------------------------------
    mov eax, cr4
    or eax, CR4_PSE
    mov cr4, eax
    mov eax, pd
    mov cr3, eax
    mov eax, cr0
    or eax, CR0_PG_WP
    mov cr0, eax
    PUTS msg_paging

    # --- 4 MiB aliases ------------------------------------------------------------------------------
    xor ebp, ebp                     # reads checked
    mov ecx, 0
alias_4m:
    mov edx, [offsets_4m + ecx * 4]
    lea esi, [edx + ALIAS_4M]
    lea edi, [edx + FRAME_4M_A]
    call check_alias
    lea esi, [edx + ALIAS_4M + 0x400000]
    lea edi, [edx + FRAME_4M_B]
    call check_alias
    inc ecx
    cmp ecx, 4
    jb alias_4m
    mov esi, ALIAS_4M + 0x3FFFF0     # writes through both 4 MiB aliases
    mov edi, FRAME_4M_A + 0x3FFFF0
    call write_alias
    mov esi, ALIAS_4M + 0x400000 + 0x2ABCC0
    mov edi, FRAME_4M_B + 0x2ABCC0
    call write_alias
    PUTS msg_4m
    mov eax, ebp
    call serial_dec32
    PUTS msg_4m_end

    # --- 4 KiB aliases ------------------------------------------------------------------------------
    xor ebp, ebp
    mov ecx, 0
alias_4k:
    mov esi, ecx
    shl esi, 12
    add esi, ALIAS_4K + 0x7B4
    mov edi, 15
    sub edi, ecx
    shl edi, 12
    add edi, FRAME_4K + 0x7B4
    call check_alias
    add esi, 0xFFC - 0x7B4
    add edi, 0xFFC - 0x7B4
    call check_alias
    inc ecx
    cmp ecx, 16
    jb alias_4k
    PUTS msg_4k
    mov eax, ebp
    call serial_dec32
    PUTS msg_4k_end

    # --- faults -------------------------------------------------------------------------------------
    mov dword ptr [pf_count], 0
    mov dword ptr [faults_expected], 0
    # read through PTE 16, not present
    mov esi, ALIAS_4K + 16 * 0x1000 + 0x7B4
    mov dword ptr [expected_error], 0
    mov [expected_cr2], esi
    mov dword ptr [expected_eip], np_read
    mov dword ptr [fix_entry], pt_alias + 16 * 4
    mov dword ptr [fix_value], FRAME_4K + 16 * 0x1000 + PG_P + PG_RW
np_read:
    mov eax, [esi]
    mov edi, FRAME_4K + 16 * 0x1000 + 0x7B4
    call expect_fault_and_tag
    PUTS msg_np_read

    # write through PTE 17, not present
    mov esi, ALIAS_4K + 17 * 0x1000 + 0xFFC
    mov dword ptr [expected_error], PF_WRITE
    mov [expected_cr2], esi
    mov dword ptr [expected_eip], np_write
    mov dword ptr [fix_entry], pt_alias + 17 * 4
    mov dword ptr [fix_value], FRAME_4K + 17 * 0x1000 + PG_P + PG_RW
    mov eax, 0xC0DE0017
np_write:
    mov [esi], eax
    cmp dword ptr [FRAME_4K + 17 * 0x1000 + 0xFFC], 0xC0DE0017
    jne write_lost
    call expect_fault
    PUTS msg_np_write

    # read through PDE 202h, not present: the handler makes it a 4 MiB page on 24 MiB
    mov esi, ALIAS_4M_NP + 0x2ABCD0
    mov dword ptr [expected_error], 0
    mov [expected_cr2], esi
    mov dword ptr [expected_eip], np_pde_read
    mov dword ptr [fix_entry], pd + 0x202 * 4
    mov dword ptr [fix_value], FRAME_4M_C + PG_P + PG_RW + PG_PS
np_pde_read:
    mov eax, [esi]
    mov edi, FRAME_4M_C + 0x2ABCD0
    call expect_fault_and_tag
    PUTS msg_np_pde

    # write through PTE 18, read-only with CR0.WP = 1: the handler sets R/W
    mov esi, ALIAS_4K + 18 * 0x1000 + 0x7B4
    mov edi, FRAME_4K + 18 * 0x1000 + 0x7B4
    mov eax, [esi]                   # reading is allowed
    mov edx, edi
    xor edx, TAG_XOR
    cmp eax, edx
    jne wrong_data
    mov dword ptr [expected_error], PF_WRITE_PROTECT
    mov [expected_cr2], esi
    mov dword ptr [expected_eip], ro_write
    mov dword ptr [fix_entry], pt_alias + 18 * 4
    mov dword ptr [fix_value], FRAME_4K + 18 * 0x1000 + PG_P + PG_RW
    mov eax, 0xC0DE0018
ro_write:
    mov [esi], eax
    cmp dword ptr [edi], 0xC0DE0018
    jne write_lost
    call expect_fault
    PUTS msg_ro_write
    PUTS msg_done
    EXIT 0

# tag_at: [EDX] := EDX XOR TAG_XOR (clobbers nothing else)
tag_at:
    push eax
    mov eax, edx
    xor eax, TAG_XOR
    mov [edx], eax
    pop eax
    ret

# check_alias: [ESI] (virtual) must hold EDI XOR TAG_XOR (EDI physical); counts in EBP
# (clobbers eax)
check_alias:
    mov eax, edi
    xor eax, TAG_XOR
    cmp [esi], eax
    jne wrong_data
    inc ebp
    ret

# write_alias: write through ESI, the value must appear at EDI (clobbers eax)
write_alias:
    mov eax, esi
    not eax
    mov [esi], eax
    cmp [edi], eax
    jne write_lost
    ret

# expect_fault: exactly one more #PF than before (clobbers edx)
expect_fault:
    inc dword ptr [faults_expected]
    mov edx, [faults_expected]
    cmp edx, [pf_count]
    jne no_fault
    ret

# expect_fault_and_tag: after a faulting read into EAX: the #PF happened, and EAX holds the
# tag of EDI (clobbers edx)
expect_fault_and_tag:
    call expect_fault
    mov edx, edi
    xor edx, TAG_XOR
    cmp eax, edx
    jne wrong_data
    ret

# --- #PF -----------------------------------------------------------------------------------------
pf_handler:
    push eax
    mov eax, [esp + 8]               # EIP (after EAX and the error code)
    cmp eax, [expected_eip]
    jne wrong_eip
    mov eax, [esp + 4]
    cmp eax, [expected_error]
    jne wrong_error
    mov eax, cr2
    cmp eax, [expected_cr2]
    jne wrong_cr2
    push ebx
    mov ebx, [fix_entry]
    mov eax, [fix_value]
    mov [ebx], eax
    pop ebx
    mov dword ptr [expected_eip], 0  # a second #PF fails the EIP check
    inc dword ptr [pf_count]
    pop eax
    add esp, 4                       # the error code
    iretd

# --- failures --------------------------------------------------------------------------------------
wrong_eip:
    PUTS msg_wrong_eip
    mov eax, [esp + 8]
    call serial_hex32
    PUTS msg_error
    mov eax, [esp + 4]
    call serial_hex32
    PUTS msg_cr2
    mov eax, cr2
    call serial_hex32
    PUTS newline
    EXIT 4
wrong_error:
    PUTS msg_wrong_error
    mov eax, [esp + 4]
    call serial_hex32
    PUTS newline
    EXIT 2
wrong_cr2:
    PUTS msg_wrong_cr2
    mov eax, cr2
    call serial_hex32
    PUTS newline
    EXIT 3
wrong_data:
    mov ebx, esi                     # PUTS clobbers esi
    PUTS msg_wrong_data
    mov eax, ebx
    call serial_hex32
    PUTS newline
    EXIT 5
write_lost:
    mov ebx, esi                     # PUTS clobbers esi
    PUTS msg_write_lost
    mov eax, ebx
    call serial_hex32
    PUTS newline
    EXIT 6
no_fault:
    PUTS msg_no_fault
    EXIT 7
unexpected:
    PUTS msg_unexpected
    EXIT 1

SERIAL_ROUTINES
PM32_ROUTINES
PM32_TABLES

    .balign 4
frames_4m:
    .long FRAME_4M_A, FRAME_4M_B, FRAME_4M_C
offsets_4m:
    .long 0, 0x1000, 0x2ABCD0, 0x3FFFFC

msg_start:
    .ascii "paging32: tagging frames at 8, 12, 20, 24 MiB\n"
    .byte 0
msg_paging:
    .ascii "paging on: CR4.PSE, 4 KiB pages below 4 MiB, 4 MiB pages to 128 MiB\n"
    .byte 0
msg_4m:
    .ascii "4 MiB aliases at 0x80000000: "
    .byte 0
msg_4m_end:
    .ascii " reads and 2 writes ok\n"
    .byte 0
msg_4k:
    .ascii "4 KiB aliases at 0xc0000000 (frames reversed): "
    .byte 0
msg_4k_end:
    .ascii " reads ok\n"
    .byte 0
msg_np_read:
    .ascii "#PF read, PTE not present: error 0, CR2 ok; mapped, read ok\n"
    .byte 0
msg_np_write:
    .ascii "#PF write, PTE not present: error 2, CR2 ok; mapped, write ok\n"
    .byte 0
msg_np_pde:
    .ascii "#PF read, 4 MiB PDE not present: error 0, CR2 ok; mapped, read ok\n"
    .byte 0
msg_ro_write:
    .ascii "#PF write, read-only PTE (CR0.WP = 1): error 3, CR2 ok; R/W set, write ok\n"
    .byte 0
msg_done:
    .ascii "paging32 done\n"
    .byte 0
msg_wrong_eip:
    .ascii "#PF at unexpected EIP "
    .byte 0
msg_error:
    .ascii " error "
    .byte 0
msg_cr2:
    .ascii " cr2 "
    .byte 0
msg_wrong_error:
    .ascii "#PF with wrong error code "
    .byte 0
msg_wrong_cr2:
    .ascii "#PF with wrong CR2 "
    .byte 0
msg_wrong_data:
    .ascii "wrong data through "
    .byte 0
msg_write_lost:
    .ascii "write missed its frame, through "
    .byte 0
msg_no_fault:
    .ascii "expected #PF did not happen\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END 0x6000
.equ pd, _image_end
.equ pt_low, _image_end + 0x1000
.equ pt_alias, _image_end + 0x2000
.equ idt, _image_end + 0x3000
.equ vars, _image_end + 0x3800
.equ expected_error, vars
.equ expected_cr2, vars + 4
.equ expected_eip, vars + 8
.equ fix_entry, vars + 12
.equ fix_value, vars + 16
.equ pf_count, vars + 20
.equ faults_expected, vars + 24
.equ stack_top, _bss_end
