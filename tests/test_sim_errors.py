"""User-facing SimError messages of the ISA simulator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tasic.backend.isa_spec import DType, Engine, Instr, Op
from tasic.backend.target import load_target
from tasic.backend.tbin import Symbol, TBinary
from tasic.isa_sim import SimError, simulate, simulate_timing

TINY = load_target("tiny")
F32 = DType.F32


def make_binary(code: list[Instr], symbols: list[Symbol] | None = None, halt: bool = True, **meta: object) -> TBinary:
    code = [*code, Instr(Op.HALT)] if halt else code
    metadata = {"hbm_bytes": 4096, **meta}
    return TBinary(TINY.name, TINY.hash, code, b"", symbols or [], metadata=metadata)


X_SYM = Symbol("x", "input", 0, (2, 3), "f32")
IDS_SYM = Symbol("ids", "input", 64, (4,), "i32")


def check(binary: TBinary, message: str, inputs: dict[str, np.ndarray] | None = None) -> None:
    with pytest.raises(SimError, match=message) as info:
        simulate(binary, TINY, inputs)
    assert "\n" not in str(info.value)


def test_input_names() -> None:
    binary = make_binary([], [X_SYM, IDS_SYM])
    check(binary, "missing input.*ids", {"x": np.zeros((2, 3), np.float32)})
    good = {"x": np.zeros((2, 3), np.float32), "ids": np.zeros(4, np.int32)}
    check(binary, "unknown input.*'?z'?", {**good, "z": np.zeros(1)})
    check(binary, "missing input", None)
    simulate_timing(binary, TINY)  # timing-only runs need no inputs


def test_input_shape_and_dtype() -> None:
    binary = make_binary([], [X_SYM, IDS_SYM])
    ids = np.zeros(4, np.int32)
    check(binary, r"input 'x' has shape \(3, 2\), expected \(2, 3\)", {"x": np.zeros((3, 2), np.float32), "ids": ids})
    check(binary, "input 'x' has dtype int32, expected f32", {"x": np.zeros((2, 3), np.int32), "ids": ids})
    check(binary, "input 'ids' has dtype float32", {"x": np.zeros((2, 3)), "ids": np.zeros(4, np.float32)})
    check(binary, "outside the range of i32", {"x": np.zeros((2, 3)), "ids": np.array([0, 1, 2, 2**40])})
    simulate(binary, TINY, {"x": np.zeros((2, 3)), "ids": np.arange(4, dtype=np.int64)})  # float64 / int64 convert


def test_target_mismatch() -> None:
    other = load_target("sohu-like")
    with pytest.raises(SimError, match="compiled for target 'tiny', not 'sohu-like'"):
        simulate(make_binary([]), other)
    edited = dataclasses.replace(TINY, source_text=TINY.source_text + "\n# edited\n")
    with pytest.raises(SimError, match=r"different version of target 'tiny'.*--target FILE\.toml"):
        simulate(make_binary([]), edited)


def test_memory_sizes() -> None:
    check(make_binary([], sram_bytes=TINY.sram.bytes + 1), "needs 262,145 bytes of SRAM, target tiny has 262,144")
    check(make_binary([], hbm_bytes=TINY.hbm.bytes * 2), "bytes of HBM, target tiny has")


def test_out_of_bounds_hbm_read() -> None:
    load = Instr(Op.DMA_LOAD, dt_d=F32, dt_a=F32, rows=4, cols=4, off_a=4096 - 64, off_b=4, imm=1)
    simulate(make_binary([load]), TINY)  # the last 64 bytes of HBM: in bounds
    shifted = make_binary([Instr(Op.ADDI, reg_d=1, off_b=8), dataclasses.replace(load, reg_a=1)])
    check(shifted, r"instruction 1 \(dma.load\): HBM read of bytes \[4040, 4104\) is outside HBM \(4,096 bytes\)")
    addi = Instr(Op.ADDI, reg_d=2)
    addi.set_imm64(-4)
    negative = make_binary([addi, dataclasses.replace(load, reg_d=2)])
    with pytest.raises(SimError, match=r"instruction 1 \(dma.load\): SRAM write of bytes \[-4, 60\)"):
        simulate_timing(negative, TINY)  # checked in timing-only mode too


def test_out_of_bounds_sram_write() -> None:
    fill = Instr(Op.VPU_FILL, dt_d=F32, rows=1, cols=2, off_d=TINY.sram.bytes - 4)
    check(make_binary([fill]), r"instruction 0 \(vpu.fill\): SRAM write of bytes \[262140, 262148\) is outside SRAM")


def test_out_of_bounds_gather_row() -> None:
    gather = Instr(Op.DMA_GATHER, dt_d=F32, dt_a=F32, dt_b=DType.I32, rows=4, cols=8, off_a=1024, off_b=64, imm=8)
    binary = make_binary([gather], [IDS_SYM])
    inputs = {"ids": np.array([0, 1, 96, 2], np.int32)}
    check(binary, r"instruction 0 \(dma.gather\): HBM read of table row 96", inputs)


def scatter(index_dt: int = DType.I32, **fields: int) -> Instr:
    """Table at HBM 1024 (rows of 8 f32, stride 8) <- SRAM [4, 8] tile at 0, indices at HBM 64."""
    return Instr(
        Op.DMA_SCATTER, dt_d=F32, dt_a=F32, dt_b=index_dt, rows=4, cols=8, off_d=1024, off_b=64, imm=8, **fields
    )


@pytest.mark.parametrize("timing_only", [False, True])
def test_out_of_bounds_scatter_row(timing_only: bool) -> None:
    # the table holds (4096 - 1024) / 32 = 96 rows: row 95 is the last one in bounds
    binary = make_binary([scatter()], [IDS_SYM])
    simulate(binary, TINY, {"ids": np.array([0, 95, 1, 2], np.int32)}, timing_only=timing_only)
    message = r"instruction 0 \(dma.scatter\): HBM write of table row 96 is out of bounds"
    with pytest.raises(SimError, match=message):  # checked in timing-only mode too, with the given indices
        simulate(binary, TINY, {"ids": np.array([0, 96, 1, 2], np.int32)}, timing_only=timing_only)
    with pytest.raises(SimError, match="HBM write of table row -33 is out of bounds"):
        simulate(binary, TINY, {"ids": np.array([0, 1, -33, 2], np.int32)}, timing_only=timing_only)
    simulate_timing(binary, TINY)  # no inputs in timing-only mode: the indices are zero


@pytest.mark.parametrize("timing_only", [False, True])
def test_gather_and_scatter_rows_stay_in_their_tensor(timing_only: bool) -> None:
    """A table that is a symbol (an embedding, a KV cache) bounds its rows: an index past the table's
    last row is refused even when the row lies in HBM (it would read or overwrite the next tensor)."""
    table = Symbol("embed.weight", "weight", 1024, (10, 8), "f32")  # rows of 8 f32 at a stride of 8: 10 rows
    after = Symbol("cache", "kv", 1344, (4, 8), "f32")
    gather = Instr(Op.DMA_GATHER, dt_d=F32, dt_a=F32, dt_b=DType.I32, rows=4, cols=8, off_a=1024, off_b=64, imm=8)
    for instr, access in ((gather, "read"), (scatter(), "write")):
        binary = make_binary([instr], [IDS_SYM, table, after])
        simulate(binary, TINY, {"ids": np.array([0, 9, 1, 2], np.int32)}, timing_only=timing_only)
        message = f"{access} of row 10 of 'embed.weight', which has rows 0 to 9 here: an index input"
        with pytest.raises(SimError, match=message):
            simulate(binary, TINY, {"ids": np.array([0, 10, 1, 2], np.int32)}, timing_only=timing_only)


def test_scatter_index_that_overflows_int64_is_out_of_bounds() -> None:
    ids = Symbol("ids", "input", 64, (4,), "i64")
    binary = make_binary([scatter(DType.I64)], [ids])
    huge = 2**62 + 1  # huge * 32 bytes wraps around to 32 in int64 arithmetic
    check(binary, f"table row {huge} is out of bounds", {"ids": np.array([0, huge, 1, 2], np.int64)})


def test_scatter_index_dtype() -> None:
    check(make_binary([scatter(DType.F32)]), r"instruction 0: invalid dma.scatter: scatter indices must be i32 or i64")


def test_scatter_reads_sram_in_bounds() -> None:
    shifted = scatter(off_a=TINY.sram.bytes - 64)
    check(make_binary([shifted]), r"instruction 0 \(dma.scatter\): SRAM read of bytes \[262080, 262208\)")


def test_deadlock() -> None:
    code = [Instr(Op.WAIT, func=Engine.MXU, imm=7), Instr(Op.SIGNAL, func=Engine.VPU, imm=6)]
    check(make_binary(code), r"deadlock: MXU is stuck at instruction 0 \(wait\) on semaphore s7")


def test_bad_programs() -> None:
    check(make_binary([Instr(Op.LOOP, off_b=0), Instr(Op.ENDLOOP)]), "instruction 0: invalid loop: loop count 0")
    check(make_binary([Instr(Op.ENDLOOP)]), r"instruction 0 \(endloop\): no loop is open")
    check(make_binary([Instr(Op.LOOP, off_b=2)]), r"instruction 0 \(loop\): no matching endloop")
    check(make_binary([Instr(Op.ADDI, reg_d=1)], halt=False), "ran off the end of the code")
    check(make_binary([Instr(Op.SIGNAL, func=Engine.CTRL)]), "CTRL.*cannot signal")
    check(make_binary([Instr(Op.WAIT, func=Engine.VPU, imm=64)]), "semaphore s64 does not exist")
    check(
        make_binary([Instr(Op.VPU_BINARY, func=99, rows=1, cols=1)]), "invalid vpu.binary: 99 is not a valid BinaryFn"
    )
    check(make_binary([Instr(Op.VPU_FILL, dt_d=42, rows=1, cols=1)]), "42 is not a valid DType")
    check(make_binary([Instr(Op.ADDI, reg_d=40)]), "register r40 does not exist")
    f16 = Instr(Op.MXU_MATMUL, dt_d=F32, dt_a=DType.F16, dt_b=DType.F16, rows=1, cols=1, depth=1)
    check(make_binary([f16]), "target tiny has no MXU rate for f16")


def test_unknown_entry_point() -> None:
    with pytest.raises(SimError, match=r"unknown entry point 'decode' \(have: main\)"):
        simulate(make_binary([]), TINY, entry="decode")
