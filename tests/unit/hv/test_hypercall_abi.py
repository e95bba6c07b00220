"""The TLFS-shaped hypercall ABI of --mode pv: input and result values, the register
conventions, every status and exception path of a VMCALL, rep continuation, the synthetic
MSRs, the hypercall page overlay and the hypervisor CPUID leaves."""

from __future__ import annotations

import pytest

from tests.unit.hv.fakes import Rig, run
from tests.unit.hv.pvrig import (GP, HV_X64_MSR_GUEST_OS_ID, HV_X64_MSR_HYPERCALL, HV_X64_MSR_VP_INDEX,
                                 HYPERCALL_PAGE, OUTPUT, PARAMS, UD, PvRig)
from vtemu.hv.hypercalls import HvStatus, HypercallInput, HypercallResult, input_value, register, result_value
from vtemu.hv.hypercalls.service import REPS_PER_PASS
from vtemu.hv.outcome import Resume
from vtemu.vmx.reasons import ExitReason

FLUSH_LIST, FLUSH_SPACE, SWITCH, CONSOLE, MMU_UPDATE = 0x0003, 0x0002, 0x0001, 0x8002, 0x8001
RING3 = 3


@pytest.fixture
def rig() -> PvRig:
    rig = PvRig()
    rig.long_mode()
    rig.enable()
    return rig


def status(result: int) -> int:
    return result & 0xFFFF


def reps(result: int) -> int:
    return result >> 32 & 0xFFF


# --- values ---------------------------------------------------------------------------------------
def test_input_value_fields_are_where_the_tlfs_puts_them() -> None:
    value = input_value(0x1234, fast=True, rep_count=0xABC, rep_start=0x123, variable_header_qwords=5)
    assert value == 0x1234 | 1 << 16 | 5 << 17 | 0xABC << 32 | 0x123 << 48
    call = HypercallInput(value, 0, 0)
    assert (call.code, call.fast, call.variable_header_qwords, call.rep_count, call.rep_start) == \
        (0x1234, True, 5, 0xABC, 0x123)
    assert call.reserved_bits == 0
    assert HypercallInput(1 << 27 | 1 << 31 | 1 << 44 | 1 << 60, 0, 0).reserved_bits == \
        1 << 27 | 1 << 31 | 1 << 44 | 1 << 60


def test_result_value_is_status_and_reps_completed() -> None:
    assert result_value(HvStatus.INVALID_ALIGNMENT, 7) == 4 | 7 << 32


def test_status_codes_have_the_tlfs_values() -> None:
    assert (HvStatus.SUCCESS, HvStatus.INVALID_HYPERCALL_CODE, HvStatus.INVALID_HYPERCALL_INPUT,
            HvStatus.INVALID_ALIGNMENT, HvStatus.INVALID_PARAMETER, HvStatus.ACCESS_DENIED) == (0, 2, 3, 4, 5, 6)


# --- CPUID --------------------------------------------------------------------------------------
def test_pv_cpuid_advertises_the_hv1_interface_and_its_leaves() -> None:
    cpuid = PvRig().partition.cpuid
    assert cpuid.query(1, 0, 0)[2] >> 31 == 1
    assert cpuid.query(0x40000000, 0, 0)[0] == 0x40000006
    assert cpuid.query(0x40000001, 0, 0)[0] == int.from_bytes(b"Hv#1", "little")
    eax, _, _, _ = cpuid.query(0x40000003, 0, 0)
    assert eax & (1 << 5) and eax & (1 << 6)          # AccessHypercallMsrs, AccessVpIndex
    recommendations, spin_retries, _, _ = cpuid.query(0x40000004, 0, 0)
    assert recommendations & 0b111 == 0b111 and spin_retries == 0x100


def test_vtx_cpuid_keeps_no_hypercall_interface() -> None:
    cpuid = Rig().partition.cpuid
    assert cpuid.query(0x40000001, 0, 0) == (0, 0, 0, 0)
    assert cpuid.query(0x40000004, 0, 0)[1] == 0xFFFFFFFF


def test_post_message_privilege_follows_the_table() -> None:
    rig = PvRig()
    assert rig.partition.cpuid.query(0x40000003, 0, 0)[1] & (1 << 4) == (1 << 4 if 0x5C in rig.service.table else 0)
    rig.service.table.pop(0x5C, None)
    assert not rig.partition.cpuid.query(0x40000003, 0, 0)[1] & (1 << 4)


# --- the synthetic MSRs and the page --------------------------------------------------------------
def test_enabling_overlays_vmcall_ret_and_disabling_restores_the_ram() -> None:
    rig = PvRig()
    rig.long_mode()
    rig.poke(HYPERCALL_PAGE, b"guest data" + bytes(4086))
    rig.enable()
    assert rig.rdmsr(HV_X64_MSR_HYPERCALL) == HYPERCALL_PAGE | 1
    assert rig.peek(HYPERCALL_PAGE, 5) == bytes((0x0F, 0x01, 0xC1, 0xC3, 0xCC))
    rig.wrmsr(HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE)
    assert rig.peek(HYPERCALL_PAGE, 10) == b"guest data"
    assert rig.service.page.gpa is None


def test_the_hypercall_page_cannot_be_enabled_while_the_guest_os_id_is_zero() -> None:
    rig = PvRig()
    rig.long_mode()
    rig.wrmsr(HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE | 1)
    assert rig.rdmsr(HV_X64_MSR_HYPERCALL) == HYPERCALL_PAGE     # GPA kept, enable clear
    assert isinstance(rig.vmcall(input_value(CONSOLE, fast=True)), Resume)
    assert rig.injected().vector == UD and not rig.advanced()


def test_clearing_the_guest_os_id_disables_hypercalls(rig: PvRig) -> None:
    rig.wrmsr(HV_X64_MSR_GUEST_OS_ID, 0)
    assert rig.rdmsr(HV_X64_MSR_HYPERCALL) & 1 == 0
    assert rig.peek(HYPERCALL_PAGE, 4) != bytes((0x0F, 0x01, 0xC1, 0xC3))
    rig.vmcall(input_value(CONSOLE, fast=True))
    assert rig.injected().vector == UD


@pytest.mark.parametrize("value", [HYPERCALL_PAGE | 1 | 1 << 2, 0x7FF0_0000_0000 | 1, 0xFFFF_0000 | 1])
def test_bad_hypercall_msr_values_are_gp(value: int) -> None:
    rig = PvRig()
    rig.long_mode()
    rig.wrmsr(HV_X64_MSR_GUEST_OS_ID, 1)
    rig.wrmsr(HV_X64_MSR_HYPERCALL, value)      # reserved bits, beyond RAM, the ROM
    assert rig.injected().vector == GP and rig.injected_error() == 0


def test_a_locked_hypercall_msr_ignores_writes(rig: PvRig) -> None:
    rig.wrmsr(HV_X64_MSR_HYPERCALL, HYPERCALL_PAGE | 0b11)
    rig.wrmsr(HV_X64_MSR_HYPERCALL, 0)
    assert rig.rdmsr(HV_X64_MSR_HYPERCALL) == HYPERCALL_PAGE | 0b11


def test_vp_index_reads_the_vcpu_index_and_refuses_writes(rig: PvRig) -> None:
    assert rig.rdmsr(HV_X64_MSR_VP_INDEX) == 0
    rig.wrmsr(HV_X64_MSR_VP_INDEX, 1)
    assert rig.injected().vector == GP


def test_vtx_mode_has_no_synthetic_msrs() -> None:
    rig = Rig()
    rig.long_mode()
    insn = rig.place("wrmsr")
    rig.set(rcx=HV_X64_MSR_GUEST_OS_ID, rax=1, rdx=0)
    rig.handle(rig.exit_for(ExitReason.WRMSR, insn))
    assert rig.injected().vector == GP and rig.partition.cpuid.query(0x40000001, 0, 0)[0] == 0


def test_a_guest_calls_the_page_and_cannot_write_it(rig: PvRig) -> None:
    """Real guest code: CALL into the page returns the status; a store to it is #GP(0)."""
    rig.idt_gate64(GP, 0x12000)
    rig.poke(0x12000, bytes((0xF4,)))                        # the #GP handler: hlt
    rig.qwords(PARAMS, 0)
    run(rig, f"""
        mov rcx, {input_value(0x9999)}
        mov eax, {HYPERCALL_PAGE}
        call rax
        mov r15, rax
        mov eax, {HYPERCALL_PAGE}
        mov byte ptr [rax + 8], 1
        hlt
    """)
    assert rig.get("r15") == HvStatus.INVALID_HYPERCALL_CODE
    assert rig.vcpu.rip == 0x12001                           # the #GP handler ran
    assert rig.peek(HYPERCALL_PAGE + 8, 1) == b"\xcc"


# --- #UD paths ---------------------------------------------------------------------------------
def test_hypercall_from_cpl3_is_ud() -> None:
    rig = PvRig()
    rig.protected_mode()
    rig.enable()
    rig.protected_mode(cpl=RING3)
    rig.vmcall(input_value(CONSOLE, fast=True))
    assert rig.injected().vector == UD and not rig.advanced()


def test_hypercall_from_real_mode_is_ud() -> None:
    rig = PvRig()
    rig.protected_mode()
    rig.enable()
    rig.real_mode()
    rig.vmcall(input_value(CONSOLE, fast=True))
    assert rig.injected().vector == UD


def test_vmcall_in_vtx_mode_stays_ud() -> None:
    rig = Rig()
    rig.long_mode()
    insn = rig.place("vmcall")
    rig.handle(rig.exit_for(ExitReason.VMCALL, insn))
    assert rig.injected().vector == UD


# --- statuses -----------------------------------------------------------------------------------
def test_unknown_call_code(rig: PvRig) -> None:
    assert rig.call(0x7777) == HvStatus.INVALID_HYPERCALL_CODE
    assert rig.advanced() and rig.injected() is None
    assert rig.service.statuses[HvStatus.INVALID_HYPERCALL_CODE] == 1 and rig.service.calls[0x7777] == 1


@pytest.mark.parametrize("value", [
    input_value(SWITCH, fast=True) | 1 << 27,                  # reserved 30:27
    input_value(SWITCH, fast=True) | 1 << 31,                  # nested: not offered
    input_value(SWITCH, fast=True) | 1 << 45,                  # reserved 47:44
    input_value(SWITCH, fast=True) | 1 << 62,                  # reserved 63:60
    input_value(SWITCH, fast=True, rep_count=1),               # a simple call with reps
    input_value(SWITCH, fast=True, variable_header_qwords=1),  # no variable header
    input_value(FLUSH_SPACE, fast=True),                       # memory-only call made fast
    input_value(CONSOLE),                                      # fast-only call made with memory
    input_value(FLUSH_LIST, rep_count=0),                      # a rep call without reps
    input_value(FLUSH_LIST, rep_count=2, rep_start=2),         # start at the count
])
def test_malformed_input_values(rig: PvRig, value: int) -> None:
    rig.qwords(PARAMS, 0, 0, 0, 0, 0)
    rig.vmcall(value, PARAMS, OUTPUT)
    assert status(rig.result()) == HvStatus.INVALID_HYPERCALL_INPUT
    assert rig.advanced()


@pytest.mark.parametrize("input, output", [(PARAMS + 4, OUTPUT), (PARAMS, OUTPUT + 1)])
def test_misaligned_parameter_gpas(rig: PvRig, input: int, output: int) -> None:
    assert status(rig.call(FLUSH_SPACE, input, output)) == HvStatus.INVALID_ALIGNMENT


def test_parameters_crossing_a_page(rig: PvRig) -> None:
    assert status(rig.call(FLUSH_SPACE, PARAMS + 4088)) == HvStatus.INVALID_ALIGNMENT


@pytest.mark.parametrize("gpa", [0xA0000, 16 << 20, 0xFFFF0000, 1 << 51])
def test_parameters_outside_the_partition_ram(rig: PvRig, gpa: int) -> None:
    assert status(rig.call(FLUSH_SPACE, gpa)) == HvStatus.INVALID_PARAMETER


def test_output_into_the_hypercall_page_is_access_denied(rig: PvRig) -> None:
    rig.qwords(PARAMS, HYPERCALL_PAGE, 0)      # an MMU update of an "entry" in the page itself
    assert status(rig.call(MMU_UPDATE, PARAMS, rep_count=1)) == HvStatus.ACCESS_DENIED


# --- conventions -------------------------------------------------------------------------------
def test_x86_convention_in_32_bit_code() -> None:
    """EDX:EAX input value, EBX:ECX input, EDI:ESI output; the result in EDX:EAX."""
    rig = PvRig()
    rig.protected_mode()
    rig.enable()
    rig.poke(PARAMS, b"hi from 32-bit code")
    result = rig.call(CONSOLE, PARAMS, 19, fast=True)
    assert result == 0 and bytes(rig.serial) == b"hi from 32-bit code"
    rig.vmcall(input_value(FLUSH_LIST, rep_count=1), PARAMS + 1, 0)
    assert rig.result() == result_value(HvStatus.INVALID_ALIGNMENT, 0)


# --- rep calls ---------------------------------------------------------------------------------
def test_a_long_rep_list_continues_and_then_completes(rig: PvRig) -> None:
    count = REPS_PER_PASS + 44
    rig.qwords(PARAMS, 0, 1, 0, *[(0x100000 + 4096 * i) for i in range(count)])
    value = input_value(FLUSH_LIST, rep_count=count)
    rig.vmcall(value, PARAMS)
    assert not rig.advanced()                                 # continuation: the VMCALL again
    assert rig.get("rcx") == input_value(FLUSH_LIST, rep_count=count, rep_start=REPS_PER_PASS)
    rig.vmcall(rig.get("rcx"), PARAMS)
    assert rig.advanced()
    assert rig.result() == result_value(HvStatus.SUCCESS, count)
    assert rig.service.continuations == 1


def test_a_guest_re_issues_the_continued_call_and_sees_one_result(rig: PvRig) -> None:
    count = REPS_PER_PASS + 100                  # 24 + 8 * 356 bytes: still one page
    rig.qwords(PARAMS, 0, 1, 0, *[(0x100000 + 4096 * i) for i in range(count)])
    run(rig, f"""
        mov rcx, {input_value(FLUSH_LIST, rep_count=count)}
        mov edx, {PARAMS}
        xor r8d, r8d
        mov eax, {HYPERCALL_PAGE}
        call rax
        mov r15, rax
        hlt
    """)
    assert rig.get("r15") == result_value(HvStatus.SUCCESS, count)
    assert rig.service.continuations == 1 and rig.service.calls[FLUSH_LIST] == 1


def test_a_failed_rep_reports_the_reps_completed(rig: PvRig) -> None:
    rig.qwords(PARAMS, PARAMS + 0x100, 5, 0x10_0000_0000, 0, PARAMS + 0x108, 6)
    result = rig.call(MMU_UPDATE, PARAMS, rep_count=3)
    assert status(result) == HvStatus.INVALID_PARAMETER and reps(result) == 1
    assert rig.u64(PARAMS + 0x100) == 5 and rig.u64(PARAMS + 0x108) == 0


# --- the table ----------------------------------------------------------------------------------
def test_registered_calls_are_dispatched_with_their_decoded_input(rig: PvRig) -> None:
    seen: list[HypercallInput] = []

    def echo(partition, cpu, call: HypercallInput) -> HypercallResult:
        seen.append(call)
        return HypercallResult(HvStatus.ACCESS_DENIED)
    register(0x005F, "test call", echo, fast=False, table=rig.service.table)
    assert rig.call(0x005F, PARAMS, OUTPUT) == HvStatus.ACCESS_DENIED
    assert (seen[0].code, seen[0].input_gpa, seen[0].output_gpa) == (0x5F, PARAMS, OUTPUT)
    with pytest.raises(ValueError):
        register(0x005F, "again", echo, table=rig.service.table)
