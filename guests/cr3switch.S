# cr3switch: eight address spaces and round-robin MOV CR3 between them, in long mode.
#
# Every space has its own PML4. Entry 0 of each points to the boot PDPT, so the kernel's
# identity map (code, data, stack, IDT) is shared; entry 1 leads through the space's own
# PDPT, PD and PT to a private data page, mapped at the same virtual address V = 512 GiB in
# every space but backed by a different frame. A private page holds a counter and the
# space's number (written at set-up through the frame's identity address).
#
# First, in the boot address space (whose PML4 has no entry 1) a read of V must raise #PF
# with error code 0 and CR2 = V. Then ROUNDS rounds visit the spaces in order: each visit
# loads the space's CR3, checks that V shows this space's number (a TLB entry left from the
# previous space would show its number) and that the counter equals the round, and
# increments it. At the end every space's counter must be exactly ROUNDS, read through V in
# that space and through the frame's identity address.
#
# Built with PV (pvops.inc) each switch is HvCallSwitchVirtualAddressSpace and the console
# is the console hypercall.
#
# Exit codes: 0 success, 1 unexpected exception, 2 V showed another space's page, 3 a
# counter was wrong during the rounds, 4 a final counter was wrong, 5 V was mapped in the
# boot address space, 6 that #PF had the wrong error code or CR2.

.include "multiboot.inc"
.include "serial.inc"
.include "pvops.inc"
.include "x86.inc"
.include "long64.inc"

.equ SPACES, 8
.equ ROUNDS, 256
.equ V, 0x8000000000             # PML4 index 1
.equ SPACE_SIZE, 5 * 4096        # PML4, PDPT, PD, PT, data page
.equ S_PDPT, 0x1000
.equ S_PD, 0x2000
.equ S_PT, 0x3000
.equ S_DATA, 0x4000
.equ D_COUNTER, 0                # in the data page: the counter, the space's number
.equ D_TAG, 8
.equ S_PDPT_ENTRY, S_PDPT + PTE_P + PTE_RW     # one name each: Keystone keeps only the last
.equ S_PD_ENTRY, S_PD + PTE_P + PTE_RW         # symbol of [reg + A + B]
.equ S_PT_ENTRY, S_PT + PTE_P + PTE_RW
.equ S_DATA_ENTRY, S_DATA + PTE_P + PTE_RW
.equ S_DATA_COUNTER, S_DATA + D_COUNTER
.equ S_DATA_TAG, S_DATA + D_TAG

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
    PUTS msg_start

    # --- build the spaces (the bss is zeroed by the loader) ------------------------------------
    xor ecx, ecx
build_space:
    imul edi, ecx, SPACE_SIZE
    add edi, spaces
    mov eax, [pml4]                      # entry 0: the shared kernel PDPT
    mov [rdi], rax
    lea rax, [rdi + S_PDPT_ENTRY]
    mov [rdi + 8], rax          # entry 1 -> private PDPT
    lea rax, [rdi + S_PD_ENTRY]
    mov [rdi + S_PDPT], rax
    lea rax, [rdi + S_PT_ENTRY]
    mov [rdi + S_PD], rax
    lea rax, [rdi + S_DATA_ENTRY]
    mov [rdi + S_PT], rax
    mov [rdi + S_DATA_TAG], rcx
    inc ecx
    cmp ecx, SPACES
    jb build_space
    PUTS msg_built

    # --- V is not mapped in the boot address space ----------------------------------------------
    mov dword ptr [pf_count], 0
    mov rsi, V
fault_read:
    mov rax, [rsi]
fault_resume:
    cmp dword ptr [pf_count], 1
    jne v_mapped
    PUTS msg_boot_fault

    # --- ROUNDS rounds of SPACES switches ----------------------------------------------------------
    xor r12d, r12d                       # round
round_loop:
    xor r13d, r13d                       # space
space_loop:
    imul eax, r13d, SPACE_SIZE
    add eax, spaces
    PV_LOAD_CR3 rax
    mov rsi, V
    cmp [rsi + D_TAG], r13
    jne wrong_space
    cmp [rsi + D_COUNTER], r12
    jne wrong_counter
    inc qword ptr [rsi + D_COUNTER]
    inc dword ptr [switches]
    inc r13d
    cmp r13d, SPACES
    jb space_loop
    inc r12d
    cmp r12d, ROUNDS
    jb round_loop

    # --- final check, through V and through the identity map ---------------------------------------
    xor r13d, r13d
final_loop:
    imul eax, r13d, SPACE_SIZE
    add eax, spaces
    PV_LOAD_CR3 rax
    mov rsi, V
    cmp [rsi + D_TAG], r13
    jne wrong_space
    cmp qword ptr [rsi + D_COUNTER], ROUNDS
    jne final_wrong
    cmp qword ptr [rax + S_DATA_COUNTER], ROUNDS
    jne final_wrong
    inc r13d
    cmp r13d, SPACES
    jb final_loop
    mov eax, pml4
    PV_LOAD_CR3 rax

    PUTS msg_switches
    mov eax, [switches]
    call serial_dec32
    PUTS msg_rounds
    PUTS msg_counters
    xor r13d, r13d
print_counters:
    mov al, ' '
    call serial_putc
    imul eax, r13d, SPACE_SIZE
    add eax, spaces
    mov rax, [rax + S_DATA_COUNTER]
    call serial_dec32
    inc r13d
    cmp r13d, SPACES
    jb print_counters
    PUTS newline
    PUTS msg_done
    PV_EXIT 0

# --- the one expected #PF: error 0, CR2 = V, at fault_read -------------------------------------
pf_handler:
    push rax
    cmp qword ptr [rsp + 8], 0
    jne wrong_fault
    mov rax, cr2
    mov rsi, V
    cmp rax, rsi
    jne wrong_fault
    mov eax, fault_read
    cmp [rsp + 16], rax
    jne unexpected
    mov eax, fault_resume
    mov [rsp + 16], rax
    inc dword ptr [pf_count]
    pop rax
    add rsp, 8
    iretq

# --- failures ------------------------------------------------------------------------------------
wrong_space:
    mov eax, pml4
    PV_LOAD_CR3 rax
    PUTS msg_wrong_space
    mov eax, r13d
    call serial_dec32
    PUTS newline
    PV_EXIT 2
wrong_counter:
    mov eax, pml4
    PV_LOAD_CR3 rax
    PUTS msg_wrong_counter
    mov eax, r13d
    call serial_dec32
    PUTS newline
    PV_EXIT 3
final_wrong:
    mov eax, pml4
    PV_LOAD_CR3 rax
    PUTS msg_final_wrong
    mov eax, r13d
    call serial_dec32
    PUTS newline
    PV_EXIT 4
v_mapped:
    PUTS msg_v_mapped
    PV_EXIT 5
wrong_fault:
    PUTS msg_wrong_fault
    PV_EXIT 6
unexpected:
    mov eax, pml4
    PV_LOAD_CR3 rax
    PUTS msg_unexpected
    PV_EXIT 1

PVOPS_ROUTINES64
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "cr3switch: 8 address spaces, private page at 0x8000000000 in each\n"
    .byte 0
msg_built:
    .ascii "spaces built\n"
    .byte 0
msg_boot_fault:
    .ascii "boot space: #PF on V, error 0, CR2 ok\n"
    .byte 0
msg_switches:
    .ascii "CR3 switches "
    .byte 0
msg_rounds:
    .ascii " (256 rounds), every visit saw its own page and count\n"
    .byte 0
msg_counters:
    .ascii "counters:"
    .byte 0
msg_done:
    .ascii "cr3switch done\n"
    .byte 0
msg_wrong_space:
    .ascii "V shows another space's page in space "
    .byte 0
msg_wrong_counter:
    .ascii "wrong counter in space "
    .byte 0
msg_final_wrong:
    .ascii "wrong final counter in space "
    .byte 0
msg_v_mapped:
    .ascii "V mapped in the boot space\n"
    .byte 0
msg_wrong_fault:
    .ascii "#PF with wrong error code or CR2\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + SPACES * SPACE_SIZE + 0x3000
LONG64_BSS
.equ spaces, _image_end + LONG64_BSS_SIZE
.equ vars, _image_end + LONG64_BSS_SIZE + SPACES * SPACE_SIZE
.equ pf_count, vars
.equ switches, vars + 4
.equ stack_top, _bss_end
