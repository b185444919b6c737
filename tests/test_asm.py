"""Assembler and disassembler: exact round trips, readable syntax, clear errors."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import struct

import pytest

from tasic.backend.asm import AsmError, assemble, disassemble, parse_instruction, show_instruction
from tasic.backend.isa_spec import (
    DTYPE_NAMES,
    NUM_REGS,
    NUM_SEMAPHORES,
    BinaryFn,
    DType,
    Engine,
    Instr,
    Op,
    ReduceFn,
    UnaryFn,
    float_bits,
)
from tasic.backend.tbin import Symbol, TBinary, to_bytes

FUNC_CHOICES = {
    Op.SIGNAL: list(Engine),
    Op.WAIT: list(Engine),
    Op.VPU_UNARY: list(UnaryFn),
    Op.VPU_BINARY: list(BinaryFn),
    Op.VPU_SCALAR: list(BinaryFn),
    Op.VPU_REDUCE: list(ReduceFn),
}
SPECIAL_F32_BITS = [
    float_bits(0.0),
    float_bits(-0.0),
    float_bits(float("inf")),
    float_bits(float("-inf")),
    float_bits(float("nan")),
    struct.unpack("<i", struct.pack("<I", 0xFFC00000))[0],  # negative quiet NaN
    0x7FC00001,  # NaN with payload
    0x7F800001,  # signalling NaN
    1,  # smallest subnormal
    0x7F7FFFFF,  # largest finite
    float_bits(0.1),
    float_bits(1 / 3),
]


def odd_instr(rng: random.Random, op: Op) -> Instr:
    """A valid instruction of `op` with every field random, unused ones included."""
    instr = Instr(
        opcode=op,
        func=rng.randrange(256),
        flags=rng.randrange(256),
        dt_d=rng.randrange(len(DTYPE_NAMES)),
        dt_a=rng.randrange(len(DTYPE_NAMES)),
        dt_b=rng.randrange(len(DTYPE_NAMES)),
        rows=rng.randrange(1 << 16),
        cols=rng.randrange(1 << 16),
        depth=rng.randrange(1 << 16),
        reg_d=rng.randrange(NUM_REGS),
        reg_a=rng.randrange(NUM_REGS),
        reg_b=rng.randrange(NUM_REGS),
        reg_c=rng.randrange(NUM_REGS),
        off_d=rng.randrange(-(1 << 31), 1 << 31),
        off_a=rng.randrange(-(1 << 31), 1 << 31),
        off_b=rng.randrange(-(1 << 31), 1 << 31),
        imm=rng.choice([*SPECIAL_F32_BITS, rng.randrange(-(1 << 31), 1 << 31)]),
    )
    if op in FUNC_CHOICES:
        instr.func = rng.choice(FUNC_CHOICES[op])
    if op in (Op.SIGNAL, Op.WAIT):
        instr.imm = rng.randrange(NUM_SEMAPHORES)
    if op == Op.LOOP:
        instr.set_imm64(rng.randrange(1, 1 << 63))
    if op in (Op.MXU_MATMUL, Op.VPU_CAUSAL):
        instr.imm = rng.randrange(1 << 31)  # the batch count / the causal period
    if op == Op.VPU_ROPE:  # whole heads of an even size within the columns
        instr.imm = 2 * rng.randrange(1, 1 << 7)
        instr.depth = instr.imm * rng.randrange(instr.cols // instr.imm + 1)
    if op == Op.VPU_BINARY:
        instr.flags = (instr.flags & ~0x6) | rng.choice([0, 2, 4])
    return instr


def odd_program(seed: int) -> list[Instr]:
    """Every opcode once, inside two nested loops, with random fields."""
    rng = random.Random(seed)
    body = [odd_instr(rng, op) for op in Op if op not in (Op.LOOP, Op.ENDLOOP)]
    rng.shuffle(body)
    loops = [odd_instr(rng, Op.LOOP), odd_instr(rng, Op.LOOP)]
    ends = [odd_instr(rng, Op.ENDLOOP), odd_instr(rng, Op.ENDLOOP)]
    return [loops[0], *body[:5], loops[1], *body[5:], ends[0], ends[1]]


def binary_with(code: list[Instr], constants: bytes = b"") -> TBinary:
    """A binary around `code` with a few symbols (one needing quotes) and metadata."""
    symbols = [
        Symbol("layers.0.w", "weight", 0, (4, 4), "bf16"),
        Symbol('odd name; with "quotes"', "input", 64, (2,), "f32"),
        Symbol("scalar", "temp", 96, (), "i64"),
    ]
    metadata = {
        "hbm_bytes": 4096,
        "model": "toy ; model",
        "scale": -0.0,
        "locs": ["a.py:1", "line\nbreak"],
        "instr_locs": [index % 3 - 1 for index in range(len(code))],
    }
    entries = {"main": 0, "second entry": len(code) - 1}
    return TBinary("tiny", hashlib.sha256(b"tiny").digest(), code, constants, symbols, entries, metadata)


def assert_round_trip(binary: TBinary) -> str:
    """Disassemble with data, assemble, and compare the bytes; returns the listing."""
    text = disassemble(binary, with_data=True)
    assert to_bytes(assemble(text)) == to_bytes(binary)
    return text


@pytest.mark.parametrize("seed", range(12))
def test_round_trip_of_every_opcode_with_odd_fields(seed: int) -> None:
    constants = random.Random(seed).randbytes(seed * 37)
    assert_round_trip(binary_with(odd_program(seed), constants))


def test_round_trip_of_special_floats() -> None:
    code = [Instr(Op.VPU_FILL, rows=1, cols=1, imm=bits) for bits in SPECIAL_F32_BITS]
    code += [Instr(Op.VPU_SCALAR, func=BinaryFn.MUL, imm=bits) for bits in SPECIAL_F32_BITS]
    text = assert_round_trip(binary_with([*code, Instr(Op.HALT)]))
    for literal in ("<- -0.0 1x1", "<- inf 1x1", "<- -inf 1x1", "<- nan 1x1", "bits:0xffc00000", "bits:0x7fc00001"):
        assert literal in text
    assert ", 0.1 0x0" in text


def test_readable_syntax() -> None:
    load = Instr(Op.DMA_LOAD, dt_a=DType.BF16, rows=8, cols=64, reg_a=3, off_d=4096, off_b=64, imm=1)
    matmul = Instr(Op.MXU_MATMUL, flags=1, dt_a=1, dt_b=1, rows=16, cols=16, depth=64, off_a=4096, off_b=8192)
    addi = Instr(Op.ADDI, reg_d=3)
    addi.set_imm64(1048576)
    expected = {
        "dma.load sram[r0+4096]:f32 <- hbm[r3+0]:bf16 8x64 stride(64, 1)": load,
        "mxu.matmul sram[r0+0]:f32 += sram[r0+4096]:bf16 @ sram[r0+8192]:bf16 16x16x64": matmul,
        "addi r3, r0, 1048576": addi,
        "vpu.unary exp sram[r1-32]:f32 <- sram[r0+0]:bf16 8x64": Instr(
            Op.VPU_UNARY, func=UnaryFn.EXP, reg_d=1, off_d=-32, dt_a=1, rows=8, cols=64
        ),
        "vpu.binary sub sram[r0+0]:f32 <- sram[r0+0]:f32, sram[r0+0]:f32 1x2 bcast=col": Instr(
            Op.VPU_BINARY, func=BinaryFn.SUB, flags=4, rows=1, cols=2
        ),
        "vpu.select sram[r0+0]:f32 <- sram[r4+128] ? sram[r0+0]:f32 : sram[r0+0]:f32 2x2": Instr(
            Op.VPU_SELECT, reg_c=4, imm=128, rows=2, cols=2
        ),
        "vpu.causal sram[r0+0]:f32 8x8 diag(r5-3)": Instr(Op.VPU_CAUSAL, reg_a=5, off_a=-3, rows=8, cols=8),
        "vpu.causal sram[r0+0]:bf16 8x8 diag(r5+0) window(4)": Instr(
            Op.VPU_CAUSAL, dt_d=DType.BF16, reg_a=5, rows=8, cols=8, depth=4
        ),
        "dma.scatter hbm[r2+1024]:bf16 index hbm[r3+64]:i32 <- sram[r0+512]:f32 4x64 stride(128)": Instr(
            Op.DMA_SCATTER,
            dt_d=DType.BF16,
            dt_b=DType.I32,
            rows=4,
            cols=64,
            reg_d=2,
            off_d=1024,
            reg_b=3,
            off_b=64,
            off_a=512,
            imm=128,
        ),
        "link.send hbm[r2+1024]:bf16 <- sram[r0+512]:f32 4x64 stride(128, 1)": Instr(
            Op.LINK_SEND, dt_d=DType.BF16, rows=4, cols=64, reg_d=2, off_d=1024, off_a=512, off_b=128, imm=1
        ),
        "signal mxu s3": Instr(Op.SIGNAL, func=Engine.MXU, imm=3),
        "wait vpu s3": Instr(Op.WAIT, func=Engine.VPU, imm=3),
        "halt {func=3, depth=2}": Instr(Op.HALT, func=3, depth=2),
        "mxu.matmul sram[r0+0]:f32 = sram[r0+0]:f32 @ sram[r0+0]:f32 0x0x0 {flags=0x8}": Instr(Op.MXU_MATMUL, flags=8),
    }
    for text, instr in expected.items():
        assert show_instruction(instr) == text
        assert parse_instruction(text) == instr


def test_link_send_round_trips_like_dma_store() -> None:
    send = Instr(Op.LINK_SEND, dt_d=DType.BF16, rows=8, cols=32, reg_d=3, off_d=-64, reg_a=1, off_a=256, off_b=1, imm=8)
    text = show_instruction(send)
    assert text == "link.send hbm[r3-64]:bf16 <- sram[r1+256]:f32 8x32 stride(1, 8)"
    store = dataclasses.replace(send, opcode=Op.DMA_STORE)
    assert text.removeprefix("link.send") == show_instruction(store).removeprefix("dma.store")
    assert parse_instruction(text) == send
    listing = assert_round_trip(binary_with([send, Instr(Op.LINK_SEND, depth=5), Instr(Op.HALT)]))
    assert "link.send hbm[r0+0]:f32 <- sram[r0+0]:f32 0x0 stride(0, 0) {depth=5}" in listing


def test_loop_bodies_are_indented_and_annotated() -> None:
    loop = Instr(Op.LOOP)
    loop.set_imm64(12)
    binary = binary_with([loop, Instr(Op.VPU_FILL), Instr(Op.ENDLOOP), Instr(Op.HALT)])
    lines = disassemble(binary).splitlines()
    code = lines[lines.index("") + 1 :]
    assert code[0].startswith("    loop 12 ")
    assert code[1].startswith("      vpu.fill ")
    assert code[2].startswith("    endloop ")
    assert code[1].rstrip().endswith("; 1 a.py:1")
    assert code[2].rstrip().endswith("; 2 line break")
    assert code[3].rstrip().endswith("; 3")


def test_hand_written_listing_is_forgiving_about_spacing() -> None:
    text = (
        f".target tiny {'ab' * 32}\n"
        ".entry main 0\n"
        "  ; a comment line\n"
        "dma.load   sram[r1]:f32 <- hbm[r2+0x40]:bf16   4x4 stride(4,1)   ; trailing comment\n"
        "vpu.scalar mul sram[r0+0]:f32 <- sram[r0+0]:f32 ,0.5 4x4\n"
        "halt\n"
    )
    binary = assemble(text)
    assert binary.code[0] == Instr(Op.DMA_LOAD, dt_a=1, rows=4, cols=4, reg_d=1, reg_a=2, off_a=64, off_b=4, imm=1)
    assert binary.code[1].imm_f32 == 0.5
    assert binary.constants == b""
    assert binary.metadata == {}


def test_without_data_assemble_refuses_clearly() -> None:
    binary = binary_with([Instr(Op.HALT)], constants=bytes(1000))
    text = disassemble(binary)
    assert ".data" not in text
    constants_line = next(n for n, line in enumerate(text.split("\n"), 1) if line.startswith(".constants"))
    assert f".constants size=1000 sha256={hashlib.sha256(bytes(1000)).hexdigest()}" in text
    with pytest.raises(AsmError, match=f"^line {constants_line}: .constants size=1000 but there is no .data block"):
        assemble(text)


def test_without_data_and_no_constants_still_assembles() -> None:
    binary = binary_with([Instr(Op.HALT)])
    assert to_bytes(assemble(disassemble(binary))) == to_bytes(binary)


def test_edited_data_is_detected() -> None:
    text = disassemble(binary_with([Instr(Op.HALT)], constants=bytes(100)), with_data=True)
    lines = text.split("\n")
    data_line = lines.index(".data") + 1
    lines[data_line] = "    " + "AAAB" + lines[data_line].strip()[4:]
    with pytest.raises(AsmError, match=f"^line {data_line}: .data holds 100 bytes that do not match"):
        assemble("\n".join(lines))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("vpu.fill sram[r0+0]:f32 <- pi 2x2", "bad float32 'pi'"),
        ("frobnicate r1", "unknown mnemonic 'frobnicate'"),
        ("dma.load hbm[r0+0]:f32 <- hbm[r0+0]:f32 1x1 stride(1, 1)", "cannot parse dma.load operands; expected"),
        ("vpu.unary cube sram[r0+0]:f32 <- sram[r0+0]:f32 1x1", "unknown unary function 'cube'"),
        ("wait gpu s1", "unknown engine 'gpu'"),
        ("halt {speed=3}", "bad field setting 'speed=3'"),
        ("loop 3 {imm=1}", "imm is already given by the operands"),
        ("addi r40, r0, 1", "instruction 2: reg_d is r40, registers are r0..r31"),
        ("endloop", "instruction 2: endloop without a matching loop"),
        ("vpu.fill sram[r0+0]:f16 <- 1.0 70000x1", "instruction 2: field rows=70000 is out of range 0..65535"),
        (".frob 1", "unknown directive .frob"),
        ('.symbol weight "unterminated 0x0 f32[1]', "unterminated string"),
        (".symbol weight w 0x0 f32", "bad type 'f32'"),
        (".symbol weight w 0x0 f99[1]", "symbol 0 ('w'): unknown dtype 'f99'"),
        (".meta {not json}", ".meta is not valid JSON"),
        (f".target other {'11' * 32}", "duplicate .target"),
        (".entry main 5", "entry point 'main' = 5 is not an instruction index"),
        ('.meta {"entries": {"decode": {}}}', "metadata entries['decode']: no such entry point (entry points: none)"),
        ("vpu.causal sram[r0+0]:f32 8x8 diag(r1+0) window(2) {depth=1}", "depth is already given by the operands"),
        ("vpu.causal sram[r0+0]:f32 8x8 diag(r1+0) window(70000)", "field depth=70000 is out of range 0..65535"),
    ],
)
def test_errors_name_the_line(bad: str, message: str) -> None:
    lines = [f".target tiny {'00' * 32}", "; the bad line is line 5", "halt", "halt", bad, "halt"]
    with pytest.raises(AsmError) as info:
        assemble("\n".join(lines))
    assert str(info.value).startswith("line 5: ")
    assert message in str(info.value)


def test_missing_target() -> None:
    with pytest.raises(AsmError, match=r"^line 1: no \.target directive"):
        assemble("halt\n")
