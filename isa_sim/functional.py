"""Data effects of DMA, MXU and VPU instructions on HBM and SRAM (docs/isa.md, Numerics)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from tasic.backend.isa_spec import (
    DTYPE_BYTES,
    FLAG_ACCUMULATE,
    BinaryFn,
    Broadcast,
    DType,
    Instr,
    Op,
    ReduceFn,
    UnaryFn,
)
from tasic.isa_sim.errors import SimError
from tasic.isa_sim.memory import NP_DTYPES, convert, strided, tile
from tasic.isa_sim.program import Program
from tasic.isa_sim.timing import Operands

F32 = np.float32
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_ERF_SPLIT = 2.0  # power series below, continued fraction for erfc at and above
_ERF_SERIES_TERMS = 32
_ERFC_FRACTION_DEPTH = 40


def erf(x: np.ndarray) -> np.ndarray:
    """Error function in float64, within about 1e-15 of math.erf everywhere.

    Below 2: erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (2n+1)!! (positive terms).
    At and above: erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))).
    """
    x = np.asarray(x, np.float64)
    ax = np.abs(x)
    out = np.empty_like(ax)
    small = ax < _ERF_SPLIT
    xs = ax[small]
    term, total, ratio = xs.copy(), xs.copy(), 2.0 * xs * xs
    for n in range(1, _ERF_SERIES_TERMS):
        term *= ratio / (2 * n + 1)
        total += term
    out[small] = _TWO_OVER_SQRT_PI * np.exp(-xs * xs) * total
    large = ~small
    xl = ax[large]
    fraction = xl.copy()
    for k in range(_ERFC_FRACTION_DEPTH, 0, -1):
        fraction = xl + (k / 2) / fraction
    out[large] = 1.0 - np.exp(-xl * xl) / math.sqrt(math.pi) / fraction
    return np.copysign(out, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, F32(1) / (F32(1) + e), e / (F32(1) + e))


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(F32)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    inner = F32(math.sqrt(2.0 / math.pi)) * (x + F32(0.044715) * x * x * x)
    return F32(0.5) * x * (F32(1) + np.tanh(inner))


UNARY: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    UnaryFn.COPY: lambda x: x,
    UnaryFn.NEG: np.negative,
    UnaryFn.EXP: np.exp,
    UnaryFn.TANH: np.tanh,
    UnaryFn.ERF: lambda x: erf(x).astype(F32),
    UnaryFn.RSQRT: lambda x: F32(1) / np.sqrt(x),
    UnaryFn.SQRT: np.sqrt,
    UnaryFn.RECIP: lambda x: F32(1) / x,
    UnaryFn.SIGMOID: _sigmoid,
    UnaryFn.SILU: lambda x: x * _sigmoid(x),
    UnaryFn.GELU_ERF: _gelu_erf,
    UnaryFn.GELU_TANH: _gelu_tanh,
    UnaryFn.ABS: np.abs,
    UnaryFn.LOG: np.log,
    UnaryFn.RELU: lambda x: np.maximum(x, F32(0)),
    UnaryFn.COS: np.cos,
    UnaryFn.SIN: np.sin,
}
BINARY: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    BinaryFn.ADD: np.add,
    BinaryFn.SUB: np.subtract,
    BinaryFn.MUL: np.multiply,
    BinaryFn.DIV: np.divide,
    BinaryFn.MAX: np.maximum,
    BinaryFn.MIN: np.minimum,
    BinaryFn.POW: np.power,
    BinaryFn.RSUB: lambda a, b: b - a,
    BinaryFn.RDIV: lambda a, b: b / a,
    BinaryFn.EQ: lambda a, b: (a == b).astype(F32),
    BinaryFn.LT: lambda a, b: (a < b).astype(F32),
    BinaryFn.GT: lambda a, b: (a > b).astype(F32),
}
REDUCE: dict[int, Callable[..., np.ndarray]] = {ReduceFn.SUM: np.sum, ReduceFn.MAX: np.max, ReduceFn.MIN: np.min}


class Executor:
    """Applies instructions to an HBM and an SRAM byte buffer; called by the scheduler."""

    def __init__(self, program: Program, hbm: np.ndarray, sram: np.ndarray) -> None:
        self.program = program
        self.hbm = hbm
        self.sram = sram
        self.handlers: list[Callable[[Instr, Operands], None] | None] = [None] * 256
        for op, handler in (
            (Op.DMA_LOAD, self._load),
            (Op.DMA_STORE, self._store),
            (Op.DMA_GATHER, self._gather),
            (Op.MXU_MATMUL, self._matmul),
            (Op.VPU_UNARY, self._unary),
            (Op.VPU_BINARY, self._binary),
            (Op.VPU_SCALAR, self._scalar),
            (Op.VPU_REDUCE, self._reduce),
            (Op.VPU_SELECT, self._select),
            (Op.VPU_FILL, self._fill),
            (Op.VPU_CAUSAL, self._causal),
        ):
            self.handlers[op] = handler
        self._pc = 0

    def __call__(self, pc: int, ops: Operands) -> None:
        """Execute static instruction `pc` with its resolved addresses (d, a, b, c)."""
        instr = self.program.code[pc]
        self._pc = pc
        self.handlers[instr.opcode](instr, ops)

    def _sram_f32(self, addr: int, dt: int, rows: int, cols: int) -> np.ndarray:
        return tile(self.sram, addr, dt, rows, cols).astype(F32)

    def _write(self, addr: int, dt: int, values: np.ndarray) -> None:
        rows, cols = values.shape
        tile(self.sram, addr, dt, rows, cols)[...] = convert(values, dt)

    def _load(self, i: Instr, ops: Operands) -> None:
        src = strided(self.hbm, ops[1], i.dt_a, i.rows, i.cols, i.off_b, i.imm)
        self._write(ops[0], i.dt_d, src)

    def _store(self, i: Instr, ops: Operands) -> None:
        dst = strided(self.hbm, ops[0], i.dt_d, i.rows, i.cols, i.off_b, i.imm)
        dst[...] = convert(tile(self.sram, ops[1], i.dt_a, i.rows, i.cols), i.dt_d)

    def _gather(self, i: Instr, ops: Operands) -> None:
        idx = tile(self.hbm, ops[2], i.dt_b, i.rows, 1)[:, 0].astype(np.int64)
        esize = DTYPE_BYTES[DType(i.dt_a)]
        row_bytes = i.cols * esize
        first = ops[1] + idx * (i.imm * esize)
        outside = (first < 0) | (first + row_bytes > self.hbm.size)
        if outside.any():
            row = int(idx[outside][0])
            raise SimError(f"{self.program.describe(self._pc)}: HBM read of table row {row} is out of bounds")
        rows = self.hbm[first[:, None] + np.arange(row_bytes)[None, :]].view(NP_DTYPES[i.dt_a])
        self._write(ops[0], i.dt_d, rows)

    def _matmul(self, i: Instr, ops: Operands) -> None:
        a = self._sram_f32(ops[1], i.dt_a, i.rows, i.depth)
        b = self._sram_f32(ops[2], i.dt_b, i.depth, i.cols)
        c = a @ b
        if i.flags & FLAG_ACCUMULATE:
            c += self._sram_f32(ops[0], i.dt_d, i.rows, i.cols)
        self._write(ops[0], i.dt_d, c)

    def _unary(self, i: Instr, ops: Operands) -> None:
        self._write(ops[0], i.dt_d, UNARY[i.func](self._sram_f32(ops[1], i.dt_a, i.rows, i.cols)))

    def _binary(self, i: Instr, ops: Operands) -> None:
        mode = i.broadcast
        b_rows = 1 if mode == Broadcast.COL else i.rows
        b_cols = 1 if mode == Broadcast.ROW else i.cols
        a = self._sram_f32(ops[1], i.dt_a, i.rows, i.cols)
        b = self._sram_f32(ops[2], i.dt_b, b_rows, b_cols)
        self._write(ops[0], i.dt_d, BINARY[i.func](a, b))

    def _scalar(self, i: Instr, ops: Operands) -> None:
        a = self._sram_f32(ops[1], i.dt_a, i.rows, i.cols)
        self._write(ops[0], i.dt_d, BINARY[i.func](a, F32(i.imm_f32)))

    def _reduce(self, i: Instr, ops: Operands) -> None:
        a = self._sram_f32(ops[1], i.dt_a, i.rows, i.cols)
        self._write(ops[0], i.dt_d, REDUCE[i.func](a, axis=1, keepdims=True))

    def _select(self, i: Instr, ops: Operands) -> None:
        cond = tile(self.sram, ops[3], DType.BOOL, i.rows, i.cols) != 0
        a = self._sram_f32(ops[1], i.dt_a, i.rows, i.cols)
        b = self._sram_f32(ops[2], i.dt_b, i.rows, i.cols)
        self._write(ops[0], i.dt_d, np.where(cond, a, b))

    def _fill(self, i: Instr, ops: Operands) -> None:
        self._write(ops[0], i.dt_d, np.full((i.rows, i.cols), i.imm_f32, F32))

    def _causal(self, i: Instr, ops: Operands) -> None:
        d = self._sram_f32(ops[0], i.dt_d, i.rows, i.cols)
        rows, cols = np.indices(d.shape)
        d[cols > rows + ops[1]] = -np.inf
        self._write(ops[0], i.dt_d, d)
