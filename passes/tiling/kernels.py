"""Kernels: how each tfm op becomes SRAM tiles, DMA and engine ops in rolled loops.

Every kernel reads its operands through strided views of HBM, computes on
dense SRAM tiles (floats in f32 on the VPU, matrix operands in the MXU dtype)
and stores its result to a fresh HBM buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

from xdsl.dialects.builtin import f32, i1
from xdsl.ir import Attribute, SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.builder import DoesNotFitError, KernelBuilder, Pos, as_matrix_shape, fit_rows, fit_tile
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.dtypes import element_bytes
from tasic.passes.tiling.views import View

ROW_TILE_MAX = 256
COL_TILE_MAX = 2048
Emit = Callable[[KernelBuilder, list[SSAValue], SSAValue, int, int], SSAValue]


def elementwise(
    ctx: TileContext, loc: str, result: SSAValue, operands: list[tuple[View, Attribute]], emit: Emit
) -> None:
    """result = emit(operand tiles) tile by tile; operands broadcast to the result shape."""
    out = ctx.result_view(result)
    shape = as_matrix_shape(out.shape)
    out_view = out.broadcast_to(shape)
    inputs = [view.broadcast_to(shape) for view, _ in operands]
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


def copy_into(ctx: TileContext, loc: str, result: SSAValue, source: View) -> None:
    """Materialise a view (converting dtype) as a dense buffer for `result`."""
    operands = [(source, ctx.sram_type(result.type))]
    elementwise(ctx, loc, result, operands, lambda kb, tiles, dest, nr, nc: tiles[0])


def _matmul_tiles(ctx: TileContext, m: int, n: int, k: int, loc: str) -> tuple[int, int, int]:
    rows, cols = ctx.target.mxu.rows, ctx.target.mxu.cols
    eb = element_bytes(ctx.mxu_type)
    tm, tn, tk = min(m, 8 * rows), min(n, 8 * cols), min(k, 16 * max(rows, cols))

    def size(a: int, b: int, c: int) -> int:
        return a * c * eb + c * b * eb + a * b * 4 + b * 4

    while size(tm, tn, tk) > ctx.sram_budget:
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


def matmul_kernel(ctx: TileContext, loc: str, result: SSAValue, a: View, b: View, bias: View | None) -> None:
    """result[..., M, N] = a @ b (+ bias[N]), tiled M x N x K with fp32 accumulation."""
    out = ctx.result_view(result)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = out.shape[:-2]
    a_full = a.broadcast_to((*batch, m, k))
    b_full = b.broadcast_to((*batch, k, n))
    out_full = out
    if batch and all(s == 0 for s in b_full.strides[: len(batch)]):
        a_flat, out_flat = a_full.reshape((prod(batch) * m, k)), out.reshape((prod(batch) * m, n))
        if a_flat is not None and out_flat is not None:
            a_full, out_full, m, batch = a_flat, out_flat, prod(batch) * m, ()
            b_full = View(b.buffer, b.offset + 0, (k, n), b_full.strides[-2:])
    tm, tn, tk = _matmul_tiles(ctx, m, n, k, loc)
    kb = ctx.kernel(loc)
    lhs, rhs = kb.sram((tm, tk), ctx.mxu_type), kb.sram((tk, tn), ctx.mxu_type)
    acc = kb.sram((tm, tn), f32)
    bias_tile = kb.sram((1, tn), f32) if bias is not None else None
    bias_view = bias.broadcast_to((1, n)) if bias is not None else None

    def output_tile(bstarts: list[Pos], m0: Pos, nm: int, n0: Pos, nn: int) -> None:
        single_step = k <= tk
        if not single_step:
            kb.add(tile.FillOp(acc, 0.0, nm, nn))

        def k_step(k0: Pos, nk: int) -> None:
            kb.load(a_full, [*bstarts, m0, k0], nm, nk, lhs)
            kb.load(b_full, [*bstarts, k0, n0], nk, nn, rhs)
            kb.add(tile.MatmulOp(lhs, rhs, acc, nm, nn, nk, accumulate=not single_step))

        kb.tiled_range(k, tk, k_step)
        if bias_view is not None and bias_tile is not None:
            kb.load(bias_view, [Pos(), n0], 1, nn, bias_tile)
            kb.add(tile.BinaryOp("add", acc, bias_tile, acc, nm, nn, "col"))
        kb.store(acc, out_full, [*bstarts, m0, n0], nm, nn)

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


def matmul(ctx: TileContext, op: tfm.MatmulOp) -> None:
    """tfm.matmul -> tiled MXU kernel."""
    matmul_kernel(ctx, loc_of(op), op.result, ctx.view_of(op.lhs), ctx.view_of(op.rhs), None)


def linear(ctx: TileContext, op: tfm.LinearOp) -> None:
    """tfm.linear -> tiled MXU kernel; weights are stored pre-transposed [in, out]."""
    weight_owner = op.weight.owner
    if isinstance(weight_owner, tfm.WeightOp):
        w_t = ctx.weight(weight_owner.sym.data, tfm.shape_of(op.weight), tfm.element_type(op.weight), transpose=True)
    else:
        w_t = ctx.view_of(op.weight).permute([1, 0])
    bias = ctx.view_of(op.bias) if op.bias is not None else None
    matmul_kernel(ctx, loc_of(op), op.result, ctx.view_of(op.input), w_t, bias)


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
    """A kernel over whole rows (last dim in SRAM): emit(kb, x, scratch, params, stat, rows, C)."""
    out = ctx.result_view(result)
    shape = as_matrix_shape(out.shape)
    width = shape[-1]
    per_row = width * 4 * (1 + scratch_full) + 4
    fixed = width * 4 * len(params)
    rows = fit_rows(per_row, fixed, ctx.sram_budget, min(shape[-2], ROW_TILE_MAX), f"{loc} rows")
    kb = ctx.kernel(loc)
    x = kb.sram((rows, width), f32)
    scratch = [kb.sram((rows, width), f32) for _ in range(scratch_full)]
    stat = kb.sram((rows, 1), f32)
    param_tiles = [kb.sram((1, width), f32) for _ in params]
    for view, buf in zip(params, param_tiles, strict=True):
        kb.load(view.broadcast_to((1, width)), [Pos(), Pos()], 1, width, buf)
    src, dst = source.broadcast_to(shape), out.broadcast_to(shape)

    def body(starts: list[Pos], nr: int, nc: int) -> None:
        kb.load(src, starts, nr, nc, x)
        emit(kb, x, scratch, param_tiles, stat, nr, nc)
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


def attention(ctx: TileContext, op: tfm.AttentionOp) -> None:
    """Per (batch, kv head, query tile): S = QK^T*scale (+mask, causal), softmax, O = PV."""
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
        kb.add(tile.ScalarOp("mul", scores, scores, scale, nq, sk))
        if softcap is not None:
            kb.add(tile.ScalarOp("div", scores, scores, softcap, nq, sk))
            kb.add(tile.UnaryOp("tanh", scores, scores, nq, sk))
            kb.add(tile.ScalarOp("mul", scores, scores, softcap, nq, sk))
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


def concat(ctx: TileContext, op: tfm.ConcatOp) -> None:
    """Copy each input into its slice of the result."""
    out = ctx.result_view(op.result)
    dim = op.dim.value.data
    start = 0
    for value in op.inputs:
        size = tfm.shape_of(value)[dim]
        part = out.slice(dim, start, start + size, 1)
        operands = [(ctx.view_of(value), ctx.sram_type(op.result.type))]
        copy_to_view(ctx, loc_of(op), part, operands[0])
        start += size


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
