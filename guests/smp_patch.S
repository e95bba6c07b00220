# smp_patch: cross-modifying code. The BSP runs a routine (patch_target, alone on its page)
# so that its processor has translated it, then an application processor rewrites that
# routine with new code holding a sensitive instruction (RDMSR of IA32_EFER), and a DMA copy
# rewrites it once more; after each rewrite the BSP runs the routine again and prints what it
# returned. Following SDM Vol. 3A 8.1.3 ("Handling Self- and Cross-Modifying Code"), the
# patching processor raises a flag with a locked instruction when done, and the executing
# processor serializes (CPUID) after seeing it and before running the new code.
#
# With one processor the AP step is skipped. Prints the three values; exit 0 if each is the
# one the code then in memory returns, 1 if not, 2 without a MADT.

.include "multiboot.inc"
.include "x86.inc"
.include "serial.inc"
.include "pm32.inc"
.include "smp.inc"
.include "dma.inc"

.equ AP_STACK_SIZE, 4096
.equ IA32_EFER, 0xC0000080
.equ PATCHER_APIC_ID, 1

# CPUID serializes (SDM Vol. 3A 8.3): what the executing processor runs before new code.
.macro SERIALIZE
    push ebx
    push ecx
    push edx
    xor eax, eax
    cpuid
    pop edx
    pop ecx
    pop ebx
.endm

.code32
_start:
    PM32_ENTER
    SERIAL_INIT
    call madt_cpu_count
    test eax, eax
    jz no_madt
    mov [cpu_count], eax
    call patch_target                   # translated here, from the original bytes
    mov [returned], eax
    PUTS msg_before
    mov eax, [returned]
    call serial_hex32
    PUTS msg_newline
    cmp dword ptr [returned], 0x11111111
    je before_ok
    inc dword ptr [failures]
before_ok:
    cmp dword ptr [cpu_count], 2
    jb dma_phase
    call apic_enable
    call start_aps
wait_for_patch:
    pause
    cmp dword ptr [patched], 0
    je wait_for_patch
    SERIALIZE
    call patch_target
    mov [returned], eax
    PUTS msg_after_ap
    mov eax, [returned]
    call serial_hex32
    PUTS msg_newline
    cmp dword ptr [returned], 0x22222222
    je dma_phase
    inc dword ptr [failures]
dma_phase:
    xor ebx, ebx
    xor ebp, ebp
    mov esi, dma_code
    mov edi, patch_target
    mov ecx, dma_code_end - dma_code
    call dma_copy
    cmp eax, DMA_STATUS_DONE
    je dma_done
    inc dword ptr [failures]
dma_done:
    SERIALIZE
    call patch_target
    mov [returned], eax
    PUTS msg_after_dma
    mov eax, [returned]
    call serial_hex32
    PUTS msg_newline
    cmp dword ptr [returned], 0x33333333
    je check_failures
    inc dword ptr [failures]
check_failures:
    cmp dword ptr [failures], 0
    jne failed
    EXIT 0
failed:
    EXIT 1
no_madt:
    PUTS msg_no_madt
    EXIT 2

# An AP arrives here from the trampoline; the one with APIC ID 1 patches, the others idle.
ap_entry32:
    mov ax, PM32_DATA_SEL
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov eax, AP_STACK_SIZE
    lock xadd [next_stack], eax
    add eax, AP_STACK_SIZE + ap_stacks
    mov esp, eax
    call apic_enable
    call apic_id
    cmp eax, PATCHER_APIC_ID
    jne ap_idle
    mov esi, ap_code
    mov edi, patch_target
    mov ecx, ap_code_end - ap_code
    cld
    rep movsb
    lock inc dword ptr [patched]
ap_idle:
    cli
    hlt
    jmp ap_idle

# The replacement code, copied over patch_target by the AP and by the copy engine.
ap_code:
    push ecx
    push edx
    mov ecx, IA32_EFER
    rdmsr
    pop edx
    pop ecx
    mov eax, 0x22222222
    ret
ap_code_end:
dma_code:
    push ecx
    push edx
    mov ecx, IA32_EFER
    rdmsr
    pop edx
    pop ecx
    mov eax, 0x33333333
    ret
dma_code_end:

SERIAL_ROUTINES
SMP_ROUTINES
DMA_ROUTINES
SMP_TRAMPOLINE ap_entry32

msg_before: .ascii "smp_patch: before "
    .byte 0
msg_after_ap: .ascii "smp_patch: after AP patch "
    .byte 0
msg_after_dma: .ascii "smp_patch: after DMA patch "
    .byte 0
msg_newline: .ascii "\n"
    .byte 0
msg_no_madt: .ascii "no MADT found\n"
    .byte 0

# The routine that gets rewritten, alone on its page.
    .balign 4096
patch_target:
    mov eax, 0x11111111
    ret
    .fill 32, 1, 0x90
    .balign 4096

PM32_TABLES

# Data shared by the processors, on its own page.
    .balign 4096
cpu_count: .long 0
patched: .long 0
returned: .long 0
failures: .long 0
next_stack: .long 0
    .balign 4096
ap_stacks:
    .fill 16 * AP_STACK_SIZE, 1, 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
.equ idt, _image_end
