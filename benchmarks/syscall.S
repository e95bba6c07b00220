# syscall: one iteration = SYSCALL from ring 3 into the kernel's entry, which returns at once
# with SYSRETQ (ring 3 -> 0 -> 3), plus the user loop's xor/inc/cmp/jb (Adams & Agesen 2006,
# syscall). The kernel marks the start, enters ring 3 with IRETQ, and the user loop ends with
# SYSCALL RAX = 1, on which the kernel marks the end. Neither SYSCALL nor SYSRET exits under
# VT-x; Unicorn does not perform their ring transitions, vtemu's processor does.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.equ IA32_STAR, 0xC0000081
.equ IA32_LSTAR, 0xC0000082
.equ IA32_FMASK, 0xC0000084
.equ RFLAGS_TF_IF_DF, (1 << 8) | (1 << 9) | (1 << 10)
.equ SYS_NOTHING, 0
.equ SYS_DONE, 1

.code32
_start:
    BENCH_ENTER32 main, 20000

.code64
main:
    BENCH_SETUP64
    # STAR[47:32] = SYSCALL CS 08h (SS 10h); STAR[63:48] = SYSRET base 18h | RPL 3 (CS 2Bh,
    # SS 23h for a 64-bit return): SDM Vol. 3A 5.8.8
    mov ecx, IA32_STAR
    xor eax, eax
    mov edx, 0x001B0008
    wrmsr
    mov ecx, IA32_LSTAR
    mov eax, syscall_entry
    xor edx, edx
    wrmsr
    mov ecx, IA32_FMASK
    mov eax, RFLAGS_TF_IF_DF
    xor edx, edx
    wrmsr
    mov ecx, IA32_EFER
    rdmsr
    or eax, EFER_SCE
    wrmsr
    mov r12d, [bench_iterations]
    xor r13d, r13d
    BENCH_START
    push USER_DS + 3
    mov eax, user_stack_top
    push rax
    push 0x2
    push USER_CS + 3
    mov eax, bench_loop
    push rax
    iretq

# --- ring 3 ---------------------------------------------------------------------------------
bench_loop:
    xor eax, eax                   # SYS_NOTHING
    syscall
    inc r13d
    cmp r13d, r12d
    jb bench_loop
bench_loop_end:
    mov eax, SYS_DONE
    syscall

# --- ring 0 ---------------------------------------------------------------------------------
syscall_entry:
    test eax, eax
    jnz syscall_done
    .byte 0x48, 0x0F, 0x07         # sysretq (REX.W: back to 64-bit code)
syscall_done:
    mov rsp, stack_top
    BENCH_STOP r13d

bench_name:
    .ascii "syscall"
    .byte 0
BENCH_TAIL 0x1000
.equ user_stack_top, bench_bss + 0x1000
