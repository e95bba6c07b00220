# compute: one iteration = a sieve of Eratosthenes over the numbers below 8192 in a byte
# array (reset the array with REP STOSQ, strike out the multiples of every prime p from p*p,
# count the primes: 1028), about 102,000 instructions as Unicorn counts them (REP STOSQ
# counts once per element) and no exits. The loop adds each
# iteration's count to r14 and the guest checks r14 = 1028 x iterations after the loop
# (exit code 2 otherwise).
# The loop takes no input but r12/r13/r14 and the array: the raw-Unicorn baseline runs it.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.equ SIEVE_SIZE, 8192
.equ PRIMES_BELOW_SIEVE_SIZE, 1028

.code32
_start:
    BENCH_ENTER32 main, 300

.code64
main:
    BENCH_SETUP64
    xor r14d, r14d
    BENCH_LOOP_BEGIN
    mov rdi, sieve
    mov rsi, rdi
    mov ecx, SIEVE_SIZE / 8
    mov rax, 0x0101010101010101
    cld
    rep stosq
    mov ebx, 2
sieve_next:
    cmp byte ptr [rsi + rbx], 0
    je sieve_composite
    inc r14d
    mov rax, rbx
    imul rax, rbx
    cmp rax, SIEVE_SIZE
    jae sieve_composite
sieve_strike:
    mov byte ptr [rsi + rax], 0
    add rax, rbx
    cmp rax, SIEVE_SIZE
    jb sieve_strike
sieve_composite:
    inc ebx
    cmp ebx, SIEVE_SIZE
    jb sieve_next
    BENCH_LOOP_NEXT
    BENCH_MARK_END
    imul eax, r13d, PRIMES_BELOW_SIEVE_SIZE
    cmp eax, r14d
    jne wrong_count
    mov eax, r13d
    jmp bench_report
wrong_count:
    BENCH_FAIL 2

bench_name:
    .ascii "compute"
    .byte 0
BENCH_TAIL SIEVE_SIZE
.equ sieve, bench_bss
