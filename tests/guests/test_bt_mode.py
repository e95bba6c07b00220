"""Every guest under binary translation (--mode bt) as under VT-x (--mode vtx), with both
paging schemes: the same serial output and the same ending, and the translator visibly at work
(kernel code ran from the translation cache, sensitive instructions became callouts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guests.harness import GUEST_DISK_SECTORS, all_guests, make_disk_image, run_guest
from vtemu.modes.bt import engine as bt_engine


def _run(name: str, mode: str, paging: str, tmp_path: Path):
    disk = None
    if name in GUEST_DISK_SECTORS:
        disk = make_disk_image(tmp_path / f"{name}-{mode}.img", GUEST_DISK_SECTORS[name])
    return run_guest(name, mode=mode, paging=paging, disk=disk)


def _translator(run):
    return run.partition.vcpus[0].mode_engine


@pytest.mark.parametrize("paging", ["ept", pytest.param("shadow", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", all_guests())
def test_same_output_and_ending_under_binary_translation(name: str, paging: str, boot,
                                                         tmp_path: Path) -> None:
    vtx = boot(name) if paging == "ept" and name not in GUEST_DISK_SECTORS else \
        _run(name, "vtx", paging, tmp_path)
    bt = _run(name, "bt", paging, tmp_path)
    assert bt.serial == vtx.serial
    assert (bt.exit_code, bt.reason) == (vtx.exit_code, vtx.reason)
    counters = _translator(bt).counters
    assert counters.blocks > 0 and counters.instructions_translated > 0


def test_kernel_io_runs_as_callouts_not_vm_exits(boot) -> None:
    bt = run_guest("hello", mode="bt")
    counters = _translator(bt).counters
    # hello's kernel writes every byte of its greeting with OUT from the TC: callouts.
    assert counters.callouts["instruction"] >= len(b"Hello from a vtemu guest!")
    assert bt.partition.callout_stats.total > bt.partition.stats.total
    assert counters.superblocks > 0 and counters.chained > 0


def test_a_page_of_code_and_data_switches_to_self_checking_translations(boot) -> None:
    """tick's interrupt handler increments a counter on the page that holds its own code. The
    first writes retire the translations from that page (stale callouts); after a few, the
    page's code is translated with self-checks instead of being write-protected, so the
    counter's 50 updates cost no retranslation at all."""
    bt = run_guest("tick", mode="bt")
    assert bt.serial == boot("tick").serial
    counters = _translator(bt).counters
    assert counters.invalidations == bt_engine.SELF_CHECK_AFTER
    assert counters.self_checked_pages == 1 and counters.self_check_failures == 0


def test_translation_guest_exercises_lookup_chaining_and_invalidation(boot) -> None:
    """guests/translation.S checks its own results (RIP-relative operands, indirect branches,
    self-modifying code, precise #PF/#DE, interrupts in a hot loop); here: the translator
    really took the paths those checks are about."""
    bt = run_guest("translation", mode="bt")
    assert bt.serial == boot("translation").serial and bt.exit_code == 0
    counters = _translator(bt).counter_values()
    assert counters["lookup_hits"] > 200            # 200 rounds of CALL [mem], JMP reg, RET
    # The first rewrites of `patched` retire translations; then its page is self-checked and
    # every later rewrite is caught by a failing check.
    assert counters["invalidations"] + counters["self_check_failures"] >= 16
    assert counters["self_check_failures"] > 0
    assert counters["chained"] > 0 and counters["superblocks"] > 0
    interrupts = bt.partition.callout_stats.merged()
    assert any(reason.name == "EXTERNAL_INTERRUPT" for reason in interrupts)


def test_sensitiveloop_takes_two_exits_per_iteration_under_vtx_and_none_under_bt(boot) -> None:
    vtx, bt = boot("sensitiveloop"), run_guest("sensitiveloop", mode="bt")
    assert bt.serial == vtx.serial
    cr_exits = sum(1 for record in vtx.exits if record.reason.name == "CR_ACCESS")
    assert cr_exits == 2 * 20000 + 1                 # and the final MOV CR8 that clears it
    assert not any(record.reason.name == "CR_ACCESS" for record in bt.exits)
    assert bt.partition.stats.total < 100


FAR_CALLS = """
.include "multiboot.inc"
.include "serial.inc"
.code32
_start:
    mov esp, stack_top
    SERIAL_INIT
    .byte 0x9A                      # CALL 08h:far_target (ptr16:32)
    .long far_target
    .word 0x08
back:
    cmp dword ptr [saved_eip], back
    jne wrong
    cmp word ptr [saved_cs], 0x08
    jne wrong
    PUTS msg_ok
    mov eax, 0x08
    push eax
    mov eax, far_target
    push eax
    lcall [esp]                     # CALL m16:32 through ESP: refused by the translator
    EXIT 0
wrong:
    EXIT 1
far_target:
    mov eax, [esp]
    mov [saved_eip], eax
    mov eax, [esp + 4]
    mov [saved_cs], eax
    retf
saved_eip: .long 0
saved_cs: .long 0
msg_ok: .ascii "far call pushed the guest's CS:EIP\\n"
    .byte 0
SERIAL_ROUTINES
MULTIBOOT_IMAGE_END 0x2000
.equ stack_top, _bss_end
"""


def test_far_call_pushes_guest_cs_eip_and_an_untranslatable_form_ends_the_run_cleanly(
        tmp_path: Path) -> None:
    from vtemu.asm import build_guest
    from vtemu.hv.outcome import RunEnd
    source = tmp_path / "farcall.S"
    source.write_text(FAR_CALLS)
    image = build_guest(source)
    vtx = run_guest("farcall", image=image)
    assert vtx.text == "far call pushed the guest's CS:EIP\n" and vtx.exit_code == 0
    bt = run_guest("farcall", image=image, mode="bt")
    assert bt.text == vtx.text
    assert bt.exit_code == RunEnd.INTERNAL_ERROR and "far call form" in bt.reason


def test_a_full_translation_cache_is_flushed_and_the_guest_never_notices(boot, monkeypatch) -> None:
    """With room for only a dozen fragments the cache fills again and again: each time it is
    flushed at the next stop (Unicorn's blocks of it dropped too) and translation starts over."""
    from vtemu.modes.bt.cache import TranslationCache
    monkeypatch.setattr(TranslationCache, "has_room", lambda self, size: len(self.fragments) < 12)
    bt = run_guest("translation", mode="bt")
    assert bt.serial == boot("translation").serial and bt.exit_code == 0
    assert _translator(bt).counters.flushes > 3
