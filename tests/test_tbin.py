"""The .tbin container: round trip, layout, and every validation error."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest

from tasic.backend import tbin
from tasic.backend.isa_spec import DType, Engine, Instr, Op, UnaryFn, float_bits
from tasic.backend.tbin import (
    FORMAT_VERSION,
    Section,
    Symbol,
    TBinary,
    TbinError,
    from_bytes,
    read_tbin,
    to_bytes,
    write_tbin,
)

HEADER = struct.Struct("<4sHHQHHI32s")
SECTION = struct.Struct("<IIQQ")


def small_binary() -> TBinary:
    """A few instructions (with a loop), three symbols and 1 KiB of constants."""
    addi = Instr(Op.ADDI, reg_d=3)
    addi.set_imm64(1 << 20)
    loop = Instr(Op.LOOP)
    loop.set_imm64(4)
    code = [
        addi,
        loop,
        Instr(Op.DMA_LOAD, dt_d=DType.F32, dt_a=DType.BF16, rows=8, cols=64, reg_a=3, off_d=4096, off_b=64, imm=1),
        Instr(Op.SIGNAL, func=Engine.DMA_LOAD, imm=3),
        Instr(Op.WAIT, func=Engine.VPU, imm=3),
        Instr(Op.VPU_UNARY, func=UnaryFn.EXP, rows=8, cols=64, off_a=4096),
        Instr(Op.VPU_SCALAR, func=2, rows=8, cols=64, imm=float_bits(0.125)),
        Instr(Op.ENDLOOP),
        Instr(Op.HALT),
    ]
    symbols = [
        Symbol("w", "weight", 0, (16, 32), "bf16"),
        Symbol("x", "input", 1024, (8, 64), "f32"),
        Symbol("y", "output", 4096, (8, 64), "f32"),
    ]
    metadata = {
        "hbm_bytes": 8192,
        "sram_bytes": 65536,
        "model": "toy",
        "dtype": "f32",
        "locs": ["toy.py:1", "toy.py:2"],
        "instr_locs": [0, -1, 1, -1, -1, 1, 1, -1, -1],
    }
    constants = bytes(range(256)) * 4
    return TBinary("tiny", hashlib.sha256(b"tiny").digest(), code, constants, symbols, {"main": 0}, metadata)


def sections_of(raw: bytes) -> dict[Section, tuple[int, int]]:
    """Section kind -> (offset, size), read from the header as docs/binary-format.md describes."""
    count, table_offset = HEADER.unpack_from(raw)[4], HEADER.unpack_from(raw)[6]
    entries = [SECTION.unpack_from(raw, table_offset + i * SECTION.size) for i in range(count)]
    return {Section(kind): (offset, size) for kind, _, offset, size in entries}


def rechecksum(raw: bytes | bytearray) -> bytes:
    """Replace the trailing sha256 so that only the deliberate damage is detected."""
    body = bytes(raw[:-32])
    return body + hashlib.sha256(body).digest()


def unchecked_bytes(binary: TBinary, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Serialise without the writer's validation, to produce invalid files."""
    with monkeypatch.context() as patch:
        patch.setattr(tbin, "validate", lambda binary: None)
        return to_bytes(binary)


def read_error(raw: bytes) -> str:
    """The TbinError message from_bytes raises for `raw`."""
    with pytest.raises(TbinError) as info:
        from_bytes(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_round_trip_is_exact() -> None:
    binary = small_binary()
    raw = to_bytes(binary)
    back = from_bytes(raw)
    assert back == binary
    assert back.symbol("x").nbytes == 8 * 64 * 4
    assert [s.name for s in back.symbols_of_kind("weight")] == ["w"]
    assert to_bytes(back) == raw


def test_layout_matches_the_documentation() -> None:
    binary = small_binary()
    raw = to_bytes(binary)
    magic, version, flags, file_size, count, name_len, _, target_hash = HEADER.unpack_from(raw)
    assert (magic, version, flags, file_size, count) == (b"TBIN", FORMAT_VERSION, 0, len(raw), 5)
    assert raw[HEADER.size : HEADER.size + name_len] == b"tiny"
    assert target_hash == binary.target_hash
    assert raw[-32:] == hashlib.sha256(raw[:-32]).digest()
    sections = sections_of(raw)
    const_offset, const_size = sections[Section.CONST]
    assert const_offset % 64 == 0
    assert raw[const_offset : const_offset + const_size] == binary.constants
    code_offset, code_size = sections[Section.CODE]
    assert code_size == 32 * len(binary.code)
    assert raw[code_offset : code_offset + 32] == binary.code[0].encode()


def test_write_and_read_file(tmp_path: Path) -> None:
    path = tmp_path / "toy.tbin"
    write_tbin(small_binary(), path)
    assert read_tbin(path) == small_binary()
    assert not (tmp_path / "toy.tbin.tmp").exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TbinError, match=r"^no such file: .*nope\.tbin$"):
        read_tbin(tmp_path / "nope.tbin")


def test_read_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.tbin"
    path.write_bytes(b"hello world")
    with pytest.raises(TbinError, match=r"bad.tbin: not a tasic binary \(bad magic b'hell'\)"):
        read_tbin(path)


@pytest.mark.parametrize("keep", [0, 3, 10, 100, -1])
def test_truncated_file(keep: int) -> None:
    raw = to_bytes(small_binary())
    message = read_error(raw[:keep])
    assert message.startswith("truncated: file is")
    if keep in (100, -1):
        assert f"file is {len(raw[:keep])} bytes, header says {len(raw)}" in message


def test_trailing_bytes() -> None:
    raw = to_bytes(small_binary())
    assert "trailing garbage" in read_error(raw + b"\0")


def test_flipped_byte_in_every_section_is_corruption() -> None:
    raw = to_bytes(small_binary())
    for kind, (offset, size) in sections_of(raw).items():
        assert size > 0, kind
        for position in {offset, offset + size // 3, offset + size // 2, offset + size - 1}:
            damaged = bytearray(raw)
            damaged[position] ^= 0x40
            assert (
                read_error(bytes(damaged))
                == "checksum mismatch: the file is corrupt; recompile it with `tasic compile`"
            )


@pytest.mark.parametrize("position", [6, 20, 30, 56, 60, 64, -1, -32])
def test_flipped_byte_in_header_table_or_checksum(position: int) -> None:
    damaged = bytearray(to_bytes(small_binary()))
    damaged[position] ^= 0x01
    assert read_error(bytes(damaged)).startswith("checksum mismatch")


def test_wrong_magic() -> None:
    raw = b"XXXX" + to_bytes(small_binary())[4:]
    message = read_error(raw)
    assert message == "not a tasic binary (bad magic b'XXXX'): expected a .tbin written by `tasic compile`"


def test_wrong_version() -> None:
    raw = bytearray(to_bytes(small_binary()))
    struct.pack_into("<H", raw, 4, 7)
    message = read_error(rechecksum(raw))
    assert message.startswith("unsupported format version 7 (this tasic reads version 1)")


def test_unknown_header_flags() -> None:
    raw = bytearray(to_bytes(small_binary()))
    struct.pack_into("<H", raw, 6, 1)
    assert read_error(rechecksum(raw)).startswith("unknown header flags 0x0001")


def test_section_out_of_bounds() -> None:
    raw = bytearray(to_bytes(small_binary()))
    table_offset = HEADER.unpack_from(raw)[6]
    kind, _, offset, _ = SECTION.unpack_from(raw, table_offset)
    SECTION.pack_into(raw, table_offset, kind, 0, offset, len(raw))
    assert "runs past the data end" in read_error(rechecksum(raw))


def test_overlapping_sections() -> None:
    raw = bytearray(to_bytes(small_binary()))
    table_offset = HEADER.unpack_from(raw)[6]
    first = SECTION.unpack_from(raw, table_offset)
    second = SECTION.unpack_from(raw, table_offset + SECTION.size)
    SECTION.pack_into(raw, table_offset + SECTION.size, second[0], 0, first[2], second[3])
    assert "overlaps the CODE section" in read_error(rechecksum(raw))


def test_misaligned_constants() -> None:
    raw = bytearray(to_bytes(small_binary()))
    table_offset = HEADER.unpack_from(raw)[6]
    kind, _, offset, size = SECTION.unpack_from(raw, table_offset + SECTION.size)
    assert kind == Section.CONST
    SECTION.pack_into(raw, table_offset + SECTION.size, kind, 0, offset + 8, size)
    assert "not 64-byte aligned" in read_error(rechecksum(raw))


def test_bad_json_in_symtab() -> None:
    raw = bytearray(to_bytes(small_binary()))
    offset, _ = sections_of(bytes(raw))[Section.SYMTAB]
    assert raw[offset : offset + 1] == b"["
    raw[offset] = ord("{")
    assert read_error(rechecksum(raw)).startswith("SYMTAB section is not valid UTF-8 JSON")


def test_symbol_missing_a_key() -> None:
    raw = bytes(to_bytes(small_binary()))
    patched = raw.replace(b'"dtype":"bf16"', b'"dtypx":"bf16"', 1)
    assert read_error(rechecksum(patched)) == "symbol 0: expected an object with keys name, kind, address, shape, dtype"


def test_unknown_opcode_names_the_instruction() -> None:
    raw = bytearray(to_bytes(small_binary()))
    offset, _ = sections_of(bytes(raw))[Section.CODE]
    raw[offset + 3 * 32] = 0x7F
    message = read_error(rechecksum(raw))
    assert "instruction 3: unknown opcode 0x7f" in message


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ([Instr(Op.LOOP, off_b=2), Instr(Op.HALT)], "instruction 0: loop has no matching endloop"),
        ([Instr(Op.HALT), Instr(Op.ENDLOOP)], "instruction 1: endloop without a matching loop"),
        ([Instr(Op.LOOP), Instr(Op.ENDLOOP)], "instruction 0: loop count 0 must be >= 1"),
        ([Instr(Op.ADDI, reg_d=32)], "instruction 0: reg_d is r32, registers are r0..r31"),
        ([Instr(Op.HALT), Instr(Op.VPU_FILL, dt_d=9)], "instruction 1: dt_d has unknown dtype code 9"),
        ([Instr(Op.SIGNAL, func=Engine.MXU, imm=64)], "instruction 0: semaphore s64 does not exist (s0..s63)"),
        ([Instr(Op.WAIT, func=6, imm=1)], "instruction 0: wait: unknown engine 6 in func"),
        ([Instr(Op.VPU_UNARY, func=17)], "instruction 0: vpu.unary: unknown unary function 17 in func"),
        ([Instr(Op.VPU_BINARY, flags=0x6)], "instruction 0: unknown broadcast mode 3 in flags"),
        ([Instr(Op.VPU_ROPE, cols=8, depth=8)], "instruction 0: vpu.rope: head size 0 must be even and positive"),
        (
            [Instr(Op.VPU_ROPE, cols=8, depth=12, imm=4)],
            "instruction 0: vpu.rope: roped(12) must be whole heads of 4 within the 8 columns",
        ),
    ],
)
def test_invalid_code(code: list[Instr], expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = TBinary("tiny", bytes(32), code, b"", [], {"main": 0}, {"hbm_bytes": 0})
    assert read_error(unchecked_bytes(binary, monkeypatch)) == expected
    with pytest.raises(TbinError, match=f"^{re.escape(expected)}$"):
        to_bytes(binary)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"kind": "bias"}, "symbol 1 ('x'): kind 'bias' is not one of input, output, weight, kv, temp"),
        ({"address": -4}, "symbol 1 ('x'): address -4 must be a non-negative int"),
        ({"shape": (8, -1)}, "symbol 1 ('x'): shape (8, -1) must be a list of non-negative ints"),
        ({"dtype": "f64"}, "symbol 1 ('x'): unknown dtype 'f64'"),
        ({"name": "w"}, "symbol 1 ('w'): duplicate name 'w'"),
        ({"address": 6145}, "symbol 1 ('x'): bytes [6145, 8193) lie beyond hbm_bytes 8192"),
    ],
)
def test_invalid_symbol(change: dict, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = small_binary()
    for key, value in change.items():
        setattr(binary.symbols[1], key, value)
    assert read_error(unchecked_bytes(binary, monkeypatch)) == expected


def test_symbol_may_end_exactly_at_hbm_bytes() -> None:
    binary = small_binary()
    binary.symbols[1].address = 8192 - binary.symbols[1].nbytes
    assert from_bytes(to_bytes(binary)).symbols[1].address == 6144


def test_symbols_need_hbm_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = small_binary()
    del binary.metadata["hbm_bytes"]
    assert read_error(unchecked_bytes(binary, monkeypatch)).endswith(
        "metadata has no hbm_bytes to bound the symbol table"
    )


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"main": 9}, "entry point 'main' = 9 is not an instruction index (0..8)"),
        ({"main": -1}, "entry point 'main' = -1 is not an instruction index (0..8)"),
        ({"": 0}, "entry point 0: the name must be a non-empty string"),
    ],
)
def test_invalid_entry_points(entries: dict, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = small_binary()
    binary.entry_points = entries
    assert read_error(unchecked_bytes(binary, monkeypatch)) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([1, 2], "metadata must be a JSON object, not list"),
        ({"hbm_bytes": 100}, "constants (1024 bytes) exceed metadata hbm_bytes 100"),
        ({"hbm_bytes": "big"}, "metadata hbm_bytes must be a non-negative int, not 'big'"),
        ({"hbm_bytes": 8192, "locs": [], "instr_locs": [0] * 9}, "metadata instr_locs[0] = 0 is not -1 or an index"),
        ({"hbm_bytes": 8192, "locs": ["a"], "instr_locs": [0]}, "metadata instr_locs must be a list of 9 ints"),
    ],
)
def test_invalid_metadata(metadata: object, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = small_binary()
    binary.metadata = metadata  # type: ignore[assignment]
    assert read_error(unchecked_bytes(binary, monkeypatch)).startswith(expected)


def test_scatter_and_causal_window_round_trip() -> None:
    binary = small_binary()
    binary.code[6:6] = [
        Instr(Op.DMA_SCATTER, dt_d=DType.BF16, dt_b=DType.I64, rows=4, cols=64, off_d=1024, off_b=64, imm=128),
        Instr(Op.VPU_CAUSAL, rows=8, cols=8, depth=4, reg_a=2, off_a=1),
    ]
    binary.metadata["instr_locs"] += [-1, -1]
    assert from_bytes(to_bytes(binary)) == binary


def test_entry_io_metadata_round_trips() -> None:
    binary = small_binary()
    binary.entry_points["decode"] = 1
    binary.metadata["entries"] = {"main": {"inputs": {"x": "x"}, "outputs": {"y": "y"}}, "decode": {"outputs": {}}}
    assert from_bytes(to_bytes(binary)) == binary


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], "metadata entries must be a JSON object of entry point -> inputs and outputs, not list"),
        ({"decode": {}}, "metadata entries['decode']: no such entry point (entry points: main)"),
        ({"main": []}, "metadata entries['main'] must be a JSON object with keys inputs and outputs, not list"),
        ({"main": {"params": {}}}, "metadata entries['main'] has unknown key 'params' (allowed: inputs, outputs)"),
        ({"main": {"inputs": ["x"]}}, "metadata entries['main'].inputs must be a JSON object of name -> symbol name"),
        ({"main": {"inputs": {"": "x"}}}, "metadata entries['main'].inputs: the name '' must be a non-empty string"),
        (
            {"main": {"outputs": {"y": "z"}}},
            "metadata entries['main'].outputs['y'] = 'z' is not a symbol of the binary",
        ),
        ({"main": {"outputs": {"y": ["y"]}}}, "metadata entries['main'].outputs['y'] = ['y'] is not a symbol"),
    ],
)
def test_invalid_entry_io_metadata(entries: object, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = small_binary()
    binary.metadata["entries"] = entries
    message = read_error(unchecked_bytes(binary, monkeypatch))
    assert message.startswith(expected)
    with pytest.raises(TbinError, match=f"^{re.escape(message)}$"):
        to_bytes(binary)


def test_writer_rejects_non_json_metadata() -> None:
    binary = small_binary()
    binary.metadata["scale"] = float("nan")
    with pytest.raises(TbinError, match=r"^metadata cannot be stored as JSON"):
        to_bytes(binary)


def test_writer_rejects_bad_header_fields() -> None:
    binary = small_binary()
    binary.target_hash = b"short"
    with pytest.raises(TbinError, match="target hash must be 32 bytes"):
        to_bytes(binary)
