# bigpages: 2 MiB and 1 GiB pages, no-execute and write-protect faults, in long mode.
#
# 2 MiB pages: PDPT[2] -> a page directory whose first four entries map 2 MiB pages at
# 0x80000000 onto the frames 32, 34, 36 and 38 MiB in a shuffled order (2, 0, 3, 1). Values
# written through the identity map at offsets 0, 4 KiB, 0x123458 and 2 MiB - 16 of each
# frame must be read back through the alias (the whole 21-bit offset passes through a 2 MiB
# page); values written through the alias 8 bytes further must appear at the identity address.
#
# 1 GiB pages: used only when CPUID.80000001H:EDX.Page1GB[26] says the processor has them
# (PDPT[3] maps 3 GiB onto 0-1 GiB; values cross the page both ways). Neither vtemu's CPUID
# nor QEMU's default CPU (qemu64) advertises them, and the line printed is the same either way.
# When they are not advertised, bit 7 of a PDPTE is reserved (SDM Vol. 3A 4.5.4, Table 4-16)
# and the guest probes that: it sets PS in PDPT[3], reads through it and accepts either
# outcome (#PF with P|RSVD, or a 1 GiB translation), recording which in `results` for
# tests/guests/test_bigpages.py, not on the serial line: both vtemu and QEMU's TCG translate.
#
# No-execute (IA32_EFER.NXE = 1): a code page in the image (mov eax, 0x600d; jmp rbx) runs;
# with XD set in its PTE a data read still works but the jump to it raises #PF with error
# code 0x11 (P | I/D), CR2 = RIP = the page. The same with XD in a 2 MiB PDE, and with XD
# only in the PDPTE above a PDE without it (XD is the OR over the levels, SDM 4.6.1).
# Clearing XD (and INVLPG) makes the code run again.
#
# Write protection (CR0.WP = 1): a supervisor write to a 4 KiB page with R/W = 0, to a
# 2 MiB page with R/W = 0, and to a page whose PDPTE has R/W = 0, each raise #PF with error
# code 3 (P | W) and CR2 = the address written, and leave memory unchanged. With CR0.WP = 0
# the same supervisor write to the 4 KiB read-only page succeeds; with WP = 1 again it faults.
#
# Exit codes: 0 success, 1 unexpected exception, 2 wrong error code, 3 wrong CR2, 4 #PF at an
# unexpected RIP, 5 wrong data through a 2 MiB page, 6 a write through an alias did not reach
# the frame, 7 an expected #PF did not happen, 8 wrong data through the 1 GiB page, 9 code
# on an executable page did not run as written, 10 a faulting write changed memory or the
# write with CR0.WP = 0 did not land.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.equ ALIAS_2M, 0x80000000        # PDPT[2] -> pd_big
.equ ALIAS_1G, 0xC0000000        # PDPT[3]
.equ FRAME_2M, 0x2000000         # 32 MiB: four 2 MiB frames
.equ PAGE_2M, 0x200000
.equ PTE_XD_BIT, 63
.equ EFER_NXE, 1 << 11
.equ CR0_WP_BIT, 16
.equ PF_RSVD_READ, 9             # P | RSVD
.equ PF_WRITE_PROTECT, 3         # P | W
.equ PF_FETCH_NX, 0x11           # P | I/D
.equ CODE_OFFSET, 0x3000         # where the code snippet goes in a 2 MiB frame
.equ TAG, 0xB1600000000

.macro EXPECT_PF error, resume
    mov qword ptr [expected_error], \error
    mov eax, \resume
    mov [resume_rip], rax
    mov ebp, [pf_count]
.endm

# after the resume label: the #PF must have happened
.macro FAULTED
    inc ebp
    cmp ebp, [pf_count]
    jne no_fault
.endm

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    IDT64_FILL unexpected
    SET_GATE 14, pf_handler, GATE_INTERRUPT
    call idt_load
    PUTS msg_start

    # --- 2 MiB pages ------------------------------------------------------------------------------
    mov eax, pd_big
    or eax, PTE_P + PTE_RW
    mov edi, pdpt
    mov [rdi + 16], rax              # PDPT[2]
    xor ecx, ecx
map_2m:
    movzx eax, byte ptr [shuffle + rcx]
    shl eax, 21
    add eax, FRAME_2M
    or eax, PTE_P + PTE_RW + PTE_PS
    mov edi, pd_big
    mov [rdi + rcx * 8], rax
    inc ecx
    cmp ecx, 4
    jb map_2m
    # through the identity map: frame c, offset o := TAG | c << 24 | o
    xor ecx, ecx
fill_2m:
    xor edx, edx
fill_2m_offset:
    call tag_value                   # rax = value, rdi = identity address
    mov [rdi], rax
    inc edx
    cmp edx, 4
    jb fill_2m_offset
    inc ecx
    cmp ecx, 4
    jb fill_2m
    # read back through the alias: alias page i shows frame shuffle[i]
    xor r12d, r12d                   # reads
    xor r13d, r13d                   # writes
    xor r8d, r8d                     # alias page
read_2m:
    movzx ecx, byte ptr [shuffle + r8]
    xor edx, edx
read_2m_offset:
    call tag_value
    mov rsi, r8
    shl rsi, 21
    mov r9d, [offsets + rdx * 4]
    add rsi, r9
    mov r9d, ALIAS_2M
    add rsi, r9
    cmp [rsi], rax
    jne wrong_2m
    inc r12d
    # write through the alias, read through the identity map
    mov r9, rax
    not r9
    mov [rsi + 8], r9
    cmp [rdi + 8], r9
    jne write_lost
    inc r13d
    inc edx
    cmp edx, 4
    jb read_2m_offset
    inc r8d
    cmp r8d, 4
    jb read_2m
    PUTS msg_2m_reads
    mov eax, r12d
    call serial_dec32
    PUTS msg_2m_writes
    mov eax, r13d
    call serial_dec32
    PUTS msg_2m_end

    # --- 1 GiB pages ------------------------------------------------------------------------------
    mov eax, 0x80000001
    cpuid
    mov edi, pdpt
    mov qword ptr [rdi + 24], PTE_P + PTE_RW + PTE_PS   # PDPT[3]: 3 GiB -> 0
    mov esi, ALIAS_1G
    add rsi, FRAME_2M + 0x123450     # frame 0 of the 2 MiB test, offset 0x123450
    bt edx, 26
    jnc probe_1g
    mov rax, [rsi + 8]
    cmp rax, [FRAME_2M + 0x123458]
    jne wrong_1g
    mov rax, TAG
    not rax
    mov [rsi], rax
    cmp rax, [FRAME_2M + 0x123450]
    jne wrong_1g
    mov qword ptr [results], 3       # advertised: used and checked
    jmp done_1g
probe_1g:
    mov [expected_cr2], rsi
    mov eax, probe_read
    mov [expected_rip], rax
    EXPECT_PF PF_RSVD_READ, probe_faulted
probe_read:
    mov rax, [rsi]
    cmp rax, [FRAME_2M + 0x123450]
    jne wrong_1g
    mov qword ptr [results], 1       # not advertised, translated anyway
    jmp done_1g
probe_faulted:
    FAULTED
    mov qword ptr [results], 2       # not advertised: #PF with RSVD
done_1g:
    mov edi, pdpt
    mov qword ptr [rdi + 24], 0
    mov eax, ALIAS_1G
    add rax, FRAME_2M + 0x123450
    invlpg [rax]
    PUTS msg_1g

    # --- no-execute -------------------------------------------------------------------------------
    mov ecx, IA32_EFER
    rdmsr
    or eax, EFER_NXE
    wrmsr
    # a 4 KiB code page in the image
    mov r14d, nx_code
    call run_snippet
    mov r15, r14
    shr r15, 12
    mov edi, pt0
    lea r15, [rdi + r15 * 8]         # r15 = its PTE
    bts qword ptr [r15], PTE_XD_BIT
    invlpg [r14]
    mov rax, [r14]                   # data reads are still allowed
    cmp rax, [nx_code]
    jne wrong_code
    call nx_fault
    PUTS msg_nx_4k
    btr qword ptr [r15], PTE_XD_BIT
    invlpg [r14]
    call run_snippet
    # a 2 MiB page: the snippet at CODE_OFFSET in the frame behind alias page 0
    movzx eax, byte ptr [shuffle]
    shl eax, 21
    add eax, FRAME_2M + CODE_OFFSET
    mov rdx, [nx_code]
    mov [rax], rdx
    mov r14d, ALIAS_2M + CODE_OFFSET
    call run_snippet
    mov r15d, pd_big                 # PDE 0
    bts qword ptr [r15], PTE_XD_BIT
    invlpg [r14]
    call nx_fault
    PUTS msg_nx_2m
    btr qword ptr [r15], PTE_XD_BIT
    invlpg [r14]
    call run_snippet
    # XD only in the PDPTE
    mov r15d, pdpt + 16              # PDPT[2]
    bts qword ptr [r15], PTE_XD_BIT
    invlpg [r14]
    call nx_fault
    PUTS msg_nx_pdpte
    btr qword ptr [r15], PTE_XD_BIT
    invlpg [r14]
    call run_snippet
    PUTS msg_nx_cleared

    # --- write protection -------------------------------------------------------------------------
    # a 4 KiB page with R/W = 0
    mov r14d, ro_page + 0x468
    mov r15, r14
    shr r15, 12
    mov edi, pt0
    lea r15, [rdi + r15 * 8]
    mov qword ptr [r14], 0x1234
    btr qword ptr [r15], 1           # R/W
    invlpg [r14]
    call wp_fault
    cmp qword ptr [r14], 0x1234      # reads work, memory unchanged
    jne wrote_anyway
    PUTS msg_wp_4k
    # a 2 MiB page with R/W = 0 (alias page 1)
    mov r14d, ALIAS_2M + PAGE_2M + 0x1234A0
    mov r15d, pd_big + 8
    btr qword ptr [r15], 1
    invlpg [r14]
    mov rbx, [r14]
    call wp_fault
    cmp [r14], rbx
    jne wrote_anyway
    PUTS msg_wp_2m
    bts qword ptr [r15], 1
    invlpg [r14]
    # R/W = 0 only in the PDPTE
    mov r15d, pdpt + 16
    btr qword ptr [r15], 1
    invlpg [r14]
    call wp_fault
    cmp [r14], rbx
    jne wrote_anyway
    PUTS msg_wp_pdpte
    bts qword ptr [r15], 1
    invlpg [r14]
    # CR0.WP = 0: supervisor writes ignore R/W
    mov r14d, ro_page + 0x468
    mov rax, cr0
    btr rax, CR0_WP_BIT
    mov cr0, rax
    invlpg [r14]
    mov qword ptr [expected_rip], 0  # no #PF now
    mov qword ptr [r14], 0x5678
    cmp qword ptr [r14], 0x5678
    jne wrote_anyway
    mov rax, cr0
    bts rax, CR0_WP_BIT
    mov cr0, rax
    invlpg [r14]
    call wp_fault
    cmp qword ptr [r14], 0x5678
    jne wrote_anyway
    PUTS msg_wp_off
    PUTS msg_done
    EXIT 0

# tag_value: frame ECX, offset index EDX -> RAX = TAG | ecx << 24 | offset, RDI = identity
# address of that place (clobbers r9)
tag_value:
    mov eax, [offsets + rdx * 4]
    mov edi, ecx
    shl edi, 21
    add edi, FRAME_2M
    add edi, eax
    mov r9d, ecx
    shl r9d, 24
    or eax, r9d
    mov r9, TAG
    or rax, r9
    ret

# run_snippet: jump to the code at R14 (it must set EAX to 0x600d and jump back through RBX)
run_snippet:
    mov eax, 0
    mov ebx, run_snippet_back
    jmp r14
run_snippet_back:
    cmp eax, 0x600D
    jne wrong_code
    ret

# nx_fault: jumping to R14 must raise #PF with P | I/D and CR2 = RIP = R14
nx_fault:
    mov [expected_cr2], r14
    mov [expected_rip], r14
    EXPECT_PF PF_FETCH_NX, nx_fault_back
    mov ebx, nx_fault_ran
    jmp r14
nx_fault_ran:
    jmp no_fault
nx_fault_back:
    FAULTED
    ret

# wp_fault: a write to R14 must raise #PF with P | W and CR2 = R14
wp_fault:
    mov [expected_cr2], r14
    mov eax, wp_write
    mov [expected_rip], rax
    EXPECT_PF PF_WRITE_PROTECT, wp_fault_back
wp_write:
    mov qword ptr [r14], 0x666
    jmp no_fault
wp_fault_back:
    FAULTED
    ret

# --- #PF: check what was reported, count it, continue at resume_rip ------------------------------
.equ PF_SAVED, 8
.equ PF_ERROR, PF_SAVED
.equ PF_RIP, PF_SAVED + 8

pf_handler:
    push rax
    mov rax, [rsp + PF_RIP]
    cmp rax, [expected_rip]
    jne wrong_rip
    mov rax, [rsp + PF_ERROR]
    cmp rax, [expected_error]
    jne wrong_error
    mov rax, cr2
    cmp rax, [expected_cr2]
    jne wrong_cr2
    mov rax, [resume_rip]
    mov [rsp + PF_RIP], rax
    mov qword ptr [expected_rip], 0  # a second #PF fails the RIP check
    inc dword ptr [pf_count]
    pop rax
    add rsp, 8
    iretq

# --- failures -------------------------------------------------------------------------------------
wrong_rip:
    PUTS msg_wrong_rip
    mov rax, [rsp + PF_RIP]
    call serial_hex64
    PUTS msg_error
    mov rax, [rsp + PF_ERROR]
    call serial_hex32
    PUTS msg_cr2
    mov rax, cr2
    call serial_hex64
    PUTS newline
    EXIT 4
wrong_error:
    PUTS msg_wrong_error
    mov rax, [rsp + PF_ERROR]
    call serial_hex32
    PUTS newline
    EXIT 2
wrong_cr2:
    PUTS msg_wrong_cr2
    mov rax, cr2
    call serial_hex64
    PUTS newline
    EXIT 3
wrong_2m:
    mov rbx, rsi                     # PUTS clobbers rsi
    PUTS msg_wrong_2m
    mov rax, rbx
    call serial_hex64
    PUTS newline
    EXIT 5
write_lost:
    PUTS msg_write_lost
    EXIT 6
no_fault:
    PUTS msg_no_fault
    EXIT 7
wrong_1g:
    PUTS msg_wrong_1g
    EXIT 8
wrong_code:
    PUTS msg_wrong_code
    EXIT 9
wrote_anyway:
    PUTS msg_wrote_anyway
    EXIT 10
unexpected:
    PUTS msg_unexpected
    EXIT 1

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

    .balign 4
offsets:
    .long 0, 0x1000, 0x123458, 0x1FFFF0
shuffle:
    .byte 2, 0, 3, 1
    .balign 16
results_marker:
    .ascii "BIGPAGES-RESULT:"        # tests find `results` right after this
results:
    .quad 0

msg_start:
    .ascii "bigpages: 2 MiB pages at 0x80000000 on frames 36, 32, 38, 34 MiB\n"
    .byte 0
msg_2m_reads:
    .ascii "2 MiB pages: "
    .byte 0
msg_2m_writes:
    .ascii " reads and "
    .byte 0
msg_2m_end:
    .ascii " writes through the alias ok\n"
    .byte 0
msg_1g:
    .ascii "1 GiB pages: used only if CPUID.80000001H:EDX[26] = 1, ok\n"
    .byte 0
msg_nx_4k:
    .ascii "NX 4 KiB page: read ok, fetch #PF error 11, CR2 ok\n"
    .byte 0
msg_nx_2m:
    .ascii "NX 2 MiB page: fetch #PF error 11, CR2 ok\n"
    .byte 0
msg_nx_pdpte:
    .ascii "NX in the PDPTE only: fetch #PF error 11, CR2 ok\n"
    .byte 0
msg_nx_cleared:
    .ascii "XD cleared: code runs again\n"
    .byte 0
msg_wp_4k:
    .ascii "WP 4 KiB read-only page: write #PF error 3, CR2 ok, unchanged\n"
    .byte 0
msg_wp_2m:
    .ascii "WP 2 MiB read-only page: write #PF error 3, CR2 ok, unchanged\n"
    .byte 0
msg_wp_pdpte:
    .ascii "WP R/W = 0 in the PDPTE only: write #PF error 3, CR2 ok, unchanged\n"
    .byte 0
msg_wp_off:
    .ascii "CR0.WP = 0: supervisor write to a read-only page lands; WP = 1: #PF again\n"
    .byte 0
msg_done:
    .ascii "bigpages done\n"
    .byte 0
msg_wrong_rip:
    .ascii "#PF at unexpected RIP "
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
msg_wrong_2m:
    .ascii "wrong data through the 2 MiB alias at "
    .byte 0
msg_write_lost:
    .ascii "write through the alias missed the frame\n"
    .byte 0
msg_no_fault:
    .ascii "expected #PF did not happen\n"
    .byte 0
msg_wrong_1g:
    .ascii "wrong data through the 1 GiB page\n"
    .byte 0
msg_wrong_code:
    .ascii "code on an executable page did not run as written\n"
    .byte 0
msg_wrote_anyway:
    .ascii "a write went wrong under write protection\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

# the code snippet, alone on its page: mov eax, 0x600d; jmp rbx
    .balign 4096
nx_code:
    mov eax, 0x600D
    jmp rbx
    .balign 4096

MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x5000
LONG64_BSS
.equ pd_big, _image_end + LONG64_BSS_SIZE
.equ ro_page, _image_end + LONG64_BSS_SIZE + 0x1000
.equ vars, _image_end + LONG64_BSS_SIZE + 0x2000
.equ expected_error, vars
.equ expected_cr2, vars + 8
.equ expected_rip, vars + 16
.equ resume_rip, vars + 24
.equ pf_count, vars + 32
.equ stack_top, _bss_end
