# smp_hello: every processor says hello. The BSP counts the CPUs in the ACPI MADT, enables its
# local APIC, starts the APs with INIT-SIPI-SIPI (they begin in real mode at 7000h and switch
# to protected mode themselves), and each processor prints its APIC ID, checked against
# CPUID.1:EBX[31:24], under a spinlock. The BSP waits for every AP, reads its own ID once
# more through the x2APIC MSR 802h, and exits 0 (1 if an ID disagrees, 2 if the MADT is missing).

.include "multiboot.inc"
.include "x86.inc"
.include "serial.inc"
.include "pm32.inc"
.include "smp.inc"

.equ AP_STACK_SIZE, 4096
.equ IA32_APIC_BASE, 0x1B
.equ X2APIC_ID_MSR, 0x802

.code32
_start:
    PM32_ENTER
    SERIAL_INIT
    call madt_cpu_count
    test eax, eax
    jz no_madt
    mov [cpu_count], eax
    PUTS msg_cpus
    mov eax, [cpu_count]
    call serial_dec32
    PUTS msg_newline
    call apic_enable
    call start_aps
    call say_hello
wait_for_aps:
    pause
    mov eax, [cpus_up]
    cmp eax, [cpu_count]
    jb wait_for_aps
    mov ecx, IA32_APIC_BASE
    rdmsr
    or eax, 0xC00                   # EN + EXTD: x2APIC mode (SDM 10.12.1)
    wrmsr
    mov ecx, X2APIC_ID_MSR
    rdmsr
    mov [x2apic_id], eax
    PUTS msg_all
    mov eax, [cpus_up]
    call serial_dec32
    PUTS msg_x2apic
    mov eax, [x2apic_id]
    call serial_dec32
    PUTS msg_newline
    mov eax, [id_mismatches]
    test eax, eax
    jnz bad_id
    EXIT 0
bad_id:
    EXIT 1
no_madt:
    PUTS msg_no_madt
    EXIT 2

# An AP arrives here from the trampoline, in protected mode with CS = 08h.
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
    call say_hello
ap_idle:
    cli
    hlt
    jmp ap_idle

# Print "cpu <apic id> up" under the print lock and count this processor in.
say_hello:
    mov eax, 1
    cpuid
    mov esi, ebx
    shr esi, 24                     # CPUID's initial APIC ID
    call apic_id
    cmp eax, esi
    je say_hello_lock
    lock inc dword ptr [id_mismatches]
say_hello_lock:
    push eax
    mov ebx, print_lock
    call spin_lock
    PUTS msg_cpu
    pop eax
    call serial_dec32
    PUTS msg_up
    mov ebx, print_lock
    call spin_unlock
    lock inc dword ptr [cpus_up]
    ret

SERIAL_ROUTINES
SMP_ROUTINES
SMP_TRAMPOLINE ap_entry32

msg_cpus: .ascii "smp_hello: MADT lists cpus: "
    .byte 0
msg_newline: .ascii "\n"
    .byte 0
msg_cpu: .ascii "cpu "
    .byte 0
msg_up: .ascii " up\n"
    .byte 0
msg_all: .ascii "all "
    .byte 0
msg_x2apic: .ascii " cpus up; BSP x2APIC id "
    .byte 0
msg_no_madt: .ascii "no MADT found\n"
    .byte 0

PM32_TABLES

# Data shared by the processors, on its own page (away from code every vCPU has scanned).
    .balign 4096
print_lock: .long 0, 0
cpu_count: .long 0
cpus_up: .long 0
id_mismatches: .long 0
next_stack: .long 0
x2apic_id: .long 0
    .balign 4096
ap_stacks:
    .fill 16 * AP_STACK_SIZE, 1, 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
.equ idt, _image_end
