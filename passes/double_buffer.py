"""double-buffer: unroll tile loops by two, with a second copy of each iteration-private tile.

A tile is private to an iteration when the iteration writes it before it reads it (a DMA load's
target, an MXU or VPU result). With one copy, iteration i+1's load must wait until iteration i has
finished reading the tile; with two, insert-sync lets the DMA fetch the next tile while the engines
work on this one, and lets stores drain while the next tile computes. Accumulators that carry
values across iterations keep one copy. Kernels whose tiles would then overflow SRAM are left as
they are. Run between `tile` and `plan-sram`::

    tile.loop 4 { tile.dma_load %x, %a {offset = 0, loop_strides = [32]}; tile.unary %a, %b; store %b }
  becomes
    tile.loop 2 { load %a {offset = 0, loop_strides = [64]}; unary %a, %b; store %b
                  load %a2 {offset = 32, loop_strides = [64]}; unary %a2, %b2; store %b2 }

A loop that holds a nested loop is unrolled only for its accumulators: a matmul's loop over output
tiles, whose first K step starts the accumulator afresh (`accumulate = 0`) and whose nested K loop
adds to it. The second output tile then gets its own accumulator and first-step tiles, so its
products run on the matrix engine while the vector engine applies the first tile's epilogue
(tests/filecheck/passes/double-buffer-accumulator.mlir). Inner loops are doubled first; an outer
copy takes them as they are, its positions moved one outer iteration.

A body that computes a tile and then reduces it over the links (`tile.all_reduce`, a row-parallel
matmul with its all-reduce fused) is split at the collective, and the second copy's part up to its
collective moves before the first copy's rest, when nothing they touch conflicts: the in-order
engines then compute and send the second tile while the vector engine finishes the first::

    matmul A; reduce A; add A; store A; matmul B; reduce B; add B; store B
  becomes
    matmul A; reduce A; matmul B; reduce B; add A; store A; add B; store B
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from math import prod

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from tasic.backend.target import load_target
from tasic.ir import tile
from tasic.passes.tiling.builder import tile_bytes

# Position properties that advance with the loops: strides property -> the offset it moves.
_MOVING = {"loop_strides": "offset", "sram_loop_strides": "sram_offset", "table_loop_strides": "table_offset"}
_MASK_MOVING = {"loop_strides": "diagonal"}  # tile.causal moves its diagonal


def _reads_writes(op: Operation) -> tuple[list[SSAValue], list[SSAValue]]:
    """SRAM tiles an engine op (or every op of a nested loop) reads and writes."""
    if isinstance(op, tile.LoopOp):
        return _nested(op, _reads_writes)
    if isinstance(op, tile.DmaLoadOp | tile.DmaGatherOp):
        return [], [op.dest]
    if isinstance(op, tile.StoreOp | tile.DmaScatterOp):
        return [op.source], []
    if isinstance(op, tile.MatmulOp):
        reads = [op.lhs, op.rhs, *([op.acc] if op.int_prop("accumulate") else [])]
        return reads, [op.acc]
    if isinstance(op, tile.CausalMaskOp):
        return [op.dest], [op.dest]
    if isinstance(op, tile.FillOp):
        return [], [op.dest]
    if isinstance(op, tile.BinaryOp):
        return [op.lhs, op.rhs], [op.dest]
    if isinstance(op, tile.SelectOp):
        return [op.cond, op.on_true, op.on_false], [op.dest]
    if isinstance(op, tile.ExpSumOp):
        return [op.source, op.row_max], [op.dest, op.sums]
    if isinstance(op, tile.RopeOp):
        return [op.source, op.tables], [op.dest]
    if isinstance(op, tile.UnaryOp | tile.ScalarOp | tile.ReduceOp | tile.AllReduceOp):
        return [op.source], [op.dest]
    return [], []


def _hbm_reads_writes(op: Operation) -> tuple[list[SSAValue], list[SSAValue]]:
    """HBM buffers a DMA op (or every op of a nested loop) reads and writes."""
    if isinstance(op, tile.LoopOp):
        return _nested(op, _hbm_reads_writes)
    if isinstance(op, tile.DmaLoadOp):
        return [op.source], []
    if isinstance(op, tile.DmaGatherOp):
        return [op.table, op.ids], []
    if isinstance(op, tile.StoreOp):
        return [], [op.dest]
    if isinstance(op, tile.DmaScatterOp):
        return [op.ids], [op.table]
    return [], []


Accesses = Callable[[Operation], tuple[list[SSAValue], list[SSAValue]]]


def _nested(loop: tile.LoopOp, accesses: Accesses) -> tuple[list[SSAValue], list[SSAValue]]:
    """Everything the loop's ops read, and everything they write."""
    reads: list[SSAValue] = []
    writes: list[SSAValue] = []
    for op in loop.body.block.ops:
        r, w = accesses(op)
        reads += r
        writes += w
    return reads, writes


def _conflict(a: Operation, b: Operation) -> bool:
    """Whether two ops touch an SRAM tile or HBM buffer in common and one of them writes it."""
    for accesses in (_reads_writes, _hbm_reads_writes):
        reads_a, writes_a = accesses(a)
        reads_b, writes_b = accesses(b)
        if set(writes_a) & set(reads_b + writes_b) or set(writes_b) & set(reads_a):
            return True
    return False


def _around_collective(first: list[Operation], second: list[Operation]) -> list[Operation] | None:
    """first[:c] + second[:c] + first[c:] + second[c:] with c just after the last collective, or None
    when the body has none, nothing but DMA before it, or the moved ops conflict (module docstring)."""
    cuts = [i for i, op in enumerate(first) if isinstance(op, tile.AllReduceOp)]
    if not cuts:
        return None
    cut = cuts[-1] + 1
    dma = (tile.DmaLoadOp, tile.StoreOp, tile.DmaGatherOp, tile.DmaScatterOp, tile.AllReduceOp)
    if all(isinstance(op, dma) for op in first[:cut]):
        return None  # nothing computes before the collective: no work to overlap with it
    if any(_conflict(a, b) for a in first[cut:] for b in second[:cut]):
        return None
    return first[:cut] + second[:cut] + first[cut:] + second[cut:]


def _private_tiles(body: list[Operation]) -> list[SSAValue]:
    """Tiles each iteration writes before reading (so a second copy can hold the next iteration's); a
    nested loop counts as reading first whatever it touches. A tile that DMA loads fill in parts
    counts only when those parts, before any read, cover it exactly."""
    first: dict[SSAValue, str] = {}
    parts: dict[SSAValue, list[tuple[int, int]]] = {}  # element ranges loads wrote into a tile, before reads
    partial: set[SSAValue] = set()
    for op in body:
        reads, writes = _reads_writes(op)
        if isinstance(op, tile.LoopOp):
            reads = reads + writes
        for value in reads:
            first.setdefault(value, "read")
        for value in writes:
            first.setdefault(value, "write")
            if isinstance(op, tile.DmaLoadOp):
                if op.sram_loop_strides is not None:
                    partial.add(value)
                elif first[value] == "write":
                    start = op.int_prop("sram_offset")
                    parts.setdefault(value, []).append((start, start + op.int_prop("rows") * op.int_prop("cols")))
    for value, ranges in parts.items():
        if all(start == 0 for start, _ in ranges):
            continue  # loaded from its start: written whole
        ranges.sort()
        size = prod(value.type.get_shape())  # type: ignore[attr-defined]
        ends_meet = all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        if not (ranges[0][0] == 0 and ranges[-1][1] == size and ends_meet):
            partial.add(value)
    return [value for value, kind in first.items() if kind == "write" and value not in partial]


def _shifted(op: Operation, depth: int, shift: int, keep_loop: bool) -> None:
    """Move op's positions `shift` iterations of loop level `depth`; double that loop's stride or drop it.
    A nested loop's ops move with it."""
    if isinstance(op, tile.LoopOp):
        for inner in op.body.block.ops:
            _shifted(inner, depth, shift, keep_loop)
        return
    moving = _MASK_MOVING if isinstance(op, tile.CausalMaskOp) else _MOVING
    for strides_name, offset_name in moving.items():
        strides_attr = op.properties.get(strides_name)
        if not isinstance(strides_attr, ArrayAttr):
            continue
        strides = tile.int_list(strides_attr)
        offset = op.properties[offset_name].value.data  # type: ignore[attr-defined]
        op.properties[offset_name] = IntegerAttr(offset + shift * strides[depth], i64)
        if keep_loop:
            strides[depth] *= 2
        else:
            del strides[depth]
        op.properties[strides_name] = ArrayAttr([IntegerAttr(s, i64) for s in strides])


def _depth(loop: tile.LoopOp) -> int:
    depth, parent = 0, loop.parent_op()
    while parent is not None and not isinstance(parent, tile.KernelOp):
        depth += isinstance(parent, tile.LoopOp)
        parent = parent.parent_op()
    return depth


def _double(loop: tile.LoopOp, kernel: tile.KernelOp, capacity: int) -> bool:
    """Unroll `loop` by two with fresh copies of its private tiles; False if it does not apply or fit."""
    count = loop.count.value.data
    body = list(loop.body.block.ops)
    if count < 2:
        return False
    private = _private_tiles(body)
    if any(isinstance(op, tile.LoopOp) for op in body) and not _accumulators(body, private):
        return False  # an outer loop is worth doubling for its accumulators only
    if not private:
        return False
    used = sum(tile_bytes(b.result.type) for b in kernel.body.block.ops if isinstance(b, tile.SramBufferOp))
    if used + sum(tile_bytes(v.type) for v in private) > capacity:
        return False
    copies: dict[SSAValue, SSAValue] = {}
    for value in private:
        owner = value.owner
        assert isinstance(owner, tile.SramBufferOp)
        twin = tile.SramBufferOp(tuple(value.type.get_shape()), value.type.element_type)
        kernel.body.block.insert_op_after(twin, owner)
        copies[value] = twin.result
    depth = _depth(loop)
    second = [op.clone(value_mapper=dict(copies)) for op in body]
    tail = [op.clone() for op in body] if count % 2 else []
    for op in body:
        _shifted(op, depth, 0, keep_loop=True)
    for op in second:
        _shifted(op, depth, 1, keep_loop=True)
    for op in tail:
        _shifted(op, depth, count - 1, keep_loop=False)
    order = _around_collective(body, second) or body + second
    for op in body:
        op.detach()
    loop.body.block.add_ops(order)
    loop.properties["count"] = IntegerAttr(count // 2, i64)
    if tail:
        assert loop.parent is not None
        loop.parent.insert_ops_after(tail, loop)
    return True


def _accumulators(body: list[Operation], private: list[SSAValue]) -> list[SSAValue]:
    """Private tiles that an MXU product in the body (not in a nested loop) starts afresh."""
    return [
        op.acc for op in body if isinstance(op, tile.MatmulOp) and not op.int_prop("accumulate") and op.acc in private
    ]


@dataclass(frozen=True)
class DoubleBufferPass(ModulePass):
    """Double-buffer every tile loop it applies to whose kernel has SRAM to spare (module docstring)."""

    name = "double-buffer"
    target: str = "tiny"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Transform the loops of every kernel, innermost first."""
        capacity = load_target(self.target).sram.bytes
        for kernel in [k for k in op.walk() if isinstance(k, tile.KernelOp)]:
            loops = [loop for loop in kernel.walk() if isinstance(loop, tile.LoopOp)]
            for loop in reversed(loops):  # inner loops first: an outer loop's copy takes them doubled
                _double(loop, kernel, capacity)
