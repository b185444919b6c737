"""Functional results of the ISA simulator against numpy references (docs/isa.md, Numerics)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest

from tasic.backend.isa_spec import (
    FLAG_ACCUMULATE,
    FLAG_BCAST_SHIFT,
    BinaryFn,
    Broadcast,
    DType,
    Engine,
    Instr,
    Op,
    ReduceFn,
    UnaryFn,
    float_bits,
)
from tasic.backend.target import load_target
from tasic.backend.tbin import Symbol, TBinary
from tasic.isa_sim import simulate, simulate_timing
from tasic.isa_sim.functional import erf

TINY = load_target("tiny")
F32, BF16, I32, I64 = DType.F32, DType.BF16, DType.I32, DType.I64
X, Y, OUT = 0, 8192, 16384  # HBM addresses of inputs x, y and output out
SA, SB, SD, SC = 0, 8192, 16384, 24576  # SRAM tiles


def run(
    code: list[Instr], inputs: dict[str, np.ndarray], out_shape: tuple[int, ...], out_dtype: str = "f32"
) -> np.ndarray:
    """Run `code` + HALT with inputs at X, Y (in dict order) and return the output at OUT."""
    symbols = [
        Symbol(name, "input", addr, value.shape, _dtype_name(value))
        for (name, value), addr in zip(inputs.items(), (X, Y), strict=False)
    ]
    symbols.append(Symbol("out", "output", OUT, out_shape, out_dtype))
    binary = TBinary(TINY.name, TINY.hash, [*code, Instr(Op.HALT)], b"", symbols, metadata={"hbm_bytes": 1 << 15})
    return simulate(binary, TINY, inputs).outputs["out"]


def _dtype_name(value: np.ndarray) -> str:
    return {np.float32: "f32", np.int32: "i32", np.int64: "i64"}[value.dtype.type]


def load(
    sram: int, hbm: int, rows: int, cols: int, *, dt_d: int = F32, dt_a: int = F32, rs: int | None = None, cs: int = 1
) -> Instr:
    return Instr(
        Op.DMA_LOAD,
        dt_d=dt_d,
        dt_a=dt_a,
        rows=rows,
        cols=cols,
        off_d=sram,
        off_a=hbm,
        off_b=cols if rs is None else rs,
        imm=cs,
    )


def store(
    hbm: int, sram: int, rows: int, cols: int, *, dt_d: int = F32, dt_a: int = F32, rs: int | None = None, cs: int = 1
) -> Instr:
    return Instr(
        Op.DMA_STORE,
        dt_d=dt_d,
        dt_a=dt_a,
        rows=rows,
        cols=cols,
        off_d=hbm,
        off_a=sram,
        off_b=cols if rs is None else rs,
        imm=cs,
    )


def vpu(op: Op, func: int, rows: int, cols: int, **fields: int) -> Instr:
    """A VPU instruction on f32 tiles d=SD, a=SA, b=SB unless `fields` say otherwise."""
    defaults = {"dt_d": F32, "dt_a": F32, "dt_b": F32, "off_d": SD, "off_a": SA, "off_b": SB}
    return Instr(op, func=func, rows=rows, cols=cols, **{**defaults, **fields})


RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_matmul_f32() -> None:
    a, b = rand(8, 24), rand(24, 20)
    code = [
        load(SA, X, 8, 24),
        load(SB, Y, 24, 20),
        Instr(Op.MXU_MATMUL, dt_d=F32, dt_a=F32, dt_b=F32, rows=8, cols=20, depth=24, off_d=SD, off_a=SA, off_b=SB),
        store(OUT, SD, 8, 20),
    ]
    np.testing.assert_allclose(run(code, {"x": a, "y": b}, (8, 20)), a @ b, rtol=1e-5, atol=1e-5)


def test_matmul_bf16_operands_accumulate() -> None:
    a, b = rand(16, 32), rand(32, 16)
    mm = Instr(Op.MXU_MATMUL, dt_d=F32, dt_a=BF16, dt_b=BF16, rows=16, cols=16, depth=16, off_d=SD)
    code = [
        # K in two halves: A[:, :16] then A[:, 16:] (row stride 32), rounded to bf16 on the way in
        load(SA, X, 16, 16, dt_d=BF16, rs=32),
        load(SB, Y, 32, 16, dt_d=BF16),
        dataclasses.replace(mm, off_a=SA, off_b=SB),
        load(SA, X + 16 * 4, 16, 16, dt_d=BF16, rs=32),
        dataclasses.replace(mm, off_a=SA, off_b=SB + 16 * 16 * 2, flags=FLAG_ACCUMULATE),
        store(OUT, SD, 16, 16, dt_d=BF16),
    ]
    out = run(code, {"x": a, "y": b}, (16, 16), "bf16")
    assert out.dtype == np.float32
    ab = a.astype(ml_dtypes.bfloat16).astype(np.float32)
    bb = b.astype(ml_dtypes.bfloat16).astype(np.float32)
    expected = (ab @ bb).astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-2, atol=1e-2)
    assert np.mean(out == expected) > 0.9


def test_strided_broadcast_and_transposed_dma() -> None:
    x = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    # sub-block rows 1..3, cols 2..6 -> transposed via column stride 8 -> stored with a transposed store
    code = [
        load(SA, X + (1 * 8 + 2) * 4, 3, 4, rs=8),
        store(OUT, SA, 3, 4, rs=1, cs=3),  # out[j, i] = tile[i, j]: out is [4, 3]
    ]
    np.testing.assert_array_equal(run(code, {"x": x}, (4, 3)), x[1:4, 2:6].T)
    transposed_load = [load(SA, X, 8, 6, rs=1, cs=8), store(OUT, SA, 8, 6)]
    np.testing.assert_array_equal(run(transposed_load, {"x": x}, (8, 6)), x.T)
    broadcast = [load(SA, X + 2 * 8 * 4, 5, 8, rs=0), store(OUT, SA, 5, 8)]
    np.testing.assert_array_equal(run(broadcast, {"x": x}, (5, 8)), np.broadcast_to(x[2], (5, 8)))
    reversed_rows = [load(SA, X + 5 * 8 * 4, 6, 8, rs=-8), store(OUT, SA, 6, 8)]
    np.testing.assert_array_equal(run(reversed_rows, {"x": x}, (6, 8)), x[::-1])


@pytest.mark.parametrize("index_dt", [I32, I64])
def test_gather(index_dt: int) -> None:
    table = rand(10, 6)
    idx = np.array([3, 0, 9, 3], dtype=np.int32 if index_dt == I32 else np.int64)
    code = [
        Instr(Op.DMA_GATHER, dt_d=F32, dt_a=F32, dt_b=index_dt, rows=4, cols=6, off_d=SA, off_a=X, off_b=Y, imm=6),
        store(OUT, SA, 4, 6),
    ]
    np.testing.assert_array_equal(run(code, {"x": table, "y": idx}, (4, 6)), table[idx])


def scatter(table: int, idx: int, sram: int, rows: int, cols: int, stride: int, **fields: int) -> Instr:
    """HBM table (f32 unless `fields` say otherwise) rows idx[i] <- SRAM tile row i."""
    defaults = {"dt_d": F32, "dt_a": F32, "dt_b": I32}
    return Instr(
        Op.DMA_SCATTER, rows=rows, cols=cols, off_d=table, off_a=sram, off_b=idx, imm=stride, **{**defaults, **fields}
    )


@pytest.mark.parametrize("index_dt", [I32, I64])
@pytest.mark.parametrize("stride", [6, 8])
@pytest.mark.parametrize("ids", [[3, 0, 9, 5], [3, 0, 9, 3]])
def test_scatter(index_dt: int, stride: int, ids: list[int]) -> None:
    rows = rand(4, 6)
    idx = np.array(ids, dtype=np.int32 if index_dt == I32 else np.int64)
    code = [load(SA, X, 4, 6), scatter(OUT, Y, SA, 4, 6, stride, dt_b=index_dt)]
    out = run(code, {"x": rows, "y": idx}, (10, stride))
    expected = np.zeros((10, stride), np.float32)
    for i, row in enumerate(idx):  # in order: the later of two rows for index 3 wins
        expected[row, :6] = rows[i]
    np.testing.assert_array_equal(out, expected)


def test_scatter_converts_and_overlapping_rows_are_written_in_order() -> None:
    rows = rand(3, 4)
    # row stride 2 < 4 columns: rows 0 and 1 overlap in their last / first two elements
    code = [load(SA, X, 3, 4), scatter(OUT, Y, SA, 3, 4, 2, dt_d=BF16)]
    out = run(code, {"x": rows, "y": np.array([1, 0, 4], np.int32)}, (12,), "bf16")
    expected = np.zeros(12, np.float32)
    for i, row in enumerate([1, 0, 4]):
        expected[2 * row : 2 * row + 4] = rows[i].astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    ("rows", "cols", "diag", "depth"), [(4, 6, 2, 0), (4, 6, 2, 3), (5, 9, 4, 1), (6, 6, 0, 2), (3, 8, -1, 4)]
)
@pytest.mark.parametrize("dt", [F32, BF16])
def test_causal_sliding_window(rows: int, cols: int, diag: int, depth: int, dt: int) -> None:
    x = rand(rows, cols)
    addi = Instr(Op.ADDI, reg_d=3)
    addi.set_imm64(diag - 1)  # diag = r3 + 1
    code = [
        load(SD, X, rows, cols, dt_d=dt),
        addi,
        Instr(Op.VPU_CAUSAL, dt_d=dt, rows=rows, cols=cols, depth=depth, off_d=SD, reg_a=3, off_a=1),
        store(OUT, SD, rows, cols, dt_a=dt),
    ]
    i, j = np.indices((rows, cols))
    masked = (j > i + diag) | ((depth > 0) & (j <= i + diag - depth))
    expected = np.where(masked, -np.inf, x.astype(ml_dtypes.bfloat16) if dt == BF16 else x).astype(np.float32)
    np.testing.assert_array_equal(run(code, {"x": x}, (rows, cols)), expected)
    if depth:  # every row keeps at most `depth` keys
        assert (np.isfinite(expected).sum(axis=1) <= depth).all()


def _sum_of_squares(x: np.ndarray, axis: int, keepdims: bool) -> np.ndarray:
    return np.sum(x * x, axis=axis, keepdims=keepdims)


@pytest.mark.parametrize(
    ("func", "ref"),
    [(ReduceFn.SUM, np.sum), (ReduceFn.MAX, np.max), (ReduceFn.MIN, np.min), (ReduceFn.SUMSQ, _sum_of_squares)],
)
def test_reduce(func: int, ref: Callable[..., np.ndarray]) -> None:
    x = rand(5, 13)
    code = [load(SA, X, 5, 13), vpu(Op.VPU_REDUCE, func, 5, 13), store(OUT, SD, 5, 1)]
    np.testing.assert_allclose(run(code, {"x": x}, (5, 1)), ref(x, axis=1, keepdims=True), rtol=1e-6)


def test_select_and_fill() -> None:
    x, y = rand(4, 8), rand(4, 8)
    code = [
        load(SA, X, 4, 8),
        load(SB, Y, 4, 8),
        vpu(Op.VPU_SCALAR, BinaryFn.GT, 4, 8, dt_d=DType.BOOL, off_d=SC, imm=float_bits(0.0)),
        vpu(Op.VPU_SELECT, 0, 4, 8, reg_c=0, imm=SC),
        store(OUT, SD, 4, 8),
    ]
    np.testing.assert_array_equal(run(code, {"x": x, "y": y}, (4, 8)), np.where(x > 0, x, y))
    filled = [
        Instr(Op.VPU_FILL, dt_d=BF16, rows=2, cols=3, off_d=SD, imm=float_bits(1.0 / 3)),
        store(OUT, SD, 2, 3, dt_a=BF16),
    ]
    np.testing.assert_array_equal(run(filled, {}, (2, 3)), np.full((2, 3), np.float32(ml_dtypes.bfloat16(1 / 3))))


@pytest.mark.parametrize("dt", [F32, BF16])
def test_exp_sum_is_the_subtract_exp_and_row_sum_it_replaces(dt: int) -> None:
    """vpu.expsum gives bit for bit what binary sub (row), unary exp into dt and reduce sum give."""
    x, rows, cols = 4 * rand(6, 40), 6, 40
    row_max = x.max(axis=1, keepdims=True)
    sums_at = SC + 4 * rows  # c: the f32 row sums, after the row maxima at SC
    fused = [
        load(SA, X, rows, cols),
        vpu(Op.VPU_REDUCE, ReduceFn.MAX, rows, cols, off_d=SC),
        vpu(Op.VPU_EXP_SUM, 0, rows, cols, dt_d=dt, off_b=SC, reg_c=0, imm=sums_at),
    ]
    separate = [
        load(SA, X, rows, cols),
        vpu(Op.VPU_REDUCE, ReduceFn.MAX, rows, cols, off_d=SC),
        vpu(Op.VPU_BINARY, BinaryFn.SUB, rows, cols, off_d=SA, off_b=SC, flags=Broadcast.ROW << FLAG_BCAST_SHIFT),
        vpu(Op.VPU_UNARY, UnaryFn.EXP, rows, cols, dt_d=dt),
        vpu(Op.VPU_REDUCE, ReduceFn.SUM, rows, cols, dt_a=dt, off_a=SD, off_d=sums_at),
    ]
    outputs = []
    for code in (fused, separate):
        probs = run([*code, store(OUT, SD, rows, cols, dt_a=dt)], {"x": x}, (rows, cols))
        sums = run([*code, store(OUT, sums_at, rows, 1)], {"x": x}, (rows, 1))
        outputs.append((probs, sums))
    (probs, sums), (probs_ref, sums_ref) = outputs
    np.testing.assert_array_equal(probs, probs_ref)
    np.testing.assert_array_equal(sums, sums_ref)
    np.testing.assert_allclose(probs, np.exp(x - row_max), rtol=1e-2 if dt == BF16 else 1e-6)
    np.testing.assert_allclose(sums, probs.sum(axis=1, keepdims=True), rtol=1e-6)
    assert (probs.max(axis=1) == 1.0).all()  # each row's largest score gives exp(0)


@pytest.mark.parametrize("dt", [F32, BF16])
def test_rope_rotates_whole_heads_and_copies_the_rest(dt: int) -> None:
    """vpu.rope: per head of 8 columns, lo = x_lo c - x_hi s and hi = x_hi c + x_lo s with each step
    rounded to f32 (the mul/mul/sub and mul/mul/add it replaces); columns after `roped` are copied."""
    rows, head, roped, cols = 4, 8, 16, 24
    x, tables = rand(rows, cols), rand(2 * rows, head)  # cos in the first 4 rows, sin in the next 4
    code = [
        load(SA, X, rows, cols),
        load(SB, Y, 2 * rows, head),
        vpu(Op.VPU_ROPE, 0, rows, cols, dt_d=dt, imm=head, depth=roped),
        store(OUT, SD, rows, cols, dt_a=dt),
    ]
    out = run(code, {"x": x, "tables": tables}, (rows, cols))
    cos, sin, half = tables[:rows, None, :], tables[rows:, None, :], head // 2
    heads = x[:, :roped].reshape(rows, roped // head, head)
    lo, hi = heads[..., :half], heads[..., half:]
    rotated = np.concatenate(
        [lo * cos[..., :half] - hi * sin[..., :half], hi * cos[..., half:] + lo * sin[..., half:]], axis=2
    )
    expected = np.concatenate([rotated.reshape(rows, roped), x[:, roped:]], axis=1)
    if dt == BF16:
        expected = expected.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(out, expected)


def test_causal_uses_register_offset() -> None:
    x = rand(4, 6)
    code = [
        load(SD, X, 4, 6),
        Instr(Op.ADDI, reg_d=3, off_b=1),
        Instr(Op.VPU_CAUSAL, dt_d=F32, rows=4, cols=6, off_d=SD, reg_a=3, off_a=1),
        store(OUT, SD, 4, 6),
    ]
    i, j = np.indices((4, 6))
    np.testing.assert_array_equal(run(code, {"x": x}, (4, 6)), np.where(j > i + 2, -np.inf, x))


BINARY_REFS = {
    BinaryFn.ADD: np.add,
    BinaryFn.SUB: np.subtract,
    BinaryFn.MUL: np.multiply,
    BinaryFn.DIV: np.divide,
    BinaryFn.MAX: np.maximum,
    BinaryFn.MIN: np.minimum,
    BinaryFn.POW: np.power,
    BinaryFn.RSUB: lambda a, b: b - a,
    BinaryFn.RDIV: lambda a, b: b / a,
    BinaryFn.EQ: lambda a, b: (a == b).astype(np.float32),
    BinaryFn.LT: lambda a, b: (a < b).astype(np.float32),
    BinaryFn.GT: lambda a, b: (a > b).astype(np.float32),
    BinaryFn.CLAMP: lambda a, b: np.minimum(np.maximum(a, -b), b),  # [-b, b] for b >= 0
}


@pytest.mark.parametrize("func", list(BinaryFn))
@pytest.mark.parametrize("mode", list(Broadcast))
def test_binary_ops(func: BinaryFn, mode: Broadcast) -> None:
    x = np.abs(rand(4, 8)) + 0.5
    y = np.round(rand(4, 8), 1)
    y[0, :2] = x[0, :2]  # some equal elements
    b_shape = {Broadcast.NONE: (4, 8), Broadcast.ROW: (4, 1), Broadcast.COL: (1, 8)}[mode]
    code = [
        load(SA, X, 4, 8),
        load(SB, Y, *b_shape, rs=8),
        vpu(Op.VPU_BINARY, func, 4, 8, flags=mode << FLAG_BCAST_SHIFT),
        store(OUT, SD, 4, 8),
    ]
    b = y[: b_shape[0], : b_shape[1]]
    with np.errstate(all="ignore"):
        expected = BINARY_REFS[func](x, b)
    np.testing.assert_allclose(run(code, {"x": x, "y": y}, (4, 8)), expected, rtol=1e-6)


@pytest.mark.parametrize("func", list(BinaryFn))
def test_scalar_ops(func: BinaryFn) -> None:
    x = np.abs(rand(3, 5)) + 0.25
    x[0, 0] = 1.5
    code = [load(SA, X, 3, 5), vpu(Op.VPU_SCALAR, func, 3, 5, imm=float_bits(1.5)), store(OUT, SD, 3, 5)]
    expected = BINARY_REFS[func](x, np.float32(1.5))
    np.testing.assert_allclose(run(code, {"x": x}, (3, 5)), expected, rtol=1e-6)


def _erf64(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x.astype(np.float64))


UNARY_REFS = {
    UnaryFn.COPY: lambda x: x,
    UnaryFn.NEG: lambda x: -x,
    UnaryFn.EXP: np.exp,
    UnaryFn.TANH: np.tanh,
    UnaryFn.ERF: _erf64,
    UnaryFn.RSQRT: lambda x: 1 / np.sqrt(x),
    UnaryFn.SQRT: np.sqrt,
    UnaryFn.RECIP: lambda x: 1 / x,
    UnaryFn.SIGMOID: lambda x: 1 / (1 + np.exp(-x.astype(np.float64))),
    UnaryFn.SILU: lambda x: x / (1 + np.exp(-x.astype(np.float64))),
    UnaryFn.GELU_ERF: lambda x: 0.5 * x * (1 + _erf64(x / math.sqrt(2))),
    UnaryFn.GELU_TANH: lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    UnaryFn.ABS: np.abs,
    UnaryFn.LOG: np.log,
    UnaryFn.RELU: lambda x: np.maximum(x, 0),
    UnaryFn.COS: np.cos,
    UnaryFn.SIN: np.sin,
}
POSITIVE_ONLY = {UnaryFn.RSQRT, UnaryFn.SQRT, UnaryFn.LOG}


@pytest.mark.parametrize("func", list(UnaryFn))
def test_unary_fns(func: UnaryFn) -> None:
    x = rand(8, 16) * 3
    if func in POSITIVE_ONLY:
        x = np.abs(x) + 0.01
    code = [load(SA, X, 8, 16), vpu(Op.VPU_UNARY, func, 8, 16), store(OUT, SD, 8, 16)]
    np.testing.assert_allclose(run(code, {"x": x}, (8, 16)), UNARY_REFS[func](x), rtol=2e-6, atol=1e-6)


def test_sigmoid_and_silu_are_stable() -> None:
    x = np.array([[-1e4, -100, 0, 100, 1e4, np.inf, -np.inf, 88.8]], np.float32)
    code = [load(SA, X, 1, 8), vpu(Op.VPU_UNARY, UnaryFn.SIGMOID, 1, 8), store(OUT, SD, 1, 8)]
    out = run(code, {"x": x}, (1, 8))
    np.testing.assert_allclose(out, [[0, 3.72e-44, 0.5, 1, 1, 1, 0, 1]], atol=1e-30)
    silu = [load(SA, X, 1, 8), vpu(Op.VPU_UNARY, UnaryFn.SILU, 1, 8), store(OUT, SD, 1, 8)]
    assert np.isfinite(run(silu, {"x": x}, (1, 8))[0, :5]).all()


def test_erf_matches_math_erf() -> None:
    x = np.concatenate([np.linspace(-7, 7, 100_001), np.geomspace(1e-30, 1e-2, 50), [0.0, -0.0]])
    reference = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(erf(x) - reference)) < 1e-7
    assert np.max(np.abs(erf(x) - reference)) < 1e-13
    np.testing.assert_array_equal(erf(np.array([np.inf, -np.inf])), [1.0, -1.0])
    assert np.isnan(erf(np.array([np.nan])))[0]


def test_loop_with_addi_addresses() -> None:
    # out[t] = 2 * x[t] + 1 for 6 row tiles of [2, 8], with load/compute/store synchronised by semaphores
    x = rand(12, 8)
    body = [
        Instr(Op.DMA_LOAD, dt_d=F32, dt_a=F32, rows=2, cols=8, reg_d=0, off_d=SA, reg_a=1, off_a=X, off_b=8, imm=1),
        Instr(Op.SIGNAL, func=Engine.DMA_LOAD, imm=0),
        Instr(Op.WAIT, func=Engine.VPU, imm=0),
        vpu(Op.VPU_SCALAR, BinaryFn.MUL, 2, 8, imm=float_bits(2.0)),
        vpu(Op.VPU_SCALAR, BinaryFn.ADD, 2, 8, off_a=SD, imm=float_bits(1.0)),
        Instr(Op.SIGNAL, func=Engine.VPU, imm=1),
        Instr(Op.WAIT, func=Engine.DMA_STORE, imm=1),
        Instr(Op.DMA_STORE, dt_d=F32, dt_a=F32, rows=2, cols=8, reg_d=1, off_d=OUT, off_a=SD, off_b=8, imm=1),
        Instr(Op.ADDI, reg_d=1, reg_a=1, off_b=2 * 8 * 4),
    ]
    code = [Instr(Op.LOOP, off_b=3), Instr(Op.LOOP, off_b=2), *body, Instr(Op.ENDLOOP), Instr(Op.ENDLOOP)]
    np.testing.assert_allclose(run(code, {"x": x}, (12, 8)), 2 * x + 1, rtol=1e-6)


def test_wait_orders_execution_after_a_later_signal() -> None:
    # the VPU copy is earlier in program order but must read the data the later load brings
    x = rand(2, 4)
    code = [
        Instr(Op.WAIT, func=Engine.VPU, imm=5),
        vpu(Op.VPU_UNARY, UnaryFn.COPY, 2, 4),
        Instr(Op.SIGNAL, func=Engine.VPU, imm=6),
        load(SA, X, 2, 4),
        Instr(Op.SIGNAL, func=Engine.DMA_LOAD, imm=5),
        Instr(Op.WAIT, func=Engine.DMA_STORE, imm=6),
        store(OUT, SD, 2, 4),
    ]
    np.testing.assert_array_equal(run(code, {"x": x}, (2, 4)), x)


def test_dtype_conversions_and_int_inputs() -> None:
    ids = np.array([[1, -2, 70000]], np.int64)
    code = [load(SA, X, 1, 3, dt_a=I32), store(OUT, SA, 1, 3, dt_d=DType.F8E4M3)]
    symbols = [Symbol("x", "input", X, (1, 3), "i32"), Symbol("out", "output", OUT, (1, 3), "f8e4m3")]
    binary = TBinary(TINY.name, TINY.hash, [*code, Instr(Op.HALT)], b"", symbols, metadata={"hbm_bytes": 1 << 15})
    out = simulate(binary, TINY, {"x": ids}).outputs["out"]  # i64 input accepted: values fit in i32
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, -2, 448]])  # 70000 saturates at f8e4m3's largest value


@pytest.mark.parametrize(("dt", "limit"), [(DType.F8E4M3, 448.0), (DType.F8E5M2, 57344.0)])
def test_conversions_to_fp8_saturate(dt: int, limit: float) -> None:
    """A store, a load into an f8 tile and a VPU write of an f8 tile clip to +-the largest finite value
    before rounding (an unsaturated e4m3 conversion gives NaN from 464 on, e5m2 infinity); NaN stays NaN."""
    x = np.array([[1e6, -1e6, 3.0, np.nan, limit * 0.999]], np.float32)
    name = "f8e4m3" if dt == DType.F8E4M3 else "f8e5m2"
    expected = np.array([[limit, -limit, 3.0, np.nan, limit]], np.float32)
    rounded = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn if dt == DType.F8E4M3 else ml_dtypes.float8_e5m2).max)
    assert rounded == limit
    stored = run([load(SA, X, 1, 5), store(OUT, SA, 1, 5, dt_d=dt)], {"x": x}, (1, 5), name)
    loaded = run([load(SA, X, 1, 5, dt_d=dt), store(OUT, SA, 1, 5, dt_d=dt, dt_a=dt)], {"x": x}, (1, 5), name)
    scaled = vpu(Op.VPU_SCALAR, BinaryFn.MUL, 1, 5, dt_d=dt, off_d=SD, imm=float_bits(1.0))
    written = run([load(SA, X, 1, 5), scaled, store(OUT, SD, 1, 5, dt_d=dt, dt_a=dt)], {"x": x}, (1, 5), name)
    for out in (stored, loaded, written):
        np.testing.assert_array_equal(out, expected)


def test_link_send_writes_the_next_stages_buffer_like_dma_store() -> None:
    # one stage simulated alone: the next chip's input buffer is this program's output `out`
    x = rand(4, 8) * 100
    send = dataclasses.replace(store(OUT, SA, 4, 8, dt_d=BF16, rs=1, cs=4), opcode=Op.LINK_SEND)  # transposed
    out = run([load(SA, X, 4, 8), send], {"x": x}, (8, 4), "bf16")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x.T.astype(ml_dtypes.bfloat16).astype(np.float32))
    stored = run([load(SA, X, 4, 8), dataclasses.replace(send, opcode=Op.DMA_STORE)], {"x": x}, (8, 4), "bf16")
    np.testing.assert_array_equal(out, stored)
    assert not np.array_equal(out, x.T)  # rounded to bf16 on the way


def test_constants_image_and_timing_only_outputs() -> None:
    weights = np.arange(8, dtype=np.float32)
    code = [load(SA, 64, 1, 8), vpu(Op.VPU_UNARY, UnaryFn.NEG, 1, 8), store(OUT, SD, 1, 8)]
    symbols = [Symbol("w", "weight", 64, (8,), "f32"), Symbol("out", "output", OUT, (8,), "f32")]
    constants = bytes(64) + weights.tobytes()
    binary = TBinary(TINY.name, TINY.hash, [*code, Instr(Op.HALT)], constants, symbols, metadata={"hbm_bytes": 1 << 15})
    np.testing.assert_array_equal(simulate(binary, TINY).outputs["out"], -weights)
    assert simulate(binary, TINY, timing_only=True).outputs == {}
    assert simulate_timing(binary, TINY).total_cycles == simulate(binary, TINY).report.total_cycles
