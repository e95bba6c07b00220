"""The error that carries a hypercall status out of the channel code.

Statuses are the hypercall ABI's HV_STATUS codes (TLFS 6.0 appendix "Hypercall status
codes", in vtemu/hv/hypercalls/abi.py); one travels back to the guest in bits 15:0 of the
hypercall result (TLFS 3.8).
"""

from __future__ import annotations

from vtemu.hv.hypercalls.abi import HvStatus

__all__ = ["HvStatus", "VmbusError"]


class VmbusError(Exception):
    """Something the guest gave the channel is unusable: the hypercall returns `status`."""

    def __init__(self, status: HvStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
