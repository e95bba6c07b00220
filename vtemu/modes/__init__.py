"""CPU virtualization techniques, registered by name (--mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from vtemu.modes import bt, deprivileged, pv, vtx

if TYPE_CHECKING:
    from vtemu.hv.partition import Partition
    from vtemu.vmx.cpu import VmxCpu

Configure = Callable[["VmxCpu", "Partition"], None]

MODES: dict[str, Configure] = {
    "vtx": vtx.configure,
    "bt": bt.configure,
    "pv": pv.configure,
    "deprivileged": deprivileged.configure,
}

# Defines a guest source is assembled with when it runs in a mode (pv: the enlightened build).
SOURCE_DEFINES: dict[str, dict[str, str]] = {"pv": pv.SOURCE_DEFINES}
