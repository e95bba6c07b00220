"""The vCPU on Unicorn: reset state, stops, exact instruction counts, sites, and the exception fix."""

import pytest
import unicorn.x86_const as U

from vtemu.machine import layout
from vtemu.machine.cpustate import CpuContext, Seg
from vtemu.machine.decode import CodeMode
from vtemu.machine.delivery import Event, EventType, deliver
from vtemu.machine.memory import HostRegion
from vtemu.machine.sites import SiteKind
from vtemu.machine.vcpu import GuestPageFault, MemoryAccess, StopKind
from tests.unit.machine.harness import CODE, bare_machine, idt_gate64, long_mode, protected_mode

HANDLER = 0x20000


def test_reset_state_is_architectural():
    m = bare_machine()
    cs = m.vcpu.segment(Seg.CS)
    assert (cs.selector, cs.base, cs.limit) == (0xF000, 0xFFFF0000, 0xFFFF)
    assert m.vcpu.rip == 0xFFF0
    assert m.vcpu.linear_rip() == layout.RESET_VECTOR
    assert m.vcpu.read(U.UC_X86_REG_CR0) == 0x60000010
    assert m.vcpu.read(U.UC_X86_REG_RFLAGS) == 0x2
    assert m.vcpu.code_mode() is CodeMode.BITS16


def test_every_register_is_readable_in_real_mode():
    m = bare_machine()
    m.vcpu.write(U.UC_X86_REG_R15, 0x1122334455667788)
    assert m.vcpu.read(U.UC_X86_REG_R15) == 0x1122334455667788
    assert m.vcpu.read(U.UC_X86_REG_RIP) == 0xFFF0


def test_native_hlt_stops_with_rip_after_it():
    m = bare_machine()
    long_mode(m)
    end = m.code("mov eax, 5; hlt")
    m.vcpu.rip = CODE
    stop = m.vcpu.run()
    assert stop.kind is StopKind.HALT
    assert m.vcpu.rip == end


@pytest.mark.parametrize("budget", [1, 2, 7])
def test_budget_stops_after_exactly_that_many_instructions(budget):
    m = bare_machine()
    long_mode(m)
    m.code("inc rax; " * 10 + "hlt")
    m.vcpu.rip = CODE
    stop = m.vcpu.run(budget)
    assert stop.kind is StopKind.BUDGET
    assert stop.retired == budget
    assert m.vcpu.read(U.UC_X86_REG_RAX) == budget
    assert m.vcpu.instructions_retired == budget


def test_counted_run_to_hlt_counts_the_hlt():
    m = bare_machine()
    long_mode(m)
    m.code("mov ecx, 3; l: dec ecx; jnz l; hlt")
    m.vcpu.rip = CODE
    stop = m.vcpu.run(1000)
    assert stop.kind is StopKind.HALT
    assert stop.retired == 1 + 2 * 3 + 1


def test_fault_is_reported_at_the_faulting_instruction_and_not_counted():
    m = bare_machine()
    long_mode(m)
    m.code("nop; xor ecx, ecx; div ecx; nop")
    m.vcpu.rip = CODE
    stop = m.vcpu.run(100)
    assert stop.kind is StopKind.EXCEPTION and stop.vector == 0 and not stop.software
    assert m.vcpu.rip == CODE + 3
    assert stop.retired == 2


def test_software_interrupt_reports_rip_after_it_and_counts():
    m = bare_machine()
    long_mode(m)
    m.code("nop; int 0x80")
    m.vcpu.rip = CODE
    stop = m.vcpu.run(100)
    assert stop.kind is StopKind.EXCEPTION and stop.vector == 0x80 and stop.software
    assert m.vcpu.rip == CODE + 3
    assert stop.retired == 2


def test_error_code_of_a_native_general_protection_fault_is_exposed():
    m = bare_machine()
    long_mode(m)
    m.code("mov ax, 0x1234; mov ds, ax")
    m.vcpu.rip = CODE
    stop = m.vcpu.run()
    assert (stop.vector, stop.error_code) == (13, 0x1234)


def test_refused_fill_stops_with_exact_address_at_faulting_instruction():
    m = bare_machine()
    long_mode(m)
    m.translator.missing[0x30000] = 0
    m.code("nop; mov rax, [0x30123]")
    m.vcpu.rip = CODE
    stop = m.vcpu.run(100)
    assert stop.kind is StopKind.TRANSLATION_FAULT
    assert isinstance(stop.fault, GuestPageFault)
    assert stop.fault_access is MemoryAccess.READ
    assert stop.fault_address == 0x30123
    assert m.vcpu.rip == CODE + 1
    assert stop.retired == 1


def test_invalid_opcode_stops_at_the_instruction():
    m = bare_machine()
    long_mode(m)
    m.code("nop; vmcall")
    m.vcpu.rip = CODE
    stop = m.vcpu.run(100)
    assert stop.kind is StopKind.INVALID_OPCODE
    assert m.vcpu.rip == CODE + 1
    assert stop.retired == 1


def _run_with_delivery(m, forget: bool, faults: int) -> list[int]:
    """Deliver every exception to the guest IDT, as the processor would, and record vectors."""
    vectors = []
    for _ in range(faults + 5):
        stop = m.vcpu.run()
        if stop.kind is not StopKind.EXCEPTION:
            break
        vectors.append(stop.vector)
        event = Event(stop.vector, EventType.HARDWARE_EXCEPTION,
                      stop.error_code if stop.vector in (8, 13) else None)
        if forget:
            deliver(m.vcpu, event, m.vcpu.rip)
        else:
            original = CpuContext.forget_exception_in_flight
            CpuContext.forget_exception_in_flight = lambda self: None
            try:
                deliver(m.vcpu, event, m.vcpu.rip)
            finally:
                CpuContext.forget_exception_in_flight = original
    return vectors


def _three_gp_guest():
    m = bare_machine()
    long_mode(m)
    m.vcpu.write(U.UC_X86_REG_RSP, 0x8000)
    bad_load = "mov ax, 0x1234; .byte 0x8e, 0xd8; "  # mov ds, ax (Keystone adds a 0x66 prefix)
    m.code(bad_load * 3 + "hlt")
    # #GP handler: skip the 2-byte `mov ds, ax` and drop the error code.
    m.code("add qword ptr [rsp+8], 2; add rsp, 8; iretq", address=HANDLER)
    idt_gate64(m, 13, HANDLER)
    idt_gate64(m, 8, HANDLER + 0x100)
    m.code("hlt", address=HANDLER + 0x100)
    m.vcpu.rip = CODE
    return m


def test_three_handled_faults_are_each_general_protection():
    m = _three_gp_guest()
    assert _run_with_delivery(m, forget=True, faults=3) == [13, 13, 13]
    assert m.vcpu.read(U.UC_X86_REG_RAX) & 0xFFFF == 0x1234


def test_without_the_fix_unicorn_escalates_the_second_fault():
    """Proves the test above can fail: Unicorn's stale old_exception turns #GP into #DF."""
    vectors = _run_with_delivery(_three_gp_guest(), forget=False, faults=3)
    assert vectors[:2] == [13, 8]


def test_sites_are_found_and_hooked_before_translation():
    m = bare_machine()
    long_mode(m)
    seen = []
    m.events.sensitive_instruction = lambda site: seen.append((site.address, site.kind))
    m.vcpu.set_site_kinds(frozenset(SiteKind))
    m.code("mov ecx, 0x10; rdmsr; mov rax, cr0; invlpg [rax]; hlt")
    m.vcpu.rip = CODE
    m.vcpu.run()
    assert seen == [(CODE + 5, SiteKind.RDMSR), (CODE + 7, SiteKind.MOV_CR),
                    (CODE + 10, SiteKind.INVLPG)]


def test_self_modifying_code_gets_its_new_sensitive_instruction_hooked():
    m = bare_machine()
    long_mode(m)
    seen = []
    m.events.sensitive_instruction = lambda site: seen.append(site.kind)
    m.vcpu.set_site_kinds(frozenset(SiteKind))
    target = CODE + 0x40
    # Overwrite two NOPs at `target` with RDMSR (0F 32), then execute them.
    m.code(f"mov word ptr [{target}], 0x320f; mov ecx, 0x10; jmp {target}")
    m.code("nop; nop; hlt", address=target)
    m.vcpu.rip = CODE
    stop = m.vcpu.run()
    assert stop.kind is StopKind.HALT
    assert seen == [SiteKind.RDMSR]


def test_vmm_write_to_code_page_drops_stale_translations():
    m = bare_machine()
    long_mode(m)
    m.code("mov eax, 1; hlt")
    m.vcpu.rip = CODE
    m.vcpu.run()
    assert m.vcpu.read(U.UC_X86_REG_RAX) == 1
    m.vcpu.write_linear(CODE + 1, (2).to_bytes(4, "little"))
    m.vcpu.rip = CODE
    m.vcpu.run()
    assert m.vcpu.read(U.UC_X86_REG_RAX) == 2


def test_protected_mode_code_runs_at_cpl3():
    m = bare_machine()
    protected_mode(m, cpl=3)
    m.code("mov eax, 7; hlt", bits=32)
    m.vcpu.rip = CODE
    stop = m.vcpu.run()
    assert stop.kind is StopKind.EXCEPTION and stop.vector == 13, "HLT at CPL 3 raises #GP"


def test_a_gigabyte_region_costs_only_touched_pages():
    region = HostRegion("big", layout.PARTITION_RAM_HPA, 1 << 30)
    assert region.resident_bytes() == 0
    region.buffer[0x1234] = 1
    region.buffer[0x3000_0000] = 1
    assert region.resident_bytes() == 2 * 4096
