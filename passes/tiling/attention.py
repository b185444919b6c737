"""Attention kernels: batched decode attention, flash attention (online softmax in key blocks) and
the plain form (whole score rows per query tile); see docs/seed.md.

    %o = tfm.attention %q, %k, %v {causal = true, scale = 0.125} -> one kernel per query tile (flash)
"""

from __future__ import annotations

from xdsl.dialects.builtin import f32, i1
from xdsl.ir import SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.builder import KernelBuilder, Pos, fit_rows
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.dtypes import element_bytes
from tasic.passes.tiling.kernels import ROW_TILE_MAX, loc_of, softmax_rows
from tasic.passes.tiling.views import View


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
        softmax_rows(kb, scores, stat, n * rows, sk)
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
        softmax_rows(kb, scores, stat, nq, sk)
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
