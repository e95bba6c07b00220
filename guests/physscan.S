# physscan: a hostile guest. It reads every page of its guest-physical address space
# through its own page tables, looking for a 16-byte canary, and reports every place it finds
# it. tests/guests/test_physscan.py plants the canary once in guest RAM (the guest must find
# exactly that one) and in the hypervisor's private memory: EPT table pages and a freshly
# allocated VMM-private page (the guest must not find those: no guest-physical address
# reaches them). Without plants (the QEMU differential run) it finds nothing.
#
# The canary is CANARY_LO, CANARY_HI (little-endian qwords). The image holds it only XORed
# with MASK; the guest rebuilds it in R8/R9 and never stores those registers, so the scan
# cannot find the guest's own copy.
#
# RAM: the multiboot memory map's highest available address, rounded up to 2 MiB (QEMU keeps
# its ACPI tables in the last 128 KiB of RAM and reports them as reserved; vtemu reports all
# of it: both give 128 MiB by default). Every 4 KiB page below it is scanned except the
# legacy hole A0000h-FFFFFh, which is not RAM (VGA window, option ROMs and the BIOS alias;
# what is there differs between machines). The window at 1 GiB (PDPT[1] -> a PD of its own)
# maps one 2 MiB chunk of guest-physical space with a 2 MiB page, and the next chunk behind
# it; MOV CR3 flushes the window for the next chunk. (2 MiB pages rather than 512 PTEs per
# chunk: the same pages are read, with 2 instead of 512 page-table writes per chunk, which
# matters once page-table writes trap under shadow paging.) Every 8-byte aligned qword is
# compared with the canary's first half and, on a match, the next qword with its second
# half (which may lie on the next page or in the next chunk).
#
# Beyond RAM: one probe every 16 MiB from the RAM top up to 4 GiB, through a 4 KiB page
# (pd_w[2] -> pt_w[0]). That space is unbacked: vtemu reads it as open bus (all ones),
# QEMU's `pc` as zeros (the 16 MiB grid misses its HPET, local APIC, I/O APIC and firmware
# ROM), so the guest prints how many probes read as all zeros or all ones, not the values,
# and prints the address of any probe that reads anything else.
#
# Exit codes: 0 the scan finished (whatever it found in RAM), 1 unexpected exception, 2 no
# memory map, 3 a canary beyond RAM, 4 more than MAX_HITS canaries.

.include "multiboot.inc"
.include "serial.inc"
.include "x86.inc"
.include "long64.inc"

.equ MASK, 0x5A5A5A5A5A5A5A5A
.equ CANARY_LO_MASKED, 0x0B1BDBC6E6A4B8E4    # 0x5141819CBCFEE2BE ^ MASK
.equ CANARY_HI_MASKED, 0x6E5EF2A90A9A3BEE    # 0x3404A8F350C061B4 ^ MASK
.equ WINDOW, 0x40000000
.equ CHUNK, 0x200000
.equ PDE_2M, PTE_P + PTE_PS      # read-only is enough
.equ PROBE, WINDOW + 2 * CHUNK   # through pd_w[2] -> pt_w[0]
.equ PROBE_STRIDE, 0x1000000     # 16 MiB
.equ HOLE_START, 0xA0000
.equ HOLE_END, 0x100000
.equ FOUR_GIB, 0x100000000
.equ MAX_HITS, 16
.equ MB_FLAGS_MMAP, 1 << 6
.equ MMAP_AVAILABLE, 1

.code32
_start:
    mov esp, stack_top
    mov ebp, ebx                     # the multiboot information
    SERIAL_INIT
    LONG64_ENTER long_mode

.code64
long_mode:
    mov rsp, stack_top
    IDT64_FILL unexpected
    call idt_load
    PUTS msg_start

    # --- RAM top from the memory map ----------------------------------------------------------
    test dword ptr [rbp + MULTIBOOT_INFO_FLAGS], MB_FLAGS_MMAP
    jz no_mmap
    mov ebx, [rbp + MULTIBOOT_INFO_MMAP_ADDR]
    mov ecx, [rbp + MULTIBOOT_INFO_MMAP_LENGTH]
    add rcx, rbx                     # end of the map
    xor r12d, r12d                   # highest end of available RAM below 4 GiB
mmap_entry:
    cmp rbx, rcx
    jae mmap_done
    cmp dword ptr [rbx + 20], MMAP_AVAILABLE
    jne mmap_next
    mov rax, [rbx + 4]               # base
    add rax, [rbx + 12]              # + length
    mov rdx, FOUR_GIB
    cmp rax, rdx
    ja mmap_next
    cmp rax, r12
    jbe mmap_next
    mov r12, rax
mmap_next:
    mov eax, [rbx]                   # size of the entry, not counting this field
    lea rbx, [rbx + rax + 4]
    jmp mmap_entry
mmap_done:
    test r12, r12
    jz no_mmap
    add r12, CHUNK - 1
    and r12, -0x200000               # RAM top, 2 MiB aligned (`-CHUNK` would be a load)
    mov [ram_top], r12
    PUTS msg_ram
    mov rax, [ram_top]
    shr rax, 20
    call serial_dec32
    PUTS msg_ram_end

    # --- the window: PDPT[1] -> pd_w; pd_w[0], pd_w[1]: 2 MiB pages; pd_w[2] -> pt_w -------------
    mov eax, pd_w
    or eax, PTE_P + PTE_RW
    mov edi, pdpt
    mov [rdi + 8], rax
    mov edi, pd_w
    mov eax, pt_w
    or eax, PTE_P + PTE_RW
    mov [rdi + 16], rax

    mov r8, CANARY_LO_MASKED
    mov rax, MASK
    xor r8, rax
    mov r9, CANARY_HI_MASKED
    xor r9, rax

    # --- RAM, chunk by chunk, page by page -----------------------------------------------------------
    xor r12d, r12d                   # chunk base (GPA)
chunk_loop:
    mov edi, pd_w
    lea rax, [r12 + PDE_2M]
    mov [rdi], rax                   # the chunk
    add rax, CHUNK
    mov [rdi + 8], rax               # the next one
    mov rax, cr3
    mov cr3, rax
    xor r13d, r13d                   # page offset in the chunk
page_loop:
    lea rax, [r12 + r13]
    cmp rax, HOLE_START
    jb scan_page
    cmp rax, HOLE_END
    jb next_page
scan_page:
    inc dword ptr [pages]
    mov esi, WINDOW
    add rsi, r13
    lea rdi, [rsi + 0x1000]
scan_qword:
    cmp r8, [rsi]
    je first_half
scan_next:
    add rsi, 8
    cmp rsi, rdi
    jb scan_qword
next_page:
    add r13d, 0x1000
    cmp r13d, CHUNK
    jb page_loop
    add r12, CHUNK
    cmp r12, [ram_top]
    jb chunk_loop

    PUTS msg_pages
    mov eax, [pages]
    call serial_dec32
    PUTS msg_found
    mov eax, [hits]
    call serial_dec32
    PUTS newline

    # --- beyond RAM: a probe every 16 MiB up to 4 GiB, through a 4 KiB page ------------------------
    mov r12, [ram_top]
    add r12, PROBE_STRIDE - 1
    and r12, -0x1000000              # 16 MiB aligned (`-PROBE_STRIDE` would be a load)
probe_loop:
    lea rax, [r12 + PTE_P]
    mov edi, pt_w
    mov [rdi], rax
    mov eax, PROBE
    invlpg [rax]
    mov rax, [rax]                   # MOV only: vtemu emulates MOV on unbacked memory
    inc dword ptr [probes]
    cmp rax, r8
    jne probe_no_canary
    mov edx, PROBE + 8
    mov rdx, [rdx]
    cmp rdx, r9
    jne probe_no_canary
    PUTS msg_probe_canary
    mov rax, r12
    call serial_hex64
    PUTS newline
    EXIT 3
probe_no_canary:
    test rax, rax
    jz probe_open_bus
    cmp rax, -1
    je probe_open_bus
    PUTS msg_probe_other
    mov rax, r12
    call serial_hex64
    PUTS newline
    jmp probe_next
probe_open_bus:
    inc dword ptr [open_bus]
probe_next:
    add r12, PROBE_STRIDE
    mov rax, FOUR_GIB
    cmp r12, rax
    jb probe_loop
    PUTS msg_probes
    mov eax, [probes]
    call serial_dec32
    PUTS msg_open_bus
    mov eax, [open_bus]
    call serial_dec32
    PUTS msg_open_bus_end
    PUTS msg_done
    EXIT 0

# the first half matched at RSI (window address): check the second half, report the GPA
first_half:
    mov rax, [rsi + 8]
    cmp rax, r9
    jne scan_next
    inc dword ptr [hits]
    cmp dword ptr [hits], MAX_HITS
    ja too_many
    push rsi
    push rdi
    PUTS msg_canary
    mov rax, [rsp + 8]
    sub rax, WINDOW
    add rax, r12
    call serial_hex64
    PUTS newline
    pop rdi
    pop rsi
    jmp scan_next

no_mmap:
    PUTS msg_no_mmap
    EXIT 2
too_many:
    PUTS msg_too_many
    EXIT 4
unexpected:
    PUTS msg_unexpected
    EXIT 1

SERIAL_ROUTINES
LONG64_ROUTINES
LONG64_TABLES

msg_start:
    .ascii "physscan: looking for the canary in every guest-physical page\n"
    .byte 0
msg_ram:
    .ascii "RAM: 0-640 KiB and 1-"
    .byte 0
msg_ram_end:
    .ascii " MiB (memory map, rounded up to 2 MiB)\n"
    .byte 0
msg_canary:
    .ascii "canary at GPA "
    .byte 0
msg_pages:
    .ascii "RAM pages scanned "
    .byte 0
msg_found:
    .ascii ", canaries found "
    .byte 0
msg_probe_canary:
    .ascii "canary beyond RAM at GPA "
    .byte 0
msg_probe_other:
    .ascii "data beyond RAM at GPA "
    .byte 0
msg_probes:
    .ascii "beyond RAM to 4 GiB: "
    .byte 0
msg_open_bus:
    .ascii " probes, "
    .byte 0
msg_open_bus_end:
    .ascii " read as all zeros or all ones\n"
    .byte 0
msg_done:
    .ascii "physscan done\n"
    .byte 0
msg_no_mmap:
    .ascii "no memory map\n"
    .byte 0
msg_too_many:
    .ascii "too many canaries\n"
    .byte 0
msg_unexpected:
    .ascii "unexpected exception\n"
    .byte 0
newline:
    .ascii "\n"
    .byte 0

.balign 4096
MULTIBOOT_IMAGE_END LONG64_BSS_SIZE + 0x5000
LONG64_BSS
.equ pd_w, _image_end + LONG64_BSS_SIZE
.equ pt_w, _image_end + LONG64_BSS_SIZE + 0x1000
.equ vars, _image_end + LONG64_BSS_SIZE + 0x2000
.equ ram_top, vars
.equ pages, vars + 8
.equ hits, vars + 12
.equ probes, vars + 16
.equ open_bus, vars + 20
.equ stack_top, _bss_end
