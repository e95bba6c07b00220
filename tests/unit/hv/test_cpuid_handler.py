"""CPUID exits (10) fed to the hypervisor's handler: the partition's CPUID policy answers."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig
from vtemu.hv.outcome import Resume
from vtemu.vmx.reasons import ExitReason


def _text(*registers: int) -> bytes:
    return b"".join(value.to_bytes(4, "little") for value in registers)


def _cpuid(rig: Rig, leaf: int, subleaf: int = 0, code: bytes | str = "cpuid") -> tuple[int, ...]:
    insn = rig.place(code)
    rig.set(rax=leaf, rcx=subleaf)
    outcome = rig.handle(rig.exit_for(ExitReason.CPUID, insn))
    assert isinstance(outcome, Resume)
    assert rig.get("rip") == insn.address + insn.size
    return tuple(rig.get(name) for name in ("rax", "rbx", "rcx", "rdx"))


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.protected_mode()
    return rig


def test_leaf0_vendor_string_is_ebx_edx_ecx(rig: Rig) -> None:
    eax, ebx, ecx, edx = _cpuid(rig, 0)
    assert eax == 0xD
    assert _text(ebx, edx, ecx) == b"GenuineIntel"


def test_leaf1_reports_the_hypervisor_and_hides_vmx(rig: Rig) -> None:
    _, ebx, ecx, _ = _cpuid(rig, 1)
    assert ecx >> 31 == 1                       # hypervisor present (CPUID.1:ECX[31])
    assert not ecx & (1 << 5)                   # no VMX: nested virtualization is not offered
    assert ebx >> 24 == 0                       # initial APIC id = vCPU index
    assert (ebx >> 16) & 0xFF == 1              # one logical processor in this partition


def test_hypervisor_vendor_leaf(rig: Rig) -> None:
    eax, ebx, ecx, edx = _cpuid(rig, 0x40000000)
    assert eax == 0x40000006                    # highest hypervisor leaf (TLFS 2.4)
    assert _text(ebx, ecx, edx) == b"VtemuVirtCPU"


def test_hypervisor_limits_leaf_counts_vcpus(rig: Rig) -> None:
    assert _cpuid(rig, 0x40000005)[:2] == (1, 1)


def test_brand_string_leaves(rig: Rig) -> None:
    brand = b"".join(_text(*_cpuid(rig, leaf)) for leaf in (0x80000002, 0x80000003, 0x80000004))
    assert brand.rstrip(b"\0") == b"vtemu virtual CPU (VT-x)"


def test_leaf_above_the_basic_range_reports_the_highest_basic_leaf(rig: Rig) -> None:
    assert _cpuid(rig, 0x20) == _cpuid(rig, 0xD)


def test_rip_advances_by_the_instruction_length(rig: Rig) -> None:
    # 66 0F A2: CPUID with a (meaningless) operand-size prefix is 3 bytes long.
    eax, *_ = _cpuid(rig, 0, code=bytes.fromhex("66 0f a2"))
    assert eax == 0xD


def test_results_zero_the_upper_halves_in_64_bit_mode() -> None:
    rig = Rig()
    rig.long_mode()
    insn = rig.place("cpuid")
    rig.set(rbx=2**64 - 1, rdx=2**64 - 1, rax=0xFFFF_FFFF_0000_0000, rcx=0)  # leaf 0: EAX only
    rig.handle(rig.exit_for(ExitReason.CPUID, insn))
    assert rig.get("rax") == 0xD
    assert all(rig.get(name) >> 32 == 0 for name in ("rbx", "rcx", "rdx"))


def test_leaf_is_eax_whatever_the_hypervisor_last_wrote() -> None:
    """CPUID takes its leaf from EAX only. The hypervisor's last register write here is a
    64-bit one (as after setting RIP or RSP of a higher-half kernel)."""
    rig = Rig()
    rig.long_mode()
    insn = rig.place("cpuid")
    rig.set(rcx=0, rax=0)
    rig.set(r8=0xFFFF_FFFF_8000_0000)   # an unrelated register, last written
    rig.handle(rig.exit_for(ExitReason.CPUID, insn))
    assert rig.get("rax") == 0xD        # leaf 0, not "leaf 0xFFFFFFFF00000000"


def test_each_vcpu_of_a_partition_reports_its_apic_id_and_the_count() -> None:
    rig = Rig(vcpus=2, index=1)
    rig.protected_mode()
    _, ebx, _, _ = _cpuid(rig, 1)
    assert ebx >> 24 == 1 and (ebx >> 16) & 0xFF == 2
    assert _cpuid(rig, 0x40000005)[:2] == (2, 2)
