/*
 * vtemu firmware: the 64 KiB ROM at the top of the 4 GiB space (aliased at F0000h).
 *
 * From the reset vector it does what a multiboot boot loader does:
 *   real mode -> protected mode (flat 32-bit segments),
 *   reads the kernel image over QEMU's fw_cfg interface (selector 510h, data 511h),
 *   loads it per its Multiboot v1 header (a.out kludge or ELF32 program headers),
 *   builds the multiboot information structure (memory sizes, memory map, command line,
 *   boot loader name) and enters the kernel with EAX = 2BADB002h, EBX = &info,
 *   CR0.PE = 1, paging off, interrupts off (Multiboot Specification 0.6.96, 3.2).
 * On failure it prints one line on COM1 and halts with interrupts off.
 *
 * Assembled at F0000h: labels are linear addresses in the alias window, which is where
 * the 32-bit code runs; 16-bit code uses label - F0000h as offsets within segment F000h.
 */

.include "x86.inc"

.equ ROM_BASE, 0xF0000
.equ FW_CFG_SELECTOR, 0x510
.equ FW_CFG_DATA, 0x511
.equ FW_CFG_SIGNATURE, 0x00
.equ FW_CFG_RAM_SIZE, 0x03
.equ FW_CFG_KERNEL_SIZE, 0x08
.equ FW_CFG_KERNEL_DATA, 0x11
.equ FW_CFG_CMDLINE_SIZE, 0x14
.equ FW_CFG_CMDLINE_DATA, 0x15
.equ COM1, 0x3F8
.equ POST, 0x80

.equ STACK_TOP, 0x8000
.equ VARS, 0x6000
.equ RAM_SIZE_VAR, VARS + 0
.equ KERNEL_SIZE_VAR, VARS + 4
.equ STAGING_VAR, VARS + 8
.equ ENTRY_VAR, VARS + 12
.equ LOAD_END_VAR, VARS + 16
.equ MBI, 0x9000
.equ MMAP, 0x9100
.equ CMDLINE, 0x9400
.equ CMDLINE_MAX, 0xC00
.equ MB_MAGIC, 0x1BADB002
.equ MB_BOOTLOADER_MAGIC, 0x2BADB002
.equ ELF_MAGIC, 0x464C457F
.equ KERNEL_MIN_ADDR, 0x100000

.code16
rom_start:

/* ---- real mode: CS = F000h, base F0000h after the reset vector's far jump ---------- */
init16:
    cli
    cld
    xor ax, ax
    mov ss, ax
    mov sp, STACK_TOP
    mov ds, ax
    mov es, ax
    mov al, 0x01
    out POST, al
    mov ax, 0xF000
    mov ds, ax
    /* o32 lgdt [gdt_descriptor - rom_start] with DS = F000h (full 32-bit GDT base) */
    LGDT16_32 gdt_descriptor - rom_start
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    /* jmp dword 0x08:protected32 (66 EA off32 sel16; Keystone cannot encode it) */
    .byte 0x66, 0xEA
    .long protected32
    .word 0x08

.code32
protected32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov esp, STACK_TOP
    mov al, 0x02
    out POST, al
    call check_fw_cfg
    call read_sizes
    call read_kernel
    call load_kernel
    call build_info
    mov al, 0x0F
    out POST, al
    mov eax, MB_BOOTLOADER_MAGIC
    mov ebx, MBI
    mov ecx, [ENTRY_VAR]
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    jmp ecx

/* ---- fw_cfg ------------------------------------------------------------------------ */
/* select item AX */
fw_cfg_select:
    push edx
    mov dx, FW_CFG_SELECTOR
    out dx, ax
    pop edx
    ret

/* EAX = next 4 bytes of the selected item, little-endian */
fw_cfg_read32:
    push ecx
    push edx
    xor eax, eax
    mov ecx, 4
    mov dx, FW_CFG_DATA
fw_cfg_read32_byte:
    in al, dx
    ror eax, 8
    dec ecx
    jnz fw_cfg_read32_byte
    pop edx
    pop ecx
    ret

check_fw_cfg:
    mov ax, FW_CFG_SIGNATURE
    call fw_cfg_select
    call fw_cfg_read32
    cmp eax, 0x554D4551              /* "QEMU" */
    jne fail_fw_cfg
    ret

read_sizes:
    mov ax, FW_CFG_RAM_SIZE
    call fw_cfg_select
    call fw_cfg_read32
    mov ebx, eax
    call fw_cfg_read32
    test eax, eax                    /* 4 GiB or more: use what fits below 4 GiB */
    jz read_sizes_ram_ok
    mov ebx, 0xC0000000
read_sizes_ram_ok:
    mov [RAM_SIZE_VAR], ebx
    mov ax, FW_CFG_KERNEL_SIZE
    call fw_cfg_select
    call fw_cfg_read32
    test eax, eax
    jz fail_no_kernel
    mov [KERNEL_SIZE_VAR], eax
    /* staging buffer: the top of RAM, page aligned */
    mov ecx, [RAM_SIZE_VAR]
    sub ecx, eax
    jb fail_too_big
    and ecx, 0xFFFFF000
    cmp ecx, KERNEL_MIN_ADDR
    jb fail_too_big
    mov [STAGING_VAR], ecx
    ret

read_kernel:
    mov ax, FW_CFG_KERNEL_DATA
    call fw_cfg_select
    mov edi, [STAGING_VAR]
    mov ecx, [KERNEL_SIZE_VAR]
    mov dx, FW_CFG_DATA
    rep insb
    mov al, 0x03
    out POST, al
    ret

/* ---- multiboot header ------------------------------------------------------------- */
/* ESI = address of the header in the staging copy, EBP = its offset in the image */
find_header:
    mov esi, [STAGING_VAR]
    xor ebp, ebp
find_header_next:
    mov eax, ebp
    add eax, 12
    cmp eax, [KERNEL_SIZE_VAR]
    ja fail_no_header
    cmp ebp, 8192
    jae fail_no_header
    cmp dword ptr [esi + ebp], MB_MAGIC
    jne find_header_skip
    mov eax, [esi + ebp]
    add eax, [esi + ebp + 4]
    add eax, [esi + ebp + 8]
    jz find_header_found
find_header_skip:
    add ebp, 4
    jmp find_header_next
find_header_found:
    add esi, ebp
    ret

load_kernel:
    call find_header
    mov eax, [esi + 4]
    test eax, 0x0000FFFC             /* required-feature bits this loader does not provide */
    jnz fail_flags
    test eax, 0x00010000
    jz load_elf

/* a.out kludge (Multiboot 3.1.3): load [load_addr, load_end_addr) from the image offset
   header_offset - (header_addr - load_addr), then clear up to bss_end_addr */
load_aout:
    mov ebx, [esi + 16]              /* load_addr */
    cmp ebx, KERNEL_MIN_ADDR
    jb fail_load_address
    mov eax, [esi + 12]              /* header_addr - load_addr must not exceed the */
    sub eax, ebx                     /* header's own offset in the file */
    jb fail_header
    cmp eax, ebp
    ja fail_header
    mov edx, ebp
    sub edx, eax
    mov eax, edx                     /* EAX = file offset of load_addr */
    mov ecx, [esi + 20]              /* load_end_addr, 0 = to the end of the file */
    test ecx, ecx
    jnz load_aout_length
    mov ecx, [KERNEL_SIZE_VAR]
    sub ecx, eax
    add ecx, ebx
load_aout_length:
    sub ecx, ebx                     /* ECX = bytes to load */
    jb fail_header
    mov edx, eax
    add edx, ecx
    cmp edx, [KERNEL_SIZE_VAR]
    ja fail_header
    mov edx, [esi + 24]              /* bss_end_addr */
    push dword ptr [esi + 28]        /* entry_addr */
    pop dword ptr [ENTRY_VAR]
    mov esi, [STAGING_VAR]
    add esi, eax
    mov edi, ebx
    call copy_and_clear
    ret

/* ELF32 (Multiboot 3.1.2 without bit 16): copy every PT_LOAD to p_paddr, clear to p_memsz */
load_elf:
    mov esi, [STAGING_VAR]
    cmp dword ptr [esi], ELF_MAGIC
    jne fail_header
    cmp byte ptr [esi + 4], 1        /* ELFCLASS32 */
    jne fail_header
    mov eax, [esi + 24]
    mov [ENTRY_VAR], eax
    mov ebx, [esi + 28]              /* e_phoff */
    add ebx, esi
    movzx ecx, word ptr [esi + 44]   /* e_phnum */
load_elf_next:
    test ecx, ecx
    jz load_elf_done
    push ecx
    push ebx
    cmp dword ptr [ebx], 1           /* PT_LOAD */
    jne load_elf_skip
    mov edi, [ebx + 12]              /* p_paddr */
    cmp edi, KERNEL_MIN_ADDR
    jb fail_load_address
    mov esi, [STAGING_VAR]
    add esi, [ebx + 4]               /* p_offset */
    mov ecx, [ebx + 16]              /* p_filesz */
    mov edx, [ebx + 20]              /* p_memsz */
    add edx, edi
    call copy_and_clear
load_elf_skip:
    pop ebx
    pop ecx
    mov esi, [STAGING_VAR]
    movzx eax, word ptr [esi + 42]   /* e_phentsize */
    add ebx, eax
    dec ecx
    jmp load_elf_next
load_elf_done:
    ret

/* copy ECX bytes ESI -> EDI, then clear up to EDX (if EDX > EDI); keeps the staging copy
   intact by refusing destinations that overlap it */
copy_and_clear:
    mov eax, edi
    add eax, ecx
    cmp edx, eax
    jae copy_and_clear_bss_ok
    mov edx, eax
copy_and_clear_bss_ok:
    cmp edx, [STAGING_VAR]
    ja fail_overlap
    mov [LOAD_END_VAR], edx
    rep movsb
    mov ecx, edx
    sub ecx, edi
    xor eax, eax
    rep stosb
    ret

/* ---- multiboot information (Multiboot 3.3) ---------------------------------------- */
build_info:
    mov edi, MBI
    mov ecx, 0x1000
    xor eax, eax
    rep stosb
    mov dword ptr [MBI + 0], 0x00000245  /* mem, cmdline, mmap, boot_loader_name */
    mov dword ptr [MBI + 4], 640
    mov eax, [RAM_SIZE_VAR]
    shr eax, 10
    sub eax, 1024
    mov [MBI + 8], eax
    mov dword ptr [MBI + 16], CMDLINE
    mov dword ptr [MBI + 64], loader_name
    call build_mmap
    call read_cmdline
    ret

/* memory map entries: {u32 size = 20, u64 base, u64 length, u32 type} */
build_mmap:
    mov edi, MMAP
    xor eax, eax
    mov ebx, 0x9FC00
    mov edx, 1
    call mmap_entry
    mov eax, 0x9FC00
    mov ebx, 0x400
    mov edx, 2
    call mmap_entry
    mov eax, 0xF0000
    mov ebx, 0x10000
    mov edx, 2
    call mmap_entry
    mov eax, 0x100000
    mov ebx, [RAM_SIZE_VAR]
    sub ebx, eax
    mov edx, 1
    call mmap_entry
    mov eax, 0xFFFF0000
    mov ebx, 0x10000
    mov edx, 2
    call mmap_entry
    mov eax, edi
    sub eax, MMAP
    mov [MBI + 44], eax
    mov dword ptr [MBI + 48], MMAP
    ret

/* entry at EDI: base EAX, length EBX, type EDX; advances EDI */
mmap_entry:
    mov dword ptr [edi], 20
    mov [edi + 4], eax
    mov dword ptr [edi + 8], 0
    mov [edi + 12], ebx
    mov dword ptr [edi + 16], 0
    mov [edi + 20], edx
    add edi, 24
    ret

read_cmdline:
    mov ax, FW_CFG_CMDLINE_SIZE
    call fw_cfg_select
    call fw_cfg_read32
    mov ecx, eax
    cmp ecx, CMDLINE_MAX - 1
    jbe read_cmdline_fits
    mov ecx, CMDLINE_MAX - 1
read_cmdline_fits:
    mov ax, FW_CFG_CMDLINE_DATA
    call fw_cfg_select
    mov edi, CMDLINE
    mov dx, FW_CFG_DATA
    rep insb
    mov byte ptr [edi], 0
    ret

/* ---- failures: one line on COM1, then halt with interrupts off -------------------- */
fail_fw_cfg:
    mov esi, msg_fw_cfg
    jmp fail
fail_no_kernel:
    mov esi, msg_no_kernel
    jmp fail
fail_too_big:
    mov esi, msg_too_big
    jmp fail
fail_no_header:
    mov esi, msg_no_header
    jmp fail
fail_flags:
    mov esi, msg_flags
    jmp fail
fail_header:
    mov esi, msg_header
    jmp fail
fail_load_address:
    mov esi, msg_load_address
    jmp fail
fail_overlap:
    mov esi, msg_overlap
    jmp fail

fail:
    mov dx, COM1
fail_next:
    lodsb
    test al, al
    jz fail_halt
    out dx, al
    jmp fail_next
fail_halt:
    mov al, 0xEE
    out POST, al
    cli
    hlt
    jmp fail_halt

msg_fw_cfg:       .ascii "vtemu firmware: no fw_cfg device\n"
                  .byte 0
msg_no_kernel:    .ascii "vtemu firmware: no kernel image\n"
                  .byte 0
msg_too_big:      .ascii "vtemu firmware: kernel image does not fit in RAM\n"
                  .byte 0
msg_no_header:    .ascii "vtemu firmware: no multiboot header in the first 8 KiB\n"
                  .byte 0
msg_flags:        .ascii "vtemu firmware: multiboot header requires unsupported features\n"
                  .byte 0
msg_header:       .ascii "vtemu firmware: malformed multiboot header or ELF image\n"
                  .byte 0
msg_load_address: .ascii "vtemu firmware: kernel load address below 1 MiB\n"
                  .byte 0
msg_overlap:      .ascii "vtemu firmware: kernel overlaps its staging copy at the top of RAM\n"
                  .byte 0
loader_name:      .ascii "vtemu firmware"
                  .byte 0

/* ---- GDT: null, flat 32-bit code (08h), flat data (10h) ----------------------------
   The accessed bits are preset: the GDT lives in ROM, and a segment load would otherwise
   try to set them (SDM Vol. 3A 3.4.5.1) with a write the ROM discards. */
.balign 8
gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF
    .quad 0x00CF93000000FFFF
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

/* ---- reset vector at FFFFFFF0h: CS.base = FFFF0000h, IP = FFF0h (SDM Vol. 3A 9.1.4) -- */
.org 0xFFF0
.code16
reset_vector:
    /* jmp far F000h:init16 (EA off16 sel16), reloading CS with the alias window base */
    .byte 0xEA
    .word init16 - ROM_BASE
    .word 0xF000
    .fill 11, 1, 0xFF
