# disk: one iteration = one sector read from the primary-master ATA disk by PIO with polling
# (nIEN set): wait for BSY clear, program count 1 and LBA (iteration mod 64) in LBA28 mode,
# READ SECTORS (20h), poll for DRQ, REP INSW 256 words, then check the sector's first dword
# holds its own LBA (the harness's disk image: every dword of sector L is L). About ten port
# accesses and one string input per iteration: the emulated device path of the paper's I/O
# discussion. Needs a disk of at least 64 sectors (`--disk`).
# Exit codes: 0 done, 1 unexpected exception, 2 no disk, 3 a command failed, 4 wrong data.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"
.include "bench.inc"

.equ ATA_DATA, 0x1F0
.equ ATA_COUNT, 0x1F2
.equ ATA_LBA_LOW, 0x1F3
.equ ATA_LBA_MID, 0x1F4
.equ ATA_LBA_HIGH, 0x1F5
.equ ATA_DEVICE, 0x1F6
.equ ATA_STATUS, 0x1F7           # read: Status; write: Command
.equ ATA_CONTROL, 0x3F6          # write: Device Control
.equ ST_BSY, 0x80
.equ ST_DRQ, 0x08
.equ ST_ERR, 0x01
.equ DC_NIEN, 0x02
.equ DEV_MASTER_LBA, 0xE0
.equ CMD_READ, 0x20
.equ SECTORS_USED, 64

.code32
_start:
    BENCH_ENTER32 main, 2000

.code64
main:
    BENCH_SETUP64
    mov dx, ATA_CONTROL
    mov al, DC_NIEN
    out dx, al
    mov dx, ATA_STATUS
    in al, dx
    cmp al, 0xFF
    je no_disk
    BENCH_LOOP_BEGIN
    mov dx, ATA_STATUS
wait_ready:
    in al, dx
    test al, ST_BSY
    jnz wait_ready
    mov ebx, r13d
    and ebx, SECTORS_USED - 1      # the LBA
    mov dx, ATA_COUNT
    mov al, 1
    out dx, al
    mov dx, ATA_LBA_LOW
    mov al, bl
    out dx, al
    mov dx, ATA_LBA_MID
    xor eax, eax
    out dx, al
    mov dx, ATA_LBA_HIGH
    out dx, al
    mov dx, ATA_DEVICE
    mov al, DEV_MASTER_LBA
    out dx, al
    mov dx, ATA_STATUS
    mov al, CMD_READ
    out dx, al
wait_data:
    in al, dx
    test al, ST_ERR
    jnz command_failed
    test al, ST_BSY
    jnz wait_data
    test al, ST_DRQ
    jz wait_data
    mov edi, sector
    mov dx, ATA_DATA
    mov ecx, 256
    cld
    rep insw
    mov eax, sector
    cmp [rax], ebx
    jne wrong_data
    BENCH_LOOP_END
no_disk:
    BENCH_FAIL 2
command_failed:
    BENCH_FAIL 3
wrong_data:
    BENCH_FAIL 4

bench_name:
    .ascii "disk"
    .byte 0
BENCH_TAIL 0x1000
.equ sector, bench_bss
