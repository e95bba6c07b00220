# translation: the code shapes a binary translator must get exactly right, each checked by the
# guest itself and reported on one line, so bare hardware, VT-x and binary translation must
# print the same thing (64-bit kernel code):
#   1. RIP-relative operands (LEA, load, read-modify-write) reach the guest's data, not
#      wherever the translated copy of the instruction happens to run;
#   2. indirect branches: CALL through a table in memory, JMP through a register, RET, each
#      many times (the translator's inline lookup table);
#   3. self-modifying code: a function's MOV immediate is rewritten between calls, and the
#      new code runs every time;
#   4. a #PF and a #DE in the middle of straight-line code are reported at the faulting
#      instruction with exactly the registers written before it (precise state), and the
#      handlers resume after it;
#   5. timer interrupts taken while a hot loop runs (it spins until the third tick, so host
#      speed does not matter): every interrupted RIP saved in the frame lies inside the
#      guest's loop (never a translation-cache address).
# Exit code 0 when every check passed, else 1.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.equ UNMAPPED, 0x40000000          # long64.inc maps the first GiB only
.equ PATCH_ROUNDS, 16
.equ INDIRECT_ROUNDS, 200
.equ HOT_LOOP_ITERATIONS, 200000000
.equ PIT_DIVISOR, 1193             # about 1 kHz

.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    mov al, 0xFF                    # every 8259 input masked until part 5
    out 0x21, al
    out 0xA1, al
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    IDT64_FILL unexpected
    SET_GATE 0, divide_error, GATE_INTERRUPT
    SET_GATE 14, page_fault, GATE_INTERRUPT
    SET_GATE 0x20, timer, GATE_INTERRUPT
    call idt_load
    xor r15d, r15d                  # checks failed

    # --- 1. RIP-relative operands --------------------------------------------------------
    lea rax, [rip + rel_data]
    mov rbx, rel_data
    cmp rax, rbx
    jne rel_bad
    mov rax, qword ptr [rip + rel_data]
    mov rbx, 0x1122334455667788
    cmp rax, rbx
    jne rel_bad
    add qword ptr [rip + rel_data], 5
    mov rax, rel_data
    mov rbx, 0x112233445566778D
    cmp [rax], rbx
    jne rel_bad
    PUTS msg_rel_ok
    jmp part2
rel_bad:
    inc r15d
    PUTS msg_rel_bad

    # --- 2. indirect branches ------------------------------------------------------------
part2:
    xor r12d, r12d                  # sum of what the callees add
    mov r13d, INDIRECT_ROUNDS
indirect_round:
    mov ecx, r13d
    and ecx, 3
    mov rdx, callees
    call qword ptr [rdx + rcx * 8]
    mov rax, after_jump
    jmp rax
    hlt                             # never reached
after_jump:
    dec r13d
    jnz indirect_round
    cmp r12d, INDIRECT_ROUNDS / 4 * (1 + 10 + 100 + 1000)
    jne indirect_bad
    PUTS msg_indirect_ok
    jmp part3
indirect_bad:
    inc r15d
    PUTS msg_indirect_bad

    # --- 3. self-modifying code ----------------------------------------------------------
part3:
    mov r13d, 1
patch_round:
    mov eax, r13d
    imul eax, eax, 0x01010101
    mov [patched + 1], eax          # the imm32 of `mov eax, imm32`
    call patched
    mov ebx, r13d
    imul ebx, ebx, 0x01010101
    cmp eax, ebx
    jne smc_bad
    inc r13d
    cmp r13d, PATCH_ROUNDS
    jbe patch_round
    PUTS msg_smc_ok
    jmp part4
smc_bad:
    inc r15d
    PUTS msg_smc_bad

    # --- 4. precise faults ---------------------------------------------------------------
part4:
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    mov ebx, 1
    mov ecx, 2
pf_insn:
    mov eax, dword ptr [UNMAPPED]
    mov edx, 3                      # never before the fault is handled
pf_resume:
    cmp dword ptr [pf_seen], 1
    jne pf_bad
    PUTS msg_pf_ok
    jmp de_part
pf_bad:
    inc r15d
    PUTS msg_pf_bad
de_part:
    xor edx, edx
    mov eax, 7
    xor ecx, ecx
    mov ebx, 5
de_insn:
    div ecx
    mov ebx, 9                      # never before the fault is handled
de_resume:
    cmp dword ptr [de_seen], 1
    jne de_bad
    PUTS msg_de_ok
    jmp part5
de_bad:
    inc r15d
    PUTS msg_de_bad

    # --- 5. interrupts in a hot loop -----------------------------------------------------
part5:
    mov al, 0x11                    # 8259 pair: ICW1..4, vectors 20h/28h, IRQ 0 alone
    out 0x20, al
    out 0xA0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xA1, al
    mov al, 1
    out 0x21, al
    out 0xA1, al
    mov al, 0xFE
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al
    mov al, 0x34                    # 8254 channel 0, lobyte/hibyte, mode 2
    out 0x43, al
    mov al, PIT_DIVISOR & 0xFF
    out 0x40, al
    mov al, PIT_DIVISOR >> 8
    out 0x40, al
    mov ecx, HOT_LOOP_ITERATIONS
    xor eax, eax
    sti
hot_loop:                           # until 3 ticks (a bound in case none ever comes)
    add eax, ecx
    rol eax, 3
    dec ecx
    jz hot_loop_end
    cmp dword ptr [ticks], 3
    jb hot_loop
hot_loop_end:
    cli
    cmp dword ptr [ticks], 3
    jb ticks_bad
    cmp dword ptr [ticks_outside], 0
    jne ticks_bad
    PUTS msg_ticks_ok
    jmp report
ticks_bad:
    inc r15d
    PUTS msg_ticks_bad

report:
    test r15d, r15d
    jnz failed
    PUTS msg_done
    EXIT 0
failed:
    EXIT 1

# --- callees of part 2: each adds its own amount to r12 ---------------------------------------
callee0:
    add r12d, 1
    ret
callee1:
    add r12d, 10
    ret
callee2:
    add r12d, 100
    ret
callee3:
    add r12d, 1000
    ret

# --- part 3's function, whose immediate the loop rewrites --------------------------------------
patched:
    mov eax, 0
    ret

# --- handlers --------------------------------------------------------------------------------
page_fault:                         # frame: error code, RIP, CS, RFLAGS, RSP, SS
    mov rax, pf_insn
    cmp [rsp + 8], rax
    jne handler_bad
    cmp ebx, 1
    jne handler_bad
    cmp ecx, 2
    jne handler_bad
    test edx, edx
    jnz handler_bad
    mov rax, cr2
    cmp rax, UNMAPPED
    jne handler_bad
    cmp qword ptr [rsp], 0          # not present, read, supervisor
    jne handler_bad
    mov dword ptr [pf_seen], 1
    mov rax, pf_resume
    mov [rsp + 8], rax
    add rsp, 8
    iretq

divide_error:                       # frame: RIP, CS, RFLAGS, RSP, SS
    mov rax, de_insn
    cmp [rsp], rax
    jne handler_bad
    cmp ebx, 5
    jne handler_bad
    mov dword ptr [de_seen], 1
    mov rax, de_resume
    mov [rsp], rax
    iretq

timer:
    push rax
    inc dword ptr [ticks]
    mov rax, [rsp + 8]              # the interrupted RIP
    cmp rax, hot_loop
    jb timer_outside
    cmp rax, hot_loop_end           # the CLI after the loop may be interrupted too
    jbe timer_inside
timer_outside:
    inc dword ptr [ticks_outside]
timer_inside:
    mov al, 0x20                    # non-specific EOI
    out 0x20, al
    pop rax
    iretq

handler_bad:
    PUTS msg_handler_bad
    EXIT 2

unexpected:
    PUTS msg_unexpected
    EXIT 3

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

.balign 8
rel_data:
    .quad 0x1122334455667788
callees:
    .quad callee0, callee1, callee2, callee3
pf_seen:
    .long 0
de_seen:
    .long 0
ticks:
    .long 0
ticks_outside:
    .long 0

msg_rel_ok:
    .ascii "RIP-relative LEA, load and add reach the guest's data\n"
    .byte 0
msg_rel_bad:
    .ascii "RIP-relative operands: WRONG\n"
    .byte 0
msg_indirect_ok:
    .ascii "indirect CALL through memory, JMP through a register, RET: all 200 rounds land\n"
    .byte 0
msg_indirect_bad:
    .ascii "indirect branches: WRONG\n"
    .byte 0
msg_smc_ok:
    .ascii "self-modifying code: the rewritten immediate runs each time\n"
    .byte 0
msg_smc_bad:
    .ascii "self-modifying code: STALE\n"
    .byte 0
msg_pf_ok:
    .ascii "#PF: at the faulting instruction, registers as before it, CR2 and error code ok\n"
    .byte 0
msg_pf_bad:
    .ascii "#PF: WRONG\n"
    .byte 0
msg_de_ok:
    .ascii "#DE: at the DIV, registers as before it\n"
    .byte 0
msg_de_bad:
    .ascii "#DE: WRONG\n"
    .byte 0
msg_ticks_ok:
    .ascii "timer interrupts during the hot loop: taken, every saved RIP inside the loop\n"
    .byte 0
msg_ticks_bad:
    .ascii "timer interrupts during the hot loop: WRONG\n"
    .byte 0
msg_done:
    .ascii "translation done\n"
    .byte 0
msg_handler_bad:
    .ascii "a fault handler found the wrong state\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x2000
LONG64_BSS
.equ stack_top, _bss_end
