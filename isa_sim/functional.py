"""Data effects of DMA, MXU and VPU instructions on HBM and SRAM (docs/isa.md, Numerics).

`bind` turns every instruction into a runner: a closure with its dtypes, shapes and function resolved
once, and with numpy views of the operands whose address is fixed (register r0) made once, so that
executing an instruction costs a few numpy calls. `bind_index_checks` gives a timing-only machine the
table-row checks of gather and scatter.
"""

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
    matmul_batch,
)
from tasic.isa_sim.errors import SimError
from tasic.isa_sim.memory import FP8_LIMITS, NP_DTYPES, Memory, convert, extent, saturated, strided, tile
from tasic.isa_sim.program import INDEXED_OPS, Program
from tasic.isa_sim.timing import Operands, Runner

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
    BinaryFn.CLAMP: lambda a, b: np.minimum(np.maximum(a, -b), b),
}
REDUCE: dict[int, np.ufunc] = {ReduceFn.SUM: np.add, ReduceFn.MAX: np.maximum, ReduceFn.MIN: np.minimum}

Getter = Callable[[int], np.ndarray]  # operand address -> array
Setter = Callable[[int, np.ndarray], None]  # operand address, values -> None


def bind(program: Program, hbm: np.ndarray, sram: np.ndarray) -> list[Runner | None]:
    """One runner per instruction (None for control instructions) acting on `hbm` and `sram`.

    The buffers must stay the same objects for the life of the runners (reset them in place).
    """
    binders = {
        Op.DMA_LOAD: _load,
        Op.DMA_STORE: _store,
        Op.DMA_GATHER: _gather,
        Op.DMA_SCATTER: _scatter,
        Op.MXU_MATMUL: _matmul,
        Op.VPU_UNARY: _unary,
        Op.VPU_BINARY: _binary,
        Op.VPU_SCALAR: _scalar,
        Op.VPU_REDUCE: _reduce,
        Op.VPU_SELECT: _select,
        Op.VPU_EXP_SUM: _exp_sum,
        Op.VPU_ROPE: _rope,
        Op.VPU_FILL: _fill,
        Op.VPU_CAUSAL: _causal,
        Op.LINK_ALLREDUCE: _copy_one_chip,
        # One pipeline stage simulated alone: the next chip's input buffer is this chip's output buffer.
        Op.LINK_SEND: _store,
    }
    views: dict[tuple[int, ...], np.ndarray] = {}  # fixed views, shared by instructions with the same operand
    runners: list[Runner | None] = []
    for pc, instr in enumerate(program.code):
        binder = binders.get(instr.opcode)
        runners.append(None if binder is None else binder(_Operands(program, pc, hbm, sram, views)))
    return runners


def bind_chips(program: Program, hbms: list[np.ndarray], srams: list[np.ndarray]) -> list[Runner | None]:
    """Runners that execute each instruction on every chip in turn (SPMD, lock step).

    LINK_ALLREDUCE reads tile a on every chip, sums in f32 and writes the sum, rounded to dt_d, to tile d
    on every chip.
    """
    chips = [bind(program, hbm, sram) for hbm, sram in zip(hbms, srams, strict=True)]
    runners: list[Runner | None] = []
    for pc, instr in enumerate(program.code):
        if instr.opcode == Op.LINK_ALLREDUCE:
            operands = [_Operands(program, pc, hbm, sram, {}) for hbm, sram in zip(hbms, srams, strict=True)]
            runners.append(_all_reduce(operands))
            continue
        per_chip = [runners_of_chip[pc] for runners_of_chip in chips]
        runners.append(None if per_chip[0] is None else _on_every_chip(per_chip))  # type: ignore[arg-type]
    return runners


def _on_every_chip(runners: list[Runner]) -> Runner:
    def run(ops: Operands) -> None:
        for runner in runners:
            runner(ops)

    return run


def _all_reduce(chips: list[_Operands]) -> Runner:
    i = chips[0].instr
    sources = [o.read(1, i.dt_a, i.rows, i.cols) for o in chips]
    dests = [o.write(0, i.dt_d, i.rows, i.cols) for o in chips]

    def run(ops: Operands) -> None:
        total = np.zeros((i.rows, i.cols), F32)
        for source in sources:
            total += source(ops[1])
        for dest in dests:
            dest(ops[0], total)

    return run


def bind_index_checks(program: Program, hbm: Memory, hbm_size: int) -> list[Runner | None]:
    """Timing-only runners: gather and scatter read their indices from `hbm` and check the table rows."""
    return [
        _index_check(instr, program, hbm, hbm_size, program.describe(pc))
        if instr.opcode in INDEXED_OPS and instr.rows * instr.cols
        else None
        for pc, instr in enumerate(program.code)
    ]


def _index_check(i: Instr, program: Program, hbm: Memory, hbm_size: int, where: str) -> Runner:
    def run(ops: Operands) -> None:
        _table_rows(_indices(hbm, ops[2], i), ops, i, program, hbm_size, where)

    return run


class _Operands:
    """Builds the operand accessors of one instruction; fixed addresses get their views made once."""

    def __init__(
        self, program: Program, pc: int, hbm: np.ndarray, sram: np.ndarray, views: dict[tuple[int, ...], np.ndarray]
    ) -> None:
        self.instr, self.program = program.code[pc], program
        self.where = program.describe(pc)
        self.hbm, self.sram, self.views = hbm, sram, views
        regs = program.steps[pc][5]
        self.fixed = [regs[2 * slot + 1] if regs[2 * slot] == 0 else None for slot in range(4)]

    def view(self, slot: int, dt: int, rows: int, cols: int) -> Getter:
        """The dense SRAM tile of operand `slot` as a writable view of dtype `dt`."""
        sram = self.sram
        return self._fixed_or(slot, sram, dt, rows, cols, cols, 1) or (lambda addr: tile(sram, addr, dt, rows, cols))

    def hbm_view(self, slot: int, dt: int, row_stride: int, col_stride: int) -> Getter:
        """The strided HBM tile of operand `slot`."""
        hbm, rows, cols = self.hbm, self.instr.rows, self.instr.cols
        return self._fixed_or(slot, hbm, dt, rows, cols, row_stride, col_stride) or (
            lambda addr: strided(hbm, addr, dt, rows, cols, row_stride, col_stride)
        )

    def _fixed_or(self, slot: int, buf: np.ndarray, *shape: int) -> Getter | None:
        """A getter of the view made now when operand `slot` has a fixed address inside `buf`, else None."""
        addr = self.fixed[slot]
        dt, rows, cols, row_stride, col_stride = shape
        lo, hi = extent(rows, cols, row_stride, col_stride, dt)
        if addr is None or addr + lo < 0 or addr + hi > buf.size:
            return None  # register-relative, or out of bounds (the walker reports it before it runs)
        key = (buf is self.hbm, addr, *shape)
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = strided(buf, addr, dt, rows, cols, row_stride, col_stride)
        return lambda _addr: view

    def read(self, slot: int, dt: int, rows: int, cols: int) -> Getter:
        """The SRAM tile of operand `slot` as float32: the view itself when it is f32 and aligned (do not modify it).

        Unaligned tiles are copied so that numpy takes the same (BLAS, SIMD) paths as for aligned ones.
        """
        view = self.view(slot, dt, rows, cols)
        if dt != DType.F32:
            return lambda addr: view(addr).astype(F32)
        addr = self.fixed[slot]
        if addr is not None and addr % 4 == 0:
            return view
        return lambda addr: view(addr) if addr % 4 == 0 else view(addr).copy()

    def write(self, slot: int, dt: int, rows: int, cols: int) -> Setter:
        """Store values, rounded to `dt`, into the SRAM tile of operand `slot`."""
        view = self.view(slot, dt, rows, cols)
        if dt == DType.BOOL:

            def store_bool(addr: int, values: np.ndarray) -> None:
                view(addr)[...] = values != 0

            return store_bool

        if dt in FP8_LIMITS:

            def store_fp8(addr: int, values: np.ndarray) -> None:
                view(addr)[...] = saturated(values, dt)

            return store_fp8

        def store(addr: int, values: np.ndarray) -> None:
            view(addr)[...] = values

        return store


def _indices(hbm: Memory, addr: int, i: Instr) -> np.ndarray:
    """The `rows` gather / scatter indices at HBM `addr`, as int64."""
    size = i.rows * DTYPE_BYTES[i.dt_b]
    return hbm[addr : addr + size].view(NP_DTYPES[i.dt_b]).astype(np.int64)


def _table_rows(idx: np.ndarray, ops: Operands, i: Instr, program: Program, hbm_size: int, where: str) -> np.ndarray:
    """HBM byte address of each table row a gather or scatter touches; SimError for a row outside the
    table's tensor (an embedding's vocabulary, a KV cache's slots) or outside HBM."""
    gather = i.opcode == Op.DMA_GATHER
    table, dt = (ops[1], i.dt_a) if gather else (ops[0], i.dt_d)
    esize = DTYPE_BYTES[dt]
    row_bytes, stride = i.cols * esize, i.imm * esize
    region = program.region_of(table)
    start, end = (region[0], region[1]) if region else (0, hbm_size)
    # in float64 first: an index times the stride may overflow int64, but then it is out of bounds anyway
    first = table + idx.astype(np.float64) * stride
    outside = (first < start) | (first + row_bytes > end)
    if outside.any():
        row, access = int(idx[outside][0]), "read" if gather else "write"
        if region is None:
            raise SimError(f"{where}: HBM {access} of table row {row} is out of bounds")
        rows = (end - table - row_bytes) // stride + 1 if stride > 0 else 1
        raise SimError(
            f"{where}: {access} of row {row} of '{region[2]}', which has rows 0 to {rows - 1} here: an index"
            " input (a token id, a cache position) is out of range"
        )
    return table + idx * stride


def _load(o: _Operands) -> Runner:
    i = o.instr
    src, dst = o.hbm_view(1, i.dt_a, i.off_b, i.imm), o.write(0, i.dt_d, i.rows, i.cols)

    def run(ops: Operands) -> None:
        dst(ops[0], src(ops[1]))

    return run


def _store(o: _Operands) -> Runner:
    """DMA_STORE, and LINK_SEND on one stage simulated alone (the next chip's buffer is this chip's output)."""
    i = o.instr
    dst, src, dt = o.hbm_view(0, i.dt_d, i.off_b, i.imm), o.view(1, i.dt_a, i.rows, i.cols), i.dt_d

    def run(ops: Operands) -> None:
        dst(ops[0])[...] = convert(src(ops[1]), dt)

    return run


def _gather(o: _Operands) -> Runner | None:
    i, hbm, where = o.instr, o.hbm, o.where
    if i.rows * i.cols == 0:
        return None
    dst, dtype = o.write(0, i.dt_d, i.rows, i.cols), NP_DTYPES[i.dt_a]
    row = np.arange(i.cols * dtype.itemsize)

    def run(ops: Operands) -> None:
        first = _table_rows(_indices(hbm, ops[2], i), ops, i, o.program, hbm.size, where)
        dst(ops[0], hbm[first[:, None] + row].view(dtype))

    return run


def _scatter(o: _Operands) -> Runner | None:
    i, hbm, where = o.instr, o.hbm, o.where
    if i.rows * i.cols == 0:
        return None
    src, dt = o.view(1, i.dt_a, i.rows, i.cols), i.dt_d
    row_bytes = i.cols * NP_DTYPES[dt].itemsize
    row = np.arange(row_bytes)

    def run(ops: Operands) -> None:
        first = _table_rows(_indices(hbm, ops[2], i), ops, i, o.program, hbm.size, where)
        data = np.ascontiguousarray(convert(src(ops[1]), dt)).view(np.uint8).reshape(i.rows, row_bytes)
        starts = np.sort(first)
        if (starts[1:] - starts[:-1] >= row_bytes).all():
            hbm[first[:, None] + row] = data
        else:  # rows overlap: write them in order, so the later row wins
            for index, addr in enumerate(first.tolist()):
                hbm[addr : addr + row_bytes] = data[index]

    return run


def _matmul(o: _Operands) -> Runner:
    i = o.instr
    n = matmul_batch(i)
    a, b = o.read(1, i.dt_a, i.rows * n, i.depth), o.read(2, i.dt_b, i.depth * n, i.cols)
    d, dst = o.read(0, i.dt_d, i.rows * n, i.cols), o.write(0, i.dt_d, i.rows * n, i.cols)
    accumulate = bool(i.flags & FLAG_ACCUMULATE)

    def product(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if n == 1:
            return x @ y
        return np.matmul(x.reshape(n, i.rows, i.depth), y.reshape(n, i.depth, i.cols)).reshape(n * i.rows, i.cols)

    def run(ops: Operands) -> None:
        c = product(a(ops[1]), b(ops[2]))
        if accumulate:
            c += d(ops[0])
        dst(ops[0], c)

    return run


def _copy_one_chip(o: _Operands) -> Runner:
    """LINK_ALLREDUCE on a machine of one chip: the sum over one chip is the tile itself."""
    i = o.instr
    a, dst = o.read(1, i.dt_a, i.rows, i.cols), o.write(0, i.dt_d, i.rows, i.cols)
    return lambda ops: dst(ops[0], a(ops[1]).copy())


def _unary(o: _Operands) -> Runner:
    i = o.instr
    fn, a = UNARY[i.func], o.read(1, i.dt_a, i.rows, i.cols)
    if isinstance(fn, np.ufunc) and i.dt_d == DType.F32:
        d = o.view(0, i.dt_d, i.rows, i.cols)
        return lambda ops: fn(a(ops[1]), out=d(ops[0]))
    dst = o.write(0, i.dt_d, i.rows, i.cols)
    return lambda ops: dst(ops[0], fn(a(ops[1])))


def _binary(o: _Operands) -> Runner:
    i = o.instr
    mode = i.broadcast
    b_rows = 1 if mode == Broadcast.COL else i.rows
    b_cols = 1 if mode == Broadcast.ROW else i.cols
    fn, a, b = BINARY[i.func], o.read(1, i.dt_a, i.rows, i.cols), o.read(2, i.dt_b, b_rows, b_cols)
    if isinstance(fn, np.ufunc) and i.dt_d == DType.F32:
        d = o.view(0, i.dt_d, i.rows, i.cols)
        return lambda ops: fn(a(ops[1]), b(ops[2]), out=d(ops[0]))
    dst = o.write(0, i.dt_d, i.rows, i.cols)
    return lambda ops: dst(ops[0], fn(a(ops[1]), b(ops[2])))


def _scalar(o: _Operands) -> Runner:
    i = o.instr
    fn, a, imm = BINARY[i.func], o.read(1, i.dt_a, i.rows, i.cols), np.array(i.imm_f32, F32)  # 0-d: fastest
    if isinstance(fn, np.ufunc) and i.dt_d == DType.F32:
        d = o.view(0, i.dt_d, i.rows, i.cols)
        return lambda ops: fn(a(ops[1]), imm, out=d(ops[0]))
    dst = o.write(0, i.dt_d, i.rows, i.cols)
    return lambda ops: dst(ops[0], fn(a(ops[1]), imm))


def _reduce(o: _Operands) -> Runner:
    i = o.instr
    if i.func == ReduceFn.SUMSQ:
        return _sum_of_squares(o)
    fn, a = REDUCE[i.func], o.read(1, i.dt_a, i.rows, i.cols)
    if i.dt_d == DType.F32:
        d = o.view(0, i.dt_d, i.rows, 1)
        return lambda ops: fn.reduce(a(ops[1]), axis=1, keepdims=True, out=d(ops[0]))
    dst = o.write(0, i.dt_d, i.rows, 1)
    return lambda ops: dst(ops[0], fn.reduce(a(ops[1]), axis=1, keepdims=True))


def _sum_of_squares(o: _Operands) -> Runner:
    i = o.instr
    a, dst = o.read(1, i.dt_a, i.rows, i.cols), o.write(0, i.dt_d, i.rows, 1)

    def run(ops: Operands) -> None:
        values = a(ops[1])
        dst(ops[0], np.add.reduce(values * values, axis=1, keepdims=True))

    return run


def _select(o: _Operands) -> Runner:
    i = o.instr
    cond = o.view(3, DType.BOOL, i.rows, i.cols)
    a, b = o.read(1, i.dt_a, i.rows, i.cols), o.read(2, i.dt_b, i.rows, i.cols)
    dst = o.write(0, i.dt_d, i.rows, i.cols)
    return lambda ops: dst(ops[0], np.where(cond(ops[3]) != 0, a(ops[1]), b(ops[2])))


def _exp_sum(o: _Operands) -> Runner:
    """d = exp(a - b) rounded to dt_d (b one value per row); c = the row sums of d as rounded, in f32."""
    i = o.instr
    a, b = o.read(1, i.dt_a, i.rows, i.cols), o.read(2, i.dt_b, i.rows, 1)
    dst, d = o.write(0, i.dt_d, i.rows, i.cols), o.read(0, i.dt_d, i.rows, i.cols)
    sums = o.view(3, DType.F32, i.rows, 1)

    def run(ops: Operands) -> None:
        dst(ops[0], np.exp(a(ops[1]) - b(ops[2])))
        np.add.reduce(d(ops[0]), axis=1, keepdims=True, out=sums(ops[3]))

    return run


def _rope(o: _Operands) -> Runner:
    """The rotary embedding of a's first `depth` columns, head by head (head_dim imm); later columns copied.

    Per head, with x_lo / x_hi its halves and cos, sin = b's two [rows, head_dim] tiles:
    lo = x_lo * cos_lo - x_hi * sin_lo, hi = x_hi * cos_hi + x_lo * sin_hi, each step rounded to f32.
    """
    i = o.instr
    head, roped, half = i.imm, i.depth, i.imm // 2
    a, tables = o.read(1, i.dt_a, i.rows, i.cols), o.read(2, i.dt_b, 2 * i.rows, head)
    dst = o.write(0, i.dt_d, i.rows, i.cols)

    def run(ops: Operands) -> None:
        x, t = a(ops[1]).astype(F32, copy=True), tables(ops[2]).astype(F32, copy=False)
        cos, sin = t[: i.rows].reshape(i.rows, 1, head), t[i.rows :].reshape(i.rows, 1, head)
        heads = x[:, :roped].reshape(i.rows, roped // head, head)
        lo, hi = heads[..., :half], heads[..., half:]
        new_lo = lo * cos[..., :half] - hi * sin[..., :half]
        new_hi = hi * cos[..., half:] + lo * sin[..., half:]
        x[:, :roped] = np.concatenate([new_lo, new_hi], axis=2).reshape(i.rows, roped)
        dst(ops[0], x)

    return run


def _fill(o: _Operands) -> Runner:
    i = o.instr
    d, values = o.view(0, i.dt_d, i.rows, i.cols), convert(np.full((i.rows, i.cols), i.imm_f32, F32), i.dt_d)

    def run(ops: Operands) -> None:
        d(ops[0])[...] = values

    return run


def _causal(o: _Operands) -> Runner:
    """-inf where j - i > diag, and where j - i <= diag - depth when depth > 0 (sliding window)."""
    i = o.instr
    rows, cols = np.indices((i.rows, i.cols))
    offset, window = cols - (rows % i.imm if i.imm > 0 else rows), i.depth

    def masked(diag: int) -> np.ndarray:
        mask = offset > diag
        if window:
            mask |= offset <= diag - window
        return mask

    if i.dt_d == DType.F32:
        d = o.view(0, i.dt_d, i.rows, i.cols)

        def run_in_place(ops: Operands) -> None:
            d(ops[0])[masked(ops[1])] = -np.inf

        return run_in_place
    a, dst = o.read(0, i.dt_d, i.rows, i.cols), o.write(0, i.dt_d, i.rows, i.cols)

    def run(ops: Operands) -> None:
        values = a(ops[0])
        values[masked(ops[1])] = -np.inf
        dst(ops[0], values)

    return run
