"""`--mode bt`: binary translation of guest kernel code (engine.py), on the VT-x machine that
still runs user code directly, as VMware's monitor ran user code directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtemu.modes import vtx
from vtemu.modes.bt.engine import BtEngine

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu


def configure(cpu: "VmxCpu", partition: "Partition") -> None:
    vtx.configure(cpu, partition)
    BtEngine(cpu, partition)
