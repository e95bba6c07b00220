"""vtemu: an x86 instruction-level emulator with Intel VT-x semantics.

Layers (imports flow downward only):
    cli -> bench/debug -> hv/modes -> vmx/mmu/devices -> machine
"""

__version__ = "0.1.0"
