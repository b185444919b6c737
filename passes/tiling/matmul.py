"""Matrix kernels: tfm.matmul and tfm.linear as tiled MXU products with fp32 accumulation, their fused
epilogues (tiling/epilogue.py), the gated gate/up kernel and the all-reduce of row-parallel products
in whole-row chunks (with the rms_norm that follows).

    %y = tfm.linear %x, %w -> tile.loop { dma_load x tile; matmul x tile, w tile, acc; epilogue; dma_store }
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

from xdsl.dialects.builtin import f32
from xdsl.ir import Attribute, SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.builder import DoesNotFitError, KernelBuilder, Pos
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.cost import best_matmul_tiles, matmul_tile_bytes, tile_set_bytes
from tasic.passes.tiling.dtypes import dtype_name, element_bytes
from tasic.passes.tiling.epilogue import (
    EpilogueStep,
    GatedEpilogue,
    Scratch,
    collect,
    collect_gated,
    load_operands,
    loads_ahead,
    reduces,
    scratch_tiles,
    scratch_tiles_needed,
)
from tasic.passes.tiling.epilogue import apply as apply_epilogue
from tasic.passes.tiling.kernels import ALL_REDUCE_CHUNKS, following_rms_norm, loc_of, rms_norm_epilogue
from tasic.passes.tiling.rope_epilogue import find_rope
from tasic.passes.tiling.views import View


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
    (`parts` instructions side by side per output tile). With several output tiles the `output_tiles`
    f32 tiles count twice, so that double-buffer can give the next output tile its own accumulator
    while this one's epilogue runs on the vector engine."""
    eb = element_bytes(mxu or ctx.mxu_type)
    rate = ctx.target.mxu.rate.get(dtype_name(mxu or ctx.mxu_type), 1.0)
    if ctx.cost_model:
        best = best_matmul_tiles(ctx.target, m, n, k, eb, rate, ctx.sram_budget, output_tiles, parts)
        if best is not None:
            return best
    output_tiles *= 2
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


def _full_width_tiles(
    ctx: TileContext, m: int, n: int, k: int, mxu: Attribute, output_tiles: int, reserved: int
) -> tuple[int, int, int] | None:
    """The cost model's tiles whose output tiles span all n columns in the SRAM `reserved` bytes leave,
    or None (they do not fit, or the cost model is off)."""
    if not ctx.cost_model:
        return None
    rate = ctx.target.mxu.rate.get(dtype_name(mxu), 1.0)
    budget = ctx.sram_budget - reserved
    return best_matmul_tiles(ctx.target, m, n, k, element_bytes(mxu), rate, budget, output_tiles, full_width=True)


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
    if not reduces(steps) and not batch and following_rms_norm(ctx, final) is not None:
        chunked = _norm_chunks(ctx, m, n, k, element_bytes(mxu), output_tiles + 1)
    rope = find_rope(ctx, final, (m, n)) if not batch and chunked is None and not reduces(steps) else None
    full_width = _full_width_tiles(ctx, m, n, k, mxu, output_tiles, rope.table_bytes(m)) if rope else None
    rope = rope if full_width is not None else None  # every tile must hold the rotated columns
    tm, tn, tk = chunked or full_width or _matmul_tiles(ctx, m, n, k, loc, mxu, output_tiles)
    norm = following_rms_norm(ctx, final) if chunked and tn == n else None
    # one output tile (down_proj, then the next layer's input norm): the norm runs on it once it is
    # stored, in place, when its row statistics and weight row still fit
    in_place = norm is None and rope is None and not reduces(steps) and not batch and (tm, tn) == (m, n)
    stats = (m + n) * 4  # the norm's row statistics and weight row
    if in_place and tile_set_bytes(m, n, k, (tm, tn, tk), element_bytes(mxu), output_tiles) + stats <= ctx.sram_budget:
        norm = following_rms_norm(ctx, final)
    # one output tile with a K loop (down_proj): its rows in two parts that share each K step's rhs, so the
    # first part's epilogue (and its consumer's first row tile) runs while the arrays finish the second;
    # the epilogue's operands load before the K loop, so the next kernel's loads follow the last K step's
    parts = _row_parts(ctx, m) if (tm, tn) == (m, n) and k > tk and not batch and rope is None else [tm]
    single = len(parts) > 1 and loads_ahead(steps)
    parts = parts if single else [tm]
    kb = ctx.kernel(loc)
    lhs_parts, rhs = [kb.sram((rows, tk), mxu) for rows in parts], kb.sram((tk, tn), mxu)
    accs = [kb.sram((rows, tn), f32) for rows in parts]
    scratches = [scratch_tiles(kb, steps, rows, tn) for rows in parts]  # parts do not wait for each other's
    link = kb.sram((tm, tn), ctx.storage_type(result.type)) if reduces(steps) else None
    bias_tile = kb.sram((1, tn), f32) if bias is not None else None
    bias_view = bias.broadcast_to((1, n)) if bias is not None else None
    emit_norm = rms_norm_epilogue(ctx, kb, norm, (m, n), tm, in_place) if norm is not None else None
    emit_rope = rope.emitter(ctx, kb, out_full, tm) if rope is not None else None

    # one column tile and one K step of a shared rhs (a weight): every row tile multiplies the same rhs tile
    rhs_once = not batch and tn >= n and tk >= k and m > tm
    if rhs_once:
        kb.load(b_full, [Pos(), Pos()], k, n, rhs)
    lhs_once = not batch and tm >= m and tk >= k and n > tn  # likewise one row tile and K step of lhs
    if lhs_once:
        kb.load(a_full, [Pos(), Pos()], m, k, lhs_parts[0])

    # the first K step loads into tiles of its own: the loop's loads then alternate between two copies
    # (double-buffer) without waiting for it, and the next output tile's first step runs ahead
    first_lhs_parts, first_rhs = lhs_parts, rhs
    if k > tk:
        first_lhs_parts, first_rhs = [kb.sram((rows, tk), mxu) for rows in parts], kb.sram((tk, tn), mxu)

    def output_tile(bstarts: list[Pos], m0: Pos, nm: int, n0: Pos, nn: int) -> None:
        rows = parts if len(parts) > 1 else [nm]
        starts = [m0 + Pos(sum(rows[:i])) for i in range(len(rows))]

        def k_step(k0: Pos, nk: int, accumulate: bool) -> None:
            xs, w = (lhs_parts, rhs) if accumulate else (first_lhs_parts, first_rhs)  # one K step when loaded once
            # the rhs (a linear's weight) first: it needs nothing from the previous kernel, so on the
            # in-order DMA engine it streams in while the activation's load still waits for its producer
            if not rhs_once:
                kb.load(b_full, [*bstarts, k0, n0], nk, nn, w)
            for x, acc, r0, nr in zip(xs, accs, starts, rows, strict=True):
                if not lhs_once:
                    kb.load(a_full, [*bstarts, r0, k0], nr, nk, x)
                kb.add(tile.MatmulOp(x, w, acc, nr, nn, nk, accumulate=accumulate))
            if single and not accumulate:
                for scratch, r0, nr in zip(scratches, starts, rows, strict=True):
                    load_operands(kb, steps, scratch, [r0, n0], nr, nn)

        k_steps(kb, k, tk, k_step, peel_last=single)
        for acc, scratch, r0, nr in zip(accs, scratches, starts, rows, strict=True):
            if bias_view is not None and bias_tile is not None:
                kb.load(bias_view, [Pos(), n0], 1, nn, bias_tile)
                kb.add(tile.BinaryOp("add", acc, bias_tile, acc, nr, nn, "col"))
            apply_epilogue(kb, steps, acc, scratch, [r0, n0], nr, nn, link, loaded=single)
            if emit_rope is not None:
                emit_rope(acc, r0, nr, nn)
            kb.store(acc, out_full, [*bstarts, r0, n0], nr, nn)
            if emit_norm is not None:
                emit_norm(acc, [r0, n0], nr, nn)

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
    # the up half's shared steps get rows of their own: reusing the gate's would make the next row's load
    # wait for the gate's epilogue, and every load queued behind it (the next tile's operands) with it
    scratch_up = Scratch(scratch.tile, kb.sram((1, tn), f32) if scratch.row is not None else None)
    up = Pos(width)
    lhs_once = tm >= m and tk >= k and width > tn  # one row tile and K step: every column tile shares it
    if lhs_once:
        kb.load(a, [Pos(), Pos()], m, k, lhs)
    rhs_once = tn >= width and tk >= k and m > tm  # one column tile and K step: every row tile shares it
    if rhs_once:
        kb.load(b, [Pos(), Pos()], k, width, rhs_gate)
        kb.load(b, [Pos(), up], k, width, rhs_up)

    firsts = (lhs, rhs_gate, rhs_up)
    if k > tk:  # the first K step loads into tiles of its own (see matmul_kernel)
        firsts = (kb.sram((tm, tk), mxu), kb.sram((tk, tn), mxu), kb.sram((tk, tn), mxu))

    def output_tile(m0: Pos, nm: int, n0: Pos, nn: int) -> None:
        def k_step(k0: Pos, nk: int, accumulate: bool) -> None:
            x, gate, upw = (lhs, rhs_gate, rhs_up) if accumulate else firsts  # one K step when loaded once
            if not rhs_once:  # weights first (see matmul_kernel)
                kb.load(b, [k0, n0], nk, nn, gate)
                kb.load(b, [k0, n0 + up], nk, nn, upw)
            if not lhs_once:
                kb.load(a, [m0, k0], nm, nk, x)
            kb.add(tile.MatmulOp(x, gate, acc_gate, nm, nn, nk, accumulate=accumulate))
            kb.add(tile.MatmulOp(x, upw, acc_up, nm, nn, nk, accumulate=accumulate))

        k_steps(kb, k, tk, k_step)
        apply_epilogue(kb, shared, acc_gate, scratch, [m0, n0], nm, nn)
        apply_epilogue(kb, shared, acc_up, scratch_up, [m0, n0 + up], nm, nn)
        apply_epilogue(kb, gated.gate, acc_gate, scratch, [m0, n0], nm, nn)
        kb.add(tile.BinaryOp("mul", acc_gate, acc_up, acc_gate, nm, nn))
        apply_epilogue(kb, gated.after, acc_gate, scratch, [m0, n0], nm, nn)
        kb.store(acc_gate, out, [m0, n0], nm, nn)

    kb.tiled_range(m, tm, lambda m0, nm: kb.tiled_range(width, tn, lambda n0, nn: output_tile(m0, nm, n0, nn)))


def _row_parts(ctx: TileContext, m: int) -> list[int]:
    """Rows of a single output tile in two parts, the first a multiple of the arrays' rows (about half, so
    no row fold is added), or the tile whole when it has fewer than two folds of rows."""
    unit = ctx.target.mxu.rows
    first = m // 2 // unit * unit
    return [first, m - first] if first else [m]


def k_steps(
    kb: KernelBuilder, k: int, tk: int, step: Callable[[Pos, int, bool], None], peel_last: bool = False
) -> None:
    """step(k0, nk, accumulate) over K in steps of tk: the first overwrites the accumulator (no fill on
    the vector engine, so the next output tile's products need not wait behind an epilogue there). With
    `peel_last` the last step is outside the loop too, so what follows waits for its ops only."""
    step(Pos(), min(tk, k), False)
    if k <= tk:
        return
    last = ((k - tk) % tk or tk) if peel_last else 0
    kb.tiled_range(k - tk - last, tk, lambda k0, nk: step(k0, nk, True), base=Pos(tk))
    if last:
        step(Pos(k - last), last, True)


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


def _norm_chunks(ctx: TileContext, m: int, n: int, k: int, eb: int, output_tiles: int) -> tuple[int, int, int] | None:
    """Tiles for a matmul whose output an rms_norm reads (o_proj, then post_attention_layernorm): chunks
    of whole rows as for an all-reduce, so the norm runs on each chunk in the kernel while the matrix
    engines compute the next; only when the weight is loaded once (a whole K step) and there are
    several chunks, else None (separate kernels)."""
    chunked = _all_reduce_chunks(ctx, m, n, k, eb, output_tiles)
    return chunked if chunked is not None and chunked[2] >= k and chunked[0] < m else None


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
