"""Reading operands the way a human meant them: displacement, registers, values."""

import pytest

from vtemu.asm.operands import parse_instruction


@pytest.mark.parametrize("text, registers, displacement, sizes", [
    ("mov eax, [ebx + lab + C]", ("ebx",), "lab + C", {32}),
    ("mov eax, [lab - C + ecx*4]", ("ecx*4",), "lab - C", {32}),
    ("mov eax, [4*ecx + ebx - 8]", ("4*ecx", "ebx"), "-8", {32}),
    ("mov eax, [-4 + lab]", (), "-4 + lab", set()),
    ("mov ax, [bx+si]", ("bx", "si"), "0", {16}),
    ("lea rax, [rip + tbl]", ("rip",), "tbl", {64}),
    ("lgdt cs:[gdt_descriptor - ROM_BASE]", (), "gdt_descriptor - ROM_BASE", set()),
    ("mov eax, [ebx + K*4]", ("ebx",), "K*4", {32}),
])
def test_memory_operand_splits_registers_from_displacement(text: str, registers: tuple[str, ...],
                                                           displacement: str, sizes: set[int]) -> None:
    memory = parse_instruction(text).memory[0]
    assert memory.register_terms == registers
    assert memory.displacement == displacement
    assert memory.address_sizes == sizes


@pytest.mark.parametrize("text, values", [
    ("push dword 5", ("5",)),
    ("jmp short done", ("done",)),
    ("mov al, 'A'", (None, "'A'")),
    ("or qword ptr [rsp + 8], 3 << 12", (None, "3 << 12")),
    ("ljmp 0x08:0x100", (None,)),
    ("out dx, al", (None, None)),
    ("enter C, 1", ("C", "1")),
])
def test_value_operands_are_immediates_and_branch_targets(text: str,
                                                          values: tuple[str | None, ...]) -> None:
    assert parse_instruction(text).value_operands == values
