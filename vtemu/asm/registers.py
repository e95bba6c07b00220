"""x86 register names and Intel-syntax keywords, for reading operands the way Keystone does.

The round-trip check has to tell a register from a symbol in source text (`[ebx+tbl*4]`
scales a symbol, `[tbl+ebx*4]` a register), and error messages have to find which name in a
statement is undefined; both need the full set of names that are not symbols.
"""

_LEGACY8 = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh", "spl", "bpl", "sil", "dil")
_LEGACY16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
_EXTENDED = tuple(f"r{n}" for n in range(8, 16))

GPR16 = frozenset(_LEGACY16) | {f"{r}w" for r in _EXTENDED}
GPR32 = frozenset(f"e{r}" for r in _LEGACY16) | {f"{r}d" for r in _EXTENDED}
GPR64 = frozenset(f"r{r}" for r in _LEGACY16) | set(_EXTENDED)
GPR8 = frozenset(_LEGACY8) | {f"{r}b" for r in _EXTENDED} | {f"{r}l" for r in _EXTENDED}
GENERAL_REGISTERS = GPR8 | GPR16 | GPR32 | GPR64
SEGMENT_REGISTERS = frozenset({"es", "cs", "ss", "ds", "fs", "gs"})
INSTRUCTION_POINTERS = frozenset({"ip", "eip", "rip"})

_OTHER = (
    {f"cr{n}" for n in range(16)} | {f"dr{n}" for n in range(16)} | {f"st{n}" for n in range(8)}
    | {"st"} | {f"mm{n}" for n in range(8)} | {f"k{n}" for n in range(8)}
    | {f"{kind}mm{n}" for kind in "xyz" for n in range(32)} | {f"bnd{n}" for n in range(4)}
)
REGISTERS = GENERAL_REGISTERS | SEGMENT_REGISTERS | INSTRUCTION_POINTERS | frozenset(_OTHER)

# Operand size keywords of Intel syntax and the operand size (bits) they ask for.
SIZE_KEYWORDS: dict[str, int] = {"word": 16, "dword": 32, "qword": 64}
OPERAND_KEYWORDS = frozenset({
    "byte", "word", "dword", "fword", "qword", "tbyte", "xmmword", "ymmword", "zmmword",
    "ptr", "offset", "short", "near", "far",
})
