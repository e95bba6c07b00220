"""bigpages: 2 MiB pages, 1 GiB pages as CPUID says, NX and WP faults at every level."""

from __future__ import annotations


from tests.guests.harness import guest_image

EXPECTED = (
    b"bigpages: 2 MiB pages at 0x80000000 on frames 36, 32, 38, 34 MiB\n"
    b"2 MiB pages: 16 reads and 16 writes through the alias ok\n"
    b"1 GiB pages: used only if CPUID.80000001H:EDX[26] = 1, ok\n"
    b"NX 4 KiB page: read ok, fetch #PF error 11, CR2 ok\n"
    b"NX 2 MiB page: fetch #PF error 11, CR2 ok\n"
    b"NX in the PDPTE only: fetch #PF error 11, CR2 ok\n"
    b"XD cleared: code runs again\n"
    b"WP 4 KiB read-only page: write #PF error 3, CR2 ok, unchanged\n"
    b"WP 2 MiB read-only page: write #PF error 3, CR2 ok, unchanged\n"
    b"WP R/W = 0 in the PDPTE only: write #PF error 3, CR2 ok, unchanged\n"
    b"CR0.WP = 0: supervisor write to a read-only page lands; WP = 1: #PF again\n"
    b"bigpages done\n"
)
IMAGE_BASE = 0x100000
RESULTS_MARKER = b"BIGPAGES-RESULT:"
# What the guest recorded about 1 GiB pages (not printed: QEMU and vtemu must print the same).
TRANSLATED_THOUGH_NOT_ADVERTISED = 1
RESERVED_BIT_FAULT = 2
ADVERTISED_AND_CHECKED = 3
PAGE1GB = 1 << 26


def _one_gib_result(run) -> int:
    offset = guest_image("bigpages").index(RESULTS_MARKER) + len(RESULTS_MARKER)
    return int.from_bytes(run.partition.memory.read_gpa(IMAGE_BASE + offset, 8), "little")


def test_serial_and_exit_status(boot) -> None:
    run = boot("bigpages")
    assert run.serial == EXPECTED
    assert run.exit_code == 0


def test_one_gib_pages_behave_as_cpuid_says(boot) -> None:
    run = boot("bigpages")
    advertised = run.partition.cpuid.query(0x80000001, 0, 0)[3] & PAGE1GB
    expected = ADVERTISED_AND_CHECKED if advertised else RESERVED_BIT_FAULT
    assert _one_gib_result(run) == expected


def test_the_1gib_probe_ran(boot) -> None:
    """Whatever the verdict above, the guest reached the 1 GiB part and recorded an outcome."""
    assert _one_gib_result(boot("bigpages")) in (TRANSLATED_THOUGH_NOT_ADVERTISED,
                                                 RESERVED_BIT_FAULT, ADVERTISED_AND_CHECKED)
