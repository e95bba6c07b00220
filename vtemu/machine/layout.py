"""Every port, address and IRQ of the reference machine, in one place, each with its source.

The reference machine is a subset of QEMU's `pc` machine so that the same multiboot image
boots on both (differential testing). Guest-physical addresses (GPA) describe what the guest
sees; host-physical addresses (HPA) describe where the hypervisor really keeps things
(Unicorn's physical address space). Only EPT/shadow entries connect the two.
"""

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --- Guest-physical memory map (QEMU `pc`, hw/i386/pc.c and pc_piix.c) -------------------------
DEFAULT_RAM_SIZE = 128 * MiB
MIN_RAM_SIZE = 2 * MiB              # firmware stack, multiboot info and a 1 MiB kernel need this
MAX_RAM_SIZE = 3 * GiB              # below QEMU's PCI hole (0xC0000000); no RAM above 4 GiB here
CONVENTIONAL_RAM_END = 0xA0000      # 640 KiB; QEMU multiboot reports mem_lower = 640
EBDA_BASE = 0x9FC00                 # SeaBIOS reserves the last KiB below 640 KiB (e820 type 2)
LEGACY_HOLE = (0xA0000, 0xF0000)    # VGA window + option-ROM space: unbacked here (EPT violations)
HIGH_RAM_BASE = 0x100000            # 1 MiB: multiboot kernels load here

# Firmware ROM: the top 64 KiB below 4 GiB, aliased at 0xF0000 (the "BIOS segment" F000).
# Intel SDM Vol. 3A 9.1.4: after reset CS.selector = F000h, CS.base = FFFF0000h, EIP = FFF0h,
# so the first instruction is fetched at FFFFFFF0h.
ROM_SIZE = 64 * KiB
ROM_GPA = 0xFFFF0000
ROM_ALIAS_GPA = 0xF0000
RESET_CS_SELECTOR = 0xF000
RESET_CS_BASE = 0xFFFF0000
RESET_IP = 0xFFF0
RESET_VECTOR = RESET_CS_BASE + RESET_IP

# Local APIC (SDM Vol. 3A 10.4.1, IA32_APIC_BASE default): xAPIC MMIO page.
LAPIC_GPA = 0xFEE00000

# --- Host-physical layout (vtemu's own choice, invisible to guests) ----------------------------
# Partition RAM lives far above anything a guest can name; GPA != HPA makes every second-level
# translation visible. Each partition gets its own window so partitions cannot alias.
PARTITION_RAM_HPA = 0x10_0000_0000
PARTITION_HPA_STRIDE = 0x4_0000_0000      # 16 GiB per partition
ROM_HPA = 0x7F_0000_0000                  # one read-only firmware image shared by all partitions
FIRMWARE_TABLES_HPA = 0x7E_0000_0000      # per-partition read-only pages (ACPI tables), 64 KiB each
FIRMWARE_TABLES_STRIDE = 64 * KiB
VMM_PRIVATE_HPA = 0x80_0000_0000          # EPT tables, shadow tables, translation caches
VMM_PRIVATE_SIZE = 64 * MiB
# PAE shadow roots must sit below 4 GiB (a PAE CR3 holds 32 bits, SDM 4.4.1): a small private
# window per partition there, as KVM keeps its PAE roots in DMA32 memory.
VMM_LOW_HPA = 0xC000_0000
VMM_LOW_SIZE = 1 * MiB

# --- I/O ports -------------------------------------------------------------------------------
# 16550 UART COM1: ports 3F8h-3FFh, IRQ 4 (PC/AT convention; QEMU isa-serial index 0).
COM1_BASE = 0x3F8
COM1_IRQ = 4
# isa-debug-exit: QEMU hw/misc/debugexit.c; iobase/iosize chosen by the command line
# `-device isa-debug-exit,iobase=0xf4,iosize=0x4`. QEMU exits with (v << 1) | 1.
DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_SIZE = 4
# POST diagnostic / I/O delay port (PC/AT; QEMU ioport80 in hw/i386/pc.c).
POST_PORT = 0x80
# Benchmark marks (guests/include/bench.inc): command E0h, count E4h, both 32-bit. Attached
# only by `vtemu bench` (vtemu/bench/probe.py); elsewhere, as on QEMU, the ports are unclaimed.
BENCH_PORT_BASE = 0xE0
BENCH_PORT_SIZE = 8
# 8254 PIT: counters 0-2 at 40h-42h, control word 43h; counter 0 drives IRQ 0 (Intel 8254 datasheet).
PIT_BASE = 0x40
PIT_IRQ = 0
PIT_FREQUENCY_HZ = 1_193_182          # 14.31818 MHz / 12, the PC's PIT input clock
# 8259A PIC pair: master 20h/21h, slave A0h/A1h, slave cascaded on master IR2 (Intel 8259A datasheet).
PIC_MASTER_BASE = 0x20
PIC_SLAVE_BASE = 0xA0
PIC_CASCADE_IRQ = 2
# MC146818 CMOS/RTC: index 70h (bit 7 = NMI disable), data 71h, IRQ 8.
CMOS_BASE = 0x70
RTC_IRQ = 8
# QEMU fw_cfg (docs/specs/fw_cfg.rst): selector 510h (16-bit), data 511h (8-bit) on x86.
FW_CFG_SELECTOR_PORT = 0x510
FW_CFG_DATA_PORT = 0x511

# --- Multiboot v1 (Multiboot Specification 0.6.96) --------------------------------------------
MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MULTIBOOT_SEARCH_LIMIT = 8192
# Where vtemu's firmware builds the multiboot information structure and its memory map.
MULTIBOOT_INFO_GPA = 0x9000
FIRMWARE_STACK_TOP = 0x8000


@dataclass(frozen=True)
class PortRange:
    base: int
    size: int
    source: str


PORT_MAP: dict[str, PortRange] = {
    "pic-master": PortRange(PIC_MASTER_BASE, 2, "Intel 8259A"),
    "pit": PortRange(PIT_BASE, 4, "Intel 8254"),
    "cmos": PortRange(CMOS_BASE, 2, "Motorola MC146818"),
    "post": PortRange(POST_PORT, 1, "PC/AT POST port"),
    "pic-slave": PortRange(PIC_SLAVE_BASE, 2, "Intel 8259A"),
    "debug-exit": PortRange(DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, "QEMU isa-debug-exit"),
    "com1": PortRange(COM1_BASE, 8, "NS16550A"),
    "fw-cfg": PortRange(FW_CFG_SELECTOR_PORT, 2, "QEMU fw_cfg"),
}


# Binary translation: one 4 MiB window per vCPU and code mode (modes/bt/region.py).
BT_HPA = 0x90_0000_0000
BT_WINDOW_SIZE = 4 * MiB


def bt_window_hpa(partition_index: int, vcpu_index: int, long_mode: bool) -> int:
    """Host memory behind a vCPU's translation-cache window (VMM-private)."""
    slot = (partition_index * 256 + vcpu_index) * 2 + int(long_mode)
    return BT_HPA + slot * BT_WINDOW_SIZE


# Deprivileged mode: one 4 MiB VMM window per vCPU (shadow GDT/IDT, the VMM's TSS;
# modes/deprivileged/compression.py).
DEPRIVILEGED_HPA = 0xA0_0000_0000


def deprivileged_window_hpa(partition_index: int, vcpu_index: int) -> int:
    """Host memory behind a vCPU's ring-compression window (VMM-private)."""
    return DEPRIVILEGED_HPA + (partition_index * 256 + vcpu_index) * BT_WINDOW_SIZE


def partition_ram_hpa(partition_index: int) -> int:
    """HPA where a partition's RAM buffer is mapped into the vCPUs' physical space."""
    return PARTITION_RAM_HPA + partition_index * PARTITION_HPA_STRIDE
