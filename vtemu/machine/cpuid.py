"""What the silicon's CPUID says: the leaves of the processor model Unicorn's core emulates.

A hypervisor's CPUID policy starts from the hardware's values and removes what it does not
virtualize. Here the "hardware" is QEMU's TCG inside Unicorn, so its CPUID (read once from a
scratch engine with no hooks) is the list of instructions that really execute.
"""

from __future__ import annotations

from functools import cache

import unicorn
import unicorn.x86_const as U

_CPUID_HLT = bytes.fromhex("0fa2f4")
_CODE = 0x1000


@cache
def _engine() -> unicorn.Uc:
    engine = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    engine.mem_map(0, 0x10000)
    engine.mem_write(_CODE, _CPUID_HLT)
    return engine


@cache
def native_cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """EAX, EBX, ECX, EDX of CPUID(leaf, subleaf) on Unicorn's processor model."""
    engine = _engine()
    engine.reg_write(U.UC_X86_REG_RAX, leaf)
    engine.reg_write(U.UC_X86_REG_RCX, subleaf)
    engine.emu_start(_CODE, _CODE + len(_CPUID_HLT))
    return tuple(engine.reg_read(reg) & 0xFFFFFFFF for reg in  # type: ignore[return-value]
                 (U.UC_X86_REG_EAX, U.UC_X86_REG_EBX, U.UC_X86_REG_ECX, U.UC_X86_REG_EDX))
