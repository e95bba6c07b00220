"""The guests written with guests/include/pvops.inc: one source, a native build that runs
unmodified under vtx (EPT and shadow paging) and an enlightened build (PV=1) that runs under
--mode pv; both print the same bytes and exit the same way. The enlightened build's exits
show the hypercalls took the place of the sensitive instructions."""

from __future__ import annotations

import functools

import pytest

from tests.guests import test_cr3switch, test_pgfault, test_ptemod, test_tick
from tests.guests.harness import GUESTS, GuestRun, guest_source, run_guest
from vtemu.asm import build_guest
from vtemu.modes.pv import SOURCE_DEFINES
from vtemu.vmx.qualifications import CrAccessQualification, CrAccessType
from vtemu.vmx.reasons import ExitReason

EXPECTED = {
    "hello": b"Hello from a vtemu guest!\n",
    "tick": test_tick.EXPECTED,
    "ptemod": test_ptemod.EXPECTED,
    "cr3switch": test_cr3switch.EXPECTED,
    "pgfault": test_pgfault.EXPECTED,
}
SLOW = {"pgfault"}
COM1_PORTS = range(0x3F8, 0x400)
PV_EXIT_NOT_ENLIGHTENED = 63
VTEMU_CALL_MMU_UPDATE, VTEMU_CALL_CONSOLE_WRITE, VTEMU_CALL_IDLE = 0x8001, 0x8002, 0x8005
HV_CALL_SWITCH_VIRTUAL_ADDRESS_SPACE = 0x0001
# pgfault under shadow paging takes some 10 s alone and much longer on a loaded machine: the
# host-time limit only guards against a hang, and must not end a slow but healthy run.
HOST_TIMEOUT_S = 600.0
CONFIGURATIONS = [("vtx", "ept"), ("vtx", "shadow"), ("pv", "ept"), ("pv", "shadow")]


@functools.cache
def _pv_image(name: str, stamp: tuple[float, ...]) -> bytes:
    return build_guest(guest_source(name), SOURCE_DEFINES)


def pv_image(name: str) -> bytes:
    sources = [guest_source(name), *sorted((GUESTS / "include").glob("*.inc"))]
    return _pv_image(name, tuple(path.stat().st_mtime for path in sources))


@functools.cache
def boot_as(name: str, mode: str, paging: str) -> GuestRun:
    image = pv_image(name) if mode == "pv" else None
    return run_guest(name, image=image, mode=mode, paging=paging, timeout_s=HOST_TIMEOUT_S)


def _cases() -> list:
    return [pytest.param(name, mode, paging, id=f"{name}-{mode}-{paging}",
                         marks=[pytest.mark.slow] if name in SLOW else [])
            for name in EXPECTED for mode, paging in CONFIGURATIONS]


@pytest.mark.parametrize("name, mode, paging", _cases())
def test_same_output_natively_and_enlightened(name: str, mode: str, paging: str) -> None:
    run = boot_as(name, mode, paging)
    assert run.serial == EXPECTED[name]
    assert run.exit_code == 0


@pytest.mark.parametrize("name", [n for n in EXPECTED if n not in SLOW])
def test_enlightened_console_takes_no_uart_exits(name: str) -> None:
    run = boot_as(name, "pv", "ept")
    uart = [r for r in run.exits if r.reason is ExitReason.IO_INSTRUCTION and r.io().port in COM1_PORTS]
    assert uart == []
    assert run.partition.hypercalls.calls[VTEMU_CALL_CONSOLE_WRITE] >= 1   # type: ignore[attr-defined]


PVABI_NATIVE = b"pvabi: the native build has no hypercall interface to test\n"
PVABI_ENLIGHTENED = (
    b"pvabi: hypercall page enabled\n"
    b"page holds vmcall; ret\n"
    b"store into the page: #GP(0), page unchanged\n"
    b"status 2\n"
    b"status 4\n"
    b"status 5\n"
    b"status 3\n"
    b"pvabi done\n"
)


@pytest.mark.parametrize("mode, paging", CONFIGURATIONS)
def test_pvabi_guest_sees_the_interface_only_when_enlightened(mode: str, paging: str) -> None:
    """A store into the hypercall page is #GP(0) under both paging schemes (an EPT violation
    under EPT, a #PF exit under shadow paging); bad calls return their statuses."""
    run = boot_as("pvabi", mode, paging)
    assert run.serial == (PVABI_ENLIGHTENED if mode == "pv" else PVABI_NATIVE)
    assert run.exit_code == 0


def test_the_native_image_is_not_the_enlightened_one() -> None:
    from tests.guests.harness import guest_image
    assert guest_image("ptemod") != pv_image("ptemod")


def test_an_enlightened_build_without_the_interface_stops_cleanly() -> None:
    run = run_guest("hello", image=pv_image("hello"), mode="vtx")
    assert (run.serial, run.exit_code) == (b"", PV_EXIT_NOT_ENLIGHTENED)


def _reasons(run: GuestRun) -> dict[ExitReason, int]:
    counts: dict[ExitReason, int] = {}
    for record in run.exits:
        counts[record.reason] = counts.get(record.reason, 0) + 1
    return counts


def test_ptemod_batches_each_remap_and_its_flush_into_one_hypercall() -> None:
    native, pv = boot_as("ptemod", "vtx", "shadow"), boot_as("ptemod", "pv", "shadow")
    reasons = _reasons(pv)
    assert ExitReason.INVLPG not in reasons
    assert pv.partition.hypercalls.calls[VTEMU_CALL_MMU_UPDATE] == 512      # type: ignore[attr-defined]
    assert native.partition.paging.counter_values()["table_writes"] > 300
    assert pv.partition.paging.counter_values()["table_writes"] == 1        # the set-up store of PDPT[1]
    assert len(pv.exits) * 2 < len(native.exits)


def test_cr3switch_switches_by_hypercall() -> None:
    native, pv = boot_as("cr3switch", "vtx", "shadow"), boot_as("cr3switch", "pv", "shadow")
    cr3_loads = [r for r in pv.exits if r.reason is ExitReason.CR_ACCESS
                 and (q := r.exit.decoded(CrAccessQualification)).cr == 3
                 and q.access_type is CrAccessType.MOV_TO_CR]
    native_loads = [r for r in native.exits if r.reason is ExitReason.CR_ACCESS
                    and (q := r.exit.decoded(CrAccessQualification)).cr == 3
                    and q.access_type is CrAccessType.MOV_TO_CR]
    assert cr3_loads == []
    switches = pv.partition.hypercalls.calls[HV_CALL_SWITCH_VIRTUAL_ADDRESS_SPACE]  # type: ignore[attr-defined]
    assert switches == len(native_loads) == 2057
    assert len(pv.exits) < len(native.exits)


def test_tick_idles_by_hypercall_and_still_takes_every_timer_interrupt() -> None:
    native, pv = boot_as("tick", "vtx", "ept"), boot_as("tick", "pv", "ept")
    reasons = _reasons(pv)
    assert reasons[ExitReason.EXTERNAL_INTERRUPT] == 50
    assert ExitReason.HLT not in reasons
    # The enlightened build runs more instructions between ticks, so a tick may already be
    # pending when it would idle: at most one idle per tick, as the native build's HLTs.
    idles = pv.partition.hypercalls.calls[VTEMU_CALL_IDLE]                  # type: ignore[attr-defined]
    assert 40 <= idles <= _reasons(native)[ExitReason.HLT] == 50


@pytest.mark.slow
def test_pgfault_maps_each_page_in_one_hypercall_without_a_hidden_refault() -> None:
    """One call per fault (zero the frame, write the entry, rebuild the translation) plus one
    per new table (a page directory and 8 page tables); the only hidden faults left are the
    first writes to pages that were read first (the dirty flag), a third of them."""
    native, pv = boot_as("pgfault", "vtx", "shadow"), boot_as("pgfault", "pv", "shadow")
    counters = pv.partition.paging.counter_values()
    assert counters["true_faults"] == 4096 and counters["table_writes"] == 0
    assert counters["hidden_faults"] <= 4096 // 3 + 32
    assert pv.partition.hypercalls.calls[VTEMU_CALL_MMU_UPDATE] == 4096 + 9  # type: ignore[attr-defined]
    assert len(pv.exits) * 1.8 < len(native.exits)


def test_an_enlightened_run_repeats_exit_for_exit() -> None:
    """Hypercalls, idling and timer interrupts included: guest time, not host time."""
    first = boot_as("tick", "pv", "shadow")
    again = run_guest("tick", image=pv_image("tick"), mode="pv", paging="shadow")
    assert again.exit_signature() == first.exit_signature()
