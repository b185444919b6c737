"""The .tbin binary: a compiled program, its weights and its symbol table.

The on-disk layout is in docs/binary-format.md. In memory a binary is a
`TBinary`; `to_bytes` / `from_bytes` convert, `from_bytes` validates
everything and raises `TbinError` with a one-line message. `to_bytes` runs the
same checks first, so tasic never writes a file it would refuse to read.

HBM convention: the constants image is loaded at HBM address 0; every symbol
address is an absolute HBM byte address; the program needs
`metadata["hbm_bytes"]` bytes of HBM in all.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from numbers import Integral
from pathlib import Path
from typing import Any

from tasic.backend.isa_spec import (
    DTYPE_BY_NAME,
    DTYPE_BYTES,
    DTYPE_NAMES,
    FIELD_RANGES,
    FLAG_BCAST_MASK,
    FLAG_BCAST_SHIFT,
    NUM_REGS,
    NUM_SEMAPHORES,
    BinaryFn,
    Broadcast,
    Engine,
    Instr,
    Op,
    ReduceFn,
    UnaryFn,
    decode_program,
    encode_program,
)

SYMBOL_KINDS = ("input", "output", "weight", "kv", "temp")

MAGIC = b"TBIN"
FORMAT_VERSION = 1
HASH_BYTES = 32
CHECKSUM_BYTES = 32
SECTION_ALIGN = 64  # every section (so CONST too) starts at a multiple of this
# magic, version, flags, file size, section count, name length, table offset, target hash
_HEADER = struct.Struct("<4sHHQHHI32s")
# kind, reserved, offset, size
_SECTION = struct.Struct("<IIQQ")
_SYMBOL_KEYS = ("name", "kind", "address", "shape", "dtype")
_RECOMPILE = "recompile it with `tasic compile`"


class Section(IntEnum):
    """Section kinds of the section table."""

    CODE = 1  # 32-byte instructions
    CONST = 2  # constants image, loaded at HBM address 0
    SYMTAB = 3  # UTF-8 JSON list of symbols
    ENTRY = 4  # UTF-8 JSON object: entry name -> instruction index
    META = 5  # UTF-8 JSON object: metadata
    SHARDS = 6  # optional: the sharded weights of chips 1.. (tensor parallelism), see TBinary.shard_data


class TbinError(Exception):
    """A binary that cannot be read or written (message is user-facing, one line).

    `index` is the position of the offending item (instruction, symbol or entry
    point) when there is one, so the assembler can point at a source line.
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


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
    instruction, -1 for none), ``model`` (str), ``dtype`` (str). Optional: ``entries``
    (entry point -> ``{"inputs": {name: symbol}, "outputs": {name: symbol}}``, see `check_entry_io`).
    """

    target_name: str
    target_hash: bytes  # 32 bytes, sha256 of the target file
    code: list[Instr]
    constants: bytes  # image of HBM [0, len(constants))
    symbols: list[Symbol]
    entry_points: dict[str, int] = field(default_factory=lambda: {"main": 0})
    metadata: dict[str, Any] = field(default_factory=dict)
    # Tensor parallelism: `constants` holds chip 0's part of each sharded weight; this holds, for chips
    # 1 .. chips-1 in turn, each sharded weight's part (symbol-table order). Empty otherwise.
    shard_data: bytes = b""

    def sharded_weights(self) -> list[Symbol]:
        """Weight symbols split over chips (metadata["shards"]), in symbol-table order."""
        shards = self.metadata.get("shards", {})
        return [sym for sym in self.symbols if sym.kind == "weight" and sym.name in shards]

    def chip_constants(self, chip: int) -> list[tuple[Symbol, bytes]]:
        """The bytes of every sharded weight on `chip` (>= 1), to be stored at the symbols' addresses."""
        sharded = self.sharded_weights()
        size = sum(sym.nbytes for sym in sharded)
        cursor = (chip - 1) * size
        parts = []
        for sym in sharded:
            parts.append((sym, self.shard_data[cursor : cursor + sym.nbytes]))
            cursor += sym.nbytes
        return parts

    def symbol(self, name: str) -> Symbol:
        """The symbol called `name`."""
        for sym in self.symbols:
            if sym.name == name:
                return sym
        raise KeyError(name)

    def symbols_of_kind(self, kind: str) -> list[Symbol]:
        """Symbols of one kind, in table order."""
        return [sym for sym in self.symbols if sym.kind == kind]


# ---------------------------------------------------------------- validation


def _is_int(value: object) -> bool:
    """True for an integer (Python or numpy), bool excluded."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def validate(binary: TBinary) -> None:
    """Check every invariant of a binary; raises TbinError naming the first problem."""
    check_header(binary)
    check_metadata(binary)
    check_code(binary.code)
    check_symbols(binary)
    check_entries(binary)
    check_entry_io(binary)
    check_shards(binary)


def check_shards(binary: TBinary) -> None:
    """metadata chips / shards name real symbols, and SHARDS holds every other chip's weight parts."""
    meta = binary.metadata
    chips = meta.get("chips", 1)
    if not _is_int(chips) or chips < 1:
        raise TbinError(f"metadata chips must be a positive int, not {chips!r}")
    shards = meta.get("shards", {})
    if not isinstance(shards, dict):
        raise TbinError("metadata shards must be an object: symbol -> [dim, parts]")
    names = {sym.name: sym for sym in binary.symbols}
    for name, shard in shards.items():
        if name not in names:
            raise TbinError(f"metadata shards names '{name}', which is not a symbol")
        if not (isinstance(shard, list) and len(shard) == 2 and all(_is_int(n) for n in shard)):
            raise TbinError(f"metadata shards['{name}'] must be [dim, parts]")
        if not 0 <= shard[0] < max(1, len(names[name].shape)) or shard[1] != chips:
            raise TbinError(f"metadata shards['{name}'] = {shard} does not fit the symbol or {chips} chips")
    if not isinstance(binary.shard_data, bytes | bytearray):
        raise TbinError("shard data must be bytes")
    expected = 0 if meta.get("timing_only") else (chips - 1) * sum(s.nbytes for s in binary.sharded_weights())
    if len(binary.shard_data) != expected:
        raise TbinError(
            f"SHARDS section is {len(binary.shard_data)} bytes, {chips} chips' sharded weights need {expected}"
        )


def check_header(binary: TBinary) -> None:
    """Target name, target hash and constants type."""
    name = binary.target_name
    if not isinstance(name, str) or not name:
        raise TbinError("the target name must be a non-empty string")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        raise TbinError(f"target name {name!r} is not valid UTF-8") from None
    if len(encoded) > 0xFFFF:
        raise TbinError(f"target name is {len(encoded)} bytes, at most 65535 fit")
    if not isinstance(binary.target_hash, bytes) or len(binary.target_hash) != HASH_BYTES:
        raise TbinError(f"the target hash must be {HASH_BYTES} bytes (sha256 of the target file)")
    if not isinstance(binary.constants, bytes | bytearray):
        raise TbinError(f"constants must be bytes, not {type(binary.constants).__name__}")


def check_metadata(binary: TBinary) -> None:
    """Metadata is an object; `hbm_bytes` and `instr_locs` are consistent when present."""
    meta = binary.metadata
    if not isinstance(meta, dict):
        raise TbinError(f"metadata must be a JSON object, not {type(meta).__name__}")
    if "hbm_bytes" in meta:
        hbm = meta["hbm_bytes"]
        if not _is_int(hbm) or hbm < 0:
            raise TbinError(f"metadata hbm_bytes must be a non-negative int, not {hbm!r}")
        if len(binary.constants) > hbm:
            raise TbinError(f"constants ({len(binary.constants)} bytes) exceed metadata hbm_bytes {hbm}")
    if "instr_locs" in meta:
        _check_locs(meta.get("locs"), meta["instr_locs"], len(binary.code))


def _check_locs(locs: object, instr_locs: object, code_len: int) -> None:
    """`instr_locs` has one index into `locs` (or -1) per instruction."""
    if not isinstance(locs, list) or not all(isinstance(loc, str) for loc in locs):
        raise TbinError("metadata locs must be a list of strings when instr_locs is present")
    if not isinstance(instr_locs, list) or len(instr_locs) != code_len:
        raise TbinError(f"metadata instr_locs must be a list of {code_len} ints (one per instruction)")
    for index, loc in enumerate(instr_locs):
        if not _is_int(loc) or not -1 <= loc < len(locs):
            raise TbinError(f"metadata instr_locs[{index}] = {loc!r} is not -1 or an index into locs")


# Opcodes whose func field names something: the enum of valid codes, and what it is.
_FUNC_ENUMS: dict[int, tuple[type[IntEnum], str]] = {
    Op.SIGNAL: (Engine, "engine"),
    Op.WAIT: (Engine, "engine"),
    Op.VPU_UNARY: (UnaryFn, "unary function"),
    Op.VPU_BINARY: (BinaryFn, "binary function"),
    Op.VPU_SCALAR: (BinaryFn, "binary function"),
    Op.VPU_REDUCE: (ReduceFn, "reduce function"),
}


def check_code(code: list[Instr]) -> None:
    """Every instruction is encodable and meaningful; loops are balanced."""
    open_loops: list[int] = []
    for index, instr in enumerate(code):
        problem = instruction_problem(instr)
        if problem:
            raise TbinError(f"instruction {index}: {problem}", index)
        if instr.opcode == Op.LOOP:
            open_loops.append(index)
        elif instr.opcode == Op.ENDLOOP:
            if not open_loops:
                raise TbinError(f"instruction {index}: endloop without a matching loop", index)
            open_loops.pop()
    if open_loops:
        index = open_loops[-1]
        raise TbinError(f"instruction {index}: loop has no matching endloop", index)


def instruction_problem(instr: Instr) -> str | None:
    """Why one instruction is invalid, or None."""
    for name, (low, high) in FIELD_RANGES.items():
        value = getattr(instr, name)
        if not _is_int(value) or not low <= value <= high:
            return f"field {name}={value!r} is out of range {low}..{high}"
    if instr.opcode not in Op._value2member_map_:
        return f"unknown opcode 0x{instr.opcode:02x}"
    return _operand_problem(instr) or _opcode_problem(instr)


def _operand_problem(instr: Instr) -> str | None:
    """Registers and dtype codes of any instruction."""
    for name in ("reg_d", "reg_a", "reg_b", "reg_c"):
        if getattr(instr, name) >= NUM_REGS:
            return f"{name} is r{getattr(instr, name)}, registers are r0..r{NUM_REGS - 1}"
    for name in ("dt_d", "dt_a", "dt_b"):
        if getattr(instr, name) not in DTYPE_NAMES:
            return f"{name} has unknown dtype code {getattr(instr, name)}"
    return None


def _opcode_problem(instr: Instr) -> str | None:
    """Opcode-specific rules: function codes, semaphores, loop counts, broadcast."""
    op = Op(instr.opcode)
    enum, what = _FUNC_ENUMS.get(op, (None, ""))
    if enum is not None and instr.func not in enum._value2member_map_:
        return f"{op.name.lower().replace('_', '.')}: unknown {what} {instr.func} in func"
    if op in (Op.SIGNAL, Op.WAIT) and not 0 <= instr.imm < NUM_SEMAPHORES:
        return f"semaphore s{instr.imm} does not exist (s0..s{NUM_SEMAPHORES - 1})"
    if op == Op.MXU_MATMUL and instr.imm < 0:
        return f"mxu.matmul: batch {instr.imm} must be >= 0"
    if op == Op.VPU_CAUSAL and instr.imm < 0:
        return f"vpu.causal: period {instr.imm} must be >= 0"
    if op == Op.VPU_ROPE and (instr.imm <= 0 or instr.imm % 2):
        return f"vpu.rope: head size {instr.imm} must be even and positive"
    if op == Op.VPU_ROPE and not (0 <= instr.depth <= instr.cols and instr.depth % instr.imm == 0):
        return f"vpu.rope: roped({instr.depth}) must be whole heads of {instr.imm} within the {instr.cols} columns"
    if op == Op.LOOP and instr.imm64 < 1:
        return f"loop count {instr.imm64} must be >= 1"
    broadcast = (instr.flags & FLAG_BCAST_MASK) >> FLAG_BCAST_SHIFT
    if op == Op.VPU_BINARY and broadcast not in Broadcast._value2member_map_:
        return f"unknown broadcast mode {broadcast} in flags"
    return None


def check_symbols(binary: TBinary) -> None:
    """Symbol schema, unique names, and every tensor inside HBM."""
    hbm = binary.metadata.get("hbm_bytes")
    seen: set[str] = set()
    for index, sym in enumerate(binary.symbols):
        problem = _symbol_problem(sym, hbm) or (f"duplicate name {sym.name!r}" if sym.name in seen else None)
        if problem:
            raise TbinError(f"symbol {index} ({sym.name!r}): {problem}", index)
        seen.add(sym.name)


def _symbol_problem(sym: Symbol, hbm: int | None) -> str | None:
    """Why one symbol is invalid, or None."""
    if not isinstance(sym.name, str) or not sym.name:
        return "the name must be a non-empty string"
    if sym.kind not in SYMBOL_KINDS:
        return f"kind {sym.kind!r} is not one of {', '.join(SYMBOL_KINDS)}"
    if not _is_int(sym.address) or sym.address < 0:
        return f"address {sym.address!r} must be a non-negative int"
    if not isinstance(sym.shape, tuple | list) or not all(_is_int(n) and n >= 0 for n in sym.shape):
        return f"shape {sym.shape!r} must be a list of non-negative ints"
    if sym.dtype not in DTYPE_BY_NAME:
        return f"unknown dtype {sym.dtype!r}"
    if hbm is None:
        return "metadata has no hbm_bytes to bound the symbol table"
    if sym.address + sym.nbytes > hbm:
        return f"bytes [{sym.address}, {sym.address + sym.nbytes}) lie beyond hbm_bytes {hbm}"
    return None


def check_entries(binary: TBinary) -> None:
    """Entry points name instructions of the program."""
    if not isinstance(binary.entry_points, dict):
        raise TbinError("entry points must be a JSON object of name -> instruction index")
    for index, (name, target) in enumerate(binary.entry_points.items()):
        if not isinstance(name, str) or not name:
            raise TbinError(f"entry point {index}: the name must be a non-empty string", index)
        if not _is_int(target) or not 0 <= target < len(binary.code):
            raise TbinError(
                f"entry point {name!r} = {target!r} is not an instruction index (0..{len(binary.code) - 1})", index
            )


ENTRY_IO_KEYS = ("inputs", "outputs")


def check_entry_io(binary: TBinary) -> None:
    """metadata["entries"], when present: entry point -> {"inputs": {name: symbol}, "outputs": {name: symbol}}."""
    entries = binary.metadata.get("entries") if isinstance(binary.metadata, dict) else None
    if entries is None:
        return
    if not isinstance(entries, dict):
        raise TbinError(
            f"metadata entries must be a JSON object of entry point -> inputs and outputs, not {type(entries).__name__}"
        )
    symbols = {sym.name for sym in binary.symbols}
    for entry, spec in entries.items():
        where = f"metadata entries[{entry!r}]"
        if entry not in binary.entry_points:
            have = ", ".join(map(str, binary.entry_points)) or "none"
            raise TbinError(f"{where}: no such entry point (entry points: {have})")
        if not isinstance(spec, dict):
            raise TbinError(f"{where} must be a JSON object with keys inputs and outputs, not {type(spec).__name__}")
        unknown = [key for key in spec if key not in ENTRY_IO_KEYS]
        if unknown:
            raise TbinError(f"{where} has unknown key {unknown[0]!r} (allowed: {', '.join(ENTRY_IO_KEYS)})")
        for key, names in spec.items():
            if not isinstance(names, dict):
                raise TbinError(
                    f"{where}.{key} must be a JSON object of name -> symbol name, not {type(names).__name__}"
                )
            for name, symbol in names.items():
                if not isinstance(name, str) or not name:
                    raise TbinError(f"{where}.{key}: the name {name!r} must be a non-empty string")
                if not isinstance(symbol, str) or symbol not in symbols:
                    raise TbinError(f"{where}.{key}[{name!r}] = {symbol!r} is not a symbol of the binary")


# ---------------------------------------------------------------- writing


def _align(offset: int, alignment: int) -> int:
    """`offset` rounded up to a multiple of `alignment`."""
    return -(-offset // alignment) * alignment


def _json_bytes(value: object, what: str) -> bytes:
    """Compact UTF-8 JSON; TbinError when `value` is not plain JSON."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as err:
        raise TbinError(f"{what} cannot be stored as JSON: {err}") from None


def _symbol_json(sym: Symbol) -> dict[str, Any]:
    """One SYMTAB entry."""
    shape = [int(n) for n in sym.shape]
    return {"name": sym.name, "kind": sym.kind, "address": int(sym.address), "shape": shape, "dtype": sym.dtype}


def _payloads(binary: TBinary) -> list[tuple[Section, bytes]]:
    """The section contents in file order."""
    symtab = [_symbol_json(sym) for sym in binary.symbols]
    entries = {name: int(index) for name, index in binary.entry_points.items()}
    return [
        (Section.CODE, encode_program(binary.code)),
        (Section.CONST, bytes(binary.constants)),
        (Section.SYMTAB, _json_bytes(symtab, "symbol table")),
        (Section.ENTRY, _json_bytes(entries, "entry points")),
        (Section.META, _json_bytes(binary.metadata, "metadata")),
        *([(Section.SHARDS, bytes(binary.shard_data))] if binary.shard_data else []),
    ]


def to_bytes(binary: TBinary) -> bytes:
    """Validate `binary` and serialise it to the .tbin container format."""
    validate(binary)
    name = binary.target_name.encode()
    payloads = _payloads(binary)
    table_offset = _align(_HEADER.size + len(name), 8)
    cursor = table_offset + len(payloads) * _SECTION.size
    table = []
    for kind, payload in payloads:
        cursor = _align(cursor, SECTION_ALIGN)
        table.append((kind, cursor, len(payload)))
        cursor += len(payload)
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, 0, cursor + CHECKSUM_BYTES, len(table), len(name), table_offset, binary.target_hash
    )
    body = bytearray(header + name)
    body += bytes(table_offset - len(body))
    body += b"".join(_SECTION.pack(kind, 0, offset, size) for kind, offset, size in table)
    for (_, offset, _), (_, payload) in zip(table, payloads, strict=True):
        body += bytes(offset - len(body))
        body += payload
    body += hashlib.sha256(body).digest()
    return bytes(body)


def write_tbin(binary: TBinary, path: str | os.PathLike[str]) -> None:
    """Write `binary` to `path` atomically (via a temporary file and rename)."""
    data = to_bytes(binary)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TbinError(f"cannot write {path}: {err.strerror}") from None


# ---------------------------------------------------------------- reading


def _check_envelope(raw: bytes) -> None:
    """Magic, version, total size and checksum, in that order."""
    if not MAGIC.startswith(raw[:4]):
        raise TbinError(f"not a tasic binary (bad magic {raw[:4]!r}): expected a .tbin written by `tasic compile`")
    if len(raw) < _HEADER.size + CHECKSUM_BYTES:
        smallest = _HEADER.size + CHECKSUM_BYTES
        raise TbinError(f"truncated: file is {len(raw)} bytes, less than header and checksum ({smallest} bytes)")
    _, version, _, file_size, *_ = _HEADER.unpack_from(raw)
    if version != FORMAT_VERSION:
        raise TbinError(
            f"unsupported format version {version} (this tasic reads version {FORMAT_VERSION}): {_RECOMPILE}"
        )
    if len(raw) < file_size:
        raise TbinError(f"truncated: file is {len(raw)} bytes, header says {file_size}; copy it again or {_RECOMPILE}")
    if len(raw) > file_size:
        raise TbinError(f"file is {len(raw)} bytes but its header says {file_size}: trailing garbage; {_RECOMPILE}")
    if hashlib.sha256(raw[:-CHECKSUM_BYTES]).digest() != raw[-CHECKSUM_BYTES:]:
        raise TbinError(f"checksum mismatch: the file is corrupt; {_RECOMPILE}")


def _read_table(raw: bytes) -> tuple[str, bytes, dict[Section, bytes]]:
    """Target name, target hash and the sections, with all bounds checked."""
    _, _, flags, file_size, count, name_len, table_offset, target_hash = _HEADER.unpack_from(raw)
    if flags:
        raise TbinError(f"unknown header flags 0x{flags:04x}: the file needs a newer tasic or {_RECOMPILE}")
    data_end = file_size - CHECKSUM_BYTES
    table_end = table_offset + count * _SECTION.size
    if table_offset < _HEADER.size + name_len or table_end > data_end:
        raise TbinError(f"bad header: target name or section table out of bounds; {_RECOMPILE}")
    try:
        name = raw[_HEADER.size : _HEADER.size + name_len].decode()
    except UnicodeDecodeError:
        raise TbinError(f"bad header: the target name is not UTF-8; {_RECOMPILE}") from None
    entries = [_SECTION.unpack_from(raw, table_offset + i * _SECTION.size) for i in range(count)]
    return name, target_hash, _sections(raw, entries, table_end, data_end)


def _sections(raw: bytes, entries: list[tuple[int, int, int, int]], start: int, end: int) -> dict[Section, bytes]:
    """Validate the section table entries and slice the sections out of `raw`."""
    sections: dict[Section, bytes] = {}
    previous_end, previous_kind = start, "section table"
    for kind, reserved, offset, size in sorted(entries, key=lambda entry: entry[2]):
        if kind not in Section._value2member_map_ or reserved:
            raise TbinError(f"unknown section kind {kind} (reserved {reserved}): {_RECOMPILE}")
        section = Section(kind)
        if section in sections:
            raise TbinError(f"duplicate {section.name} section; {_RECOMPILE}")
        if offset < previous_end:
            raise TbinError(f"{section.name} section overlaps the {previous_kind}; {_RECOMPILE}")
        if offset + size > end:
            raise TbinError(f"{section.name} section [{offset}, {offset + size}) runs past the data end {end}")
        if section == Section.CONST and offset % SECTION_ALIGN:
            raise TbinError(f"CONST section at offset {offset} is not {SECTION_ALIGN}-byte aligned; {_RECOMPILE}")
        sections[section] = raw[offset : offset + size]
        previous_end, previous_kind = offset + size, f"{section.name} section"
    missing = [s.name for s in Section if s not in sections and s != Section.SHARDS]
    if missing:
        raise TbinError(f"missing section(s) {', '.join(missing)}; {_RECOMPILE}")
    return sections


def reject_json_constant(text: str) -> None:
    """json parse_constant hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{text} is not valid JSON")


def _load_json(data: bytes, section: Section) -> Any:
    """Parse one UTF-8 JSON section."""
    try:
        return json.loads(data.decode(), parse_constant=reject_json_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise TbinError(f"{section.name} section is not valid UTF-8 JSON ({err}); {_RECOMPILE}") from None


def _load_symbols(data: bytes) -> list[Symbol]:
    """Symbols from the SYMTAB JSON (object shape only; values are checked by check_symbols)."""
    items = _load_json(data, Section.SYMTAB)
    if not isinstance(items, list):
        raise TbinError(f"SYMTAB section must be a JSON list of symbols; {_RECOMPILE}")
    symbols = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or sorted(item) != sorted(_SYMBOL_KEYS):
            raise TbinError(f"symbol {index}: expected an object with keys {', '.join(_SYMBOL_KEYS)}", index)
        shape = tuple(item["shape"]) if isinstance(item["shape"], list) else item["shape"]
        symbols.append(Symbol(item["name"], item["kind"], item["address"], shape, item["dtype"]))
    return symbols


def _load_code(data: bytes) -> list[Instr]:
    """Decode the CODE section."""
    try:
        return decode_program(data)
    except ValueError as err:
        raise TbinError(f"bad code: {err}; {_RECOMPILE}") from None


def from_bytes(raw: bytes) -> TBinary:
    """Parse and validate a .tbin image; raises TbinError naming the first problem."""
    raw = bytes(raw)
    _check_envelope(raw)
    name, target_hash, sections = _read_table(raw)
    binary = TBinary(
        target_name=name,
        target_hash=target_hash,
        code=_load_code(sections[Section.CODE]),
        constants=sections[Section.CONST],
        symbols=_load_symbols(sections[Section.SYMTAB]),
        entry_points=_load_json(sections[Section.ENTRY], Section.ENTRY),
        metadata=_load_json(sections[Section.META], Section.META),
        shard_data=sections.get(Section.SHARDS, b""),
    )
    validate(binary)
    return binary


def read_tbin(path: str | os.PathLike[str]) -> TBinary:
    """Read and validate a .tbin file; errors are prefixed with the path."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TbinError(f"no such file: {path}") from None
    except OSError as err:
        raise TbinError(f"cannot read {path}: {err.strerror}") from None
    try:
        return from_bytes(raw)
    except TbinError as err:
        raise TbinError(f"{path}: {err}", err.index) from None
