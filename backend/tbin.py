"""The .tbin binary: a compiled program, its weights and its symbol table.

The on-disk layout is in docs/binary-format.md. In memory a binary is a
`TBinary`; `to_bytes` / `from_bytes` convert, `from_bytes` validates
everything and raises `TbinError` with a one-line message.

HBM convention: the constants image is loaded at HBM address 0; every symbol
address is an absolute HBM byte address; the program needs
`metadata["hbm_bytes"]` bytes of HBM in all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasic.backend.isa_spec import Instr

SYMBOL_KINDS = ("input", "output", "weight", "kv", "temp")


class TbinError(Exception):
    """A binary that cannot be read (message is user-facing, one line)."""


@dataclass
class Symbol:
    """A named HBM tensor: a model input or output, a weight, a KV region."""

    name: str
    kind: str  # one of SYMBOL_KINDS
    address: int  # absolute HBM byte address
    shape: tuple[int, ...]
    dtype: str  # a name from isa_spec.DTYPE_NAMES

    @property
    def nbytes(self) -> int:
        """Size of the tensor in bytes."""
        from tasic.backend.isa_spec import DTYPE_BY_NAME, DTYPE_BYTES

        count = 1
        for n in self.shape:
            count *= n
        return count * DTYPE_BYTES[DTYPE_BY_NAME[self.dtype]]


@dataclass
class TBinary:
    """A compiled program for one target.

    metadata keys the compiler always writes: ``hbm_bytes`` (int),
    ``sram_bytes`` (int, SRAM the program uses), ``locs`` (list of source
    location strings) and ``instr_locs`` (one index into ``locs`` per
    instruction, -1 for none), ``model`` (str), ``dtype`` (str).
    """

    target_name: str
    target_hash: bytes  # 32 bytes, sha256 of the target file
    code: list[Instr]
    constants: bytes  # image of HBM [0, len(constants))
    symbols: list[Symbol]
    entry_points: dict[str, int] = field(default_factory=lambda: {"main": 0})
    metadata: dict[str, Any] = field(default_factory=dict)

    def symbol(self, name: str) -> Symbol:
        """The symbol called `name`."""
        for sym in self.symbols:
            if sym.name == name:
                return sym
        raise KeyError(name)

    def symbols_of_kind(self, kind: str) -> list[Symbol]:
        """Symbols of one kind, in table order."""
        return [sym for sym in self.symbols if sym.kind == kind]
