"""A cycle cost model: what one iteration would cost on hardware, from the events vtemu counted.

    modeled cycles per iteration = sum over events e of (count of e per iteration) x cost(e)

The counts are measured (the hypervisor's counters over the benchmark's loop; guest
instructions from a counted run); the per-event costs are parameters, named and documented
below with where each default comes from, and overridable from a JSON or TOML file
(`vtemu bench --cost-model FILE`, a flat table of name = cycles). These are MODELED
cycles of a hypothetical machine, not a measurement: vtemu's wall time is an emulator's time
(Python handling exits, Unicorn running guest code), which is reported beside them and never
converted into cycles.

Where no published figure is used, the source says "assumption" and why the value is in the
right order of magnitude; change it in a file and the whole report follows.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vtemu.errors import BadInput


@dataclass(frozen=True)
class CostParameter:
    name: str
    cycles: float
    event: str          # what is counted, per iteration
    source: str         # where the default comes from


DEFAULT_PARAMETERS: tuple[CostParameter, ...] = (
    CostParameter(
        "guest_instruction", 1.0,
        "guest instructions retired (from the counted run; under bt the vCPU's count, which "
        "includes translated-code instructions)",
        "assumption: about one cycle per instruction for the simple integer code of these "
        "loops on an out-of-order core (the CPI ~1 regime); the paper's 'native' columns"),
    CostParameter(
        "vm_exit", 2000.0,
        "VM exits that are not hypercalls (every reason), each a VM exit + VM entry round trip",
        "Landau, Ben-Yehuda, Gordon, 'SplitX: Split Guest/Hypervisor Execution on Multi-Core', "
        "WIOV 2011: a VM exit + entry round trip costs on the order of 2,000 cycles on "
        "Nehalem-era processors with KVM. (First-generation VT-x was far slower: Adams & "
        "Agesen, ASPLOS 2006, measured an exiting IN at 15,826 cycles on a Pentium 4; set "
        "vm_exit to ~12000 to model that machine.)"),
    CostParameter(
        "hypercall", 2000.0,
        "hypercalls (pv: VMCALLs the hypervisor served as TLFS calls)",
        "a hypercall under VT-x is a VMCALL exit + entry: same round trip as vm_exit (SplitX, "
        "above); the handler's own work is not modeled separately"),
    CostParameter(
        "bt_callout", 200.0,
        "binary-translation callouts (translated code calling the monitor: sensitive "
        "instructions, exit stubs, lookup misses)",
        "Adams & Agesen, ASPLOS 2006, Section 6.2: the software VMM's IN, a short translated "
        "sequence calling into the virtual chipset, ran ~15x faster than a native IN of 3,209 "
        "cycles, i.e. ~210 cycles; their adaptive PTE-write sequence took 391 cycles"),
    CostParameter(
        "bt_translated_instruction", 500.0,
        "guest instructions translated by binary translation (one-time, amortized)",
        "assumption: a translator decodes, analyses and emits code for each guest instruction "
        "(hundreds of cycles each); Adams & Agesen note translation cost matters only for code "
        "that runs rarely, which the per-iteration amortization shows"),
    CostParameter(
        "page_walk_reference", 20.0,
        "memory references of page walks (TLB fills: guest walks, and under EPT each guest "
        "reference's nested walk; shadow: the hypervisor's walks of guest tables)",
        "assumption: walk entries mostly hit in the data caches (an L2-hit latency of ~10-20 "
        "cycles); a 2D walk takes up to 24 references (Bhargava et al., 'Accelerating "
        "Two-Dimensional Page Walks for Virtualized Systems', ASPLOS 2008)"),
)
PARAMETER_NAMES = tuple(p.name for p in DEFAULT_PARAMETERS)


@dataclass(frozen=True)
class CostModel:
    costs: Mapping[str, float]
    origin: str = "defaults"        # "defaults" or the file the overrides came from

    def cycles(self, events: Mapping[str, float]) -> float:
        """Sum of events x cost over the model's events; an event the run did not see counts 0."""
        return sum(events.get(name, 0.0) * cost for name, cost in self.costs.items())

    def breakdown(self, events: Mapping[str, float]) -> dict[str, float]:
        return {name: events.get(name, 0.0) * cost for name, cost in self.costs.items()}

    def describe(self) -> list[dict[str, object]]:
        defaults = {p.name: p for p in DEFAULT_PARAMETERS}
        return [{"name": name, "cycles": cost, "event": defaults[name].event,
                 "source": defaults[name].source if cost == defaults[name].cycles
                 else f"overridden in {self.origin}"}
                for name, cost in self.costs.items()]


def default_model() -> CostModel:
    return CostModel({p.name: p.cycles for p in DEFAULT_PARAMETERS})


def load_model(path: Path) -> CostModel:
    """Defaults overridden by a JSON or TOML file of `name = cycles` (unknown names are errors)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise BadInput(f"--cost-model {path}: {error.strerror or error}") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise BadInput(f"--cost-model {path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: "
                       f"{str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise BadInput(f"--cost-model {path}: expected a table of name = cycles")
    costs = dict(default_model().costs)
    for name, value in data.items():
        if name not in costs:
            raise BadInput(f"--cost-model {path}: unknown parameter {name!r} "
                           f"(known: {', '.join(PARAMETER_NAMES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise BadInput(f"--cost-model {path}: {name} must be a non-negative number of cycles")
        costs[name] = float(value)
    return CostModel(costs, origin=str(path))


def events_per_iteration(counters: Mapping[str, float], instructions: float | None) -> dict[str, float]:
    """The model's events from one cell's loop counters (already per iteration)."""
    hypercalls = counters.get("hypercalls", 0.0)
    bt_callouts = sum(v for k, v in counters.items() if k.startswith("bt_callouts:"))
    return {
        "guest_instruction": instructions or 0.0,
        "vm_exit": max(0.0, counters.get("exits", 0.0) - hypercalls),
        "hypercall": hypercalls,
        "bt_callout": bt_callouts or counters.get("callouts", 0.0),
        "bt_translated_instruction": counters.get("bt:instructions_translated", 0.0),
        "page_walk_reference": counters.get("paging:walk_references", 0.0),
    }
