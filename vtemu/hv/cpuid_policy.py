"""The CPUID a guest sees: the silicon's features minus what vtemu does not virtualize, plus the
hypervisor bit and leaves 40000000h-40000006h in the shape of the Hyper-V TLFS (section 2.4,
"Hypervisor CPUID Leaves") with vtemu's own vendor id.

Features are removed when vtemu cannot provide them faithfully or deterministically: VMX
(no nested virtualization), XSAVE/AVX (no XSETBV support), RDRAND/RDSEED (host randomness
would break replay), MONITOR/MWAIT, the TSC-deadline timer, SMEP and FSGSBASE (their CR4 bits are not allowed), MCE/MCA (no machine-check MSRs),
and the thermal/debug-store features.
"""

from __future__ import annotations

from vtemu.machine.cpuid import native_cpuid
from vtemu.machine.vcpu import RESET_EDX

HYPERVISOR_BASE = 0x40000000
HYPERVISOR_MAX = 0x40000006
VENDOR = b"VtemuVirtCPU"  # 12 bytes, EBX:ECX:EDX as the TLFS vendor-id leaf
BRAND = b"vtemu virtual CPU (VT-x)"
VERSION = (0, 1, 0)

# CPUID.01H:ECX bits kept (SDM Vol. 2A Table 3-10).
LEAF1_ECX_KEEP = ((1 << 0) | (1 << 1) | (1 << 9) | (1 << 12) | (1 << 13) | (1 << 19) | (1 << 20)
                  | (1 << 22) | (1 << 23) | (1 << 25))
LEAF1_ECX_HYPERVISOR = 1 << 31
# CPUID.01H:EDX bits kept (Table 3-11): FPU VME DE PSE TSC MSR PAE CX8 SEP MTRR PGE CMOV PAT
# PSE36 CLFSH MMX FXSR SSE SSE2 (no MCE, MCA, APIC, DS, ACPI, SS, HTT, TM, PBE).
LEAF1_EDX_KEEP = sum(1 << bit for bit in (0, 1, 2, 3, 4, 5, 6, 8, 11, 12, 13, 15, 16, 17, 19,
                                           23, 24, 25, 26))
# The local APIC (EDX bit 9) and x2APIC (ECX bit 21) are vtemu's own (devices/lapic.py); HTT
# (EDX bit 28) says EBX[23:16] counts the logical processors, set when there are several.
LEAF1_EDX_APIC = 1 << 9
LEAF1_EDX_HTT = 1 << 28
LEAF1_ECX_X2APIC = 1 << 21
# Leaf 0BH, extended topology (SDM Vol. 2A CPUID, Table 3-8): level types in ECX[15:8].
TOPOLOGY_SMT, TOPOLOGY_CORE = 1, 2
# CPUID.07H:EBX: BMI1, BMI2, ERMS.
LEAF7_EBX_KEEP = (1 << 3) | (1 << 8) | (1 << 9)
# CPUID.80000001H: ECX LAHF/SAHF, ABM/LZCNT; EDX SYSCALL, NX, 1-GiB pages, RDTSCP, LM.
EXT1_ECX_KEEP = (1 << 0) | (1 << 5)
EXT1_EDX_KEEP = (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29)
# 1-GiB pages (bit 26) are advertised whatever Unicorn's model says: vtemu's page walk
# implements them (mmu/paging.py), and a guest must be able to know it may use them.
EXT1_EDX_PAGE1GB = 1 << 26


def _text(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4))


class CpuidPolicy:
    """CPUID values for one partition."""

    def __init__(self, vcpus: int = 1) -> None:
        self.vcpus = vcpus

    def query(self, leaf: int, subleaf: int, apic_id: int) -> tuple[int, int, int, int]:
        if HYPERVISOR_BASE <= leaf <= HYPERVISOR_MAX:
            return self._hypervisor(leaf)
        if leaf == 0:
            genu, inei, ntel = _text(b"GenuineIntel")
            return (0xD, genu, ntel, inei)  # the vendor string is EBX, EDX, ECX (SDM CPUID)
        if leaf == 1:
            return self._leaf1(apic_id)
        if leaf == 0xB:
            return self._topology(subleaf, apic_id)
        if leaf == 7:
            return (0, native_cpuid(7, 0)[1] & LEAF7_EBX_KEEP, 0, 0) if subleaf == 0 else (0, 0, 0, 0)
        if leaf == 0x80000000:
            return (0x80000008, 0, 0, 0)
        if leaf == 0x80000001:
            native = native_cpuid(leaf)
            return (0, 0, native[2] & EXT1_ECX_KEEP, native[3] & EXT1_EDX_KEEP | EXT1_EDX_PAGE1GB)
        if 0x80000002 <= leaf <= 0x80000004:
            brand = BRAND.ljust(48, b"\0")
            return _text(brand[(leaf - 0x80000002) * 16:][:16])  # type: ignore[return-value]
        if leaf == 0x80000008:
            return (native_cpuid(leaf)[0] & 0xFFFF, 0, 0, 0)
        if leaf <= 0xD or 0x80000000 <= leaf <= 0x80000008:
            return (0, 0, 0, 0)
        return self.query(0xD, subleaf, apic_id)  # out of range: the highest basic leaf (SDM)

    def _leaf1(self, apic_id: int) -> tuple[int, int, int, int]:
        _, _, ecx, edx = native_cpuid(1)
        ebx = (apic_id << 24) | (self.vcpus << 16) | (8 << 8)  # CLFLUSH line: 8 * 8 bytes
        edx = (edx & LEAF1_EDX_KEEP) | LEAF1_EDX_APIC | (LEAF1_EDX_HTT if self.vcpus > 1 else 0)
        ecx = (ecx & LEAF1_ECX_KEEP) | LEAF1_ECX_HYPERVISOR | LEAF1_ECX_X2APIC
        return (RESET_EDX, ebx, ecx, edx)

    def _topology(self, subleaf: int, apic_id: int) -> tuple[int, int, int, int]:
        """One thread per core, every vCPU a core of one package: the SMT level has shift 0
        and one processor, the core level shifts by enough bits for all vCPUs; EDX is the
        x2APIC ID at every level, ECX[7:0] echoes the subleaf."""
        if subleaf == 0:
            return (0, 1, (TOPOLOGY_SMT << 8) | subleaf, apic_id)
        if subleaf == 1:
            shift = max(0, (self.vcpus - 1).bit_length())
            return (shift, self.vcpus, (TOPOLOGY_CORE << 8) | subleaf, apic_id)
        return (0, 0, subleaf & 0xFF, apic_id)

    def _hypervisor(self, leaf: int) -> tuple[int, int, int, int]:
        """TLFS 2.4: vendor/max leaf, interface, version, features, recommendations, limits."""
        if leaf == HYPERVISOR_BASE:
            return (HYPERVISOR_MAX, *_text(VENDOR))
        if leaf == HYPERVISOR_BASE + 1:
            return (0, 0, 0, 0)  # no hypercall interface in this mode ("Hv#1" comes with PV)
        if leaf == HYPERVISOR_BASE + 2:
            major, minor, build = VERSION
            return (build, (major << 16) | minor, 0, 0)
        if leaf == HYPERVISOR_BASE + 4:
            return (0, 0xFFFFFFFF, 0, 0)  # spinlock retries: never notify
        if leaf == HYPERVISOR_BASE + 5:
            return (self.vcpus, self.vcpus, 0, 0)
        if leaf == HYPERVISOR_BASE + 6:
            return (1 << 3, 0, 0, 0)  # hardware features in use: second-level address translation
        return (0, 0, 0, 0)
