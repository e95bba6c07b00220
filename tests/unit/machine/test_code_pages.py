"""The partition-wide registry of code pages (machine/code_pages.py), with made-up vCPUs."""

from __future__ import annotations

from vtemu.machine.code_pages import SharedCodePages

PAGE_A, PAGE_B = 0x1000_0000, 0x1000_1000


class FakeVcpu:
    def __init__(self, name: str) -> None:
        self.name = name
        self.revoked: list[int] = []
        self.invalidated: list[int] = []

    def revoke_write(self, hpa_page: int) -> None:
        self.revoked.append(hpa_page)

    def code_page_written(self, hpa_page: int) -> None:
        self.invalidated.append(hpa_page)


def registry(*names: str) -> tuple[SharedCodePages, list[FakeVcpu]]:
    shared = SharedCodePages()
    members = [FakeVcpu(name) for name in names]
    for member in members:
        shared.join(member)
    return shared, members


def test_executing_takes_write_access_from_every_other_vcpu() -> None:
    shared, (bsp, ap1, ap2) = registry("bsp", "ap1", "ap2")
    shared.executing(bsp, PAGE_A)
    assert (bsp.revoked, ap1.revoked, ap2.revoked) == ([], [PAGE_A], [PAGE_A])
    assert shared.is_code(PAGE_A) and not shared.is_code(PAGE_B)


def test_a_write_invalidates_the_other_executors_once() -> None:
    shared, (bsp, ap1, ap2) = registry("bsp", "ap1", "ap2")
    shared.executing(bsp, PAGE_A)
    shared.executing(ap1, PAGE_A)
    shared.written(ap1, PAGE_A)
    assert (bsp.invalidated, ap1.invalidated, ap2.invalidated) == ([PAGE_A], [], [])
    shared.written(ap1, PAGE_A)                 # bsp has not fetched the page again
    assert bsp.invalidated == [PAGE_A]
    assert shared.cross_writes == 1
    assert shared.is_code(PAGE_A)               # ap1 still executes it


def test_a_device_write_invalidates_every_executor() -> None:
    shared, (bsp, ap1) = registry("bsp", "ap1")
    shared.executing(bsp, PAGE_A)
    shared.executing(ap1, PAGE_A)
    shared.written(None, PAGE_A)
    assert (bsp.invalidated, ap1.invalidated) == ([PAGE_A], [PAGE_A])
    assert not shared.is_code(PAGE_A)


def test_a_lone_vcpu_never_hears_of_its_own_writes() -> None:
    shared, (bsp,) = registry("bsp")
    shared.executing(bsp, PAGE_A)
    shared.written(bsp, PAGE_A)
    assert (bsp.revoked, bsp.invalidated) == ([], [])
