# spinlock: every processor increments one shared counter ITERATIONS times under a
# test-and-set spinlock with PAUSE in its spin loop (smp.inc spin_lock), doing some work
# inside the critical section (a read-modify-write spread over a delay loop, so the lock is
# held for a good share of the time) and some outside it. The BSP checks the final count
# and reports the spin iterations all processors wasted waiting (4 instructions each: lock
# inc, pause, cmp, jne; 6 in the enlightened lock, which also counts down its retries).
# Exit 0 if the count is exact, 1 if not, 2 without a MADT.
#
# -D ITERATIONS=n (default 200). -D PV=1 (`vtemu asm --pv`, or `vtemu run --mode pv`): the
# enlightened build (pvops.inc): the console goes through hypercalls, and the lock is
# smp.inc's spin_lock_pv, which after the retry count of CPUID 40000004h EBX notifies the
# hypervisor with HvCallNotifyLongSpinWait, so that it can run the lock holder instead.
# The output is the same in both builds.

.include "multiboot.inc"
.include "x86.inc"
.include "serial.inc"
.include "pvops.inc"
.include "pm32.inc"
.include "smp.inc"

.ifndef ITERATIONS
.equ ITERATIONS, 200
.endif
.equ INSIDE_DELAY, 40               # delay-loop rounds while holding the lock
.equ OUTSIDE_DELAY, 20              # and between acquisitions
.equ AP_STACK_SIZE, 4096

.ifdef PV
.macro SPIN_LOCK
    call spin_lock_pv
.endm
.else
.macro SPIN_LOCK
    call spin_lock
.endm
.endif

.code32
_start:
    PM32_ENTER
    PV_SERIAL_INIT
.ifdef PV
    call spin_lock_pv_init
.endif
    call madt_cpu_count
    test eax, eax
    jz no_madt
    mov [cpu_count], eax
    call apic_enable
    call start_aps
    call worker
wait_for_workers:
    pause
    mov eax, [workers_done]
    cmp eax, [cpu_count]
    jb wait_for_workers
    PUTS msg_count
    mov eax, [counter]
    call serial_dec32
    PUTS msg_expected
    mov eax, [cpu_count]
    mov ecx, ITERATIONS
    mul ecx
    mov [expected], eax
    call serial_dec32
    PUTS msg_spins
    mov eax, [the_lock + 4]
    call serial_dec32
    PUTS msg_newline
    mov eax, [counter]
    cmp eax, [expected]
    jne wrong_count
    PV_EXIT 0
wrong_count:
    PV_EXIT 1
no_madt:
    PUTS msg_no_madt
    PV_EXIT 2

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
    call worker
ap_idle:
    cli
    hlt
    jmp ap_idle

worker:
    mov edi, ITERATIONS
worker_loop:
    mov ebx, the_lock
    SPIN_LOCK
    mov esi, [counter]
    mov ecx, INSIDE_DELAY
worker_inside:
    dec ecx
    jnz worker_inside
    inc esi
    mov [counter], esi
    mov ebx, the_lock
    call spin_unlock
    mov ecx, OUTSIDE_DELAY
worker_outside:
    dec ecx
    jnz worker_outside
    dec edi
    jnz worker_loop
    lock inc dword ptr [workers_done]
    ret

PVOPS_ROUTINES32
SMP_ROUTINES
SMP_TRAMPOLINE ap_entry32

msg_count: .ascii "spinlock: count "
    .byte 0
msg_expected: .ascii " expected "
    .byte 0
msg_spins: .ascii " spin iterations "
    .byte 0
msg_newline: .ascii "\n"
    .byte 0
msg_no_madt: .ascii "no MADT found\n"
    .byte 0

PM32_TABLES

    .balign 4096
the_lock: .long 0, 0                # lock word, spin iterations of all waiters
counter: .long 0
expected: .long 0
cpu_count: .long 0
workers_done: .long 0
spin_lock_retries: .long 0xFFFFFFFF   # PV: from CPUID 40000004h EBX
next_stack: .long 0
    .balign 4096
ap_stacks:
    .fill 16 * AP_STACK_SIZE, 1, 0

MULTIBOOT_IMAGE_END 0x1000
.equ stack_top, _bss_end
.equ idt, _image_end
