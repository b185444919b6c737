"""Software-pipelined attention kernels: a list of items, each issuing its scores one item ahead.

An item is one key block of a prefill query tile (flash attention, online softmax) or one chunk of
decoding sequences of one KV head (batched decode attention). Each has four phases:

    S: its keys, values (and first in a query tile its queries) in; S = Q K^T, scaled, masked
    R: the softmax's vector work (row max, exp in the MXU dtype, row sums, rescaling)
    P: O (+)= P V on the matrix engine
    F: when the item ends its query tile (or chunk): O / row sums, stored

A kernel emits, for i = 0, 1, ...: R(i-1), S(i), P(i-2), F(i-3). The in-order engines then
overlap: while the vector engine works on softmax i-1, the matrix engine computes scores i and
P V of item i-2, whose softmax is done, so neither waits for the other's current item; the DMA
loads the next item while this one computes. (P(i-1) comes in step i instead when item i continues
item i-1's query tile: R(i) rescales the output P(i-1) adds to.) Scores, keys, probabilities and
decode queries take two tile sets, values and decode results three, query tiles four.

Prefill and decode items of independent attention ops can share one kernel (`interleaved`): the
vector-bound prefill items and the DMA-bound decode items then overlap without a kernel boundary
between them::

    tfm.attention (prefill, causal) + tfm.attention (decode group) -> one tile.kernel "...:prefill+decode0"
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import TypeVar

from xdsl.dialects.builtin import f32
from xdsl.ir import Attribute, SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.builder import KernelBuilder, Pos
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.cycles import matmul_cycles, vector_cycles
from tasic.passes.tiling.dtypes import dtype_name, element_bytes
from tasic.passes.tiling.kernels import ROW_TILE_MAX, loc_of
from tasic.passes.tiling.views import View

FLASH_ROWS = 4096
"""Stacked query rows (GQA heads x queries) per flash-attention tile: 16 row folds of a 256-row array."""
FLASH_KEYS = 2048
"""Keys per flash-attention block (fewer when SRAM is short)."""
FLASH_KEY_ALIGN = 256
"""Keys every query of a tile sees form their own unmasked block in multiples of this (the array's width)."""
FLASH_MIN_KEYS = 64
"""Shorter attention takes whole score rows at once."""
FLASH_MAX_ITEMS = 256
"""More key blocks than this (in all query tiles) are not emitted one by one (attention.py rolls them)."""
DECODE_BATCH_MAX = 64
"""Most sequences one batched decode-attention matmul takes."""
UNIT_SETS = 4
"""Query-tile tile sets: one being filled, one in its softmax, one in P V, one finishing."""
VALUE_SETS = 3
"""Value tile sets (and decode result sets): loaded in S, read two steps later by P (or F)."""
DECODE_ONLY_VALUE_SETS = 5
"""Value tile sets of a kernel of decode items alone (when SRAM allows): their loads bound it, and with
two more sets they run further ahead of the products (measured on Llama-3-70B's last layer, whose
prompt attends with one query: 325k -> 169k cycles). Beside prefill items three measured better."""

T = TypeVar("T")


def scale_and_cap(
    kb: KernelBuilder, scores: SSAValue, scale: float, softcap: float | None, rows: int, cols: int
) -> None:
    """scores *= scale (none when 1: fold-attention-scale moved it into the queries), then
    softcap * tanh(scores / softcap) when the model caps its logits."""
    if scale != 1.0:
        kb.add(tile.ScalarOp("mul", scores, scores, scale, rows, cols))
    if softcap is not None:
        kb.add(tile.ScalarOp("div", scores, scores, softcap, rows, cols))
        kb.add(tile.UnaryOp("tanh", scores, scores, rows, cols))
        kb.add(tile.ScalarOp("mul", scores, scores, softcap, rows, cols))


def _softcap(op: tfm.AttentionOp) -> float | None:
    return op.softcap.value.data if op.softcap is not None else None


@dataclass(frozen=True)
class FlashPlan:
    """How one prefill attention op is tiled: query tiles of `tq` queries (`rows` stacked GQA rows per
    KV head), key blocks of `kb` keys, `heads` KV heads per item: each matrix instruction is `heads`
    products (`batch`), and the vector engine works on their `stacked` rows at once."""

    op: tfm.AttentionOp
    q: View
    k_t: View
    v: View
    out: View
    rows: int
    d: int
    dv: int
    kb: int
    tq: int
    group: int
    out_scale: float | None = None  # the result is stored quantised by it (kernels.place_concat_inputs)
    heads: int = 1

    @property
    def stacked(self) -> int:
        """Rows of an item's score tile: `rows` for each of its KV heads."""
        return self.heads * self.rows

    def blocks(self, q0: int, nq: int) -> tuple[int, list[tuple[int, int, int | None]]]:
        """Full blocks of kb keys (every row sees every key) and the (start, keys, diagonal) blocks after
        them: the rest of the keys every row sees, then those only some rows see (masked, in blocks of
        at most kb); so only the blocks that cross the diagonal pay for the mask."""
        sq, sk = self.q.shape[2], self.k_t.shape[3]
        offset = sk - sq  # query i sees keys j <= i + offset
        causal = self.op.causal.value.data
        last = min(sk, q0 + nq + offset) if causal else sk  # keys any row of the tile sees
        unmasked = max(0, min(last, q0 + 1 + offset)) if causal else sk  # keys every row sees
        full_blocks = unmasked // self.kb
        seen = unmasked // FLASH_KEY_ALIGN * FLASH_KEY_ALIGN if causal else unmasked
        rest = [(k0, min(self.kb, seen - k0), None) for k0 in range(full_blocks * self.kb, seen, self.kb)]
        masked = [
            (k0, min(self.kb, last - k0), q0 + offset - k0 if causal else None)
            for k0 in range(max(seen, full_blocks * self.kb), last, self.kb)
        ]
        return full_blocks, rest + masked

    def largest_block(self) -> int:
        """Keys in the longest block any query tile uses: the tile sets need no more (a causal prompt of
        2048 queries in tiles of 512 uses blocks of at most 1536 keys, those before the last tile)."""
        sq = self.q.shape[2]
        blocks = [self.blocks(q0, min(self.tq, sq - q0)) for q0 in range(0, sq, self.tq)]
        return max(self.kb if full else max((keys for _, keys, _ in rest), default=1) for full, rest in blocks)

    def block_kinds(self) -> Counter[tuple[int, bool, bool, bool]]:
        """How many items of each (keys, masked, first of its tile, last of its tile) `items` gives, counted
        per query tile (every batch and KV head item of a tile has the same blocks)."""
        batch, _, sq, _ = self.q.shape
        per_tile = batch * (self.k_t.shape[1] // self.heads)
        kinds: Counter[tuple[int, bool, bool, bool]] = Counter()
        for q0 in range(0, sq, self.tq):
            full_blocks, rest = self.blocks(q0, min(self.tq, sq - q0))
            blocks = [(self.kb, False)] * full_blocks + [(keys, diagonal is not None) for _, keys, diagonal in rest]
            for i, (keys, masked) in enumerate(blocks):
                kinds[keys, masked, i == 0, i == len(blocks) - 1] += per_tile
        return kinds

    def units(self) -> list[tuple[int, int, int]]:
        """(batch, first query, KV head) of every query tile."""
        batch, _, sq, _ = self.q.shape
        kv_heads = self.k_t.shape[1]
        return [
            (b, q0, hk) for q0 in range(0, sq, self.tq) for b in range(batch) for hk in range(0, kv_heads, self.heads)
        ]

    def items(self, units: list[tuple[int, int, int]]) -> list[FlashItem]:
        """Every key block of the given query tiles, in order."""
        items = []
        sq = self.q.shape[2]
        for b, q0, hk in units:
            nq = min(self.tq, sq - q0)
            full_blocks, masked = self.blocks(q0, nq)
            blocks = [(k0, self.kb, None) for k0 in range(0, full_blocks * self.kb, self.kb)] + masked
            items += [
                FlashItem(self, b, q0, nq, hk, k0, nk, diagonal, i == 0, i == len(blocks) - 1)
                for i, (k0, nk, diagonal) in enumerate(blocks)
            ]
        return items

    def unit_bytes(self, mxu_bytes: int) -> int:
        """SRAM bytes of one query tile's tiles."""
        return self.stacked * (self.d * mxu_bytes + self.dv * 4 + 5 * 4)

    def block_bytes(self, mxu_bytes: int) -> int:
        """SRAM bytes of one key block's keys, scores and probabilities (two sets)."""
        return self.stacked * self.kb * (4 + mxu_bytes) + self.heads * self.kb * self.d * mxu_bytes

    def value_bytes(self, mxu_bytes: int) -> int:
        """SRAM bytes of one key block's values (VALUE_SETS sets)."""
        return self.heads * self.kb * self.dv * mxu_bytes

    def pipelined_bytes(self, mxu_bytes: int) -> int:
        """SRAM bytes of the pipelined kernel's flash tile sets (`emit_pipelined`)."""
        blocks = 2 * self.block_bytes(mxu_bytes) + VALUE_SETS * self.value_bytes(mxu_bytes)
        return UNIT_SETS * self.unit_bytes(mxu_bytes) + blocks


def flash_applies(ctx: TileContext, op: tfm.AttentionOp) -> bool:
    """Whether `op` is a long attention (prefill) that flash tiling handles: no mask or window, more
    than FLASH_MIN_KEYS keys, more than one query."""
    sk, sq = tfm.shape_of(op.key)[2], tfm.shape_of(op.query)[2]
    return op.mask is None and op.window is None and sk > FLASH_MIN_KEYS and sq > 1


def flash_plan(
    ctx: TileContext, op: tfm.AttentionOp, budget: int | None = None, shared: Work = (0.0, 0.0)
) -> FlashPlan | None:
    """The flash tiling of a long attention (prefill) whose pipelined tile sets fit `budget` bytes of
    SRAM (all the kernel may use by default), or None. Of the query tiles (FLASH_ROWS stacked rows per
    KV head, halved while a product keeps a whole row fold of the arrays), key blocks (FLASH_KEYS,
    halved) and KV heads per item (divisors of the KV heads), the one whose kernel `flash_work`
    estimates fastest when it also carries `shared` work (decode items in the same kernel); the least
    SRAM among equals."""
    if not flash_applies(ctx, op):
        return None
    budget = budget or ctx.sram_budget
    q, k, v = ctx.view_of(op.query), ctx.view_of(op.key), ctx.view_of(op.value)
    _, heads, sq, d = q.shape
    kv_heads, sk, dv = k.shape[1], k.shape[2], v.shape[3]
    group = heads // kv_heads
    out, scale = ctx.output_view(op.result), ctx.store_scales.get(op.result)
    plan = FlashPlan(op, q, k.permute([0, 1, 3, 2]), v, out, group * sq, d, dv, sk, sq, group, scale)
    key = (q.shape, k.shape, v.shape, op.causal.value.data, budget, shared)
    if key not in ctx.flash_choices:  # the layers of a model have the same attention: searched once
        ctx.flash_choices[key] = _best_flash(ctx, plan, budget, shared)
    choice = ctx.flash_choices[key]
    return replace(plan, rows=group * choice[0], tq=choice[0], kb=choice[1], heads=choice[2]) if choice else None


def _best_flash(ctx: TileContext, plan: FlashPlan, budget: int, shared: Work) -> tuple[int, int, int] | None:
    """(tq, kb, heads) of the fastest candidate that fits `budget` (see `flash_plan`), or None: key blocks
    of at least FLASH_KEY_ALIGN keys when any fits, else down to 16."""
    eb = element_bytes(ctx.mxu_type)
    _, _, sq, _ = plan.q.shape
    kv_heads, sk = plan.k_t.shape[1], plan.k_t.shape[3]
    query_tiles = _halvings(min(sq, max(1, FLASH_ROWS // plan.group)), -(-ctx.target.mxu.rows // plan.group))
    for least_keys in (min(sk, FLASH_KEY_ALIGN), 16):
        best: tuple[tuple[float, int], tuple[int, int, int]] | None = None
        for tq in query_tiles:
            for kb in _halvings(min(sk, FLASH_KEYS), least_keys):
                for heads in (n for n in range(1, kv_heads + 1) if kv_heads % n == 0):
                    candidate = replace(plan, rows=plan.group * tq, tq=tq, kb=kb, heads=heads)
                    candidate = replace(candidate, kb=candidate.largest_block())
                    size = candidate.pipelined_bytes(eb)
                    if size > budget:
                        continue
                    score = (pipelined_cycles([flash_work(ctx, candidate), shared]), size)
                    if best is None or score < best[0]:
                        best = (score, (tq, candidate.kb, heads))
        if best is not None:
            return best[1]
    return None


def _halvings(start: int, least: int = 1) -> list[int]:
    """start, start / 2, ... while at least `least` (`start` itself in any case)."""
    values = [start]
    while values[-1] // 2 >= max(1, least):
        values.append(values[-1] // 2)
    return values


Work = tuple[float, float]
"""Estimated (matrix engine, vector engine) cycles of a kernel's items."""


def pipelined_cycles(works: list[Work]) -> float:
    """Estimated cycles of a pipelined kernel of items with these works: the busier engine."""
    return max(sum(w[0] for w in works), sum(w[1] for w in works))


def flash_work(ctx: TileContext, plan: FlashPlan) -> Work:
    """Estimated cycles of the plan's items on the matrix engines (scores and P V, with their fill and
    drain) and on the vector engine (score scaling and capping, row maxima, exponentials, masks, the
    online statistics, the final division), plus one item's work of each for the pipeline to fill and
    drain and an HBM latency per item (an item's keys and values arrive about one item ahead: measured,
    small query tiles lose more to that than their smaller diagonal blocks save)."""
    target, rate = ctx.target, ctx.target.mxu.rate.get(dtype_name(ctx.mxu_type), 1.0)
    rows, stacked, d, dv, heads = plan.rows, plan.stacked, plan.d, plan.dv, plan.heads
    kinds = plan.block_kinds()
    matrix = vector = 0.0
    for (nk, masked, first, last), count in kinds.items():
        matrix += count * (
            matmul_cycles(target, rows, nk, d, rate, heads) + matmul_cycles(target, rows, dv, nk, rate, heads)
        )
        scores = vector_cycles(target, stacked, nk)
        work = vector_cycles(target, stacked, nk, "reduce") + vector_cycles(target, stacked, nk, "transcendental")
        if plan.op.scale.value.data != 1.0:
            work += scores
        if plan.op.softcap is not None:  # / cap, tanh, * cap
            work += 2 * scores + vector_cycles(target, stacked, nk, "transcendental")
        if masked:
            work += scores
        if not first:  # the running statistics and the output's rescaling
            work += 6 * vector_cycles(target, stacked, 1) + vector_cycles(target, stacked, dv)
        if last:
            work += 3 * vector_cycles(target, stacked, dv)
        vector += count * work
    items = sum(kinds.values())
    ramp = (matrix + vector) / max(1, items) + items * target.hbm.latency
    return matrix + ramp, vector + ramp


def decode_work(ctx: TileContext, plan: DecodePlan) -> Work:
    """Estimated cycles of a decode plan's items on the matrix and vector engines (as `flash_work`)."""
    target, rate = ctx.target, ctx.target.mxu.rate.get(dtype_name(ctx.mxu_type), 1.0)
    matrix = vector = 0.0
    for item in plan.items():
        rows = item.n * plan.rows
        matrix += matmul_cycles(target, plan.rows, plan.sk, plan.d, rate, item.n)
        matrix += matmul_cycles(target, plan.rows, plan.dv, plan.sk, rate, item.n)
        vector += vector_cycles(target, rows, plan.sk, "reduce") + vector_cycles(
            target, rows, plan.sk, "transcendental"
        )
        vector += 3 * vector_cycles(target, rows, plan.dv)
    return matrix, vector


@dataclass(frozen=True)
class FlashItem:
    """One key block of one query tile."""

    plan: FlashPlan
    b: int
    q0: int
    nq: int
    hk: int
    k0: int
    nk: int
    diagonal: int | None
    first: bool  # the tile's first block: load its queries, reset its statistics
    last: bool  # the tile's last block: divide and store

    @property
    def vector_work(self) -> int:
        """Score elements the vector engine processes."""
        return self.plan.stacked * self.nk


@dataclass(frozen=True)
class DecodePlan:
    """How one decode attention op is tiled: `nb` sequences of a KV head per item, a GQA group's query
    heads stacked as the `rows` of each sequence's tile."""

    op: tfm.AttentionOp
    q_rows: View
    k_t: View
    v: View
    out_rows: View
    rows: int
    d: int
    sk: int
    dv: int
    nb: int
    out_scale: float | None = None  # as FlashPlan.out_scale

    def items(self) -> list[DecodeItem]:
        """Chunks of `nb` sequences of every KV head."""
        batch, kv_heads = self.q_rows.shape[:2]
        return [
            DecodeItem(self, hk, b0, min(self.nb, batch - b0))
            for hk in range(kv_heads)
            for b0 in range(0, batch, self.nb)
        ]

    def result_bytes(self) -> int:
        """SRAM bytes of one sequence's output accumulator and row sums."""
        return self.rows * (self.dv + 1) * 4

    def sequence_bytes(self, mxu_bytes: int) -> int:
        """SRAM bytes one sequence of an item takes in all its tile sets (`emit_pipelined`)."""
        rows, d, sk, dv = self.rows, self.d, self.sk, self.dv
        scores = rows * d * mxu_bytes + d * sk * mxu_bytes + rows * sk * (4 + mxu_bytes)
        return 2 * scores + VALUE_SETS * (sk * dv * mxu_bytes + self.result_bytes())


def _stacked_heads(view: View, batch: int, kv_heads: int, group: int) -> View | None:
    """q [B, H, S, D] as [B, Hkv, group*S, D] (a GQA group's query rows stacked), if strides allow."""
    _, _, s, d = view.shape
    return view.reshape((batch, kv_heads, group * s, d))


def decode_plan(ctx: TileContext, op: tfm.AttentionOp, budget: int | None = None) -> DecodePlan | None:
    """The batched tiling of a decode attention (few query rows per sequence, many sequences) within
    `budget` bytes of SRAM (all the kernel may use by default), or None."""
    budget = budget or ctx.sram_budget
    q, k, v = ctx.view_of(op.query), ctx.view_of(op.key), ctx.view_of(op.value)
    batch, heads, sq, d = q.shape
    kv_heads, sk, dv = k.shape[1], k.shape[2], v.shape[3]
    group = heads // kv_heads
    rows = group * sq
    causal_is_free = not op.causal.value.data or sq == 1
    if op.mask is not None or op.window is not None or not causal_is_free or rows > ROW_TILE_MAX:
        return None
    q_rows = _stacked_heads(q, batch, kv_heads, group)
    if q_rows is None:
        return None
    plan = DecodePlan(op, q_rows, k.permute([0, 1, 3, 2]), v, q_rows, rows, d, sk, dv, 1)
    per_sequence = plan.sequence_bytes(element_bytes(ctx.mxu_type))
    nb = min(batch, DECODE_BATCH_MAX, max(1, budget // per_sequence))
    if nb * per_sequence > budget:
        return None
    out_rows = _stacked_heads(ctx.output_view(op.result), batch, kv_heads, group)
    assert out_rows is not None, "a fresh result buffer is dense"
    return DecodePlan(op, q_rows, plan.k_t, v, out_rows, rows, d, sk, dv, nb, ctx.store_scales.get(op.result))


@dataclass(frozen=True)
class DecodeItem:
    """`n` sequences from `b0` of KV head `hk`."""

    plan: DecodePlan
    hk: int
    b0: int
    n: int

    @property
    def vector_work(self) -> int:
        """Score elements the vector engine processes."""
        return self.n * self.plan.rows * self.plan.sk


Item = FlashItem | DecodeItem


@dataclass(frozen=True)
class UnitTiles:
    """A query tile's tiles: queries, output accumulator and row statistics."""

    qt: SSAValue
    acc: SSAValue
    m: SSAValue
    m_new: SSAValue
    denom: SSAValue
    stat: SSAValue


@dataclass(frozen=True)
class BlockTiles:
    """A key block's tiles (or a decode item's): keys (transposed), values, scores, probabilities."""

    kt: SSAValue
    vt: SSAValue
    scores: SSAValue
    probs: SSAValue


@dataclass(frozen=True)
class _DecodeTiles:
    """A decode item's tiles."""

    qt: SSAValue
    block: BlockTiles
    acc: SSAValue
    stat: SSAValue


def sram_bytes(items: list[Item], mxu_bytes: int, budget: int | None = None) -> int:
    """SRAM the pipelined kernel of `items` needs: its tile sets (`emit_pipelined`, which makes the decode
    value sets `decode_value_sets` of the `budget`), each as large as the largest item's of its kind."""
    flash = [item.plan for item in items if isinstance(item, FlashItem)]
    decode = [item.plan for item in items if isinstance(item, DecodeItem)]
    total = UNIT_SETS * max((p.unit_bytes(mxu_bytes) for p in flash), default=0)
    total += 2 * max((p.block_bytes(mxu_bytes) for p in flash), default=0)
    total += VALUE_SETS * max((p.value_bytes(mxu_bytes) for p in flash), default=0)
    if not decode:
        return total
    return total + _decode_sets_bytes(decode, mxu_bytes, decode_value_sets(items, mxu_bytes, budget))


def decode_value_sets(items: list[Item], mxu_bytes: int, budget: int | None) -> int:
    """Value sets of the kernel's decode items: DECODE_ONLY_VALUE_SETS when they are alone and fit the
    `budget`, else VALUE_SETS."""
    decode = [item.plan for item in items if isinstance(item, DecodeItem)]
    alone = len(decode) == len(items) > VALUE_SETS
    if alone and budget is not None and _decode_sets_bytes(decode, mxu_bytes, DECODE_ONLY_VALUE_SETS) <= budget:
        return DECODE_ONLY_VALUE_SETS
    return VALUE_SETS


def _decode_sets_bytes(decode: list[DecodePlan], mxu_bytes: int, value_sets: int) -> int:
    """SRAM of the decode tile sets `emit_pipelined` makes for these plans: each dimension as large as the
    largest plan's (a single-query prefill's long keys beside decode groups' many sequences)."""
    rows = max(p.nb * p.rows for p in decode)
    d, dv, sk = max(p.d for p in decode), max(p.dv for p in decode), max(p.sk for p in decode)
    keys, values = max(p.nb * p.d for p in decode), max(p.nb * p.sk for p in decode)
    sets = 2 * (rows * d + keys * sk) * mxu_bytes + 2 * rows * sk * (4 + mxu_bytes)
    return sets + value_sets * values * dv * mxu_bytes + VALUE_SETS * rows * (dv + 1) * 4


def spread(main: list[T], work: list[int], others: list[T]) -> list[T]:
    """`main` in order with `others` spread evenly over its `work`: each of `others` at the middle of
    its equal share of the total, each of `main` at the middle of its own work."""
    total = sum(work) or 1
    keyed, done = [], 0
    for index, (item, amount) in enumerate(zip(main, work, strict=True)):
        keyed.append(((done + amount / 2) / total, 0, index, item))
        done += amount
    keyed += [((j + 0.5) / len(others), 1, j, item) for j, item in enumerate(others)]
    return [item for *_, item in sorted(keyed, key=lambda entry: entry[:3])]


def interleaved(prefill: list[Item], decode: list[Item]) -> list[Item]:
    """Decode items spread evenly over the prefill items' vector work (`alternated`)."""
    prefill = alternated(prefill)
    return spread(prefill, [item.vector_work for item in prefill], decode)


def alternated(prefill: list[Item]) -> list[Item]:
    """The key blocks of two query tiles at a time in turn (A1 B1 A2 B2 ...), so that a block's P V
    is not needed before the softmax of its tile's next block (which rescales the tile's output):
    `emit_pipelined` can then leave every P V two steps behind its scores."""
    runs: list[list[Item]] = []
    for item in prefill:
        if (isinstance(item, FlashItem) and item.first) or not runs:
            runs.append([])
        runs[-1].append(item)
    items: list[Item] = []
    for first in range(0, len(runs), 2):
        pair = runs[first : first + 2]
        for index in range(max(len(run) for run in pair)):
            items += [run[index] for run in pair if index < len(run)]
    return items


def emit_pipelined(ctx: TileContext, loc: str, items: list[Item]) -> None:
    """One kernel over `items`, phases interleaved as R(i-1), S(i), P(i-2), F(i-3) (module docstring)."""
    mxu = ctx.mxu_type
    kern = ctx.kernel(loc)
    flash = [item.plan for item in items if isinstance(item, FlashItem)]
    decode = [item.plan for item in items if isinstance(item, DecodeItem)]

    def largest(values: list[int]) -> int:
        return max(values, default=1)

    def sets(count: int, shape: tuple[int, int], element: Attribute) -> list[SSAValue]:
        return [kern.sram(shape, element) for _ in range(count)]

    assigned: list[tuple[UnitTiles, BlockTiles] | _DecodeTiles] = []
    if flash:
        rows, d, dv, kb = (largest([getattr(p, f) for p in flash]) for f in ("stacked", "d", "dv", "kb"))
        heads = largest([p.heads for p in flash])
        units = []
        for _ in range(UNIT_SETS):
            stats = (kern.sram(shape, f32) for shape in ((rows, dv), *[(rows, 1)] * 4))
            units.append(UnitTiles(kern.sram((rows, d), mxu), *stats))
        keys, values = sets(2, (heads * d, kb), mxu), sets(VALUE_SETS, (heads * kb, dv), mxu)
        scores_, probs = sets(2, (rows, kb), f32), sets(2, (rows, kb), mxu)
    if decode:
        seq_rows = largest([p.nb * p.rows for p in decode])
        d, dv, sk = largest([p.d for p in decode]), largest([p.dv for p in decode]), largest([p.sk for p in decode])
        # per-sequence tiles packed one after another
        queries, dkeys = sets(2, (seq_rows, d), mxu), sets(2, (largest([p.nb * p.d for p in decode]), sk), mxu)
        value_sets = decode_value_sets(items, element_bytes(mxu), ctx.sram_budget)
        dvalues = sets(value_sets, (largest([p.nb * p.sk for p in decode]), dv), mxu)
        dscores, dprobs = sets(2, (seq_rows, sk), f32), sets(2, (seq_rows, sk), mxu)
        results = [(kern.sram((seq_rows, dv), f32), kern.sram((seq_rows, 1), f32)) for _ in range(VALUE_SETS)]
    unit_of: dict[tuple[int, int, int, int], int] = {}  # (plan, batch, first query, KV head) -> unit number
    blocks_seen, decodes_seen = -1, -1
    for item in items:
        if isinstance(item, FlashItem):
            unit = unit_of.setdefault((id(item.plan), item.b, item.q0, item.hk), len(unit_of))
            blocks_seen += 1
            n = blocks_seen
            block = BlockTiles(keys[n % 2], values[n % VALUE_SETS], scores_[n % 2], probs[n % 2])
            assigned.append((units[unit % UNIT_SETS], block))
        else:
            decodes_seen += 1
            n = decodes_seen
            block = BlockTiles(dkeys[n % 2], dvalues[n % value_sets], dscores[n % 2], dprobs[n % 2])
            assigned.append(_DecodeTiles(queries[n % 2], block, *results[n % VALUE_SETS]))

    def scores(index: int) -> None:
        item, tiles = items[index], assigned[index]
        if isinstance(item, FlashItem):
            assert isinstance(tiles, tuple)
            _flash_scores(kern, item, tiles)
        else:
            assert isinstance(tiles, _DecodeTiles)
            _decode_scores(kern, item, tiles)

    def softmax(index: int, product: bool) -> None:
        """The vector part of the softmax, or (`product`) its P V on the matrix engine."""
        item, tiles = items[index], assigned[index]
        if isinstance(item, FlashItem):
            assert isinstance(tiles, tuple)
            unit, block = tiles
            plan = item.plan
            if product:  # a query tile's first block starts its output afresh
                product_op = tile.MatmulOp(
                    block.probs, block.vt, unit.acc, plan.rows, plan.dv, item.nk, not item.first, batch=plan.heads
                )
                kern.add(product_op)
            else:
                online_softmax_vector(kern, unit, block, plan.stacked, plan.dv, item.nk, item.first)
        else:
            assert isinstance(tiles, _DecodeTiles)
            (_decode_product if product else _decode_softmax)(kern, item, tiles)

    def final(index: int) -> None:
        item, tiles = items[index], assigned[index]
        if isinstance(item, FlashItem):
            assert isinstance(tiles, tuple)
            if item.last:
                finish(kern, item.plan, tiles[0], Pos(item.b), Pos(item.hk), item.q0, item.nq)
        else:
            assert isinstance(tiles, _DecodeTiles)
            _decode_finish(kern, item, tiles)

    def continued(index: int) -> bool:
        """Whether the next item continues this one's query tile (its softmax rescales this one's P V)."""
        after = items[index + 1] if index + 1 < len(items) else None
        return isinstance(after, FlashItem) and not after.first

    count = len(items)
    for index in range(count + 3):
        if 0 <= index - 1 < count:
            softmax(index - 1, product=False)
        if index < count:
            scores(index)
        if 0 <= index - 2 < count and not continued(index - 2):
            softmax(index - 2, product=True)
        if 0 <= index - 1 < count and continued(index - 1):
            softmax(index - 1, product=True)
        if 0 <= index - 3 < count:
            final(index - 3)


def load_queries(kern: KernelBuilder, plan: FlashPlan, unit: UnitTiles, b: Pos, hk: Pos, q0: int, nq: int) -> None:
    """The query rows of the GQA groups of KV heads hk, hk + 1, ... (`plan.heads`) stacked into one tile,
    head after head (query heads of consecutive KV heads are consecutive)."""

    def each_head(g: Pos, _one: int) -> None:
        kern.load(
            plan.q, [b, hk.scaled(plan.group) + g, Pos(q0), Pos()], nq, plan.d, unit.qt, g.scaled(plan.tq * plan.d)
        )

    kern.tiled_range(plan.heads * plan.group, 1, each_head)


def reset_statistics(kern: KernelBuilder, plan: FlashPlan, unit: UnitTiles) -> None:
    """A query tile's running max, sum and output start afresh."""
    kern.add(tile.FillOp(unit.m, float("-inf"), plan.stacked, 1))
    kern.add(tile.FillOp(unit.denom, 0.0, plan.stacked, 1))
    kern.add(tile.FillOp(unit.acc, 0.0, plan.stacked, plan.dv))


def block_scores(
    kern: KernelBuilder,
    plan: FlashPlan,
    unit: UnitTiles,
    block: BlockTiles,
    at: tuple[Pos, Pos, Pos],
    nk: int,
) -> None:
    """A key block's keys and values in, S = Q K^T (DMA and matrix engine only); `at` is (batch, KV
    head, first key)."""
    b, hk, k0 = at

    def each_head(j: Pos, _one: int) -> None:  # dense [d, nk] and [nk, dv] tiles, one per product
        kern.load(plan.k_t, [b, hk + j, Pos(), k0], plan.d, nk, block.kt, j.scaled(plan.d * nk))
        kern.load(plan.v, [b, hk + j, k0, Pos()], nk, plan.dv, block.vt, j.scaled(nk * plan.dv))

    kern.tiled_range(plan.heads, 1, each_head)
    scores = tile.MatmulOp(unit.qt, block.kt, block.scores, plan.rows, nk, plan.d, accumulate=False, batch=plan.heads)
    kern.add(scores)


def mask_scores(kern: KernelBuilder, plan: FlashPlan, block: BlockTiles, nk: int, diagonal: int | None) -> None:
    """S * scale (soft-capped), causally masked on a block that crosses the diagonal."""
    scale_and_cap(kern, block.scores, plan.op.scale.value.data, _softcap(plan.op), plan.stacked, nk)
    if diagonal is not None:
        kern.add(tile.CausalMaskOp(block.scores, plan.stacked, nk, diagonal, [0] * kern.depth, period=plan.tq))


def _flash_scores(kern: KernelBuilder, item: FlashItem, tiles: tuple[UnitTiles, BlockTiles]) -> None:
    """The block's scores, scaled and masked (measured faster with the masking here than in the softmax
    phase: the vector engine then finds the scores of the next item ready sooner)."""
    unit, block = tiles
    b, hk = Pos(item.b), Pos(item.hk)
    if item.first:  # its statistics start with its first block's softmax (online_softmax_vector)
        load_queries(kern, item.plan, unit, b, hk, item.q0, item.nq)
    block_scores(kern, item.plan, unit, block, (b, hk, Pos(item.k0)), item.nk)
    mask_scores(kern, item.plan, block, item.nk, item.diagonal)


def online_softmax(kern: KernelBuilder, plan: FlashPlan, unit: UnitTiles, block: BlockTiles, nk: int) -> None:
    """m' = max(m, rowmax S), P = exp(S - m'), l = l e^(m - m') + rowsum P, O = O e^(m - m') + P V."""
    online_softmax_vector(kern, unit, block, plan.stacked, plan.dv, nk)
    kern.add(tile.MatmulOp(block.probs, block.vt, unit.acc, plan.rows, plan.dv, nk, True, batch=plan.heads))


def online_softmax_vector(
    kern: KernelBuilder, unit: UnitTiles, block: BlockTiles, rows: int, dv: int, nk: int, first: bool = False
) -> None:
    """The vector engine's part of `online_softmax`: everything but O += P V. A query tile's `first`
    block sets the statistics instead (m = rowmax S, l = rowsum P; its P V then overwrites O), so
    nothing fills them and nothing rescales by e^(-inf) = 0: bit for bit the same, two passes over O
    fewer."""
    scores, probs, m, m_new, denom, stat, acc = (
        block.scores, block.probs, unit.m, unit.m_new, unit.denom, unit.stat, unit.acc,
    )  # fmt: skip
    if first:
        kern.add(tile.ReduceOp("max", scores, m, rows, nk))
        kern.add(tile.ExpSumOp(scores, m, probs, denom, rows, nk))
        return
    kern.add(tile.ReduceOp("max", scores, stat, rows, nk))
    kern.add(tile.BinaryOp("max", m, stat, m_new, rows, 1))
    kern.add(tile.ExpSumOp(scores, m_new, probs, stat, rows, nk))  # P in the MXU dtype; its row sums as rounded
    kern.add(tile.BinaryOp("sub", m, m_new, m, rows, 1))
    kern.add(tile.UnaryOp("exp", m, m, rows, 1))  # the correction e^(m - m')
    kern.add(tile.BinaryOp("mul", denom, m, denom, rows, 1))
    kern.add(tile.BinaryOp("add", denom, stat, denom, rows, 1))
    kern.add(tile.BinaryOp("mul", acc, m, acc, rows, dv, "row"))
    kern.add(tile.UnaryOp("copy", m_new, m, rows, 1))


def finish(kern: KernelBuilder, plan: FlashPlan, unit: UnitTiles, b: Pos, hk: Pos, q0: int, nq: int) -> None:
    """O / l stored to each head's rows of the result."""
    divide(kern, unit.acc, unit.denom, plan.stacked, plan.dv, plan.out, plan.out_scale)

    def store_head(g: Pos, _one: int) -> None:
        at = [b, hk.scaled(plan.group) + g, Pos(q0), Pos()]
        kern.store(unit.acc, plan.out, at, nq, plan.dv, g.scaled(plan.tq * plan.dv))

    kern.tiled_range(plan.heads * plan.group, 1, store_head)


def divide(
    kern: KernelBuilder, acc: SSAValue, sums: SSAValue, rows: int, dv: int, out: View, out_scale: float | None
) -> None:
    """O / l in place; for a quantised result (`out_scale`) O / (l * scale), so that the store (which
    saturates an 8-bit float, docs/isa.md) rounds it to what a quantisation kernel would have written."""
    if out_scale is not None:
        kern.add(tile.ScalarOp("mul", sums, sums, out_scale, rows, 1))
    kern.add(tile.BinaryOp("div", acc, sums, acc, rows, dv, "row"))


def _decode_scores(kern: KernelBuilder, item: DecodeItem, tiles: _DecodeTiles) -> None:
    """Each sequence's stacked queries, keys and values in; S = Q K^T * scale for all of them, one
    instruction."""
    p, block = item.plan, tiles.block
    hk, b0 = Pos(item.hk), Pos(item.b0)

    def load_one(i: Pos, _one: int) -> None:
        b = b0 + i
        kern.load(p.q_rows, [b, hk, Pos(), Pos()], p.rows, p.d, tiles.qt, i.scaled(p.rows * p.d))
        kern.load(p.k_t, [b, hk, Pos(), Pos()], p.d, p.sk, block.kt, i.scaled(p.d * p.sk))
        kern.load(p.v, [b, hk, Pos(), Pos()], p.sk, p.dv, block.vt, i.scaled(p.sk * p.dv))

    kern.tiled_range(item.n, 1, load_one)
    kern.add(tile.MatmulOp(tiles.qt, block.kt, block.scores, p.rows, p.sk, p.d, accumulate=False, batch=item.n))
    scale_and_cap(kern, block.scores, p.op.scale.value.data, _softcap(p.op), item.n * p.rows, p.sk)


def _decode_softmax(kern: KernelBuilder, item: DecodeItem, tiles: _DecodeTiles) -> None:
    """P = exp(S - rowmax S) in the MXU dtype and its row sums."""
    p, block = item.plan, tiles.block
    rows = item.n * p.rows
    kern.add(tile.ReduceOp("max", block.scores, tiles.stat, rows, p.sk))
    kern.add(tile.ExpSumOp(block.scores, tiles.stat, block.probs, tiles.stat, rows, p.sk))  # sums over the maxima


def _decode_product(kern: KernelBuilder, item: DecodeItem, tiles: _DecodeTiles) -> None:
    """O = P V for every sequence of the item, one instruction."""
    p, block = item.plan, tiles.block
    kern.add(tile.MatmulOp(block.probs, block.vt, tiles.acc, p.rows, p.dv, p.sk, accumulate=False, batch=item.n))


def _decode_finish(kern: KernelBuilder, item: DecodeItem, tiles: _DecodeTiles) -> None:
    """O / rowsum P, stored sequence by sequence."""
    p = item.plan
    divide(kern, tiles.acc, tiles.stat, item.n * p.rows, p.dv, p.out_rows, p.out_scale)
    hk, b0 = Pos(item.hk), Pos(item.b0)

    def store(i: Pos, _one: int) -> None:
        kern.store(tiles.acc, p.out_rows, [b0 + i, hk, Pos(), Pos()], p.rows, p.dv, i.scaled(p.rows * p.dv))

    kern.tiled_range(item.n, 1, store)


def item_loc(items: list[Item]) -> str:
    """The kernel's location: its ops' locations joined by '+' (the first op's in full)."""
    locs: list[str] = []
    for item in items:
        loc = loc_of(item.plan.op)
        if loc not in locs:
            locs.append(loc)
    head = locs[0]
    prefix = head.rsplit(":", 1)[0] + ":" if ":" in head else ""
    return "+".join([head, *(loc.removeprefix(prefix) for loc in locs[1:])])
