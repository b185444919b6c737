"""Kernels: how each tfm op becomes SRAM tiles, DMA and engine ops in rolled loops.

Every kernel reads its operands through strided views of HBM, computes on
dense SRAM tiles (floats in f32 on the VPU, matrix operands in the MXU dtype)
and stores its result to a fresh HBM buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

from xdsl.dialects.builtin import f32, i1
from xdsl.ir import Attribute, Operation, SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.builder import KernelBuilder, Pos, as_matrix_shape, fit_rows, fit_tile
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.dtypes import element_bytes
from tasic.passes.tiling.epilogue import apply as apply_epilogue
from tasic.passes.tiling.epilogue import (
    collect,
    prescale,
    scratch_tiles,
    scratch_tiles_needed,
)
from tasic.passes.tiling.views import View

ROW_TILE_MAX = 1024
"""Most rows per elementwise or row-wise tile (fewer when SRAM is short): large tiles amortise the DMA
latency of each load and store."""
COL_TILE_MAX = 2048
Emit = Callable[[KernelBuilder, list[SSAValue], SSAValue, int, int], SSAValue]


def elementwise(
    ctx: TileContext,
    loc: str,
    result: SSAValue,
    operands: list[tuple[View, Attribute]],
    emit: Emit,
) -> None:
    """result = emit(operand tiles) tile by tile; operands broadcast to the result shape."""
    out = ctx.result_view(result)
    full = as_matrix_shape(out.shape)
    shape, (out_view, *inputs) = rows_outermost(
        full, [out.broadcast_to(full), *(view.broadcast_to(full) for view, _ in operands)]
    )
    dest_type = ctx.sram_type(result.type)
    per_element = sum(element_bytes(t) for _, t in operands) + element_bytes(dest_type)
    limits = (min(shape[-2], ROW_TILE_MAX), min(shape[-1], COL_TILE_MAX))
    rows, cols = fit_tile(*limits, per_element, ctx.sram_budget, f"{loc} tiles")
    kb = ctx.kernel(loc)
    tiles = [kb.sram((rows, cols), typ) for _, typ in operands]
    dest = kb.sram((rows, cols), dest_type)

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        for view, buf in zip(inputs, tiles, strict=True):
            kb.load(view, starts, nr, nc, buf)
        kb.store(emit(kb, tiles, dest, nr, nc), out_view, starts, nr, nc)

    kb.for_each_tile(shape, rows, cols, body)


def unary(ctx: TileContext, op: tfm.UnaryOp) -> None:
    """tfm.unary -> tile.unary."""
    x = op.input
    ctx_operands = [(ctx.view_of(x), ctx.sram_type(x.type))]

    def emit(kb: KernelBuilder, tiles: list[SSAValue], dest: SSAValue, nr: int, nc: int) -> SSAValue:
        kb.add(tile.UnaryOp(op.fn.data, tiles[0], dest, nr, nc))
        return dest

    elementwise(ctx, loc_of(op), op.result, ctx_operands, emit)


def binary(ctx: TileContext, op: tfm.BinaryOp) -> None:
    """tfm.binary -> tile.binary (broadcast by the DMA)."""
    operands = [(ctx.view_of(v), f32) for v in (op.lhs, op.rhs)]

    def emit(kb: KernelBuilder, tiles: list[SSAValue], dest: SSAValue, nr: int, nc: int) -> SSAValue:
        kb.add(tile.BinaryOp(op.fn.data, tiles[0], tiles[1], dest, nr, nc))
        return dest

    elementwise(ctx, loc_of(op), op.result, operands, emit)


def scalar(ctx: TileContext, op: tfm.ScalarOp) -> None:
    """tfm.scalar -> tile.scalar."""
    operands = [(ctx.view_of(op.input), f32)]

    def emit(kb: KernelBuilder, tiles: list[SSAValue], dest: SSAValue, nr: int, nc: int) -> SSAValue:
        kb.add(tile.ScalarOp(op.fn.data, tiles[0], dest, op.value.value.data, nr, nc))
        return dest

    elementwise(ctx, loc_of(op), op.result, operands, emit)


def where(ctx: TileContext, op: tfm.WhereOp) -> None:
    """tfm.where -> tile.select."""
    operands = [(ctx.view_of(op.cond), i1), (ctx.view_of(op.true_value), f32), (ctx.view_of(op.false_value), f32)]

    def emit(kb: KernelBuilder, tiles: list[SSAValue], dest: SSAValue, nr: int, nc: int) -> SSAValue:
        kb.add(tile.SelectOp(tiles[0], tiles[1], tiles[2], dest, nr, nc))
        return dest

    elementwise(ctx, loc_of(op), op.result, operands, emit)


def rows_outermost(shape: tuple[int, ...], views: list[View]) -> tuple[tuple[int, ...], list[View]]:
    """The shape and views with their largest leading dim moved next to the last (the tile's rows).

    Broadcasting in a middle dim (rope's cos [T, 1, D] against x [T, H, D]) otherwise makes
    the tiles as small as that dim; views are strided, so the permutation costs nothing.
    """
    if len(shape) <= 2:
        return shape, views
    largest = max(range(len(shape) - 1), key=lambda d: shape[d])
    perm = [d for d in range(len(shape) - 1) if d != largest] + [largest, len(shape) - 1]
    return tuple(shape[p] for p in perm), [view.permute(perm) for view in views]


ROPE_ROWS = 4096
"""Rows per rope tile: its columns are one head, so rows make the tiles worth an instruction."""


def rope(ctx: TileContext, op: tfm.RopeOp) -> None:
    """tfm.rope per tile of rows: x and the rows' cos and sin in, one `tile.rope` (vpu.rope) in place, x out.

    When one tile holds a head's every row and the tables are the same for every head (broadcast),
    cos and sin are loaded once, and up to ROPE_HEADS heads share each tile (stacked as rows, the
    tables repeated beside them), so each vector instruction covers several heads."""
    full = as_matrix_shape(tfm.shape_of(op.input))
    out = ctx.result_view(op.result)
    sources = [ctx.view_of(v).broadcast_to(full) for v in (op.input, op.cos, op.sin)]
    shape, (x, cos, sin, dest) = rows_outermost(full, [*sources, out.broadcast_to(full)])
    width, per_row = shape[-1], 3 * shape[-1] * 4  # x, cos and sin rows in f32
    rows = fit_rows(per_row, 0, ctx.sram_budget, min(shape[-2], ROPE_ROWS), f"{loc_of(op)} tiles")
    shared = rows >= shape[-2] and all(not any(v.strides[:-2]) for v in (cos, sin))
    heads = prod(shape[:-2])
    group = 1
    if shared and len(shape) == 3:
        fits = [g for g in range(1, ROPE_HEADS + 1) if heads % g == 0 and g * rows * per_row <= ctx.sram_budget]
        group = max(fits, default=1)
    kb = ctx.kernel(loc_of(op))
    work, tables = kb.sram((group * rows, width), f32), kb.sram((2 * group * rows, width), f32)

    def head(starts: list[Pos], g: int) -> list[Pos]:
        return [starts[0] + Pos(g), *starts[1:]] if group > 1 else starts

    def load_tables(starts: list[Pos], nr: int) -> None:
        """cos for the group's rows, then sin (tile.rope's table layout)."""
        for g in range(group):
            kb.load(cos, head(starts, g), nr, width, tables, g * nr * width)
            kb.load(sin, head(starts, g), nr, width, tables, (group + g) * nr * width)

    if shared:
        load_tables([Pos()] * len(shape), rows)

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        """The tile at `starts` and the group - 1 heads after it."""
        for g in range(group):
            kb.load(x, head(starts, g), nr, nc, work, g * nr * nc)
        if not shared:
            load_tables(starts, nr)
        kb.add(tile.RopeOp(work, tables, work, group * nr, nc, width, width))
        for g in range(group):
            kb.store(work, dest, head(starts, g), nr, nc, g * nr * nc)

    if group > 1:
        kb.tiled_range(heads, group, lambda h0, _n: body([h0, Pos(), Pos()], shape[-2], width))
    else:
        kb.for_each_tile(shape, rows, width, body)


ROPE_HEADS = 8
"""Heads one rope tile holds at most (when every row of a head fits one tile)."""


ALL_REDUCE_CHUNKS = 4
"""Row chunks of an all-reduce: few (each pays two link latencies), but enough to pipeline."""


def all_reduce(ctx: TileContext, op: tfm.AllReduceOp) -> None:
    """tfm.all_reduce -> tile.all_reduce in place on tiles in the HBM dtype (what the links carry).

    Tiles are as large as SRAM allows: every all-reduce pays two link latencies. With epilogue fusion
    the tiles also get the elementwise chain after the all-reduce (the residual add) and, when they
    span whole rows, the rms_norm of its result and that norm's own chain (e.g. a static FP8 quantize):
    the norm then runs on the VPU while the links carry the next rows.
    """
    link_type = ctx.storage_type(op.result.type)
    shape = as_matrix_shape(tfm.shape_of(op.result))
    flat_shape = (prod(shape[:-1]), shape[-1])
    steps, final = collect(ctx, op.result, flat_shape)
    source = ctx.view_of(op.input).broadcast_to(shape).reshape(flat_shape)
    dest = ctx.result_view(final).reshape(flat_shape)
    assert source is not None and dest is not None, "all-reduce operands are dense"
    norm = following_rms_norm(ctx, final)
    per_element = element_bytes(link_type) + (4 + 4 * scratch_tiles_needed(steps) if steps or norm else 0)
    chunk = -(-flat_shape[0] // ALL_REDUCE_CHUNKS)  # a few chunks pipeline load, links, epilogue and store
    if norm is not None:  # the normed tile and one for the norm chain's operands
        rows, cols = fit_tile(chunk, flat_shape[1], per_element + 8, ctx.sram_budget // 2, f"{loc_of(op)} tiles")
        norm = norm if cols == flat_shape[1] else None
    if norm is None:
        rows, cols = fit_tile(chunk, flat_shape[1], per_element, ctx.sram_budget // 2, f"{loc_of(op)} tiles")
    kb = ctx.kernel(loc_of(op))
    buf = kb.sram((rows, cols), link_type)
    work = kb.sram((rows, cols), f32) if steps or norm else buf
    scratch = scratch_tiles(kb, steps, rows, cols)
    emit_norm = rms_norm_epilogue(ctx, kb, norm, flat_shape, rows) if norm is not None else None

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        kb.load(source, starts, nr, nc, buf)
        kb.add(tile.AllReduceOp(buf, work, op.chips.value.data, nr, nc))  # work: f32 when computed on
        apply_epilogue(kb, steps, work, scratch, starts, nr, nc)
        kb.store(work, dest, starts, nr, nc)
        if emit_norm is not None:
            emit_norm(work, starts, nr, nc)

    kb.for_each_tile(flat_shape, rows, cols, body)


def following_rms_norm(ctx: TileContext, value: SSAValue) -> tfm.RmsNormOp | None:
    """The one rms_norm reading `value` (whose weight is known), if epilogue fusion may compute it."""
    if not ctx.epilogue_fusion:
        return None
    norms = [use.operation for use in value.uses if isinstance(use.operation, tfm.RmsNormOp)]
    if len(norms) != 1 or norms[0].input is not value or norms[0].result.type != value.type:  # type: ignore[union-attr]
        return None
    norm = norms[0]
    assert isinstance(norm, tfm.RmsNormOp)
    if norm.weight not in ctx.views and not isinstance(norm.weight.owner, tfm.WeightOp):
        return None
    return norm


def rms_norm_epilogue(
    ctx: TileContext,
    kb: KernelBuilder,
    norm: tfm.RmsNormOp,
    flat_shape: tuple[int, int],
    rows: int,
    in_place: bool = False,
) -> Callable[[SSAValue, list[Pos], int, int], None]:
    """Declare the tiles of `norm` computed from whole-row tiles of its input; return the emitter. With
    `in_place` the norm overwrites the input tile once it is stored (a kernel's only output tile: no
    second tile of its size, and nothing reads it after)."""
    ctx.fused.add(norm)
    steps, final = collect(ctx, norm.result, flat_shape)
    steps, factor = prescale(steps)
    dest = ctx.result_view(final).reshape(flat_shape)
    assert dest is not None, "a fresh result buffer is dense"
    width = flat_shape[1]
    normed = None if in_place else kb.sram((rows, width), f32)
    stat, gamma = kb.sram((rows, 1), f32), kb.sram((1, width), f32)
    scratch = scratch_tiles(kb, steps, rows, width)
    kb.load(ctx.view_of(norm.weight).broadcast_to((1, width)), [Pos(), Pos()], 1, width, gamma)
    eps = norm.eps.value.data

    def emit(x: SSAValue, starts: list[Pos], nr: int, nc: int) -> None:
        _rsqrt_mean(kb, x, stat, eps, nr, nc, factor)
        out = x if normed is None else normed
        kb.add(tile.BinaryOp("mul", x, stat, out, nr, nc, "row"))
        kb.add(tile.BinaryOp("mul", out, gamma, out, nr, nc, "col"))
        apply_epilogue(kb, steps, out, scratch, starts, nr, nc)
        kb.store(out, dest, starts, nr, nc)

    return emit


def copy_into(ctx: TileContext, loc: str, result: SSAValue, source: View) -> None:
    """Materialise a view (converting dtype) as a dense buffer for `result`."""
    operands = [(source, ctx.sram_type(result.type))]
    elementwise(ctx, loc, result, operands, lambda kb, tiles, dest, nr, nc: tiles[0])


def quantize(ctx: TileContext, op: tfm.QuantizeOp) -> None:
    """tfm.quantize per tile: x / scale (a [rows, 1] tile, or the static scale) on the VPU; the DMA store
    saturates and rounds to the 8-bit float (nearest even), so values never overflow to NaN."""
    out = ctx.output_view(op.result)  # made already when its input's concat tried to place into it
    shape = as_matrix_shape(out.shape)
    source, dest = ctx.view_of(op.input).broadcast_to(shape), out.broadcast_to(shape)
    scale = None
    if op.scale is not None:  # [..., rows, 1]: constant along the last dim (verified)
        scale = ctx.view_of(op.scale).broadcast_to((*shape[:-1], 1))
    limits = (min(shape[-2], ROW_TILE_MAX), min(shape[-1], COL_TILE_MAX))
    rows, cols = fit_tile(limits[0], limits[1], 4, ctx.sram_budget - 4 * limits[0], loc_of(op))
    kb = ctx.kernel(loc_of(op))
    x = kb.sram((rows, cols), f32)
    scale_tile = kb.sram((rows, 1), f32) if scale is not None else None

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        kb.load(source, starts, nr, nc, x)
        if scale is not None and scale_tile is not None:
            kb.load(scale, [*starts[:-1], Pos()], nr, 1, scale_tile)
            kb.add(tile.BinaryOp("div", x, scale_tile, x, nr, nc, "row"))
        else:
            assert op.static_scale is not None
            kb.add(tile.ScalarOp("div", x, x, op.static_scale.value.data, nr, nc))
        kb.store(x, dest, starts, nr, nc)

    kb.for_each_tile(shape, rows, cols, body)


def send(ctx: TileContext, op: tfm.SendOp) -> None:
    """tfm.send: tiles loaded from HBM and sent, in the HBM dtype, to the next stage's chip (tile.link_send)."""
    source = ctx.view_of(op.input)
    out = ctx.result_view(op.result)
    shape = as_matrix_shape(out.shape)
    element = ctx.storage_type(op.input.type)  # what the links carry
    limits = (min(shape[-2], ROW_TILE_MAX), min(shape[-1], COL_TILE_MAX))
    rows, cols = fit_tile(*limits, element_bytes(element), ctx.sram_budget, loc_of(op))
    kb = ctx.kernel(loc_of(op))
    buffer = kb.sram((rows, cols), element)
    source, dest = source.broadcast_to(shape), out.broadcast_to(shape)

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        kb.load(source, starts, nr, nc, buffer)
        kb.store(buffer, dest, starts, nr, nc, over_links=True)

    kb.for_each_tile(shape, rows, cols, body)


RowEmit = Callable[[KernelBuilder, SSAValue, list[SSAValue], int, int], None]


def rowwise(
    ctx: TileContext,
    loc: str,
    result: SSAValue,
    source: View,
    scratch_full: int,
    params: list[View],
    emit: Callable[[KernelBuilder, SSAValue, list[SSAValue], list[SSAValue], SSAValue, int, int, float], None],
    row_factor: bool = False,
) -> None:
    """A kernel over whole rows (last dim in SRAM): emit(kb, x, scratch, params, stat, rows, C, factor), then
    the fused elementwise epilogue (tiling/epilogue.py) when the rows flatten to a matrix. With
    `row_factor` (emit's result is a per-row multiple), emit multiplies by `factor` too: a static
    quantisation's 1 / scale, whose division the epilogue then skips."""
    shape = as_matrix_shape(tfm.shape_of(result))
    width = shape[-1]
    flat_shape = (prod(shape[:-1]), width)
    src = source.broadcast_to(shape).reshape(flat_shape)
    steps, final = collect(ctx, result, flat_shape) if src is not None else ([], result)
    steps, factor = prescale(steps) if row_factor else (steps, 1.0)
    out = ctx.result_view(final).broadcast_to(shape)
    dst = out.reshape(flat_shape)
    if src is None or dst is None:
        src, dst = source.broadcast_to(shape), out
    else:
        shape = flat_shape
    per_row = width * 4 * (1 + scratch_full + scratch_tiles_needed(steps)) + 4
    fixed = width * 4 * (len(params) + (1 if steps else 0))
    rows = fit_rows(per_row, fixed, ctx.sram_budget, min(shape[-2], ROW_TILE_MAX), f"{loc} rows")
    kb = ctx.kernel(loc)
    x = kb.sram((rows, width), f32)
    scratch = [kb.sram((rows, width), f32) for _ in range(scratch_full)]
    stat = kb.sram((rows, 1), f32)
    param_tiles = [kb.sram((1, width), f32) for _ in params]
    epilogue_scratch = scratch_tiles(kb, steps, rows, width)
    for view, buf in zip(params, param_tiles, strict=True):
        kb.load(view.broadcast_to((1, width)), [Pos(), Pos()], 1, width, buf)

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        kb.load(src, starts, nr, nc, x)
        emit(kb, x, scratch, param_tiles, stat, nr, nc, factor)
        apply_epilogue(kb, steps, x, epilogue_scratch, starts, nr, nc)
        kb.store(x, dst, starts, nr, nc)

    kb.for_each_tile(shape, rows, width, body)


def softmax(ctx: TileContext, op: tfm.SoftmaxOp) -> None:
    """Row softmax: max, subtract, exp, sum, divide."""

    def emit(
        kb: KernelBuilder, x: SSAValue, _s: list[SSAValue], _p: list[SSAValue], st: SSAValue, r: int, c: int, _f: float
    ) -> None:
        softmax_rows(kb, x, st, r, c)

    rowwise(ctx, loc_of(op), op.result, ctx.view_of(op.input), 0, [], emit)


def softmax_rows(kb: KernelBuilder, x: SSAValue, stat: SSAValue, rows: int, cols: int) -> None:
    kb.add(tile.ReduceOp("max", x, stat, rows, cols))
    kb.add(tile.ExpSumOp(x, stat, x, stat, rows, cols))  # exp(x - max), in place, and its row sums
    kb.add(tile.BinaryOp("div", x, stat, x, rows, cols, "row"))


def layer_norm(ctx: TileContext, op: tfm.LayerNormOp) -> None:
    """(x - mean) * rsqrt(var + eps) * gamma + beta over the last dim."""
    eps = op.eps.value.data

    def emit(
        kb: KernelBuilder, x: SSAValue, _s: list[SSAValue], p: list[SSAValue], st: SSAValue, r: int, c: int, _f: float
    ) -> None:
        kb.add(tile.ReduceOp("sum", x, st, r, c))
        kb.add(tile.ScalarOp("mul", st, st, 1.0 / c, r, 1))
        kb.add(tile.BinaryOp("sub", x, st, x, r, c, "row"))
        _rsqrt_mean(kb, x, st, eps, r, c)
        kb.add(tile.BinaryOp("mul", x, st, x, r, c, "row"))
        kb.add(tile.BinaryOp("mul", x, p[0], x, r, c, "col"))
        kb.add(tile.BinaryOp("add", x, p[1], x, r, c, "col"))

    params = [ctx.view_of(op.weight), ctx.view_of(op.bias)]
    rowwise(ctx, loc_of(op), op.result, ctx.view_of(op.input), 0, params, emit)


def _rsqrt_mean(
    kb: KernelBuilder, x: SSAValue, stat: SSAValue, eps: float, rows: int, cols: int, factor: float = 1.0
) -> None:
    """stat = rsqrt(mean(x^2) + eps) (* factor), one value per row."""
    kb.add(tile.ReduceOp("sumsq", x, stat, rows, cols))
    kb.add(tile.ScalarOp("mul", stat, stat, 1.0 / cols, rows, 1))
    kb.add(tile.ScalarOp("add", stat, stat, eps, rows, 1))
    kb.add(tile.UnaryOp("rsqrt", stat, stat, rows, 1))
    if factor != 1.0:
        kb.add(tile.ScalarOp("mul", stat, stat, factor, rows, 1))


def rms_norm(ctx: TileContext, op: tfm.RmsNormOp) -> None:
    """x * rsqrt(mean(x^2) + eps) * weight over the last dim."""
    eps = op.eps.value.data

    def emit(
        kb: KernelBuilder, x: SSAValue, _s: list[SSAValue], p: list[SSAValue], st: SSAValue, r: int, c: int, f: float
    ) -> None:
        _rsqrt_mean(kb, x, st, eps, r, c, f)
        kb.add(tile.BinaryOp("mul", x, st, x, r, c, "row"))
        kb.add(tile.BinaryOp("mul", x, p[0], x, r, c, "col"))

    rowwise(ctx, loc_of(op), op.result, ctx.view_of(op.input), 0, [ctx.view_of(op.weight)], emit, row_factor=True)


def reduce(ctx: TileContext, op: tfm.ReduceOp) -> None:
    """tfm.reduce: move the reduced dims last, reduce whole rows."""
    source = ctx.view_of(op.input)
    dims = op.reduced_dims
    kept = [d for d in range(len(source.shape)) if d not in dims]
    moved = source.permute(kept + dims)
    kept_shape = tuple(source.shape[d] for d in kept)
    width = prod(source.shape[d] for d in dims)
    merged = moved.reshape((*kept_shape, width))
    if merged is None:
        raise NotImplementedError(f"{loc_of(op)}: reducing dims {dims} of this layout is not supported")
    shape = as_matrix_shape((*kept_shape, width))
    src = merged.broadcast_to(shape)
    out = ctx.result_view(op.result)
    out_shape = (*shape[:-1], 1)
    dst = out.reshape((*kept_shape, 1)) if kept_shape else out.reshape((1,))
    assert dst is not None
    dst = dst.broadcast_to(out_shape)
    fn = "sum" if op.fn.data == "mean" else op.fn.data
    rows = fit_rows(width * 4 + 4, 0, ctx.sram_budget, min(shape[-2], ROW_TILE_MAX), f"{loc_of(op)} rows")
    kb = ctx.kernel(loc_of(op))
    x, stat = kb.sram((rows, width), f32), kb.sram((rows, 1), f32)

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        kb.load(src, starts, nr, nc, x)
        kb.add(tile.ReduceOp(fn, x, stat, nr, nc))
        if op.fn.data == "mean":
            kb.add(tile.ScalarOp("mul", stat, stat, 1.0 / width, nr, 1))
        kb.store(stat, dst, starts, nr, 1)

    kb.for_each_tile(shape, rows, width, body)


def embedding(ctx: TileContext, op: tfm.EmbeddingOp) -> None:
    """Gather table rows by id: tile.dma_gather then store."""
    ids = ctx.view_of(op.ids)
    count = prod(ids.shape)
    flat_ids = ids.reshape((count,))
    if flat_ids is None:
        raise NotImplementedError(f"{loc_of(op)}: ids must be a dense tensor")
    table = ctx.view_of(op.table)
    width = table.shape[1]
    out = ctx.result_view(op.result).reshape((count, width))
    assert out is not None
    rows, cols = fit_tile(min(count, ROW_TILE_MAX), min(width, COL_TILE_MAX), 4, ctx.sram_budget, loc_of(op))
    kb = ctx.kernel(loc_of(op))
    dest = kb.sram((rows, cols), f32)
    ids_stride, row_stride, col_stride = flat_ids.strides[0], table.strides[0], table.strides[1]
    if col_stride != 1:
        raise NotImplementedError(f"{loc_of(op)}: the table must be row-major")

    def body(r0: Pos, nr: int, c0: Pos, nc: int) -> None:
        ids_access = (flat_ids.offset + r0.const * ids_stride, [s * ids_stride for s in r0.strides(kb.depth)])
        table_access = (table.offset + c0.const, c0.strides(kb.depth))
        kb.add(tile.DmaGatherOp(table.buffer, flat_ids.buffer, dest, nr, nc, ids_access, table_access, row_stride))
        kb.store(dest, out, [r0, c0], nr, nc)

    kb.tiled_range(count, rows, lambda r0, nr: kb.tiled_range(width, cols, lambda c0, nc: body(r0, nr, c0, nc)))


def index_copy(ctx: TileContext, op: tfm.IndexCopyOp) -> None:
    """Rows of `source` scattered into `dest` at runtime indices; in place on KV-cache state."""
    loc = loc_of(op)
    dest = ctx.view_of(op.dest)
    owner = dest.buffer.owner
    whole = dest.offset == 0 and dest.is_dense and dest.shape == tuple(dest.buffer.type.get_shape())
    if isinstance(owner, tile.HbmBufferOp) and owner.kind.data == "kv" and whole and op.dest.has_one_use():
        out = ctx.views[op.result] = dest
    else:
        out = ctx.result_view(op.result)
        copy_to_view(ctx, f"{loc} copy", out, (dest, ctx.sram_type(op.result.type)))
    rank, dim = len(out.shape), op.dim.value.data
    if dim == rank - 1:
        raise NotImplementedError(f"{loc}: index_copy along the last dimension is not supported")
    perm = [d for d in range(rank) if d not in (dim, rank - 1)] + [dim, rank - 1]
    table, source = out.permute(perm), ctx.view_of(op.source).permute(perm)
    ids = ctx.view_of(op.index)
    count, width = source.shape[-2], source.shape[-1]
    if table.strides[-1] != 1:
        raise NotImplementedError(f"{loc}: the destination's last dimension must be contiguous")
    outer_shape = table.shape[:-2]
    if count * width * prod(outer_shape) * 4 <= ctx.sram_budget // 4:
        _index_copy_staged(ctx, loc, table, source, ids)
        return
    rows, cols = fit_tile(min(count, ROW_TILE_MAX), min(width, COL_TILE_MAX), 4, ctx.sram_budget, loc)
    kb = ctx.kernel(loc)
    buf = kb.sram((rows, cols), f32)

    def body(outer: list[Pos], r0: Pos, nr: int, c0: Pos, nc: int) -> None:
        kb.load(source, [*outer, r0, c0], nr, nc, buf)
        ids_access = (ids.offset + r0.const * ids.strides[0], [s * ids.strides[0] for s in r0.strides(kb.depth)])
        table_access = kb.access(table, [*outer, Pos(), c0])
        kb.add(tile.DmaScatterOp(buf, ids.buffer, table.buffer, nr, nc, ids_access, table_access, table.strides[-2]))

    def outer_loops(dim_index: int, starts: list[Pos]) -> None:
        if dim_index == rank - 2:
            kb.tiled_range(
                count, rows, lambda r0, nr: kb.tiled_range(width, cols, lambda c0, nc: body(starts, r0, nr, c0, nc))
            )
        else:
            kb.tiled_range(table.shape[dim_index], 1, lambda p, _n: outer_loops(dim_index + 1, [*starts, p]))

    outer_loops(0, [])


def _index_copy_staged(ctx: TileContext, loc: str, table: View, source: View, ids: View) -> None:
    """A small source (decode's new keys or values): every slice loaded first, then every scatter.

    The scatters then follow one another on the store engine, each only waiting for the loads,
    instead of one load / scatter round trip (two HBM latencies) per sequence.
    """
    outer_shape = table.shape[:-2]
    count, width = source.shape[-2:]
    kb = ctx.kernel(loc)
    buf = kb.sram((prod(outer_shape) * count, width), f32)

    def each_outer(body: Callable[[list[Pos], Pos], None]) -> None:
        def level(dim: int, starts: list[Pos], flat: Pos) -> None:
            if dim == len(outer_shape):
                body(starts, flat)
                return
            inner = prod(outer_shape[dim + 1 :])
            kb.tiled_range(outer_shape[dim], 1, lambda p, _n: level(dim + 1, [*starts, p], flat + p.scaled(inner)))

        level(0, [], Pos())

    each_outer(
        lambda outer, flat: kb.load(source, [*outer, Pos(), Pos()], count, width, buf, flat.scaled(count * width))
    )

    def scatter(outer: list[Pos], flat: Pos) -> None:
        sram = flat.scaled(count * width)
        table_access = kb.access(table, [*outer, Pos(), Pos()])
        ids_access = (ids.offset, [0] * kb.depth)
        kb.add(
            tile.DmaScatterOp(
                buf,
                ids.buffer,
                table.buffer,
                count,
                width,
                ids_access,
                table_access,
                table.strides[-2],
                (sram.const, sram.strides(kb.depth)),
            )
        )

    each_outer(scatter)


def concat(ctx: TileContext, op: tfm.ConcatOp) -> None:
    """Copy each input into its slice of the result (inputs placed there already cost nothing)."""
    out = ctx.views[op.result] if op.result in ctx.views else ctx.result_view(op.result)
    dim = op.dim.value.data
    start = 0
    for value in op.inputs:
        size = tfm.shape_of(value)[dim]
        part = out.slice(dim, start, start + size, 1)
        if not _same_elements(ctx.view_of(value), part):
            copy_to_view(ctx, loc_of(op), part, (ctx.view_of(value), ctx.sram_type(op.result.type)))
        start += size


def place_concat_inputs(ctx: TileContext, ops: list[Operation]) -> None:
    """Destination passing: an attention result that a concat gathers (through reshapes and transposes)
    is written straight into its window of the concat's buffer, so the concat copies nothing for it::

        %a = tfm.attention ... -> [1, H, S, D] ; %t = transpose / reshape %a -> [S, H*D]
        %c = tfm.concat %t, ... {dim = 0}      -> the attention stores rows of %c with strides (D, H*D, 1)

    When every input is such a result and the concat's one consumer is a static FP8 quantisation (the
    o_proj's input), the buffer is the quantised one and the attentions store their results divided by
    its scale (`store_scales`; the store saturates), so no kernel quantises the concat.
    """
    for op in ops:
        if isinstance(op, tfm.ConcatOp):
            quantize = _static_quantize_of(op.result)
            scale = None
            if quantize is not None:  # the quantised buffer, when every input can be placed in it
                placements = _placements(op, ctx.result_view(quantize.result))
                if all(placements):
                    ctx.fused.add(quantize)
                    ctx.views[op.result] = ctx.views[quantize.result]
                    assert quantize.static_scale is not None
                    scale = quantize.static_scale.value.data
            if scale is None:  # else the concat's own buffer (the quantisation, if any, a kernel of its own)
                placements = _placements(op, ctx.result_view(op.result))
            for placement in placements:
                if placement is not None:
                    ctx.placed[placement[0]] = placement[1]
                    if scale is not None:
                        ctx.store_scales[placement[0]] = scale


def _placements(op: tfm.ConcatOp, out: View) -> list[tuple[SSAValue, View] | None]:
    """`_placement` of each concat input in its window of `out`."""
    dim, start, placements = op.dim.value.data, 0, []
    for value in op.inputs:
        size = tfm.shape_of(value)[dim]
        placements.append(_placement(value, out.slice(dim, start, start + size, 1)))
        start += size
    return placements


def _static_quantize_of(value: SSAValue) -> tfm.QuantizeOp | None:
    """The one consumer of `value` when it is a quantisation by a static scale to the same shape."""
    user = value.get_user_of_unique_use() if value.has_one_use() else None
    if isinstance(user, tfm.QuantizeOp) and user.static_scale is not None and user.scale is None:
        return user if tfm.shape_of(user.result) == tfm.shape_of(value) else None
    return None


def _placement(value: SSAValue, dest: View | None) -> tuple[SSAValue, View] | None:
    """The attention result behind `value` (through single-use reshapes and transposes) and its window
    of `dest`, or None."""
    while dest is not None and value.has_one_use():
        owner = value.owner
        if isinstance(owner, tfm.ReshapeOp):
            value, dest = owner.input, dest.reshape(tfm.shape_of(owner.input))
        elif isinstance(owner, tfm.TransposeOp):
            inverse = sorted(range(len(owner.permutation)), key=lambda i: owner.permutation[i])
            value, dest = owner.input, dest.permute(inverse)
        else:
            return (value, dest) if isinstance(owner, tfm.AttentionOp) and dest is not None else None
    return None


def _same_elements(a: View, b: View) -> bool:
    """Whether two views address the same elements in the same order (strides of size-1 dims aside)."""
    if a.buffer is not b.buffer or a.offset != b.offset or a.shape != b.shape:
        return False
    return all(n == 1 or sa == sb for n, sa, sb in zip(a.shape, a.strides, b.strides, strict=True))


def copy_to_view(ctx: TileContext, loc: str, dest: View, source: tuple[View, Attribute]) -> None:
    """Copy a view (converting dtype; the store saturates into 8-bit floats) into an existing destination view."""
    shape = as_matrix_shape(dest.shape)
    dst, src = dest.broadcast_to(shape), source[0].broadcast_to(shape)
    limits = (min(shape[-2], ROW_TILE_MAX), min(shape[-1], COL_TILE_MAX))
    rows, cols = fit_tile(*limits, element_bytes(source[1]), ctx.sram_budget, loc)
    kb = ctx.kernel(loc)
    buf = kb.sram((rows, cols), source[1])

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        kb.load(src, starts, nr, nc, buf)
        kb.store(buf, dst, starts, nr, nc)

    kb.for_each_tile(shape, rows, cols, body)


def loc_of(op: tfm.TfmOp) -> str:
    """The op's source location, or its name."""
    loc = op.attributes.get("loc")
    return loc.data if loc is not None else op.name  # type: ignore[union-attr]
