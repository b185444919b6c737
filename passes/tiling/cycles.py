"""Cycle estimates of tile ops, from the target's figures and the simulator's formulas (docs/isa.md,
Timing), for the passes that choose tilings and placements by time:

    matmul_cycles(target, 4096, 512, 128, 1.0)      # one mxu.matmul: rounds x K / rate + fill and drain
    vector_cycles(target, 4096, 512, "transcendental")
    engine_cycles(target, kernel.body.block.ops)    # (matrix, vector, HBM channel) cycles of the ops
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from xdsl.ir import Operation

from tasic.backend.target import Target
from tasic.ir import tile
from tasic.passes.tiling.dtypes import dtype_name, element_bytes

TRANSCENDENTAL_FNS = frozenset(
    {"exp", "tanh", "erf", "rsqrt", "sqrt", "recip", "sigmoid", "silu", "gelu_erf", "gelu_tanh", "log", "cos", "sin"}
)
"""Unary functions the vector engine prices as transcendental (isa_spec.TRANSCENDENTAL)."""


def matmul_cycles(target: Target, m: int, n: int, k: int, rate: float, batch: int = 1) -> float:
    """One (batched) matrix instruction: rounds of folds over the arrays, K streamed at `rate`."""
    mxu = target.mxu
    rounds = math.ceil(math.ceil(m / mxu.rows) * math.ceil(n / mxu.cols) * batch / mxu.count)
    fill_drain = mxu.rows + mxu.cols - 2
    if mxu.pipelined:
        return rounds * math.ceil(k / rate) + fill_drain
    return rounds * (math.ceil(k / rate) + fill_drain)


def vector_cycles(target: Target, rows: int, cols: int, cost: str = "simple") -> float:
    """One vector instruction over [rows, cols] of a cost class (simple, transcendental, reduce)."""
    vpu = target.vpu
    return math.ceil(rows * cols / vpu.lanes) * vpu.cost[cost] + vpu.latency


def engine_cycles(target: Target, ops: Iterable[Operation]) -> tuple[float, float, float]:
    """(matrix engines, vector engine, HBM channel) cycles of the ops, loops counted by their trip counts:
    each engine's busy time, not when the work can run."""
    matrix = vector = channel = 0.0
    for op in ops:
        if isinstance(op, tile.LoopOp):
            inner = engine_cycles(target, op.body.block.ops)
            count = op.count.value.data
            matrix, vector, channel = matrix + count * inner[0], vector + count * inner[1], channel + count * inner[2]
        elif isinstance(op, tile.MatmulOp):
            rate = target.mxu.rate.get(dtype_name(op.lhs.type.element_type), 1.0)  # type: ignore[attr-defined]
            matrix += matmul_cycles(target, op.int_prop("m"), op.int_prop("n"), op.int_prop("k"), rate, op.batch_count)
        elif isinstance(op, tile.DmaLoadOp | tile.StoreOp):
            hbm = op.source if isinstance(op, tile.DmaLoadOp) else op.dest
            size = op.int_prop("rows") * op.int_prop("cols") * element_bytes(hbm.type.element_type)  # type: ignore[attr-defined]
            channel += size / target.hbm_bytes_per_cycle
        elif isinstance(op, tile.ExpSumOp) or (isinstance(op, tile.UnaryOp) and op.fn.data in TRANSCENDENTAL_FNS):
            vector += vector_cycles(target, op.int_prop("rows"), op.int_prop("cols"), "transcendental")
        elif isinstance(op, tile.ReduceOp):
            vector += vector_cycles(target, op.int_prop("rows"), op.int_prop("cols"), "reduce")
        elif isinstance(op, tile.UnaryOp | tile.BinaryOp | tile.ScalarOp | tile.SelectOp | tile.FillOp):
            vector += vector_cycles(target, op.int_prop("rows"), op.int_prop("cols"))
    return matrix, vector, channel
