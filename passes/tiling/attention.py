"""Attention kernels: batched decode attention, flash attention (online softmax in key blocks) and
the plain form (whole score rows per query tile); see docs/seed.md. Decode and flash attention are
software-pipelined item by item (tiling/attention_pipeline.py); independent attention ops of one layer
(a prompt's prefill and each decode group) share one kernel (`attention_group`).

    %o = tfm.attention %q, %k, %v {causal = true, scale = 0.125} -> kernels of two query tiles (flash)
"""

from __future__ import annotations

from xdsl.dialects.builtin import f32, i1

from tasic.ir import tfm, tile
from tasic.passes.tiling.attention_pipeline import (
    FLASH_MAX_ITEMS,
    BlockTiles,
    FlashPlan,
    Item,
    UnitTiles,
    alternated,
    block_scores,
    decode_plan,
    decode_work,
    emit_pipelined,
    finish,
    flash_applies,
    flash_plan,
    interleaved,
    item_loc,
    load_queries,
    mask_scores,
    online_softmax,
    reset_statistics,
    scale_and_cap,
    sram_bytes,
)
from tasic.passes.tiling.builder import Pos, fit_rows
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.dtypes import element_bytes
from tasic.passes.tiling.kernels import ROW_TILE_MAX, loc_of, softmax_rows

ITEMS_PER_KERNEL = 2
"""Items (query tiles, chunks of decoding sequences) per kernel of a single attention op."""
FLASH_FRACTION = 0.35
"""SRAM share of the prefill items' tiles in a kernel shared with decode items (which share the rest)."""
GROUP_MAX_ITEMS = 128
"""Independent attention ops with more items than this keep a kernel each."""


def decode_attention(ctx: TileContext, op: tfm.AttentionOp) -> bool:
    """Few query rows per sequence (decode): batch sequences into one MXU instruction; False if not applicable.

    A GQA group's query heads are stacked into the rows of one tile ([group * Sq, D]), and up to
    DECODE_BATCH_MAX sequences go through each matmul together (`batch`), so the 256x256 arrays work on
    many sequences at once instead of one 8-row product at a time.
    """
    plan = decode_plan(ctx, op)
    if plan is None:
        return False
    items: list[Item] = list(plan.items())
    for first in range(0, len(items), ITEMS_PER_KERNEL):
        emit_pipelined(ctx, loc_of(op), items[first : first + ITEMS_PER_KERNEL])
    return True


def flash_attention(ctx: TileContext, op: tfm.AttentionOp) -> bool:
    """Long attention (prefill) as key blocks with an online softmax; False if not applicable.

    A GQA group's query heads are stacked into the rows of one tile ([group * tq, D]) so each matrix
    instruction keeps many arrays busy; per key block: S = Q K^T * scale (causal mask on blocks that
    cross the diagonal, `period` tq), m' = max(m, rowmax S), P = exp(S - m'), l = l e^(m - m') + rowsum P,
    O = O e^(m - m') + P V; blocks above the diagonal are skipped. O / l is stored at the end. Kernels of
    ITEMS_PER_KERNEL query tiles, pipelined; with very many key blocks, one kernel per query tile with
    its full blocks in a rolled loop.
    """
    plan = flash_plan(ctx, op)
    if plan is None:
        return False
    units = plan.units()
    if len(plan.items(units)) <= FLASH_MAX_ITEMS:
        for first in range(0, len(units), ITEMS_PER_KERNEL):
            emit_pipelined(ctx, loc_of(op), alternated(list(plan.items(units[first : first + ITEMS_PER_KERNEL]))))
        return True
    sq = plan.q.shape[2]
    for q0 in range(0, sq, plan.tq):
        _rolled_query_tile(ctx, plan, q0, min(plan.tq, sq - q0))
    return True


def _rolled_query_tile(ctx: TileContext, plan: FlashPlan, q0: int, nq: int) -> None:
    """One kernel for a query tile of every batch and KV head, full key blocks in a rolled loop."""
    mxu = ctx.mxu_type
    kern = ctx.kernel(loc_of(plan.op))
    rows, d, dv, kb, heads = plan.stacked, plan.d, plan.dv, plan.kb, plan.heads
    stats = (kern.sram(shape, f32) for shape in ((rows, dv), *[(rows, 1)] * 4))
    unit = UnitTiles(kern.sram((rows, d), mxu), *stats)
    block = BlockTiles(
        kern.sram((heads * d, kb), mxu),
        kern.sram((heads * kb, dv), mxu),
        kern.sram((rows, kb), f32),
        kern.sram((rows, kb), mxu),
    )
    full_blocks, masked = plan.blocks(q0, nq)

    def body(b: Pos, hk: Pos) -> None:
        load_queries(kern, plan, unit, b, hk, q0, nq)
        reset_statistics(kern, plan, unit)

        def key_block(k0: Pos, nk: int, diagonal: int | None) -> None:
            block_scores(kern, plan, unit, block, (b, hk, k0), nk)
            mask_scores(kern, plan, block, nk, diagonal)
            online_softmax(kern, plan, unit, block, nk)

        kern.tiled_range(full_blocks * kb, kb, lambda k0, nk: key_block(k0, nk, None))
        for k0, nk, diagonal in masked:
            key_block(Pos(k0), nk, diagonal)
        finish(kern, plan, unit, b, hk, q0, nq)

    batch, kv_heads = plan.q.shape[0], plan.k_t.shape[1]
    kern.tiled_range(batch, 1, lambda b, _n: kern.tiled_range(kv_heads, heads, lambda hk, _m: body(b, hk)))


def attention_group(ctx: TileContext, ops: list[tfm.AttentionOp]) -> bool:
    """Independent attention ops (a prompt's prefill, decode groups) as one pipelined kernel, decode
    items spread over the prefill's (tiling/attention_pipeline.py); False when one of them needs
    another form, or their items do not fit SRAM together (nothing is emitted then)."""
    if not (ctx.flash and ctx.decode_batch):
        return False
    decodes = [op for op in ops if not flash_applies(ctx, op)]
    mixed = 0 < len(decodes) < len(ops)  # prefill and decode items share the kernel's SRAM
    flash_budget = int(ctx.sram_budget * FLASH_FRACTION) if mixed else ctx.sram_budget
    decode_budget = ctx.sram_budget - flash_budget if mixed else ctx.sram_budget
    decode_plans = [decode_plan(ctx, op, decode_budget) for op in decodes]
    if None in decode_plans:
        return False
    # the prefill's tiling is chosen knowing the decode items' work in the same kernel
    shared = [decode_work(ctx, plan) for plan in decode_plans if plan is not None]
    shared_work = (sum(w[0] for w in shared), sum(w[1] for w in shared))
    flash_plans = [flash_plan(ctx, op, flash_budget, shared_work) for op in ops if op not in decodes]
    if None in flash_plans:
        return False
    prefill: list[Item] = [i for p in flash_plans if p is not None for i in p.items(p.units())]
    decode: list[Item] = [i for p in decode_plans if p is not None for i in p.items()]
    items = interleaved(prefill, decode) if prefill else decode
    budget = ctx.sram_budget
    if len(items) > GROUP_MAX_ITEMS or sram_bytes(items, element_bytes(ctx.mxu_type), budget) > budget:
        return False
    emit_pipelined(ctx, item_loc(items), items)
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
    out, out_scale = ctx.output_view(op.result), ctx.store_scales.get(op.result)
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
        scale_and_cap(kb, scores, scale, softcap, nq, sk)
        if mask_view is not None and mask_tile is not None:
            kb.load(mask_view, [b, h, q0, Pos()], nq, sk, mask_tile)
            if minus_inf is not None:
                kb.add(tile.SelectOp(mask_tile, scores, minus_inf, scores, nq, sk))
            else:
                kb.add(tile.BinaryOp("add", scores, mask_tile, scores, nq, sk))
        if op.causal.value.data:
            diagonal = q0 + Pos(sk - sq)
            kb.add(tile.CausalMaskOp(scores, nq, sk, diagonal.const, diagonal.strides(kb.depth), window))
        softmax_rows(kb, scores, stat, nq, sk)
        if separate_p:
            kb.add(tile.UnaryOp("copy", scores, probs, nq, sk))
        kb.add(tile.MatmulOp(probs, vt, acc, nq, dv, sk, accumulate=False))
        if out_scale is not None:  # stored quantised (kernels.place_concat_inputs)
            kb.add(tile.ScalarOp("div", acc, acc, out_scale, nq, dv))
        kb.store(acc, out, [b, h, q0, Pos()], nq, dv)

    def heads_of(b: Pos, hk: Pos) -> None:
        kb.load(k_t, [b, hk, Pos(), Pos()], d, sk, kt)
        kb.load(v, [b, hk, Pos(), Pos()], sk, dv, vt)
        kb.tiled_range(
            group, 1, lambda g, _n: kb.tiled_range(sq, tq, lambda q0, nq: query_tile(b, hk.scaled(group) + g, q0, nq))
        )

    kb.tiled_range(batch, 1, lambda b, _n: kb.tiled_range(kv_heads, 1, lambda hk, _m: heads_of(b, hk)))
