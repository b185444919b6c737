"""prefetch-weights: load a kernel's leading weight tiles during the kernel before it.

The DMA engine runs its loads in program order, so a kernel's weight (q/k/v's 80 MiB, o_proj's 64 MiB,
down_proj's first K step) cannot start loading before the previous kernel's last load: the matrix
engines then wait for it at the kernel boundary, though the previous kernel's DMA sat idle for much of
its run (a K loop's loads wait for the matrix engines to free their tiles). plan-sram places such
prefetch tiles clear of the kernels before; this pass moves their loads into the previous kernel:

- spread over the iterations of its last top-level loop with loads and products (one slice of rows per
  iteration, the remaining rows right after the loop), or
- when it has no such loop (an unrolled attention kernel), after evenly spaced ones of its own loads in
  the second half of its ops (after its weight loads; at least SPREAD of them per moved load),

as long as they fit SLACK_SHARE of the time the host's HBM channel would idle there (its busiest
engine's estimated time minus its own transfers, tiling/cycles.py).

A tile whose bytes the previous kernel uses keeps its load (moving it would make that kernel's own
ops wait for each other), and so do the loads after it. The moved loads write an alias of the tile
(a tile.sram at the same offset); insert-sync orders them by bytes as any other op. Example::

    tile.kernel "down" { ...; tile.loop 6 { <K step loads, matmuls> }; <epilogue> }
    tile.kernel "qkv" { %t = tile.sram {offset = 0}; tile.dma_load %w, %t {rows = 8192, ...}; ... }
->
    tile.kernel "down" { %t2 = tile.sram {offset = 0}; ...
                         tile.loop 6 { <K step>; tile.dma_load %w, %t2 {rows = 1365, loop_strides = [...],
                                                                     sram_loop_strides = [...]} };
                         tile.dma_load %w, %t2 {rows = 2, ...}; <epilogue> }
    tile.kernel "qkv" { %t = tile.sram {offset = 0}; ... }
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from tasic.backend.target import Target, load_target
from tasic.ir import tile
from tasic.passes.tiling.builder import tile_bytes
from tasic.passes.tiling.cycles import engine_cycles
from tasic.passes.tiling.dtypes import element_bytes

SPREAD = 4
"""In a loop-less kernel, its own loads per moved load: each moved load delays a few of the host's."""
SLACK_SHARE = 0.75
"""Of the HBM channel time a host leaves idle (its busiest engine's time minus its transfers'), the share
moved loads may fill: the loads move while they fit, so a DMA-bound kernel takes none."""


@dataclass(frozen=True)
class PrefetchWeightsPass(ModulePass):
    """Move each kernel's leading weight loads into the kernel before it (after plan-sram)."""

    name = "prefetch-weights"
    target: str = "tiny"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Kernel by kernel, in each function."""
        target = load_target(self.target)
        for function in (f for f in op.body.block.ops if isinstance(f, func.FuncOp)):
            kernels = [k for k in function.walk() if isinstance(k, tile.KernelOp)]
            for previous, kernel in itertools.pairwise(kernels):
                _prefetch(target, previous, kernel)


def _ranges(kernel: tile.KernelOp) -> list[tuple[int, int]]:
    """[start, end) bytes of the kernel's SRAM tiles."""
    tiles = (b for b in kernel.body.block.ops if isinstance(b, tile.SramBufferOp))
    return [(t.int_prop("offset"), t.int_prop("offset") + tile_bytes(t.result.type)) for t in tiles]


def _leading_weight_loads(kernel: tile.KernelOp) -> list[tile.DmaLoadOp]:
    """The weight loads among the loads that open the kernel (before its first other engine op or loop),
    up to one whose SRAM bytes an earlier one of them wrote: a tile loaded twice is used in between."""
    loads: list[tile.DmaLoadOp] = []
    written: list[tuple[int, int]] = []
    for op in kernel.body.block.ops:
        if isinstance(op, tile.SramBufferOp):
            continue
        if not isinstance(op, tile.DmaLoadOp) or not isinstance(op.dest.owner, tile.SramBufferOp):
            break
        start = op.dest.owner.int_prop("offset") + op.int_prop("sram_offset") * element_bytes(op.dest.type.element_type)  # type: ignore[attr-defined]
        end = start + op.int_prop("rows") * op.int_prop("cols") * element_bytes(op.dest.type.element_type)  # type: ignore[attr-defined]
        if any(start < hi and lo < end for lo, hi in written):
            break
        written.append((start, end))
        if op.sram_loop_strides is None and _is_weight_load(op):
            loads.append(op)
    return loads


def _prefetch(target: Target, previous: tile.KernelOp, kernel: tile.KernelOp) -> None:
    """Move `kernel`'s leading weight loads, while their tiles are clear of `previous`'s bytes and their
    transfers fit the time its HBM channel would idle, into `previous`."""
    loop = _last_loading_loop(previous)
    places = _places(previous) if loop is None else []
    if loop is not None:
        per_iteration = engine_cycles(target, loop.body.block.ops)
        idle = (max(per_iteration) - per_iteration[2]) * loop.count.value.data
    else:
        ops = [op for op in previous.body.block.ops if not isinstance(op, tile.SramBufferOp)]
        cycles = engine_cycles(target, ops[len(ops) // 2 :])
        idle = max(cycles) - cycles[2]
    room = idle * SLACK_SHARE
    busy = _ranges(previous)
    most = len(_leading_weight_loads(kernel)) if loop is not None else len(places) // SPREAD
    moved = []
    for load in _leading_weight_loads(kernel)[:most]:
        sram = load.dest.owner
        assert isinstance(sram, tile.SramBufferOp)
        start = sram.int_prop("offset")
        end = start + tile_bytes(sram.result.type)
        transfer = engine_cycles(target, [load])[2]
        if start < 0 or any(end > lo and start < hi for lo, hi in busy) or transfer > room:
            break  # the rest keep their places after it (in order)
        room -= transfer
        moved.append(load)
    if not moved:
        return
    aliases: dict[tile.SramBufferOp, tile.SramBufferOp] = {}
    block = previous.body.block
    for load in moved:
        sram = load.dest.owner
        assert isinstance(sram, tile.SramBufferOp)
        if sram not in aliases:
            alias = tile.SramBufferOp(sram.result.type.get_shape(), sram.result.type.element_type)
            alias.properties["offset"] = IntegerAttr(sram.int_prop("offset"), i64)
            if block.first_op is None:
                block.add_op(alias)
            else:
                block.insert_op_before(alias, block.first_op)
            aliases[sram] = alias
    for number, load in enumerate(moved):
        dest = aliases[load.dest.owner]  # type: ignore[index]
        if loop is not None:
            _spread_over(loop, load, dest)
        else:  # after every SPREAD-th of the host's loads, or more apart
            place = places[(number + 1) * len(places) // len(moved) - 1]
            block.insert_op_after(_copy(load, dest, load.int_prop("rows"), 0, [], None), place)
    for load in moved:
        load.detach()
        load.erase()


def _last_loading_loop(kernel: tile.KernelOp) -> tile.LoopOp | None:
    """The kernel's last top-level loop of two or more iterations with loads and matrix products in it
    (a K loop, or a loop over output tiles: its DMA has the products' time to hide behind)."""
    loops = [
        op
        for op in kernel.body.block.ops
        if isinstance(op, tile.LoopOp)
        and op.count.value.data > 1
        and any(isinstance(inner, tile.DmaLoadOp) for inner in op.walk())
        and any(isinstance(inner, tile.MatmulOp) for inner in op.walk())
    ]
    return loops[-1] if loops else None


def _copy(load: tile.DmaLoadOp, dest: tile.SramBufferOp, rows: int, row0: int,
          loop_strides: list[int], sram_loop_strides: list[int] | None) -> tile.DmaLoadOp:  # fmt: skip
    """`load`'s window from its row `row0` on, `rows` rows of it, into `dest`."""
    cols, row_stride = load.int_prop("cols"), load.int_prop("row_stride")
    return tile.DmaLoadOp(
        load.source,
        dest.result,
        rows,
        cols,
        load.int_prop("offset") + row0 * row_stride,
        (row_stride, load.int_prop("col_stride")),
        loop_strides,
        load.int_prop("sram_offset") + row0 * cols,
        sram_loop_strides,
    )


def _spread_over(loop: tile.LoopOp, load: tile.DmaLoadOp, dest: tile.SramBufferOp) -> None:
    """One slice of the load's rows at the end of each iteration of `loop`, the rest after it."""
    count, rows = loop.count.value.data, load.int_prop("rows")
    piece = rows // count
    if piece:
        stride = piece * load.int_prop("row_stride")
        loop.body.block.add_op(_copy(load, dest, piece, 0, [stride], [piece * load.int_prop("cols")]))
    if rows > piece * count:
        parent = loop.parent_block()
        assert parent is not None
        parent.insert_op_after(_copy(load, dest, rows - piece * count, piece * count, [], None), loop)


def _places(kernel: tile.KernelOp) -> list[Operation]:
    """Where a loop-less kernel can take moved loads: after its top-level items that load (an op, or a
    small loop of loads), in the second half of its ops and after its own weight loads, whose products
    would otherwise wait behind ours on the in-order DMA engine."""
    ops: list[Operation] = [op for op in kernel.body.block.ops if not isinstance(op, tile.SramBufferOp)]
    own = [i for i, op in enumerate(ops) if _is_weight_load(op)]
    later = ops[max(len(ops) // 2, own[-1] + 1 if own else 0) :]
    return [op for op in later if any(isinstance(inner, tile.DmaLoadOp | tile.DmaGatherOp) for inner in op.walk())]


def _is_weight_load(op: Operation) -> bool:
    hbm = op.source.owner if isinstance(op, tile.DmaLoadOp) else None
    return isinstance(hbm, tile.HbmBufferOp) and hbm.kind.data == "weight"
