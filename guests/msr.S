# msr: RDMSR/WRMSR in 64-bit mode, each a VM exit on vtemu.
#
#   IA32_EFER as left by the long-mode switch (LME | LMA), then with SCE and NXE set by WRMSR
#   IA32_STAR and IA32_LSTAR written and read back (a 64-bit canonical-high LSTAR)
#   the TSC read twice, RDMSR(10h) then RDTSC, and whether it increased (not the values);
#   then RDTSC twice (QEMU 7.2's TCG returns 0 for RDMSR(10h), so RDTSC then RDMSR would
#   not increase there)
#   WRMSR to IA32_PKRS (6E1h) with reserved bits set: #GP, caught by the guest's handler
#   RDMSR of an MSR no processor implements (C0011234h): #GP on silicon and vtemu; QEMU's TCG
#   reads unimplemented MSRs as 0 without a fault, so that line differs on QEMU (the
#   differential test knows that one line)
#
# The #GP handler records the fault and its error code and resumes after the 2-byte
# RDMSR/WRMSR; the main line prints what happened.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.equ IA32_TSC, 0x10
.equ IA32_STAR, 0xC0000081
.equ IA32_LSTAR, 0xC0000082
.equ IA32_PKRS, 0x6E1
.equ UNKNOWN_MSR, 0xC0011234
.equ EFER_NXE, 1 << 11

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    PUTS msg_start
    IDT64_FILL unexpected
    SET_GATE 13, gp_handler, GATE_INTERRUPT
    call idt_load

    # --- EFER ---------------------------------------------------------------------------
    PUTS msg_efer
    mov ecx, IA32_EFER
    rdmsr
    call print_edx_eax
    mov ecx, IA32_EFER
    rdmsr
    or eax, EFER_SCE + EFER_NXE
    wrmsr
    PUTS msg_efer_sce_nxe
    mov ecx, IA32_EFER
    rdmsr
    call print_edx_eax

    # --- STAR and LSTAR -------------------------------------------------------------------
    mov ecx, IA32_STAR
    mov edx, 0x001B0008          # SYSRET base 0x18 (RPL 3), SYSCALL CS 0x08
    mov eax, 0xDEADBEEF          # bits 31:0 (the legacy-mode SYSCALL EIP)
    wrmsr
    mov ecx, IA32_LSTAR
    mov edx, 0xFFFFFFFF
    mov eax, 0x80001234
    wrmsr
    PUTS msg_star
    mov ecx, IA32_STAR
    rdmsr
    call print_edx_eax
    PUTS msg_lstar
    mov ecx, IA32_LSTAR
    rdmsr
    call print_edx_eax

    # --- the TSC twice ----------------------------------------------------------------------
    mov ecx, IA32_TSC
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov r12, rax
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r13, rax
    PUTS msg_tsc
    cmp r13, r12
    ja tsc_up
    PUTS msg_no
    jmp tsc_done
tsc_up:
    PUTS msg_yes
tsc_done:
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r12, rax
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r13, rax
    PUTS msg_tsc2
    cmp r13, r12
    ja tsc2_up
    PUTS msg_no
    jmp tsc2_done
tsc2_up:
    PUTS msg_yes
tsc2_done:

    # --- faulting accesses ----------------------------------------------------------------
    PUTS msg_pkrs
    mov byte ptr [faulted], 0
    mov ecx, IA32_PKRS
    mov edx, 0xFFFFFFFF          # bits 63:32 of IA32_PKRS are reserved
    mov eax, 0x5555
    wrmsr
    call report_fault
    PUTS msg_unknown
    mov byte ptr [faulted], 0
    mov ecx, UNKNOWN_MSR
    mov eax, 0x11111111
    mov edx, 0x22222222
    rdmsr
    cmp byte ptr [faulted], 0
    je unknown_read
    PUTS msg_gp_unknown
    mov eax, [fault_error]
    call serial_hex32
    PUTS newline
    jmp unknown_done
unknown_read:
    push rax
    push rdx
    PUTS msg_no_gp_read
    pop rdx
    pop rax
    call print_edx_eax
unknown_done:
    PUTS msg_done
    EXIT 0

# report_fault: "#GP, error code X" or "no #GP" from what the handler recorded
report_fault:
    cmp byte ptr [faulted], 0
    je report_no_fault
    PUTS msg_gp
    mov eax, [fault_error]
    call serial_hex32
    PUTS newline
    ret
report_no_fault:
    PUTS msg_no_gp
    ret

# print_edx_eax: EDX:EAX as 16 hex digits and a newline
print_edx_eax:
    shl rdx, 32
    mov eax, eax
    or rax, rdx
    call serial_hex64
    PUTS newline
    ret

gp_handler:
    mov byte ptr [faulted], 1
    push rax
    mov rax, [rsp + 8]
    mov [fault_error], eax
    pop rax
    add qword ptr [rsp + 8], 2   # past the RDMSR / WRMSR
    add rsp, 8
    iretq

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "msr: 64-bit mode\n"
    .byte 0
msg_efer:
    .ascii "IA32_EFER = "
    .byte 0
msg_efer_sce_nxe:
    .ascii "IA32_EFER | SCE | NXE = "
    .byte 0
msg_star:
    .ascii "IA32_STAR = "
    .byte 0
msg_lstar:
    .ascii "IA32_LSTAR = "
    .byte 0
msg_tsc:
    .ascii "TSC increased from RDMSR to RDTSC: "
    .byte 0
msg_tsc2:
    .ascii "TSC increased from RDTSC to RDTSC: "
    .byte 0
msg_yes:
    .ascii "yes\n"
    .byte 0
msg_no:
    .ascii "no\n"
    .byte 0
msg_pkrs:
    .ascii "wrmsr 000006e1 with bits 63:32 set: "
    .byte 0
msg_unknown:
    .ascii "rdmsr c0011234: "
    .byte 0
msg_gp:
    .ascii "#GP, error code "
    .byte 0
msg_gp_unknown:
    .ascii "#GP on unknown MSR, error code "
    .byte 0
msg_no_gp:
    .ascii "no #GP\n"
    .byte 0
msg_no_gp_read:
    .ascii "no #GP, read "
    .byte 0
msg_done:
    .ascii "msr done\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x2000
LONG64_BSS
.equ faulted, _image_end + LONG64_BSS_SIZE
.equ fault_error, _image_end + LONG64_BSS_SIZE + 4
.equ stack_top, _bss_end
