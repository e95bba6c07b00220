"""The paravirtual interface of `--mode pv`: hypercalls in the shape of the Hyper-V TLFS.

    abi.py       input/result values, HV_STATUS codes, register conventions (TLFS "Hypercall Inputs"/"Outputs")
    table.py     the dispatch table and `register` (how other parts add calls)
    service.py   VMCALL exits: checks, dispatch, rep continuation; the synthetic MSRs' handlers
    page.py      HV_X64_MSR_GUEST_OS_ID / HV_X64_MSR_HYPERCALL and the hypercall page overlay
    params.py    checked access to parameter blocks in guest memory
    calls.py     the calls vtemu implements (TLFS codes and vtemu's 8001h-80FFh)
    identity.py  CPUID 40000001h-40000004h as pv mode reports them

To add a call (before partitions are built), from any module the pv mode imports:

    from vtemu.hv.hypercalls import HvStatus, HypercallInput, HypercallResult, register

    def post_message(partition, cpu, call: HypercallInput) -> HypercallResult:
        ...                                   # raise HypercallError(status) on bad input
        return HypercallResult(HvStatus.SUCCESS)

    register(0x005C, "HvCallPostMessage", post_message, fast=False)
"""

from vtemu.hv.hypercalls import calls as _calls  # noqa: F401  (registers the built-in calls)
from vtemu.hv.hypercalls.abi import HvStatus, HypercallError, HypercallInput, input_value, result_value
from vtemu.hv.hypercalls.service import HypercallService
from vtemu.hv.hypercalls.table import HYPERCALLS, Hypercall, HypercallResult, register

__all__ = ["HvStatus", "HypercallError", "HypercallInput", "HypercallResult", "Hypercall",
           "HYPERCALLS", "HypercallService", "input_value", "register", "result_value"]
