"""Code written by one vCPU (or by DMA) and executed by another: the executing vCPU drops
its stale translations and sites (machine/code_pages.py), so it runs the new code and the
sensitive instruction the new code holds exits (guests/smp_patch)."""

from __future__ import annotations

import pytest

from tests.guests.test_smp import SmpRun, run_smp
from vtemu.vmx.reasons import ExitReason

RDMSR_OFFSET = 7        # push ecx; push edx; mov ecx, imm32; rdmsr: at patch_target + 7


def rdmsr_exits(run: SmpRun) -> list[tuple[int, str, int, int]]:
    return run.reasons(ExitReason.RDMSR)


@pytest.mark.parametrize("vcpus", [2, 4])
def test_bsp_runs_the_code_an_ap_and_a_dma_copy_wrote(vcpus: int) -> None:
    run = run_smp("smp_patch", vcpus)
    assert run.text == ("smp_patch: before 11111111\n"
                        "smp_patch: after AP patch 22222222\n"
                        "smp_patch: after DMA patch 33333333\n")
    assert run.exit_code == 0
    exits = rdmsr_exits(run)
    # The RDMSR in the patched code exits each time: the BSP rescanned the page both times.
    assert [(vcpu, rip & 0xFFF) for vcpu, _, rip, _ in exits] == [(0, RDMSR_OFFSET)] * 2
    assert run.partition.code_pages.cross_writes >= 1


def test_one_vcpu_runs_the_code_a_dma_copy_wrote() -> None:
    run = run_smp("smp_patch", 1)
    assert run.text == "smp_patch: before 11111111\nsmp_patch: after DMA patch 33333333\n"
    assert run.exit_code == 0
    assert [(vcpu, rip & 0xFFF) for vcpu, _, rip, _ in rdmsr_exits(run)] == [(0, RDMSR_OFFSET)]
