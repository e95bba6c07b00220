"""physscan: a hostile guest reads its whole guest-physical address space looking for a canary.

The test plants the canary before the first instruction: once in guest RAM (the positive
control: the guest must report exactly that address; it straddles a 4 KiB page and a 2 MiB
boundary, so the scan's cross-page match is exercised too) and in the hypervisor's private
memory, where no guest-physical address may lead: the EPT root, the EPT page-directory-pointer
table under it (entries 510-511 of both, which translate guest-physical addresses far above
anything this guest can name, so the EPT keeps working) and a freshly allocated VMM-private
page filled with canaries. The guest must not find those.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.guests.harness import GuestRun, run_guest
from vtemu.hv.partition import Partition

pytestmark = pytest.mark.slow   # reads 128 MiB through 32672 TLB fills: a couple of seconds

CANARY_LO = 0x5141819CBCFEE2BE      # the guest holds these XORed with 5A5A...5Ah
CANARY_HI = 0x3404A8F350C061B4
CANARY = CANARY_LO.to_bytes(8, "little") + CANARY_HI.to_bytes(8, "little")
RAM_CANARY_GPA = 0x04DF_FFF8        # last qword of a 2 MiB chunk, first qword of the next
EPT_ADDRESS_MASK = 0x000F_FFFF_FFFF_F000
LAST_TWO_ENTRIES = 0xFF0

HEADER = (
    b"physscan: looking for the canary in every guest-physical page\n"
    b"RAM: 0-640 KiB and 1-128 MiB (memory map, rounded up to 2 MiB)\n"
)
TAIL = (
    b"beyond RAM to 4 GiB: 248 probes, 248 read as all zeros or all ones\n"
    b"physscan done\n"
)
CLEAN = HEADER + b"RAM pages scanned 32672, canaries found 0\n" + TAIL
PLANTED = (HEADER + b"canary at GPA 0000000004dffff8\n"
           + b"RAM pages scanned 32672, canaries found 1\n" + TAIL)


@dataclass
class PlantedRun:
    run: GuestRun
    private_plants: dict[str, tuple[int, bytes]]   # where: (HPA, bytes written)


def _plant(partition: Partition, private: dict[str, tuple[int, bytes]]) -> None:
    memory, host = partition.memory, partition.host
    ram_hpa = memory.gpa_to_hpa(RAM_CANARY_GPA, len(CANARY))
    assert ram_hpa is not None
    host.write(ram_hpa, CANARY)
    root = memory.ept.eptp & EPT_ADDRESS_MASK
    pdpt = host.read_u64(root) & EPT_ADDRESS_MASK          # EPT PML4E 0: GPAs 0-512 GiB
    fresh = memory.allocator.alloc_table_page()
    for where, hpa, data in (("EPT PML4", root + LAST_TWO_ENTRIES, CANARY),
                             ("EPT PDPT", pdpt + LAST_TWO_ENTRIES, CANARY),
                             ("fresh VMM-private page", fresh, CANARY * 256)):
        host.write(hpa, data)
        private[where] = (hpa, data)


@pytest.fixture(scope="module")
def planted() -> PlantedRun:
    private: dict[str, tuple[int, bytes]] = {}
    run = run_guest("physscan", before_run=lambda partition: _plant(partition, private))
    return PlantedRun(run, private)


def test_clean_machine_has_no_canary(boot) -> None:
    run = boot("physscan")
    assert run.serial == CLEAN
    assert run.exit_code == 0


def test_finds_the_ram_canary_and_nothing_of_the_hypervisor(planted: PlantedRun) -> None:
    assert planted.run.serial == PLANTED
    assert planted.run.exit_code == 0


def test_the_private_plants_were_real(planted: PlantedRun) -> None:
    """The negative controls sat in VMM-private memory, outside every guest-physical range,
    and were still there after the scan."""
    memory, host = planted.run.partition.memory, planted.run.partition.host
    assert set(planted.private_plants) == {"EPT PML4", "EPT PDPT", "fresh VMM-private page"}
    for hpa, data in planted.private_plants.values():
        assert memory.private.contains(hpa, len(data))
        assert not any(piece.hpa <= hpa < piece.hpa + piece.size for piece in memory.ranges)
        assert host.read(hpa, len(data)) == data


@pytest.fixture(scope="module")
def planted_under_shadow() -> PlantedRun:
    """Under shadow paging the hypervisor's tables appear once the guest turns paging on: the
    canary goes into the shadow root (entries 510-511, not present to the processor) and a
    fresh shadow-table page at the first shadow page fault, then the guest scans."""
    private: dict[str, tuple[int, bytes]] = {}

    def before_run(partition: Partition) -> None:
        _plant(partition, private)

        def plant_in_shadow(exit, outcome, elapsed_ns) -> None:  # type: ignore[no-untyped-def]
            state = partition.paging._states[0]
            if "shadow root" in private or not state.shadowing:
                return
            fresh = partition.memory.allocator.alloc_table_page()
            for where, hpa, data in (("shadow root", state.root.table + LAST_TWO_ENTRIES, CANARY),
                                     ("fresh shadow page", fresh, CANARY * 256)):
                partition.host.write(hpa, data)
                private[where] = (hpa, data)
        partition.exit_observers.append(plant_in_shadow)
    run = run_guest("physscan", before_run=before_run, paging="shadow")
    return PlantedRun(run, private)


def test_under_shadow_paging_the_shadow_tables_are_out_of_reach_too(planted_under_shadow) -> None:
    assert planted_under_shadow.run.serial == PLANTED
    plants = planted_under_shadow.private_plants
    assert {"shadow root", "fresh shadow page"} <= set(plants)
    memory, host = planted_under_shadow.run.partition.memory, planted_under_shadow.run.partition.host
    for hpa, data in plants.values():
        assert not any(piece.hpa <= hpa < piece.hpa + piece.size for piece in memory.ranges)
        assert host.read(hpa, len(data)) == data
