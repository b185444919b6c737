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
from tasic.passes.tiling.builder import DoesNotFitError, KernelBuilder, Pos, as_matrix_shape, fit_rows, fit_tile
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.cost import best_matmul_tiles, matmul_tile_bytes
from tasic.passes.tiling.dtypes import dtype_name, element_bytes
from tasic.passes.tiling.epilogue import (
    EpilogueStep,
    GatedEpilogue,
    collect,
    collect_gated,
    reduces,
    scratch_tiles,
    scratch_tiles_needed,
)
from tasic.passes.tiling.epilogue import apply as apply_epilogue
from tasic.passes.tiling.views import View

ROW_TILE_MAX = 256
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


ROPE_ROWS = 2048
"""Rows per rope tile: its columns are only half a head, so rows make the tiles worth an instruction."""


def rope(ctx: TileContext, op: tfm.RopeOp) -> None:
    """tfm.rope per tile of rows: halves of x, cos, sin in; lo = x_lo c_lo - x_hi s_lo, hi = x_hi c_hi + x_lo s_hi."""
    full = as_matrix_shape(tfm.shape_of(op.input))
    out = ctx.result_view(op.result)
    sources = [ctx.view_of(v).broadcast_to(full) for v in (op.input, op.cos, op.sin)]
    shape, (x, cos, sin, dest) = rows_outermost(full, [*sources, out.broadcast_to(full)])
    half = shape[-1] // 2
    halves = [
        (v.slice(len(shape) - 1, 0, half, 1), v.slice(len(shape) - 1, half, 2 * half, 1)) for v in (x, cos, sin, dest)
    ]
    half_shape = (*shape[:-1], half)
    limits = (min(shape[-2], ROPE_ROWS), min(half, COL_TILE_MAX))
    rows, cols = fit_tile(*limits, 9 * 4, ctx.sram_budget, f"{loc_of(op)} tiles")
    kb = ctx.kernel(loc_of(op))
    x_lo, x_hi, c_lo, c_hi, s_lo, s_hi, lo, hi, tmp = (kb.sram((rows, cols), f32) for _ in range(9))

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        for (view_lo, view_hi), (tile_lo, tile_hi) in zip(
            halves[:3], ((x_lo, x_hi), (c_lo, c_hi), (s_lo, s_hi)), strict=True
        ):
            kb.load(view_lo, starts, nr, nc, tile_lo)
            kb.load(view_hi, starts, nr, nc, tile_hi)
        for fn, a, b, dst in (
            ("mul", x_lo, c_lo, lo), ("mul", x_hi, s_lo, tmp), ("sub", lo, tmp, lo),
            ("mul", x_hi, c_hi, hi), ("mul", x_lo, s_hi, tmp), ("add", hi, tmp, hi),
        ):  # fmt: skip
            kb.add(tile.BinaryOp(fn, a, b, dst, nr, nc))
        kb.store(lo, halves[3][0], starts, nr, nc)
        kb.store(hi, halves[3][1], starts, nr, nc)

    kb.for_each_tile(half_shape, rows, cols, body)


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
    norm = _following_rms_norm(ctx, final)
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
    emit_norm = _rms_norm_epilogue(ctx, kb, norm, flat_shape, rows) if norm is not None else None

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        kb.load(source, starts, nr, nc, buf)
        kb.add(tile.AllReduceOp(buf, work, op.chips.value.data, nr, nc))  # work: f32 when computed on
        apply_epilogue(kb, steps, work, scratch, starts, nr, nc)
        kb.store(work, dest, starts, nr, nc)
        if emit_norm is not None:
            emit_norm(work, starts, nr, nc)

    kb.for_each_tile(flat_shape, rows, cols, body)


def _following_rms_norm(ctx: TileContext, value: SSAValue) -> tfm.RmsNormOp | None:
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


def _rms_norm_epilogue(
    ctx: TileContext, kb: KernelBuilder, norm: tfm.RmsNormOp, flat_shape: tuple[int, int], rows: int
) -> Callable[[SSAValue, list[Pos], int, int], None]:
    """Declare the tiles of `norm` computed from whole-row tiles of its input; return the emitter."""
    ctx.fused.add(norm)
    steps, final = collect(ctx, norm.result, flat_shape)
    dest = ctx.result_view(final).reshape(flat_shape)
    assert dest is not None, "a fresh result buffer is dense"
    width = flat_shape[1]
    normed, stat, gamma = kb.sram((rows, width), f32), kb.sram((rows, 1), f32), kb.sram((1, width), f32)
    scratch = scratch_tiles(kb, steps, rows, width)
    kb.load(ctx.view_of(norm.weight).broadcast_to((1, width)), [Pos(), Pos()], 1, width, gamma)
    eps = norm.eps.value.data

    def emit(x: SSAValue, starts: list[Pos], nr: int, nc: int) -> None:
        kb.add(tile.BinaryOp("mul", x, x, normed, nr, nc))
        _rsqrt_mean(kb, normed, stat, eps, nr, nc)
        kb.add(tile.BinaryOp("mul", x, stat, normed, nr, nc, "row"))
        kb.add(tile.BinaryOp("mul", normed, gamma, normed, nr, nc, "col"))
        apply_epilogue(kb, steps, normed, scratch, starts, nr, nc)
        kb.store(normed, dest, starts, nr, nc)

    return emit


def copy_into(ctx: TileContext, loc: str, result: SSAValue, source: View) -> None:
    """Materialise a view (converting dtype) as a dense buffer for `result`."""
    operands = [(source, ctx.sram_type(result.type))]
    elementwise(ctx, loc, result, operands, lambda kb, tiles, dest, nr, nc: tiles[0])


def _matmul_tiles(
    ctx: TileContext,
    m: int,
    n: int,
    k: int,
    loc: str,
    mxu: Attribute | None = None,
    output_tiles: int = 1,
    parts: int = 1,
) -> tuple[int, int, int]:
    """(tm, tn, tk) of a tiled matmul, chosen by the cost model (tiling/cost.py) or the fixed rule
    (`parts` instructions side by side per output tile)."""
    eb = element_bytes(mxu or ctx.mxu_type)
    rate = ctx.target.mxu.rate.get(dtype_name(mxu or ctx.mxu_type), 1.0)
    if ctx.cost_model:
        best = best_matmul_tiles(ctx.target, m, n, k, eb, rate, ctx.sram_budget, output_tiles, parts)
        if best is not None:
            return best
    rows, cols = ctx.target.mxu.rows, ctx.target.mxu.cols
    tm, tn, tk = min(m, 8 * rows), min(n, 8 * cols), min(k, 16 * max(rows, cols))
    while matmul_tile_bytes(tm, tn, tk, eb, 1, output_tiles) > ctx.sram_budget:
        if tk > max(rows, cols) and tk >= max(tm, tn):
            tk = -(-tk // 2)
        elif tm >= tn and tm > 1:
            tm = -(-tm // 2)
        elif tn > 1:
            tn = -(-tn // 2)
        elif tk > 1:
            tk = -(-tk // 2)
        else:
            raise DoesNotFitError(f"{loc}: a 1x1x1 matmul tile does not fit {ctx.sram_budget} bytes of SRAM")
    return tm, tn, tk


def matmul_operand_type(ctx: TileContext, a: View, b: View) -> Attribute:
    """MXU operand dtype: the 8-bit float both operands are stored in (quantised), else the compile dtype's."""
    elem = a.buffer.type.element_type
    if elem == b.buffer.type.element_type and tfm.fp8_max(elem) is not None:
        return elem
    return ctx.mxu_type


def matmul_kernel(ctx: TileContext, loc: str, result: SSAValue, a: View, b: View, bias: View | None) -> None:
    """result[..., M, N] = a @ b (+ bias[N]) (+ fused elementwise epilogue), tiled M x N x K, fp32 accumulation."""
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = tfm.shape_of(result)[:-2]
    a_full = a.broadcast_to((*batch, m, k))
    b_full = b.broadcast_to((*batch, k, n))
    flat = False
    if batch and all(s == 0 for s in b_full.strides[: len(batch)]):
        a_flat = a_full.reshape((prod(batch) * m, k))
        if a_flat is not None:
            a_full, m, batch, flat = a_flat, prod(batch) * m, (), True
            b_full = View(b.buffer, b.offset + 0, (k, n), b_full.strides[-2:])
    steps, final = collect(ctx, result, (m, n)) if not batch else ([], result)
    gated = collect_gated(ctx, final, (m, n)) if not batch and bias is None and not reduces(steps) else None
    if gated is not None:
        _gated_matmul(ctx, loc, a_full, b_full, steps, gated)
        return
    out = ctx.result_view(final)
    out_full = out.reshape((m, n)) if flat else out
    assert out_full is not None, "a fresh result buffer is dense"
    mxu = matmul_operand_type(ctx, a, b)
    output_tiles = 1 + scratch_tiles_needed(steps) + 2 * reduces(steps)  # + the link tile and a norm's
    chunked = _all_reduce_chunks(ctx, m, n, k, element_bytes(mxu), output_tiles) if reduces(steps) else None
    tm, tn, tk = chunked or _matmul_tiles(ctx, m, n, k, loc, mxu, output_tiles)
    norm = _following_rms_norm(ctx, final) if reduces(steps) and tn == n else None
    kb = ctx.kernel(loc)
    lhs, rhs = kb.sram((tm, tk), mxu), kb.sram((tk, tn), mxu)
    acc = kb.sram((tm, tn), f32)
    scratch = scratch_tiles(kb, steps, tm, tn)
    link = kb.sram((tm, tn), ctx.storage_type(result.type)) if reduces(steps) else None
    bias_tile = kb.sram((1, tn), f32) if bias is not None else None
    bias_view = bias.broadcast_to((1, n)) if bias is not None else None
    emit_norm = _rms_norm_epilogue(ctx, kb, norm, (m, n), tm) if norm is not None else None

    # one column tile and one K step of a shared rhs (a weight): every row tile multiplies the same rhs tile
    rhs_once = not batch and tn >= n and tk >= k and m > tm
    if rhs_once:
        kb.load(b_full, [Pos(), Pos()], k, n, rhs)
    lhs_once = not batch and tm >= m and tk >= k and n > tn  # likewise one row tile and K step of lhs
    if lhs_once:
        kb.load(a_full, [Pos(), Pos()], m, k, lhs)

    def output_tile(bstarts: list[Pos], m0: Pos, nm: int, n0: Pos, nn: int) -> None:
        single_step = k <= tk
        if not single_step:
            kb.add(tile.FillOp(acc, 0.0, nm, nn))

        def k_step(k0: Pos, nk: int) -> None:
            if not lhs_once:
                kb.load(a_full, [*bstarts, m0, k0], nm, nk, lhs)
            if not rhs_once:
                kb.load(b_full, [*bstarts, k0, n0], nk, nn, rhs)
            kb.add(tile.MatmulOp(lhs, rhs, acc, nm, nn, nk, accumulate=not single_step))

        kb.tiled_range(k, tk, k_step)
        if bias_view is not None and bias_tile is not None:
            kb.load(bias_view, [Pos(), n0], 1, nn, bias_tile)
            kb.add(tile.BinaryOp("add", acc, bias_tile, acc, nm, nn, "col"))
        apply_epilogue(kb, steps, acc, scratch, [m0, n0], nm, nn, link)
        kb.store(acc, out_full, [*bstarts, m0, n0], nm, nn)
        if emit_norm is not None:
            emit_norm(acc, [m0, n0], nm, nn)

    def batch_loops(dim: int, starts: list[Pos]) -> None:
        if dim == len(batch):
            kb.tiled_range(
                m, tm, lambda m0, nm: kb.tiled_range(n, tn, lambda n0, nn: output_tile(starts, m0, nm, n0, nn))
            )
        elif batch[dim] == 1:
            batch_loops(dim + 1, [*starts, Pos()])
        else:
            with kb.loop(batch[dim]) as counter:
                batch_loops(dim + 1, [*starts, counter])

    batch_loops(0, [])


def _gated_matmul(
    ctx: TileContext, loc: str, a: View, b: View, shared: list[EpilogueStep], gated: GatedEpilogue
) -> None:
    """silu(a @ b[:, :F]) * (a @ b[:, F:]) (`GatedEpilogue`): a gate and an up accumulator per output tile,
    sharing the activation tile; `shared` steps apply to both halves at their own columns."""
    m, k = a.shape
    width = gated.width
    out = ctx.result_view(gated.final).reshape((m, width))
    assert out is not None, "a fresh result buffer is dense"
    mxu = matmul_operand_type(ctx, a, b)
    steps = [*shared, *gated.gate, *gated.after]
    tm, tn, tk = _matmul_tiles(ctx, m, 2 * width, k, loc, mxu, 1 + scratch_tiles_needed(steps), parts=2)
    tn = min(width, max(1, tn // 2))  # the gate and up tiles together are one tile of the 2F-wide product
    kb = ctx.kernel(loc)
    lhs, rhs_gate, rhs_up = kb.sram((tm, tk), mxu), kb.sram((tk, tn), mxu), kb.sram((tk, tn), mxu)
    acc_gate, acc_up = kb.sram((tm, tn), f32), kb.sram((tm, tn), f32)
    scratch = scratch_tiles(kb, steps, tm, tn)
    up = Pos(width)
    lhs_once = tm >= m and tk >= k and width > tn  # one row tile and K step: every column tile shares it
    if lhs_once:
        kb.load(a, [Pos(), Pos()], m, k, lhs)
    rhs_once = tn >= width and tk >= k and m > tm  # one column tile and K step: every row tile shares it
    if rhs_once:
        kb.load(b, [Pos(), Pos()], k, width, rhs_gate)
        kb.load(b, [Pos(), up], k, width, rhs_up)

    def output_tile(m0: Pos, nm: int, n0: Pos, nn: int) -> None:
        single_step = k <= tk
        if not single_step:
            kb.add(tile.FillOp(acc_gate, 0.0, nm, nn))
            kb.add(tile.FillOp(acc_up, 0.0, nm, nn))

        def k_step(k0: Pos, nk: int) -> None:
            if not lhs_once:
                kb.load(a, [m0, k0], nm, nk, lhs)
            if not rhs_once:
                kb.load(b, [k0, n0], nk, nn, rhs_gate)
                kb.load(b, [k0, n0 + up], nk, nn, rhs_up)
            kb.add(tile.MatmulOp(lhs, rhs_gate, acc_gate, nm, nn, nk, accumulate=not single_step))
            kb.add(tile.MatmulOp(lhs, rhs_up, acc_up, nm, nn, nk, accumulate=not single_step))

        kb.tiled_range(k, tk, k_step)
        apply_epilogue(kb, shared, acc_gate, scratch, [m0, n0], nm, nn)
        apply_epilogue(kb, shared, acc_up, scratch, [m0, n0 + up], nm, nn)
        apply_epilogue(kb, gated.gate, acc_gate, scratch, [m0, n0], nm, nn)
        kb.add(tile.BinaryOp("mul", acc_gate, acc_up, acc_gate, nm, nn))
        apply_epilogue(kb, gated.after, acc_gate, scratch, [m0, n0], nm, nn)
        kb.store(acc_gate, out, [m0, n0], nm, nn)

    kb.tiled_range(m, tm, lambda m0, nm: kb.tiled_range(width, tn, lambda n0, nn: output_tile(m0, nm, n0, nn)))


def _all_reduce_chunks(
    ctx: TileContext, m: int, n: int, k: int, eb: int, output_tiles: int
) -> tuple[int, int, int] | None:
    """Tiles of a matmul whose output is all-reduced tile by tile: about ALL_REDUCE_CHUNKS chunks of whole
    rows (a multiple of the array's rows, so no row fold is wasted; whole rows, so a following rms_norm
    can run on them), the deepest K step that fits SRAM; None if whole rows do not fit."""
    unit = ctx.target.mxu.rows
    tm = min(m, max(unit, -(-m // ALL_REDUCE_CHUNKS) // unit * unit))
    tk = k
    while matmul_tile_bytes(tm, n, tk, eb, 2, output_tiles) > ctx.sram_budget:
        if tk <= unit:
            return None
        tk = -(-tk // 2)
    return tm, n, tk


def matmul(ctx: TileContext, op: tfm.MatmulOp) -> None:
    """tfm.matmul -> tiled MXU kernel."""
    matmul_kernel(ctx, loc_of(op), op.result, ctx.view_of(op.lhs), ctx.view_of(op.rhs), None)


def linear(ctx: TileContext, op: tfm.LinearOp) -> None:
    """tfm.linear -> tiled MXU kernel; weights are stored pre-transposed [in, out]."""
    weight_owner = op.weight.owner
    if isinstance(weight_owner, tfm.WeightOp):
        w_t = ctx.weight(
            weight_owner.sym.data,
            tfm.shape_of(op.weight),
            tfm.element_type(op.weight),
            transpose=True,
            shard=weight_owner.shard,
        )
    else:
        w_t = ctx.view_of(op.weight).permute([1, 0])
    bias = ctx.view_of(op.bias) if op.bias is not None else None
    matmul_kernel(ctx, loc_of(op), op.result, ctx.view_of(op.input), w_t, bias)


def quantize(ctx: TileContext, op: tfm.QuantizeOp) -> None:
    """tfm.quantize per tile: x / scale (a [rows, 1] tile, or the static scale), clamp to +-max on the VPU;
    the DMA store rounds to the 8-bit float (nearest even), so values never overflow to NaN."""
    limit = tfm.fp8_max(tfm.element_type(op.result))
    assert limit is not None
    out = ctx.result_view(op.result)
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
        kb.add(tile.ScalarOp("min", x, x, limit, nr, nc))
        kb.add(tile.ScalarOp("max", x, x, -limit, nr, nc))
        kb.store(x, dest, starts, nr, nc)

    kb.for_each_tile(shape, rows, cols, body)


RowEmit = Callable[[KernelBuilder, SSAValue, list[SSAValue], int, int], None]


def rowwise(
    ctx: TileContext,
    loc: str,
    result: SSAValue,
    source: View,
    scratch_full: int,
    params: list[View],
    emit: Callable[[KernelBuilder, SSAValue, list[SSAValue], list[SSAValue], SSAValue, int, int], None],
) -> None:
    """A kernel over whole rows (last dim in SRAM): emit(kb, x, scratch, params, stat, rows, C), then the
    fused elementwise epilogue (tiling/epilogue.py) when the rows flatten to a matrix."""
    shape = as_matrix_shape(tfm.shape_of(result))
    width = shape[-1]
    flat_shape = (prod(shape[:-1]), width)
    src = source.broadcast_to(shape).reshape(flat_shape)
    steps, final = collect(ctx, result, flat_shape) if src is not None else ([], result)
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
        emit(kb, x, scratch, param_tiles, stat, nr, nc)
        apply_epilogue(kb, steps, x, epilogue_scratch, starts, nr, nc)
        kb.store(x, dst, starts, nr, nc)

    kb.for_each_tile(shape, rows, width, body)


def softmax(ctx: TileContext, op: tfm.SoftmaxOp) -> None:
    """Row softmax: max, subtract, exp, sum, divide."""

    def emit(
        kb: KernelBuilder, x: SSAValue, _s: list[SSAValue], _p: list[SSAValue], st: SSAValue, r: int, c: int
    ) -> None:
        _softmax_rows(kb, x, st, r, c)

    rowwise(ctx, loc_of(op), op.result, ctx.view_of(op.input), 0, [], emit)


def _softmax_rows(kb: KernelBuilder, x: SSAValue, stat: SSAValue, rows: int, cols: int) -> None:
    kb.add(tile.ReduceOp("max", x, stat, rows, cols))
    kb.add(tile.BinaryOp("sub", x, stat, x, rows, cols, "row"))
    kb.add(tile.UnaryOp("exp", x, x, rows, cols))
    kb.add(tile.ReduceOp("sum", x, stat, rows, cols))
    kb.add(tile.BinaryOp("div", x, stat, x, rows, cols, "row"))


def layer_norm(ctx: TileContext, op: tfm.LayerNormOp) -> None:
    """(x - mean) * rsqrt(var + eps) * gamma + beta over the last dim."""
    eps = op.eps.value.data

    def emit(
        kb: KernelBuilder, x: SSAValue, s: list[SSAValue], p: list[SSAValue], st: SSAValue, r: int, c: int
    ) -> None:
        kb.add(tile.ReduceOp("sum", x, st, r, c))
        kb.add(tile.ScalarOp("mul", st, st, 1.0 / c, r, 1))
        kb.add(tile.BinaryOp("sub", x, st, x, r, c, "row"))
        kb.add(tile.BinaryOp("mul", x, x, s[0], r, c))
        _rsqrt_mean(kb, s[0], st, eps, r, c)
        kb.add(tile.BinaryOp("mul", x, st, x, r, c, "row"))
        kb.add(tile.BinaryOp("mul", x, p[0], x, r, c, "col"))
        kb.add(tile.BinaryOp("add", x, p[1], x, r, c, "col"))

    params = [ctx.view_of(op.weight), ctx.view_of(op.bias)]
    rowwise(ctx, loc_of(op), op.result, ctx.view_of(op.input), 1, params, emit)


def _rsqrt_mean(kb: KernelBuilder, squares: SSAValue, stat: SSAValue, eps: float, rows: int, cols: int) -> None:
    kb.add(tile.ReduceOp("sum", squares, stat, rows, cols))
    kb.add(tile.ScalarOp("mul", stat, stat, 1.0 / cols, rows, 1))
    kb.add(tile.ScalarOp("add", stat, stat, eps, rows, 1))
    kb.add(tile.UnaryOp("rsqrt", stat, stat, rows, 1))


def rms_norm(ctx: TileContext, op: tfm.RmsNormOp) -> None:
    """x * rsqrt(mean(x^2) + eps) * weight over the last dim."""
    eps = op.eps.value.data

    def emit(
        kb: KernelBuilder, x: SSAValue, s: list[SSAValue], p: list[SSAValue], st: SSAValue, r: int, c: int
    ) -> None:
        kb.add(tile.BinaryOp("mul", x, x, s[0], r, c))
        _rsqrt_mean(kb, s[0], st, eps, r, c)
        kb.add(tile.BinaryOp("mul", x, st, x, r, c, "row"))
        kb.add(tile.BinaryOp("mul", x, p[0], x, r, c, "col"))

    rowwise(ctx, loc_of(op), op.result, ctx.view_of(op.input), 1, [ctx.view_of(op.weight)], emit)


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


def _scale_and_cap(
    kb: KernelBuilder, scores: SSAValue, scale: float, softcap: float | None, rows: int, cols: int
) -> None:
    """scores *= scale, then softcap * tanh(scores / softcap) when the model caps its logits."""
    kb.add(tile.ScalarOp("mul", scores, scores, scale, rows, cols))
    if softcap is not None:
        kb.add(tile.ScalarOp("div", scores, scores, softcap, rows, cols))
        kb.add(tile.UnaryOp("tanh", scores, scores, rows, cols))
        kb.add(tile.ScalarOp("mul", scores, scores, softcap, rows, cols))


DECODE_BATCH_MAX = 64
"""Most sequences one batched decode-attention matmul takes."""


def _stacked_heads(view: View, batch: int, kv_heads: int, group: int) -> View | None:
    """q [B, H, S, D] as [B, Hkv, group*S, D] (a GQA group's query rows stacked), if strides allow."""
    _, _, s, d = view.shape
    return view.reshape((batch, kv_heads, group * s, d))


def decode_attention(ctx: TileContext, op: tfm.AttentionOp) -> bool:
    """Few query rows per sequence (decode): batch sequences into one MXU instruction; False if not applicable.

    A GQA group's query heads are stacked into the rows of one tile ([group * Sq, D]), and DECODE_BATCH_MAX
    sequences go through each matmul together (`batch`), so the 256x256 arrays work on many sequences at
    once instead of one 8-row product at a time.
    """
    q, k, v = ctx.view_of(op.query), ctx.view_of(op.key), ctx.view_of(op.value)
    batch, heads, sq, d = q.shape
    kv_heads, sk, dv = k.shape[1], k.shape[2], v.shape[3]
    group = heads // kv_heads
    rows = group * sq
    causal_is_free = not op.causal.value.data or sq == 1
    if op.mask is not None or op.window is not None or not causal_is_free or batch == 1 or rows > ROW_TILE_MAX:
        return False
    q_rows = _stacked_heads(q, batch, kv_heads, group)
    if q_rows is None:
        return False
    mxu, eb = ctx.mxu_type, element_bytes(ctx.mxu_type)
    separate_p = eb != 4
    per_sequence = rows * d * eb + d * sk * eb + sk * dv * eb + rows * sk * (4 + (eb if separate_p else 0))
    per_sequence += rows * dv * 4 + rows * 4
    nb = min(batch, DECODE_BATCH_MAX, max(1, ctx.sram_budget // per_sequence))
    if nb * per_sequence > ctx.sram_budget:
        return False
    out_rows = _stacked_heads(ctx.result_view(op.result), batch, kv_heads, group)
    assert out_rows is not None, "a fresh result buffer is dense"
    kb = ctx.kernel(loc_of(op))
    qt, kt, vt = kb.sram((nb * rows, d), mxu), kb.sram((nb * d, sk), mxu), kb.sram((nb * sk, dv), mxu)
    scores = kb.sram((nb * rows, sk), f32)
    probs = kb.sram((nb * rows, sk), mxu) if separate_p else scores
    acc, stat = kb.sram((nb * rows, dv), f32), kb.sram((nb * rows, 1), f32)
    k_t = k.permute([0, 1, 3, 2])
    scale = op.scale.value.data
    softcap = op.softcap.value.data if op.softcap is not None else None

    def chunk(b0: Pos, n: int, hk: Pos) -> None:
        def load_one(i: Pos, _one: int) -> None:
            b = b0 + i
            kb.load(q_rows, [b, hk, Pos(), Pos()], rows, d, qt, i.scaled(rows * d))
            kb.load(k_t, [b, hk, Pos(), Pos()], d, sk, kt, i.scaled(d * sk))
            kb.load(v, [b, hk, Pos(), Pos()], sk, dv, vt, i.scaled(sk * dv))

        kb.tiled_range(n, 1, load_one)
        kb.add(tile.MatmulOp(qt, kt, scores, rows, sk, d, accumulate=False, batch=n))
        _scale_and_cap(kb, scores, scale, softcap, n * rows, sk)
        _softmax_rows(kb, scores, stat, n * rows, sk)
        if separate_p:
            kb.add(tile.UnaryOp("copy", scores, probs, n * rows, sk))
        kb.add(tile.MatmulOp(probs, vt, acc, rows, dv, sk, accumulate=False, batch=n))
        kb.tiled_range(
            n, 1, lambda i, _one: kb.store(acc, out_rows, [b0 + i, hk, Pos(), Pos()], rows, dv, i.scaled(rows * dv))
        )

    kb.tiled_range(kv_heads, 1, lambda hk, _m: kb.tiled_range(batch, nb, lambda b0, n: chunk(b0, n, hk)))
    return True


FLASH_ROWS = 4096
"""Stacked query rows (GQA heads x queries) per flash-attention tile: 16 row folds of a 256-row array."""
FLASH_KEYS = 2048
"""Keys per flash-attention block (fewer when SRAM is short)."""
FLASH_MIN_KEYS = 64
"""Shorter attention takes whole score rows at once."""


def flash_attention(ctx: TileContext, op: tfm.AttentionOp) -> bool:
    """Long attention (prefill) as key blocks with an online softmax; False if not applicable.

    A GQA group's query heads are stacked into the rows of one tile ([group * tq, D]) so each matrix
    instruction keeps many arrays busy; per key block: S = Q K^T * scale (causal mask on blocks that
    cross the diagonal, `period` tq), m' = max(m, rowmax S), P = exp(S - m'), l = l e^(m - m') + rowsum P,
    O = O e^(m - m') + P V; blocks above the diagonal are skipped. O / l is stored at the end.
    """
    q, k, v = ctx.view_of(op.query), ctx.view_of(op.key), ctx.view_of(op.value)
    batch, heads, sq, d = q.shape
    kv_heads, sk, dv = k.shape[1], k.shape[2], v.shape[3]
    group = heads // kv_heads
    causal = op.causal.value.data
    if op.mask is not None or op.window is not None or sk <= FLASH_MIN_KEYS or sq == 1:
        return False
    mxu, eb = ctx.mxu_type, element_bytes(ctx.mxu_type)
    tq, kb = min(sq, max(1, FLASH_ROWS // group)), min(sk, FLASH_KEYS)

    def need(tq: int, kb: int) -> int:
        """SRAM bytes of the tiles, key-block tiles twice (double buffering)."""
        rows = group * tq
        return rows * (d * eb + dv * 4 + 5 * 4) + 2 * (rows * kb * (4 + eb) + kb * (d + dv) * eb)

    while need(tq, kb) > ctx.sram_budget and (kb > 16 or tq > 1):
        if kb > 16 and kb * group >= tq:
            kb //= 2
        else:
            tq //= 2
    if need(tq, kb) > ctx.sram_budget:
        return False
    rows = group * tq
    out = ctx.result_view(op.result)
    k_t = k.permute([0, 1, 3, 2])
    scale = op.scale.value.data
    softcap = op.softcap.value.data if op.softcap is not None else None
    offset = sk - sq  # query i sees keys j <= i + offset

    def query_tile(q0: int, nq: int) -> None:
        kern = ctx.kernel(loc_of(op))  # one kernel per query tile: few address registers each; they overlap
        qt, kt, vt = kern.sram((rows, d), mxu), kern.sram((d, kb), mxu), kern.sram((kb, dv), mxu)
        scores, probs = kern.sram((rows, kb), f32), kern.sram((rows, kb), mxu)
        acc, m, m_new, denom, stat = (kern.sram(shape, f32) for shape in ((rows, dv), *[(rows, 1)] * 4))

        def key_block(b: Pos, hk: Pos, k0: Pos, nk: int, diagonal: int | None) -> None:
            kern.load(k_t, [b, hk, Pos(), k0], d, nk, kt)
            kern.load(v, [b, hk, k0, Pos()], nk, dv, vt)
            kern.add(tile.MatmulOp(qt, kt, scores, rows, nk, d, accumulate=False))
            _scale_and_cap(kern, scores, scale, softcap, rows, nk)
            if diagonal is not None:
                kern.add(tile.CausalMaskOp(scores, rows, nk, diagonal, [0] * kern.depth, period=tq))
            kern.add(tile.ReduceOp("max", scores, stat, rows, nk))
            kern.add(tile.BinaryOp("max", m, stat, m_new, rows, 1))
            kern.add(tile.BinaryOp("sub", scores, m_new, scores, rows, nk, "row"))
            kern.add(tile.UnaryOp("exp", scores, probs, rows, nk))  # rounded to the MXU dtype once, summed as used
            kern.add(tile.BinaryOp("sub", m, m_new, m, rows, 1))
            kern.add(tile.UnaryOp("exp", m, m, rows, 1))  # the correction e^(m - m')
            kern.add(tile.BinaryOp("mul", denom, m, denom, rows, 1))
            kern.add(tile.ReduceOp("sum", probs, stat, rows, nk))
            kern.add(tile.BinaryOp("add", denom, stat, denom, rows, 1))
            kern.add(tile.BinaryOp("mul", acc, m, acc, rows, dv, "row"))
            kern.add(tile.MatmulOp(probs, vt, acc, rows, dv, nk, accumulate=True))
            kern.add(tile.UnaryOp("copy", m_new, m, rows, 1))

        def body(b: Pos, hk: Pos) -> None:
            def each_head(g: Pos, _one: int) -> None:
                kern.load(q, [b, hk.scaled(group) + g, Pos(q0), Pos()], nq, d, qt, g.scaled(tq * d))

            kern.tiled_range(group, 1, each_head)
            kern.add(tile.FillOp(m, float("-inf"), rows, 1))
            kern.add(tile.FillOp(denom, 0.0, rows, 1))
            kern.add(tile.FillOp(acc, 0.0, rows, dv))
            last = min(sk, q0 + nq + offset) if causal else sk  # keys any row of the tile sees
            unmasked = max(0, min(last, q0 + 1 + offset)) if causal else sk  # keys every row sees
            full_blocks = unmasked // kb
            kern.tiled_range(full_blocks * kb, kb, lambda k0, nk: key_block(b, hk, k0, nk, None))
            for k0 in range(full_blocks * kb, last, kb):
                key_block(b, hk, Pos(k0), min(kb, last - k0), q0 + offset - k0 if causal else None)
            kern.add(tile.BinaryOp("div", acc, denom, acc, rows, dv, "row"))

            def store_head(g: Pos, _one: int) -> None:
                kern.store(acc, out, [b, hk.scaled(group) + g, Pos(q0), Pos()], nq, dv, g.scaled(tq * dv))

            kern.tiled_range(group, 1, store_head)

        kern.tiled_range(batch, 1, lambda b, _n: kern.tiled_range(kv_heads, 1, lambda hk, _m: body(b, hk)))

    for q0 in range(0, sq, tq):
        query_tile(q0, min(tq, sq - q0))
    return True


def attention(ctx: TileContext, op: tfm.AttentionOp) -> None:
    """Per (batch, kv head, query tile): S = QK^T*scale (+mask, causal), softmax, O = PV."""
    if ctx.decode_batch and decode_attention(ctx, op):
        return
    if ctx.flash and flash_attention(ctx, op):
        return
    q, k, v = ctx.view_of(op.query), ctx.view_of(op.key), ctx.view_of(op.value)
    batch, heads, sq, d = q.shape
    kv_heads, sk, dv = k.shape[1], k.shape[2], v.shape[3]
    group = heads // kv_heads
    out = ctx.result_view(op.result)
    mxu = ctx.mxu_type
    eb = element_bytes(mxu)
    mask = op.mask
    mask_view = ctx.view_of(mask).broadcast_to((batch, heads, sq, sk)) if mask is not None else None
    mask_is_bool = mask is not None and not tfm.is_float(mask.type)
    separate_p = eb != 4
    per_row = d * eb + sk * 4 + (sk * eb if separate_p else 0) + dv * 4 + 4
    if mask is not None:
        per_row += sk * (1 if mask_is_bool else 4) + (sk * 4 if mask_is_bool else 0)
    fixed = d * sk * eb + sk * dv * eb
    tq = fit_rows(per_row, fixed, ctx.sram_budget, min(sq, ROW_TILE_MAX), f"{loc_of(op)} K/V of {sk} keys")
    kb = ctx.kernel(loc_of(op))
    kt, vt = kb.sram((d, sk), mxu), kb.sram((sk, dv), mxu)
    qt, scores = kb.sram((tq, d), mxu), kb.sram((tq, sk), f32)
    probs = kb.sram((tq, sk), mxu) if separate_p else scores
    acc, stat = kb.sram((tq, dv), f32), kb.sram((tq, 1), f32)
    mask_tile = kb.sram((tq, sk), i1 if mask_is_bool else f32) if mask is not None else None
    minus_inf = kb.sram((tq, sk), f32) if mask_is_bool else None
    if minus_inf is not None:
        kb.add(tile.FillOp(minus_inf, float("-inf"), tq, sk))
    k_t = k.permute([0, 1, 3, 2])
    scale = op.scale.value.data
    softcap = op.softcap.value.data if op.softcap is not None else None
    window = op.window.value.data if op.window is not None else 0
    if window and not op.causal.value.data:
        raise NotImplementedError(f"{loc_of(op)}: a sliding window without causal masking is not supported")

    def query_tile(b: Pos, h: Pos, q0: Pos, nq: int) -> None:
        kb.load(q, [b, h, q0, Pos()], nq, d, qt)
        kb.add(tile.MatmulOp(qt, kt, scores, nq, sk, d, accumulate=False))
        _scale_and_cap(kb, scores, scale, softcap, nq, sk)
        if mask_view is not None and mask_tile is not None:
            kb.load(mask_view, [b, h, q0, Pos()], nq, sk, mask_tile)
            if minus_inf is not None:
                kb.add(tile.SelectOp(mask_tile, scores, minus_inf, scores, nq, sk))
            else:
                kb.add(tile.BinaryOp("add", scores, mask_tile, scores, nq, sk))
        if op.causal.value.data:
            diagonal = q0 + Pos(sk - sq)
            kb.add(tile.CausalMaskOp(scores, nq, sk, diagonal.const, diagonal.strides(kb.depth), window))
        _softmax_rows(kb, scores, stat, nq, sk)
        if separate_p:
            kb.add(tile.UnaryOp("copy", scores, probs, nq, sk))
        kb.add(tile.MatmulOp(probs, vt, acc, nq, dv, sk, accumulate=False))
        kb.store(acc, out, [b, h, q0, Pos()], nq, dv)

    def heads_of(b: Pos, hk: Pos) -> None:
        kb.load(k_t, [b, hk, Pos(), Pos()], d, sk, kt)
        kb.load(v, [b, hk, Pos(), Pos()], sk, dv, vt)
        kb.tiled_range(
            group, 1, lambda g, _n: kb.tiled_range(sq, tq, lambda q0, nq: query_tile(b, hk.scaled(group) + g, q0, nq))
        )

    kb.tiled_range(batch, 1, lambda b, _n: kb.tiled_range(kv_heads, 1, lambda hk, _m: heads_of(b, hk)))


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
    """
    for op in ops:
        if isinstance(op, tfm.ConcatOp):
            out = ctx.result_view(op.result)
            dim, start = op.dim.value.data, 0
            for value in op.inputs:
                size = tfm.shape_of(value)[dim]
                _place(ctx, value, out.slice(dim, start, start + size, 1))
                start += size


def _place(ctx: TileContext, value: SSAValue, dest: View | None) -> None:
    while dest is not None and value.has_one_use():
        owner = value.owner
        if isinstance(owner, tfm.ReshapeOp):
            value, dest = owner.input, dest.reshape(tfm.shape_of(owner.input))
        elif isinstance(owner, tfm.TransposeOp):
            inverse = sorted(range(len(owner.permutation)), key=lambda i: owner.permutation[i])
            value, dest = owner.input, dest.permute(inverse)
        else:
            if isinstance(owner, tfm.AttentionOp):
                ctx.placed[value] = dest
            return


def _same_elements(a: View, b: View) -> bool:
    """Whether two views address the same elements in the same order (strides of size-1 dims aside)."""
    if a.buffer is not b.buffer or a.offset != b.offset or a.shape != b.shape:
        return False
    return all(n == 1 or sa == sb for n, sa, sb in zip(a.shape, a.strides, b.strides, strict=True))


def copy_to_view(ctx: TileContext, loc: str, dest: View, source: tuple[View, Attribute]) -> None:
    """Copy a view (converting dtype) into an existing destination view."""
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
