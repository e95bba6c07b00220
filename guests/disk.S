# disk: the ATA disk on the primary IDE channel (ports 1F0h-1F7h, 3F6h, IRQ 14), PIO only.
#
# Boot with a raw image as the primary master:
#   vtemu run guests/disk.S --disk disk.img
#   qemu-system-x86_64 -kernel disk.bin -drive file=disk.img,format=raw,if=ide,index=0,media=disk ...
# The image must hold at least 4400 sectors; the guest WRITES sectors 4096-4395.
#
# In order: a software reset (SRST) and the signature it leaves; device 1 selected reads
# status 00h (device 0 answers for an absent device 1); IDENTIFY DEVICE by interrupt, printing
# the capacity (words 60-61) and the LBA bit (the model string differs between emulators: it
# is printed only when assembled with -D PRINT_MODEL); 384 sectors from LBA 0 read by
# interrupt (READ SECTORS with a count of 0 = 256 sectors, then READ SECTORS without retry
# for 128), folded into an FNV-1a checksum of their dwords; 300 sectors written at LBA 4096
# by interrupt (WRITE SECTORS 200, then the no-retry form 100), dword i of sector L holding
# ((L << 7) | i) * 2545F491h; the same 300 sectors read back by polling with nIEN set,
# verified and checksummed; READ MULTIPLE of 64 of them in blocks of 8 with 32-bit REP INSD;
# a read at the first LBA past the end (an error) and one across the end (one sector, then an
# error); and the number of IRQ 14s taken. POST codes D1h-D8h (port 80h) mark the phases, so a
# test can count the VM exits of each.
#
# Enlightened build (-D PV, `vtemu asm --pv`, run with `--mode pv`): the same workload over
# vtemu's VMBus-like channel (guests/include/vmbus.inc) instead of the ATA ports. The guest
# enables the hypercall page, makes contact, reads the offers, opens the synthetic console and
# the synthetic storage channel, and from then on prints through the console (one packet and
# one hypercall a line). Storage requests name their buffers by page, so the data never passes
# through the rings: the 384-sector read is two requests, the 300-sector write two, the
# read-back two with the inbound ring's interrupt mask set (completions polled, and no
# interrupt may arrive), and the 64 sectors eight requests of 8; each batch is one
# HvCallSignalEvent and (unmasked) one interrupt on vector 51h. The lines that describe the
# ATA protocol (reset signature, device 1, IDENTIFY) become the channel and capacity lines;
# every line of the workload -- checksums, range errors, "disk: done" -- is the same bytes.
# PV exit codes: 1 no hypercall interface, no channel or no storage offered, 4 disk too small, 5 a read failed,
# 6 a write failed, 7 read-back mismatch, 8 an interrupt while masked, 11 no range error,
# 13 a ring full, 14 an open failed.
#
# Exit codes: 0 success, 1 no disk (status FFh), 2 wrong reset signature, 3 unexpected
# interrupt, 4 IDENTIFY failed, 5 a read failed, 6 a write failed, 7 read-back mismatch,
# 8 an interrupt while nIEN was set, 9 the drive stayed busy, 10 READ MULTIPLE failed,
# 11 no error past the end of the disk, 12 device 1 did not read as absent.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "pm32.inc"
.ifdef PV
.include "vmbus.inc"
.endif

.equ ATA_DATA, 0x1F0
.equ ATA_ERROR, 0x1F1
.equ ATA_COUNT, 0x1F2
.equ ATA_LBA_LOW, 0x1F3
.equ ATA_LBA_MID, 0x1F4
.equ ATA_LBA_HIGH, 0x1F5
.equ ATA_DEVICE, 0x1F6
.equ ATA_STATUS, 0x1F7           # read: Status (acknowledges the interrupt); write: Command
.equ ATA_CONTROL, 0x3F6          # read: Alternate Status; write: Device Control

.equ ST_BSY, 0x80
.equ ST_DRDY, 0x40
.equ ST_DRQ, 0x08
.equ ST_ERR, 0x01
.equ ERR_IDNF_ABRT, 0x14
.equ DC_NIEN, 0x02
.equ DC_SRST, 0x04
.equ DEV_MASTER_LBA, 0xE0
.equ DEV_MASTER, 0xA0
.equ DEV_SLAVE, 0xB0

.equ CMD_READ, 0x20
.equ CMD_READ_NO_RETRY, 0x21
.equ CMD_WRITE, 0x30
.equ CMD_WRITE_NO_RETRY, 0x31
.equ CMD_READ_MULTIPLE, 0xC4
.equ CMD_SET_MULTIPLE, 0xC6
.equ CMD_IDENTIFY, 0xEC

.equ IRQ_BASE, 0x20
.equ ATA_VECTOR, IRQ_BASE + 14
.equ POST_PORT, 0x80
.equ PHASE_BASE, 0xD0              # POST codes D1h-D8h mark the phases
.equ POLL_LIMIT, 1000000
.equ FNV_OFFSET, 0x811C9DC5
.equ FNV_PRIME, 16777619
.equ PATTERN_MUL, 0x2545F491

.equ WRITE_LBA, 4096
.equ MULTIPLE_BLOCK, 8
.equ MULTIPLE_SECTORS, 64
.ifdef PV
.equ WRITTEN_SECTORS, 300
.equ VMBUS_MESSAGE_VECTOR, 0x50
.equ STORAGE_VECTOR, 0x51
.equ CONSOLE_VECTOR, 0x52
.equ VMBUS_RING_FULL_EXIT, 13
.equ PV_BSS_SIZE, 0x10000 + 384 * 512 + 0x2000    # channel pages, buffer, 8 KiB stack
.endif

.macro FAIL code, message
    PUTS \message
    EXIT \code
.endm

.macro POST code
    mov al, \code
    out POST_PORT, al
.endm

.code32
_start:
    PM32_ENTER
    cld
    SERIAL_INIT
.ifdef PV
    jmp pv_start
.endif
    PUTS msg_start
    POST PHASE_BASE + 1

    # A floating bus (no drive on the channel) reads FFh.
    mov dx, ATA_STATUS
    in al, dx
    cmp al, 0xFF
    jne have_disk
    FAIL 1, msg_no_disk
have_disk:

    # Software reset, interrupts disabled at the drive: SRST for a moment, then wait for BSY
    # to clear and read the signature a non-PACKET device leaves.
    mov dx, ATA_DEVICE
    mov al, DEV_MASTER
    out dx, al
    mov dx, ATA_CONTROL
    mov al, DC_NIEN | DC_SRST
    out dx, al
    in al, dx                    # ATA wants SRST held for 5 us: four reads take a while
    in al, dx
    in al, dx
    in al, dx
    mov al, DC_NIEN
    out dx, al
    mov dx, ATA_DEVICE
    mov al, DEV_MASTER           # select device 0 (again: whatever a reset leaves selected),
    out dx, al                   # then wait for its BSY to clear before reading its signature
    call wait_ready
    PUTS msg_reset
    mov dx, ATA_ERROR
    in al, dx
    movzx ebp, al
    call hex8
    PUTS msg_signature
    mov dx, ATA_COUNT
    in al, dx
    movzx ebx, al
    call hex8_space
    mov dx, ATA_LBA_LOW
    in al, dx
    shl ebx, 8
    mov bl, al
    call hex8_space
    mov dx, ATA_LBA_MID
    in al, dx
    shl ebx, 8
    mov bl, al
    call hex8_space
    mov dx, ATA_LBA_HIGH
    in al, dx
    shl ebx, 8
    mov bl, al
    call hex8
    PUTS newline
    cmp ebp, 0x01                # diagnostic code: device 0 passed, no device 1
    jne bad_signature
    cmp ebx, 0x01010000          # count 01h, LBA 01h 00h 00h (the low byte is LBA High)
    jne bad_signature
    jmp signature_ok
bad_signature:
    FAIL 2, msg_bad_signature
signature_ok:

    # Device 1 is absent: with it selected, device 0 answers Status with 00h.
    mov dx, ATA_DEVICE
    mov al, DEV_SLAVE
    out dx, al
    mov dx, ATA_STATUS
    in al, dx
    mov bl, al
    mov dx, ATA_DEVICE
    mov al, DEV_MASTER
    out dx, al
    PUTS msg_slave
    mov al, bl
    call hex8
    PUTS newline
    test bl, bl
    jz slave_ok
    FAIL 12, msg_bad_slave
slave_ok:

    # IRQ 14 reaches vector 2Eh through the slave 8259 (IR6) and the master's cascade (IR2).
    PM32_IDT_FILL unexpected
    PM32_GATE ATA_VECTOR, ata_handler
    PIC_REMAP IRQ_BASE, 0xFB, 0xBF
    mov dword ptr [irq_count], 0
    mov byte ptr [irq_flag], 0
    mov dx, ATA_STATUS
    in al, dx                    # nothing pending at the drive
    mov dx, ATA_CONTROL
    xor al, al
    out dx, al                   # nIEN clear: the drive may interrupt
    sti

    # --- IDENTIFY DEVICE ---------------------------------------------------------------------
    POST PHASE_BASE + 2
    call wait_ready
    mov dx, ATA_STATUS
    mov al, CMD_IDENTIFY
    out dx, al
    call wait_irq
    test al, ST_ERR
    jnz identify_failed
    test al, ST_DRQ
    jz identify_failed
    mov edi, identify
    mov ecx, 256
    mov dx, ATA_DATA
    rep insw
    mov dx, ATA_CONTROL
    in al, dx
    test al, ST_DRQ | ST_BSY | ST_ERR
    jnz identify_failed
    PUTS msg_identify
    mov eax, [identify + 120]    # words 60-61: user-addressable sectors (LBA28)
    mov [capacity], eax
    call serial_dec32
    PUTS msg_sectors
    mov eax, [capacity]
    shr eax, 11
    call serial_dec32
    PUTS msg_mib
    test word ptr [identify + 98], 0x0200     # word 49 bit 9: LBA supported
    jz identify_failed
    PUTS msg_lba
.ifdef PRINT_MODEL
    call print_model
.endif
    cmp dword ptr [capacity], WRITE_LBA + 304
    jae identify_ok
identify_failed:
    FAIL 4, msg_identify_failed
identify_ok:

    # --- 384 sectors from LBA 0, by interrupt ------------------------------------------------
    POST PHASE_BASE + 3
    mov dword ptr [checksum], FNV_OFFSET
    mov ebx, 0
    mov ecx, 0                   # 0 = 256 sectors
    mov al, CMD_READ
    call read_irq
    mov ebx, 256
    mov ecx, 128
    mov al, CMD_READ_NO_RETRY
    call read_irq
    PUTS msg_read
    mov eax, [checksum]
    call serial_hex32
    PUTS newline

    # --- 300 sectors written at LBA 4096, by interrupt ---------------------------------------
    POST PHASE_BASE + 4
    mov ebx, WRITE_LBA
    mov ecx, 200
    mov al, CMD_WRITE
    call write_irq
    mov ebx, WRITE_LBA + 200
    mov ecx, 100
    mov al, CMD_WRITE_NO_RETRY
    call write_irq
    PUTS msg_wrote

    # --- read back and verified, polled with nIEN set ----------------------------------------
    POST PHASE_BASE + 5
    mov eax, [irq_count]
    mov [irq_before], eax
    mov dx, ATA_CONTROL
    mov al, DC_NIEN
    out dx, al
    mov dword ptr [checksum], FNV_OFFSET
    mov ebx, WRITE_LBA
    mov ecx, 0
    call read_polled
    mov ebx, WRITE_LBA + 256
    mov ecx, 44
    call read_polled
    mov dx, ATA_STATUS
    in al, dx                    # acknowledge what the drive has pending ...
    mov dx, ATA_CONTROL
    xor al, al
    out dx, al                   # ... before letting it interrupt again
    mov eax, [irq_count]
    cmp eax, [irq_before]
    je polled_quiet
    FAIL 8, msg_irq_while_masked
polled_quiet:
    PUTS msg_verified
    mov eax, [checksum]
    call serial_hex32
    PUTS newline

    # --- READ MULTIPLE in blocks of 8, 32-bit data transfers ---------------------------------
    POST PHASE_BASE + 6
    call wait_ready
    mov dx, ATA_COUNT
    mov al, MULTIPLE_BLOCK
    out dx, al
    mov dx, ATA_STATUS
    mov al, CMD_SET_MULTIPLE
    out dx, al
    call wait_irq
    test al, ST_ERR
    jnz multiple_failed
    mov dword ptr [checksum], FNV_OFFSET
    mov ebx, WRITE_LBA
    mov ecx, MULTIPLE_SECTORS
    mov al, CMD_READ_MULTIPLE
    call ata_command
    mov dword ptr [blocks_left], MULTIPLE_SECTORS / MULTIPLE_BLOCK
    mov dword ptr [current_lba], WRITE_LBA
multiple_block:
    call wait_irq
    test al, ST_ERR
    jnz multiple_failed
    test al, ST_DRQ
    jz multiple_failed
    mov edi, sector_buf
    mov ecx, MULTIPLE_BLOCK * 128
    mov dx, ATA_DATA
    rep insd
    mov esi, sector_buf
    mov ecx, MULTIPLE_BLOCK * 128
    call checksum_dwords
    xor ebp, ebp
multiple_verify:
    mov ebx, [current_lba]
    mov esi, ebp
    shl esi, 9
    add esi, sector_buf
    call verify_sector
    inc dword ptr [current_lba]
    inc ebp
    cmp ebp, MULTIPLE_BLOCK
    jb multiple_verify
    dec dword ptr [blocks_left]
    jnz multiple_block
    mov dx, ATA_CONTROL
    in al, dx
    test al, ST_DRQ | ST_BSY | ST_ERR
    jnz multiple_failed
    PUTS msg_multiple
    mov eax, [checksum]
    call serial_hex32
    PUTS newline
    jmp multiple_done
multiple_failed:
    FAIL 10, msg_multiple_failed
multiple_done:

    # --- the end of the disk -----------------------------------------------------------------
    POST PHASE_BASE + 7
    mov ebx, [capacity]          # the first LBA past the end
    mov ecx, 1
    mov al, CMD_READ
    call ata_command
    call wait_irq
    call expect_range_error
    PUTS msg_past_end
    mov ebx, [capacity]
    dec ebx                      # the last sector, then one past the end
    mov ecx, 2
    mov al, CMD_READ
    call ata_command
    call wait_irq
    test al, ST_ERR
    jnz no_range_error
    test al, ST_DRQ
    jz no_range_error
    mov edi, sector_buf
    mov ecx, 256
    mov dx, ATA_DATA
    rep insw
    call wait_irq
    call expect_range_error
    PUTS msg_across_end

    POST PHASE_BASE + 8
    PUTS msg_interrupts
    mov eax, [irq_count]
    call serial_dec32
    PUTS newline
    PUTS msg_done
    EXIT 0

# --- routines ----------------------------------------------------------------------------------

# read_irq: AL = command, EBX = LBA, ECX = count (0 = 256): one interrupt per sector, each
# sector folded into [checksum] (clobbers eax, ebx, ecx, edx, esi, edi, ebp)
read_irq:
    call ata_command
    mov ebp, ecx
    test ebp, ebp
    jnz read_irq_sector
    mov ebp, 256
read_irq_sector:
    call wait_irq
    test al, ST_ERR
    jnz read_failed
    test al, ST_DRQ
    jz read_failed
    mov edi, sector_buf
    mov ecx, 256
    mov dx, ATA_DATA
    rep insw
    mov esi, sector_buf
    mov ecx, 128
    call checksum_dwords
    dec ebp
    jnz read_irq_sector
    call expect_idle
    ret
read_failed:
    FAIL 5, msg_read_failed

# write_irq: AL = command, EBX = LBA, ECX = count (1-255): DRQ for the first sector without an
# interrupt, then an interrupt after each sector written (clobbers eax-edi, ebp)
write_irq:
    call ata_command
    mov ebp, ecx
    call wait_drq
    test al, ST_ERR
    jnz write_failed
write_irq_sector:
    push ebx
    call fill_pattern
    pop ebx
    mov esi, sector_buf
    mov ecx, 256
    mov dx, ATA_DATA
    rep outsw
    call wait_irq
    test al, ST_ERR
    jnz write_failed
    inc ebx
    dec ebp
    jz write_irq_last
    test al, ST_DRQ
    jz write_failed
    jmp write_irq_sector
write_irq_last:
    test al, ST_DRQ
    jnz write_failed
    ret
write_failed:
    FAIL 6, msg_write_failed

# read_polled: EBX = LBA, ECX = count (0 = 256), READ SECTORS polling Alternate Status; each
# sector verified against the write pattern and folded into [checksum] (clobbers eax-edi, ebp)
read_polled:
    mov al, CMD_READ
    call ata_command
    mov ebp, ecx
    test ebp, ebp
    jnz read_polled_sector
    mov ebp, 256
read_polled_sector:
    call wait_drq
    test al, ST_ERR
    jnz read_failed
    test al, ST_DRQ
    jz read_failed
    mov edi, sector_buf
    mov ecx, 256
    mov dx, ATA_DATA
    rep insw
    mov esi, sector_buf
    call verify_sector
    mov esi, sector_buf
    mov ecx, 128
    call checksum_dwords
    inc ebx
    dec ebp
    jnz read_polled_sector
    call expect_idle
    ret

# ata_command: AL = command, EBX = LBA (28 bits), ECX = sector count: select device 0 in LBA
# mode, wait for BSY to clear, load the task file and write the command (clobbers eax, edx, esi)
ata_command:
    mov esi, eax
    mov eax, ebx
    shr eax, 24
    and al, 0x0F
    or al, DEV_MASTER_LBA
    mov dx, ATA_DEVICE
    out dx, al
    call wait_ready
    mov dx, ATA_COUNT
    mov al, cl
    out dx, al
    mov eax, ebx
    mov dx, ATA_LBA_LOW
    out dx, al
    shr eax, 8
    mov dx, ATA_LBA_MID
    out dx, al
    shr eax, 8
    mov dx, ATA_LBA_HIGH
    out dx, al
    mov eax, esi
    mov dx, ATA_STATUS
    out dx, al
    ret

# wait_ready: poll Alternate Status until BSY is clear; AL = status (clobbers eax, edx)
wait_ready:
    push ecx
    mov ecx, POLL_LIMIT
    mov dx, ATA_CONTROL
wait_ready_poll:
    in al, dx
    test al, ST_BSY
    jz wait_ready_done
    dec ecx
    jnz wait_ready_poll
    jmp busy_forever
wait_ready_done:
    pop ecx
    ret

# wait_drq: poll Alternate Status until BSY is clear and DRQ or ERR is set; AL = status
# (clobbers eax, edx)
wait_drq:
    push ecx
    mov ecx, POLL_LIMIT
    mov dx, ATA_CONTROL
wait_drq_poll:
    in al, dx
    test al, ST_BSY
    jnz wait_drq_again
    test al, ST_DRQ | ST_ERR
    jnz wait_drq_done
wait_drq_again:
    dec ecx
    jnz wait_drq_poll
    jmp busy_forever
wait_drq_done:
    pop ecx
    ret

busy_forever:
    FAIL 9, msg_busy

# expect_idle: after the last sector of a read the drive is ready with DRQ clear (clobbers eax, edx)
expect_idle:
    call wait_ready
    test al, ST_DRQ | ST_ERR
    jnz read_failed
    test al, ST_DRDY
    jz read_failed
    ret

# expect_range_error: AL = status of a command that reached past the end: ERR with IDNF or
# ABRT (ATA allows either), no DRQ (clobbers eax, edx)
expect_range_error:
    test al, ST_DRQ
    jnz no_range_error
    test al, ST_ERR
    jz no_range_error
    mov dx, ATA_ERROR
    in al, dx
    test al, ERR_IDNF_ABRT
    jz no_range_error
    ret
no_range_error:
    FAIL 11, msg_no_range_error

# wait_irq: sleep until the IRQ 14 handler has run; AL = the status it read. CLI around the
# check and STI; HLT (the STI shadow covers HLT) so the interrupt cannot slip in between.
wait_irq:
    cli
    cmp byte ptr [irq_flag], 0
    jne wait_irq_got
    sti
    hlt
    jmp wait_irq
wait_irq_got:
    mov byte ptr [irq_flag], 0
    sti
    mov al, [irq_status]
    ret

# fill_pattern: sector_buf := the pattern of sector EBX (clobbers eax, ebx, ecx)
fill_pattern:
    shl ebx, 7
    xor ecx, ecx
fill_pattern_dword:
    mov eax, ebx
    or eax, ecx
    imul eax, eax, PATTERN_MUL
    mov [sector_buf + ecx * 4], eax
    inc ecx
    cmp ecx, 128
    jb fill_pattern_dword
    ret

# verify_sector: the 512 bytes at ESI must hold the pattern of sector EBX (clobbers eax, ecx, edx)
verify_sector:
    xor ecx, ecx
verify_dword:
    mov eax, ebx
    shl eax, 7
    or eax, ecx
    imul eax, eax, PATTERN_MUL
    cmp eax, [esi + ecx * 4]
    jne verify_failed
    inc ecx
    cmp ecx, 128
    jb verify_dword
    ret
verify_failed:
    PUTS msg_mismatch
    mov eax, ebx
    call serial_dec32
    PUTS newline
    EXIT 7

# checksum_dwords: fold ECX dwords at ESI into [checksum], FNV-1a on dwords (clobbers eax, ecx, esi)
checksum_dwords:
    mov eax, [checksum]
checksum_dword:
    xor eax, [esi]
    imul eax, eax, FNV_PRIME
    add esi, 4
    dec ecx
    jnz checksum_dword
    mov [checksum], eax
    ret

# hex8: print AL as two hex digits; hex8_space: the same and a space (clobbers eax, ecx, edx)
hex8_space:
    call hex8
    mov al, ' '
    call serial_putc
    ret
hex8:
    mov cl, al
    shr al, 4
    call hex_digit
    mov al, cl
    and al, 0x0F
    call hex_digit
    ret
hex_digit:
    cmp al, 10
    jb hex_digit_number
    add al, 'a' - 10 - '0'
hex_digit_number:
    add al, '0'
    call serial_putc
    ret

.ifdef PRINT_MODEL
# print_model: IDENTIFY words 27-46, first character of each pair in the high byte, without
# the trailing spaces (clobbers eax, ecx, edx, esi)
print_model:
    xor ecx, ecx
print_model_swap:
    mov ax, [identify + 54 + ecx * 2]
    xchg al, ah
    mov [model + ecx * 2], ax
    inc ecx
    cmp ecx, 20
    jb print_model_swap
    mov ecx, 40
print_model_trim:
    mov byte ptr [model + ecx], 0
    dec ecx
    js print_model_print
    cmp byte ptr [model + ecx], ' '
    je print_model_trim
print_model_print:
    PUTS msg_model
    PUTS model
    mov al, '"'
    call serial_putc
    PUTS newline
    ret
.endif

# IRQ 14: read Status (acknowledging the drive's interrupt), count it, EOI slave then master
ata_handler:
    push eax
    push edx
    mov dx, ATA_STATUS
    in al, dx
    mov [irq_status], al
    mov byte ptr [irq_flag], 1
    inc dword ptr [irq_count]
    mov al, 0x20
    out PIC2_CMD, al
    out PIC1_CMD, al
    pop edx
    pop eax
    iretd

unexpected:
    FAIL 3, msg_unexpected

.ifdef PV
# --- the enlightened build: the workload over the VMBus-like channel ---------------------------

.macro SAY label
    mov esi, \label
    call con_puts
.endm

.macro EXPECT_OK count, code
    mov ecx, \count
    mov ebx, \code
    call pv_expect_ok
.endm

pv_start:
    PUTS msg_pv_start
    POST PHASE_BASE + 1
    PM32_IDT_FILL unexpected                 # the message ring is polled: its vector is unexpected
    PM32_GATE STORAGE_VECTOR, pv_storage_handler
    PIC_REMAP IRQ_BASE, 0xFF, 0xFF           # nothing comes through the 8259
    mov dword ptr [irq_count], 0
    mov byte ptr [irq_flag], 0
    sti
    call hv_enable
    test eax, eax
    jz pv_interface
    FAIL 1, msg_pv_no_interface
pv_interface:
    call vmbus_connect
    test eax, eax
    jz pv_connected
    FAIL 1, msg_pv_no_channel
pv_connected:
    mov eax, storage_channel
    cmp dword ptr [eax + CHANNEL_RELID], 0
    jne pv_have_storage
    FAIL 1, msg_pv_no_storage
pv_have_storage:
    mov esi, console_channel
    mov eax, CONSOLE_VECTOR
    call vmbus_open
    test eax, eax
    jnz pv_open_failed
    mov esi, storage_channel
    mov eax, STORAGE_VECTOR
    call vmbus_open
    test eax, eax
    jz pv_opened
pv_open_failed:
    FAIL 14, msg_pv_open_failed
pv_opened:
    SAY msg_pv_storage
    mov eax, storage_channel
    mov eax, [eax + CHANNEL_RELID]
    call con_dec32
    SAY msg_pv_console
    mov eax, console_channel
    mov eax, [eax + CHANNEL_RELID]
    call con_dec32
    call con_newline
    call con_flush

    # --- capacity --------------------------------------------------------------------------
    POST PHASE_BASE + 2
    mov eax, STOR_QUERY_CAPACITY
    xor ebx, ebx
    xor ecx, ecx
    mov edi, pv_buffer
    mov edx, 1
    call storvsc_request
    call pv_submit_and_wait
    call storvsc_completion
    test eax, eax
    jnz pv_capacity_failed
    mov [capacity], ebx
    SAY msg_pv_capacity
    mov eax, [capacity]
    call con_dec32
    SAY msg_sectors
    mov eax, [capacity]
    shr eax, 11
    call con_dec32
    SAY msg_pv_mib
    call con_flush
    cmp dword ptr [capacity], WRITE_LBA + 304
    jae pv_capacity_ok
pv_capacity_failed:
    FAIL 4, msg_pv_too_small
pv_capacity_ok:

    # --- 384 sectors from LBA 0, two requests, one signal, one interrupt --------------------
    POST PHASE_BASE + 3
    mov eax, STOR_READ
    xor ebx, ebx
    mov ecx, 256
    mov edi, pv_buffer
    mov edx, 2
    call storvsc_request
    mov eax, STOR_READ
    mov ebx, 256
    mov ecx, 128
    mov edi, pv_buffer + 256 * 512
    mov edx, 3
    call storvsc_request
    call pv_submit_and_wait
    EXPECT_OK 2, 5
    mov dword ptr [checksum], FNV_OFFSET
    mov esi, pv_buffer
    mov ecx, 384 * 128
    call checksum_dwords
    SAY msg_read
    mov eax, [checksum]
    call con_hex32
    call con_newline
    call con_flush

    # --- 300 sectors written at LBA 4096 -----------------------------------------------------
    POST PHASE_BASE + 4
    mov ebx, WRITE_LBA
    mov edi, pv_buffer
    mov ebp, WRITTEN_SECTORS
    call pv_fill_patterns
    mov eax, STOR_WRITE
    mov ebx, WRITE_LBA
    mov ecx, 200
    mov edi, pv_buffer
    mov edx, 4
    call storvsc_request
    mov eax, STOR_WRITE
    mov ebx, WRITE_LBA + 200
    mov ecx, 100
    mov edi, pv_buffer + 200 * 512
    mov edx, 5
    call storvsc_request
    call pv_submit_and_wait
    EXPECT_OK 2, 6
    SAY msg_wrote
    call con_flush

    # --- read back with the inbound ring's interrupt mask set: completions polled ------------
    POST PHASE_BASE + 5
    mov eax, [irq_count]
    mov [irq_before], eax
    mov eax, storage_rings + RING_INBOUND
    mov dword ptr [eax + RING_INTERRUPT_MASK], 1
    mov edi, pv_buffer
    mov ecx, WRITTEN_SECTORS * 128
    xor eax, eax
    rep stosd
    mov eax, STOR_READ
    mov ebx, WRITE_LBA
    mov ecx, 256
    mov edi, pv_buffer
    mov edx, 6
    call storvsc_request
    mov eax, STOR_READ
    mov ebx, WRITE_LBA + 256
    mov ecx, 44
    mov edi, pv_buffer + 256 * 512
    mov edx, 7
    call storvsc_request
    mov esi, storage_channel
    call vsc_signal
    mov ecx, POLL_LIMIT
pv_poll:
    mov esi, storage_rings + RING_INBOUND
    mov eax, [esi + RING_WRITE_INDEX]
    sub eax, [esi + RING_READ_INDEX]
    and eax, RING_WRAP
    cmp eax, 2 * 32                          # both completions are there
    jae pv_polled
    dec ecx
    jnz pv_poll
    FAIL 9, msg_busy
pv_polled:
    EXPECT_OK 2, 5
    mov eax, storage_rings + RING_INBOUND
    mov dword ptr [eax + RING_INTERRUPT_MASK], 0
    mov eax, [irq_count]
    cmp eax, [irq_before]
    je pv_polled_quiet
    FAIL 8, msg_irq_while_masked
pv_polled_quiet:
    mov ebx, WRITE_LBA
    mov esi, pv_buffer
    mov ebp, WRITTEN_SECTORS
    call pv_verify_and_checksum
    SAY msg_verified
    mov eax, [checksum]
    call con_hex32
    call con_newline
    call con_flush

    # --- 64 sectors as 8 requests of 8, one batch --------------------------------------------
    POST PHASE_BASE + 6
    mov edi, pv_buffer
    mov ecx, MULTIPLE_SECTORS * 128
    xor eax, eax
    rep stosd
    xor ebp, ebp
pv_block_request:
    mov eax, STOR_READ
    mov ebx, ebp
    shl ebx, 3
    add ebx, WRITE_LBA
    mov ecx, MULTIPLE_BLOCK
    mov edi, ebp
    shl edi, 12
    add edi, pv_buffer
    lea edx, [ebp + 8]
    call storvsc_request
    inc ebp
    cmp ebp, MULTIPLE_SECTORS / MULTIPLE_BLOCK
    jb pv_block_request
    call pv_submit_and_wait
    EXPECT_OK MULTIPLE_SECTORS / MULTIPLE_BLOCK, 10
    mov ebx, WRITE_LBA
    mov esi, pv_buffer
    mov ebp, MULTIPLE_SECTORS
    call pv_verify_and_checksum
    SAY msg_multiple
    mov eax, [checksum]
    call con_hex32
    call con_newline
    call con_flush

    # --- the end of the disk -----------------------------------------------------------------
    POST PHASE_BASE + 7
    mov eax, STOR_READ
    mov ebx, [capacity]
    mov ecx, 1
    mov edi, pv_buffer
    mov edx, 16
    call storvsc_request
    call pv_submit_and_wait
    call storvsc_completion
    cmp eax, STOR_OUT_OF_RANGE
    jne pv_no_range_error
    test ecx, ecx
    jnz pv_no_range_error
    SAY msg_past_end
    call con_flush
    mov eax, STOR_READ
    mov ebx, [capacity]
    dec ebx
    mov ecx, 2
    mov edi, pv_buffer
    mov edx, 17
    call storvsc_request
    call pv_submit_and_wait
    call storvsc_completion
    cmp eax, STOR_OUT_OF_RANGE
    jne pv_no_range_error
    cmp ecx, 1
    jne pv_no_range_error
    SAY msg_across_end
    call con_flush

    POST PHASE_BASE + 8
    SAY msg_interrupts
    mov eax, [irq_count]
    call con_dec32
    call con_newline
    SAY msg_done
    call con_flush
    EXIT 0
pv_no_range_error:
    FAIL 11, msg_no_range_error

# pv_submit_and_wait: signal the storage batch, sleep until its completion interrupt
# (clobbers eax-edi)
pv_submit_and_wait:
    mov esi, storage_channel
    call vsc_signal
    call wait_irq
    ret

# pv_expect_ok: ECX completions must be there, each OK for all its sectors; EBX = the exit code
# otherwise (clobbers eax-edi)
pv_expect_ok:
    push ecx
    push ebx
    call storvsc_completion
    pop ebx
    cmp edx, -1
    je pv_request_failed
    test eax, eax
    jnz pv_request_failed
    pop ecx
    dec ecx
    jnz pv_expect_ok
    ret
pv_request_failed:
    PUTS msg_pv_request_failed
    mov dx, DEBUG_EXIT_PORT
    mov eax, ebx
    out dx, eax
    hlt

# pv_fill_patterns: EBP sectors from LBA EBX at EDI, each with its write pattern
# (clobbers eax, ebx, ecx, edi, ebp)
pv_fill_patterns:
    mov eax, ebx
    shl eax, 7
    mov ecx, 128
pv_fill_dword:
    push eax
    imul eax, eax, PATTERN_MUL
    stosd
    pop eax
    inc eax
    dec ecx
    jnz pv_fill_dword
    inc ebx
    dec ebp
    jnz pv_fill_patterns
    ret

# pv_verify_and_checksum: EBP sectors at ESI from LBA EBX: each verified, all folded into a
# fresh [checksum] (clobbers eax-esi, ebp)
pv_verify_and_checksum:
    push esi
    push ebp
pv_verify_sector:
    call verify_sector
    add esi, 512
    inc ebx
    dec ebp
    jnz pv_verify_sector
    pop ecx
    pop esi
    shl ecx, 7
    mov dword ptr [checksum], FNV_OFFSET
    call checksum_dwords
    ret

# The storage channel's interrupt: vtemu injects the vector itself (no 8259, so no EOI), as
# a SynIC interrupt with auto-EOI would arrive.
pv_storage_handler:
    mov byte ptr [irq_flag], 1
    inc dword ptr [irq_count]
    iretd

VMBUS_ROUTINES
.endif

SERIAL_ROUTINES
PM32_ROUTINES
PM32_TABLES

msg_start:
    .ascii "disk: ATA primary master, PIO\n"
    .byte 0
msg_no_disk:
    .ascii "no disk: status reads FFh (floating bus)\n"
    .byte 0
msg_reset:
    .ascii "reset: error "
    .byte 0
msg_signature:
    .ascii ", signature "
    .byte 0
msg_bad_signature:
    .ascii "wrong reset signature\n"
    .byte 0
msg_slave:
    .ascii "device 1: status "
    .byte 0
msg_bad_slave:
    .ascii "device 1 should read as absent (00h)\n"
    .byte 0
msg_identify:
    .ascii "identify: "
    .byte 0
msg_sectors:
    .ascii " sectors ("
    .byte 0
msg_mib:
    .ascii " MiB)"
    .byte 0
msg_lba:
    .ascii ", LBA supported\n"
    .byte 0
msg_model:
    .ascii "model: \""
    .byte 0
msg_identify_failed:
    .ascii "IDENTIFY DEVICE failed, or the disk has fewer than 4400 sectors\n"
    .byte 0
msg_read:
    .ascii "read 384 sectors at LBA 0 by interrupt: checksum "
    .byte 0
msg_read_failed:
    .ascii "read failed\n"
    .byte 0
msg_wrote:
    .ascii "wrote 300 sectors at LBA 4096 by interrupt\n"
    .byte 0
msg_write_failed:
    .ascii "write failed\n"
    .byte 0
msg_irq_while_masked:
    .ascii "interrupt while nIEN was set\n"
    .byte 0
msg_verified:
    .ascii "read back 300 sectors by polling, verified: checksum "
    .byte 0
msg_mismatch:
    .ascii "read-back mismatch in sector "
    .byte 0
msg_multiple:
    .ascii "read multiple: 64 sectors in blocks of 8, verified: checksum "
    .byte 0
msg_multiple_failed:
    .ascii "READ MULTIPLE failed\n"
    .byte 0
msg_past_end:
    .ascii "read past the end: error\n"
    .byte 0
msg_across_end:
    .ascii "read across the end: 1 sector, then error\n"
    .byte 0
msg_no_range_error:
    .ascii "no error for a sector past the end\n"
    .byte 0
msg_busy:
    .ascii "the drive stayed busy\n"
    .byte 0
msg_interrupts:
    .ascii "interrupts: "
    .byte 0
msg_done:
    .ascii "disk: done\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected interrupt\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0
.ifdef PV
msg_pv_start:
    .ascii "disk: synthetic storage over the VMBus-like channel\n"
    .byte 0
msg_pv_no_interface:
    .ascii "no hypercall interface: the enlightened build needs --mode pv\n"
    .byte 0
msg_pv_no_channel:
    .ascii "no channel: contact or offers failed\n"
    .byte 0
msg_pv_no_storage:
    .ascii "no disk: no synthetic storage offered\n"
    .byte 0
msg_pv_open_failed:
    .ascii "opening a channel failed\n"
    .byte 0
msg_pv_storage:
    .ascii "channels: storage "
    .byte 0
msg_pv_console:
    .ascii ", console "
    .byte 0
msg_pv_capacity:
    .ascii "capacity: "
    .byte 0
msg_pv_mib:
    .ascii " MiB)\n"
    .byte 0
msg_pv_too_small:
    .ascii "the disk has fewer than 4400 sectors\n"
    .byte 0
msg_pv_request_failed:
    .ascii "a storage request failed\n"
    .byte 0
.endif

.ifdef PV
.balign 4096
MULTIBOOT_IMAGE_END 0x6000 + PV_BSS_SIZE
.equ pv_base, _image_end + 0x6000
.equ hypercall_page, pv_base
.equ vmbus_input, pv_base + 0x1000
.equ vmbus_message_ring, pv_base + 0x2000
.equ storage_rings, pv_base + 0x4000
.equ console_rings, pv_base + 0x8000
.equ vmbus_scratch, pv_base + 0xC000
.equ storage_channel, pv_base + 0xD000
.equ console_channel, pv_base + 0xD010
.equ con_length, pv_base + 0xD020
.equ pv_buffer, pv_base + 0x10000        # 384 sectors
.else
.balign 8
MULTIBOOT_IMAGE_END 0x6000
.endif
.equ idt, _image_end
.equ irq_count, _image_end + 0x800
.equ irq_before, _image_end + 0x804
.equ irq_flag, _image_end + 0x808
.equ irq_status, _image_end + 0x809
.equ checksum, _image_end + 0x80C
.equ capacity, _image_end + 0x810
.equ blocks_left, _image_end + 0x814
.equ current_lba, _image_end + 0x818
.equ model, _image_end + 0x900
.equ identify, _image_end + 0x1000
.equ sector_buf, _image_end + 0x2000
.equ stack_top, _bss_end
