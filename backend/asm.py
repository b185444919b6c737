"""Textual assembly for .tbin binaries: `disassemble` and `assemble`.

`assemble(disassemble(b, with_data=True))` rebuilds `b` exactly: every field of
every instruction is either shown by the operand syntax or listed in a trailing
``{field=value, ...}`` block. The syntax is in docs/binary-format.md.

Each instruction form is one template such as
``dma.load {d:sram} <- {a:hbm} {shape} stride({off_b}, {imm})``; the same
template prints an instruction and, compiled to a regex, parses it back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from tasic.backend.isa_spec import (
    DTYPE_NAMES,
    FIELD_RANGES,
    FLAG_ACCUMULATE,
    FLAG_BCAST_MASK,
    FLAG_BCAST_SHIFT,
    INSTR_BYTES,
    BinaryFn,
    Broadcast,
    Engine,
    Instr,
    Op,
    ReduceFn,
    UnaryFn,
)
from tasic.backend.tbin import (
    Symbol,
    TBinary,
    TbinError,
    check_code,
    check_entries,
    check_entry_io,
    check_header,
    check_metadata,
    check_shards,
    check_symbols,
    reject_json_constant,
)


class AsmError(Exception):
    """An assembly listing that cannot be assembled; the message starts with "line N:"."""


# ---------------------------------------------------------------- scalars

_INT = r"[+-]?(?:0x[0-9a-fA-F]+|\d+)"
_REGOFF = rf"r(\d+)({_INT})?"
_BARE_WORD = re.compile(r"[\w.:/@+-]+")
_WORDS = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"]+')
_CODE_PART = re.compile(r'(?:[^";]|"(?:[^"\\]|\\.)*")*')
_COMMENT_COLUMN = 64
_DATA_INDENT = "    "


def _int(text: str) -> int:
    """A decimal or 0x-prefixed integer with an optional sign."""
    return int(text, 16 if "0x" in text.lower() else 10)


def _f32_bits(text: str) -> int:
    """The i32 bit pattern of a float32 literal (`1.5`, `-inf`, `nan`, `bits:0x7fc00001`)."""
    try:
        if text.startswith("bits:"):
            return struct.unpack("<i", struct.pack("<I", int(text[5:], 16)))[0]
        return struct.unpack("<i", struct.pack("<f", float(text)))[0]
    except (ValueError, OverflowError, struct.error):
        raise ValueError(f"bad float32 {text!r}: expected e.g. 0.125, -inf, nan or bits:0x7fc00001") from None


def _show_f32(bits: int) -> str:
    """Shortest decimal that parses back to exactly `bits`, else `bits:0x...`."""
    value = struct.unpack("<f", struct.pack("<i", bits))[0]
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if not re.search(r"[.en]", text):
            text += ".0"
        try:
            if _f32_bits(text) == bits:
                return text
        except ValueError:
            continue
    return f"bits:0x{bits & 0xFFFFFFFF:08x}"


def _show_name(names: dict[int, str], value: int) -> str:
    """The name of a code, or the number when it has none."""
    return names.get(value, str(value))


def _read_name(names: dict[int, str], text: str, what: str) -> int:
    """The code of a name (or a plain number)."""
    if text.isdigit():
        return int(text)
    for code, name in names.items():
        if name == text:
            return code
    raise ValueError(f"unknown {what} {text!r} (known: {', '.join(names.values())})")


def _enum_names(enum: type[IntEnum]) -> dict[int, str]:
    """Lower-case member names by value."""
    return {member.value: member.name.lower() for member in enum}


def _word(text: str) -> str:
    """A name as one token: bare when safe, else a JSON string."""
    return text if _BARE_WORD.fullmatch(text) else json.dumps(text)


def _read_word(token: str) -> str:
    """Inverse of `_word`."""
    return json.loads(token) if token.startswith('"') else token


def _show_regoff(reg: int, off: int) -> str:
    """`r3+16` / `r3-16`."""
    return f"r{reg}{off:+d}"


# ---------------------------------------------------------------- operands


@dataclass(frozen=True)
class _Operand:
    """One placeholder of an instruction template."""

    pattern: str  # regex; its groups are handed to `read`
    hint: str  # shown in "expected ..." messages
    masks: dict[str, int]  # fields it encodes: -1 the whole field, else the bits
    show: Callable[[Instr], str]
    read: Callable[[Instr, list[str]], None]

    @property
    def groups(self) -> int:
        """Number of capture groups in `pattern`."""
        return re.compile(self.pattern).groups


def _setter(*names: str) -> Callable[[Instr, list[str]], None]:
    """Reader that stores each group, as an int, into the named fields."""

    def read(instr: Instr, groups: list[str]) -> None:
        for name, text in zip(names, groups, strict=True):
            setattr(instr, name, _int(text))

    return read


def _mem(space: str, letter: str) -> _Operand:
    """`space[rN+off]:dtype` for operand d, a or b; operand c (`reg_c + imm`) has no dtype."""
    reg, off = f"reg_{letter}", "imm" if letter == "c" else f"off_{letter}"
    dtype = None if letter == "c" else f"dt_{letter}"
    suffix = r":(\w+)" if dtype else ""

    def show(instr: Instr) -> str:
        text = f"{space}[{_show_regoff(getattr(instr, reg), getattr(instr, off))}]"
        return text + (f":{_show_name(DTYPE_NAMES, getattr(instr, dtype))}" if dtype else "")

    def read(instr: Instr, groups: list[str]) -> None:
        setattr(instr, reg, int(groups[0]))
        setattr(instr, off, _int(groups[1] or "0"))
        if dtype:
            setattr(instr, dtype, _read_name(DTYPE_NAMES, groups[2], "dtype"))

    masks = {reg: -1, off: -1} | ({dtype: -1} if dtype else {})
    hint = f"{space}[rN+OFF]" + (":DTYPE" if dtype else "")
    return _Operand(rf"{space}\[{_REGOFF}\]{suffix}", hint, masks, show, read)


def _shape(names: tuple[str, ...], hint: str) -> _Operand:
    """`8x64` (rows, cols) or `16x16x64` (rows, cols, depth)."""
    return _Operand(
        "x".join([r"(\d+)"] * len(names)),
        hint,
        dict.fromkeys(names, -1),
        lambda instr: "x".join(str(getattr(instr, name)) for name in names),
        _setter(*names),
    )


def _number(name: str) -> _Operand:
    """A raw integer field."""
    return _Operand(f"({_INT})", name.upper(), {name: -1}, lambda instr: str(getattr(instr, name)), _setter(name))


def _register(name: str) -> _Operand:
    """`rN` in field `name`."""
    return _Operand(r"r(\d+)", "rN", {name: -1}, lambda instr: f"r{getattr(instr, name)}", _setter(name))


def _function(enum: type[IntEnum], what: str) -> _Operand:
    """A named code in the func field (VPU function or engine)."""
    names = _enum_names(enum)

    def read(instr: Instr, groups: list[str]) -> None:
        instr.func = _read_name(names, groups[0], what)

    hint = "|".join(names.values())
    return _Operand(r"(\w+)", hint, {"func": -1}, lambda instr: _show_name(names, instr.func), read)


def _read_imm64(instr: Instr, groups: list[str]) -> None:
    value = _int(groups[0])
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} does not fit in a signed 64-bit immediate")
    instr.set_imm64(value)


def _read_f32(instr: Instr, groups: list[str]) -> None:
    instr.imm = _f32_bits(groups[0])


def _read_accumulate(instr: Instr, groups: list[str]) -> None:
    instr.flags |= FLAG_ACCUMULATE if groups[0] == "+=" else 0


_BCAST_NAMES = _enum_names(Broadcast)


def _show_bcast(instr: Instr) -> str:
    mode = (instr.flags & FLAG_BCAST_MASK) >> FLAG_BCAST_SHIFT
    return f" bcast={_show_name(_BCAST_NAMES, mode)}" if mode else ""


def _read_bcast(instr: Instr, groups: list[str]) -> None:
    if groups[0] is not None:
        instr.flags |= _read_name(_BCAST_NAMES, groups[0], "broadcast mode") << FLAG_BCAST_SHIFT


def _read_window(instr: Instr, groups: list[str]) -> None:
    if groups[0] is not None:
        instr.depth = int(groups[0])


def _read_batch(instr: Instr, groups: list[str]) -> None:
    """batch(N) of mxu.matmul or period(N) of vpu.causal: both live in imm."""
    if groups[0] is not None:
        instr.imm = int(groups[0])


_OPERANDS: dict[str, _Operand] = {
    **{f"{x}:{space}": _mem(space, x) for x in "dab" for space in ("sram", "hbm")},
    "c": _mem("sram", "c"),
    "shape": _shape(("rows", "cols"), "ROWSxCOLS"),
    "mnk": _shape(("rows", "cols", "depth"), "MxNxK"),
    "off_b": _number("off_b"),
    "imm": _number("imm"),
    "depth": _number("depth"),
    "reg_d": _register("reg_d"),
    "reg_a": _register("reg_a"),
    "imm64": _Operand(f"({_INT})", "IMM64", {"off_b": -1, "imm": -1}, lambda i: str(i.imm64), _read_imm64),
    "f32": _Operand(r"(\S+)", "FLOAT", {"imm": -1}, lambda i: _show_f32(i.imm), _read_f32),
    "sem": _Operand(r"s(-?\d+)", "sN", {"imm": -1}, lambda i: f"s{i.imm}", _setter("imm")),
    "engine": _function(Engine, "engine"),
    "unary": _function(UnaryFn, "unary function"),
    "binary": _function(BinaryFn, "binary function"),
    "reduce": _function(ReduceFn, "reduce function"),
    "acc": _Operand(
        r"(\+?=)",
        "=|+=",
        {"flags": FLAG_ACCUMULATE},
        lambda i: "+=" if i.flags & FLAG_ACCUMULATE else "=",
        _read_accumulate,
    ),
    "bcast": _Operand(r"(?: bcast=(\w+))?", " [bcast=row|col]", {"flags": FLAG_BCAST_MASK}, _show_bcast, _read_bcast),
    "diag": _Operand(
        _REGOFF,
        "rN+OFF",
        {"reg_a": -1, "off_a": -1},
        lambda i: _show_regoff(i.reg_a, i.off_a),
        _setter("reg_a", "off_a"),
    ),
    "window": _Operand(
        r"(?: window\((\d+)\))?",
        " [window(DEPTH)]",
        {"depth": -1},
        lambda i: f" window({i.depth})" if i.depth else "",
        _read_window,
    ),
    "period": _Operand(
        r"(?: period\((\d+)\))?",
        " [period(ROWS)]",
        {"imm": -1},
        lambda i: f" period({i.imm})" if i.imm else "",
        _read_batch,
    ),
    "batch": _Operand(
        r"(?: batch\((\d+)\))?",
        " [batch(N)]",
        {"imm": -1},
        lambda i: f" batch({i.imm})" if i.imm else "",
        _read_batch,
    ),
}

_TEMPLATES: dict[Op, str] = {
    Op.HALT: "halt",
    Op.ADDI: "addi {reg_d}, {reg_a}, {imm64}",
    Op.LOOP: "loop {imm64}",
    Op.ENDLOOP: "endloop",
    Op.SIGNAL: "signal {engine} {sem}",
    Op.WAIT: "wait {engine} {sem}",
    Op.DMA_LOAD: "dma.load {d:sram} <- {a:hbm} {shape} stride({off_b}, {imm})",
    Op.DMA_STORE: "dma.store {d:hbm} <- {a:sram} {shape} stride({off_b}, {imm})",
    Op.DMA_GATHER: "dma.gather {d:sram} <- {a:hbm} index {b:hbm} {shape} stride({imm})",
    Op.DMA_SCATTER: "dma.scatter {d:hbm} index {b:hbm} <- {a:sram} {shape} stride({imm})",
    Op.MXU_MATMUL: "mxu.matmul {d:sram} {acc} {a:sram} @ {b:sram} {mnk}{batch}",
    Op.VPU_UNARY: "vpu.unary {unary} {d:sram} <- {a:sram} {shape}",
    Op.VPU_BINARY: "vpu.binary {binary} {d:sram} <- {a:sram}, {b:sram} {shape}{bcast}",
    Op.VPU_SCALAR: "vpu.scalar {binary} {d:sram} <- {a:sram}, {f32} {shape}",
    Op.VPU_REDUCE: "vpu.reduce {reduce} {d:sram} <- {a:sram} {shape}",
    Op.VPU_SELECT: "vpu.select {d:sram} <- {c} ? {a:sram} : {b:sram} {shape}",
    Op.VPU_EXP_SUM: "vpu.expsum {d:sram}, sum {c} <- {a:sram}, {b:sram} {shape}",
    Op.VPU_ROPE: "vpu.rope {d:sram} <- {a:sram}, {b:sram} {shape} head({imm}) roped({depth})",
    Op.VPU_FILL: "vpu.fill {d:sram} <- {f32} {shape}",
    Op.VPU_CAUSAL: "vpu.causal {d:sram} {shape} diag({diag}){window}{period}",
    Op.LINK_ALLREDUCE: "link.allreduce {d:sram} <- {a:sram} {shape} chips({depth})",
    Op.LINK_SEND: "link.send {d:hbm} <- {a:sram} {shape} stride({off_b}, {imm})",
}


@dataclass(frozen=True)
class _Form:
    """One opcode's syntax: literal text and operands, and the regex that parses it."""

    op: Op
    parts: tuple[str | _Operand, ...]
    regex: re.Pattern[str]
    masks: dict[str, int]

    @property
    def hint(self) -> str:
        """The syntax with placeholders, for error messages."""
        return "".join(part if isinstance(part, str) else part.hint for part in self.parts)


def _compile(op: Op, template: str) -> _Form:
    """Build the form of one template."""
    pieces = re.split(r"\{([\w:]+)\}", template)
    parts = tuple(_OPERANDS[piece] if index % 2 else piece for index, piece in enumerate(pieces) if piece)
    pattern = "".join(part.pattern if isinstance(part, _Operand) else re.escape(part) for part in parts)
    masks: dict[str, int] = {"opcode": -1}
    for part in parts:
        if isinstance(part, _Operand):
            for name, mask in part.masks.items():
                masks[name] = masks.get(name, 0) | mask
    return _Form(op, parts, re.compile(pattern + r"(?: \{([^{}]*)\})?"), masks)


_FORMS = {op: _compile(op, template) for op, template in _TEMPLATES.items()}
_FORMS_BY_MNEMONIC = {template.split()[0]: _FORMS[op] for op, template in _TEMPLATES.items()}


# ---------------------------------------------------------------- instructions


def _show_extras(instr: Instr, masks: dict[str, int]) -> str:
    """`{field=value, ...}` for the non-zero bits no operand shows."""
    items = []
    for name in FIELD_RANGES:
        value = getattr(instr, name) & ~masks.get(name, 0)
        if value:
            items.append(f"{name}=0x{value:x}" if name == "flags" else f"{name}={value}")
    return f" {{{', '.join(items)}}}" if items else ""


def show_instruction(instr: Instr) -> str:
    """One instruction in assembly syntax (no indentation, no comment)."""
    if instr.opcode not in _FORMS:
        return f".word {instr.encode().hex()}"
    form = _FORMS[Op(instr.opcode)]
    text = "".join(part if isinstance(part, str) else part.show(instr) for part in form.parts)
    return text + _show_extras(instr, form.masks)


def _read_extras(instr: Instr, text: str, masks: dict[str, int]) -> None:
    """Apply a `{field=value, ...}` block."""
    for item in text.split(", "):
        match = re.fullmatch(rf"(\w+)=({_INT})", item.strip())
        if not match or match[1] not in FIELD_RANGES:
            raise ValueError(
                f"bad field setting {item!r}: expected NAME=INT with NAME one of {', '.join(FIELD_RANGES)}"
            )
        name, value = match[1], _int(match[2])
        if value & masks.get(name, 0):
            raise ValueError(f"{name} is already given by the operands")
        setattr(instr, name, getattr(instr, name) | value)


def _read_word_directive(text: str) -> Instr:
    """`.word HEX`: one raw 32-byte instruction."""
    raw = bytes.fromhex(text)
    if len(raw) != INSTR_BYTES:
        raise ValueError(f".word needs {INSTR_BYTES} bytes ({2 * INSTR_BYTES} hex digits), got {len(raw)}")
    return Instr.decode(raw)


def parse_instruction(text: str) -> Instr:
    """Parse one instruction line (without comment); raises ValueError."""
    text = re.sub(r" ?, ?", ", ", " ".join(text.split()))
    mnemonic = text.split(" ", 1)[0]
    if mnemonic == ".word":
        return _read_word_directive(text[len(".word") :])
    form = _FORMS_BY_MNEMONIC.get(mnemonic)
    if form is None:
        raise ValueError(f"unknown mnemonic {mnemonic!r} (known: {', '.join(_FORMS_BY_MNEMONIC)})")
    match = form.regex.fullmatch(text)
    if not match:
        raise ValueError(f"cannot parse {mnemonic} operands; expected `{form.hint}` [{{field=value, ...}}]")
    instr = Instr(opcode=form.op)
    groups = list(match.groups())
    for part in form.parts:
        if isinstance(part, _Operand):
            part.read(instr, groups[: part.groups])
            groups = groups[part.groups :]
    if groups[0] is not None:
        _read_extras(instr, groups[0], form.masks)
    return instr


# ---------------------------------------------------------------- disassembly


def _header_lines(binary: TBinary) -> list[str]:
    """Directives: target, entry points, symbols, metadata, constants summary."""
    lines = [f".target {_word(binary.target_name)} {binary.target_hash.hex()}"]
    lines += [f".entry {_word(name)} {index}" for name, index in binary.entry_points.items()]
    width = max((len(_word(sym.name)) for sym in binary.symbols), default=0)
    for sym in binary.symbols:
        shape = ",".join(str(n) for n in sym.shape)
        lines.append(f".symbol {sym.kind:<6} {_word(sym.name):<{width}} 0x{sym.address:08x} {sym.dtype}[{shape}]")
    lines.append(f".meta {json.dumps(binary.metadata)}")
    digest = hashlib.sha256(binary.constants).hexdigest()
    lines.append(f".constants size={len(binary.constants)} sha256={digest}")
    return lines


def _loc(binary: TBinary, index: int) -> str:
    """The source location of instruction `index`, on one line, or ''."""
    locs, instr_locs = binary.metadata.get("locs"), binary.metadata.get("instr_locs")
    if not (isinstance(locs, list) and isinstance(instr_locs, list) and index < len(instr_locs)):
        return ""
    loc = instr_locs[index]
    return " ".join(str(locs[loc]).split()) if isinstance(loc, int) and 0 <= loc < len(locs) else ""


def _code_lines(binary: TBinary) -> list[str]:
    """One line per instruction, loop bodies indented, index and location as a comment."""
    lines, depth = [], 0
    for index, instr in enumerate(binary.code):
        if instr.opcode == Op.ENDLOOP:
            depth = max(depth - 1, 0)
        text = "    " + "  " * depth + show_instruction(instr)
        lines.append(f"{text:<{_COMMENT_COLUMN}} ; {index} {_loc(binary, index)}".rstrip())
        if instr.opcode == Op.LOOP:
            depth += 1
    return lines


def _data_lines(constants: bytes, directive: str = ".data") -> list[str]:
    """Bytes as a base64 block: `.data` (the constants) or `.shards` (other chips' weight parts)."""
    encoded = base64.encodebytes(constants).decode().split()
    return [directive, *(_DATA_INDENT + line for line in encoded), f".end{directive[1:]}"]


def disassemble(binary: TBinary, with_data: bool = False) -> str:
    """The assembly listing of `binary`; with_data=True includes the constants so it can be assembled."""
    lines = [*_header_lines(binary), "", *_code_lines(binary)]
    if with_data and binary.constants:
        lines += _data_lines(binary.constants)
    if with_data and binary.shard_data:
        lines += _data_lines(binary.shard_data, ".shards")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- assembly


def _strip_comment(line: str) -> str:
    """`line` without its `;` comment (a `;` inside a JSON string is kept)."""
    code = _CODE_PART.match(line)[0]
    rest = line[len(code) :]
    if rest and not rest.startswith(";"):
        raise ValueError("unterminated string")
    return code.strip()


def _tokens(text: str, count: int, syntax: str) -> list[str]:
    """Split directive operands into exactly `count` words (JSON strings allowed)."""
    tokens = _WORDS.findall(text)
    if len(tokens) != count or _WORDS.sub("", text).strip():
        raise ValueError(f"expected `{syntax}`")
    return tokens


def _read_symbol(text: str) -> Symbol:
    """`KIND NAME ADDRESS DTYPE[SHAPE]`."""
    kind, name, address, typed = _tokens(text, 4, ".symbol KIND NAME ADDRESS DTYPE[D0,D1,...]")
    match = re.fullmatch(r"(\w+)\[([-0-9,]*)\]", typed)
    if not match:
        raise ValueError(f"bad type {typed!r}: expected DTYPE[D0,D1,...], e.g. bf16[64,64]")
    shape = tuple(int(n) for n in match[2].split(",")) if match[2] else ()
    return Symbol(_read_word(name), kind, _int(address), shape, match[1])


_ONCE = (".target", ".meta", ".constants", ".data")


@dataclass
class _Listing:
    """Parser state: what the directives and instructions seen so far say."""

    target: tuple[str, bytes] | None = None
    entries: dict[str, int] = field(default_factory=dict)
    symbols: list[Symbol] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    declared: tuple[int, str] | None = None  # .constants size and sha256
    data: list[bytes] = field(default_factory=list)  # base64-decoded .data lines
    shards: list[bytes] = field(default_factory=list)  # base64-decoded .shards lines
    in_data: bool = False
    in_shards: bool = False
    code: list[Instr] = field(default_factory=list)
    lines: dict[str, list[int]] = field(default_factory=dict)  # directive or "code" -> line numbers

    def feed(self, number: int, line: str) -> None:
        """Take one source line."""
        text = _strip_comment(line)
        if self.in_data:
            self._data_line(text)
        elif self.in_shards:
            self._shards_line(text)
        elif text.startswith(".") and not text.startswith(".word"):
            directive, _, rest = text.partition(" ")
            handler = self._directives().get(directive)
            if handler is None:
                raise ValueError(f"unknown directive {directive} (known: {', '.join(self._directives())})")
            if directive in _ONCE and directive in self.lines:
                raise ValueError(f"duplicate {directive} (it may appear once)")
            handler(rest.strip())
            self.lines.setdefault(directive, []).append(number)
        elif text:
            self.code.append(parse_instruction(text))
            self.lines.setdefault("code", []).append(number)

    def _directives(self) -> dict[str, Callable[[str], None]]:
        return {
            ".target": self._target,
            ".entry": self._entry,
            ".symbol": lambda rest: self.symbols.append(_read_symbol(rest)),
            ".meta": self._meta,
            ".constants": self._constants,
            ".data": self._data,
            ".shards": self._shards,
        }

    def _target(self, rest: str) -> None:
        name, digest = _tokens(rest, 2, ".target NAME SHA256HEX")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"the target hash must be 64 hex digits, got {digest!r}")
        self.target = (_read_word(name), bytes.fromhex(digest))

    def _entry(self, rest: str) -> None:
        name, index = _tokens(rest, 2, ".entry NAME INSTRUCTION_INDEX")
        name = _read_word(name)
        if name in self.entries:
            raise ValueError(f"duplicate entry point {name!r}")
        self.entries[name] = _int(index)

    def _meta(self, rest: str) -> None:
        try:
            self.metadata = json.loads(rest, parse_constant=reject_json_constant)
        except json.JSONDecodeError as err:
            raise ValueError(f".meta is not valid JSON: {err.msg} at character {err.pos}") from None

    def _constants(self, rest: str) -> None:
        match = re.fullmatch(r"size=(\d+) sha256=([0-9a-f]{64})", " ".join(rest.split()))
        if not match:
            raise ValueError("expected `.constants size=BYTES sha256=HEX`")
        self.declared = (int(match[1]), match[2])

    def _data(self, rest: str) -> None:
        if rest:
            raise ValueError(".data takes no operands: the base64 lines follow it, up to .enddata")
        self.in_data = True

    def _shards(self, rest: str) -> None:
        if rest:
            raise ValueError(".shards takes no operands: the base64 lines follow it, up to .endshards")
        self.in_shards = True

    def _shards_line(self, text: str) -> None:
        if text == ".endshards":
            self.in_shards = False
        elif text:
            try:
                self.shards.append(base64.b64decode(text, validate=True))
            except ValueError as err:
                raise ValueError(f"bad base64 in .shards block ({err})") from None

    def _data_line(self, text: str) -> None:
        if text == ".enddata":
            self.in_data = False
        elif text:
            try:
                self.data.append(base64.b64decode(text, validate=True))
            except ValueError as err:
                raise ValueError(f"bad base64 in .data block ({err})") from None

    def constants(self) -> bytes:
        """The constants image, checked against `.constants`."""
        if self.in_data:
            raise ValueError(".data block has no .enddata")
        data = b"".join(self.data)
        if self.declared is None:
            return data
        size, digest = self.declared
        if ".data" not in self.lines and size:
            raise ValueError(
                f".constants size={size} but there is no .data block: the listing was made without the constants; "
                "disassemble with data (`tasic objdump --with-data`, or with_data=True) to get an assemblable listing"
            )
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f".data holds {len(data)} bytes that do not match .constants size={size} sha256={digest}")
        return data


_CHECKS: tuple[tuple[Callable[[TBinary], None], str], ...] = (
    (check_header, ".target"),
    (check_metadata, ".meta"),
    (lambda binary: check_code(binary.code), "code"),
    (check_symbols, ".symbol"),
    (check_entries, ".entry"),
    (check_entry_io, ".meta"),
    (check_shards, ".meta"),
)


def _build(listing: _Listing, last_line: int) -> TBinary:
    """The binary a parsed listing describes, validated; errors point at source lines."""
    if listing.target is None:
        raise AsmError("line 1: no .target directive; start the listing with `.target NAME SHA256HEX`")
    data_line = (listing.lines.get(".data") or listing.lines.get(".constants") or [last_line])[0]
    try:
        constants = listing.constants()
    except ValueError as err:
        raise AsmError(f"line {data_line}: {err}") from None
    binary = TBinary(
        target_name=listing.target[0],
        target_hash=listing.target[1],
        code=listing.code,
        constants=constants,
        symbols=listing.symbols,
        entry_points=listing.entries,
        metadata=listing.metadata,
        shard_data=b"".join(listing.shards),
    )
    if listing.in_shards:
        raise AsmError(f"line {last_line}: .shards block has no .endshards")
    for check, key in _CHECKS:
        try:
            check(binary)
        except TbinError as err:
            lines = listing.lines.get(key) or [last_line]
            index = err.index if err.index is not None and err.index < len(lines) else 0
            raise AsmError(f"line {lines[index]}: {err}") from None
    return binary


def assemble(text: str) -> TBinary:
    """Build a binary from an assembly listing; raises AsmError("line N: ...")."""
    listing = _Listing()
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        try:
            listing.feed(number, line)
        except ValueError as err:
            raise AsmError(f"line {number}: {err}") from None
    return _build(listing, len(lines))
