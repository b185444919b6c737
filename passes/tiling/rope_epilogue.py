"""Rotary embedding in a linear's epilogue: the q and k projections rotated in their output tiles
before the store, instead of a rope kernel that reads them back from HBM and writes them again.

The pattern (a fused q/k/v linear, passes/fuse_linears.py; without the fusion a q or k linear alone):

    %y = tfm.linear %x, %w                                  (+ elementwise steps, e.g. dequantisation)
    %q = tfm.slice %y [0, Q) ; %q3 = tfm.reshape %q [T, Q / D, D] ; %qr = tfm.rope %q3, %cos, %sin
    %k = tfm.slice %y [Q, Q + K) ; ...                      ; %kr = tfm.rope %k3, %cos, %sin
    %v = tfm.slice %y [Q + K, N)                            (not rotated)

becomes one kernel whose output tiles span all N columns (so the rotated columns, a prefix [0, Q + K),
are the same in every tile): `tile.rope` (vpu.rope) rotates them head by head with the rows' cos and sin
loaded beside the tile, and %qr, %kr become views of %y's buffer. The rotated columns must form a
prefix, every rope must use the same cos and sin ([T, 1, D], one row per token), and nothing but the
rope may read a rotated column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.dialects.builtin import f32
from xdsl.ir import SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.builder import KernelBuilder, Pos
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.views import View


@dataclass(frozen=True)
class RopeEpilogue:
    """The ropes a linear's kernel applies: to columns [0, roped) of its [rows, cols] result."""

    ropes: list[tuple[tfm.RopeOp, int]]  # each rope and the first column of its input
    roped: int
    head_dim: int
    cos: View  # [rows, head_dim]
    sin: View

    def table_bytes(self, rows: int) -> int:
        """SRAM bytes of the cos and sin tile of `rows` rows (at most two copies: double buffering)."""
        return 2 * 2 * rows * self.head_dim * 4

    def emitter(
        self, ctx: TileContext, kb: KernelBuilder, out: View, rows: int
    ) -> Callable[[SSAValue, Pos, int, int], None]:
        """Declare the [2 rows, head_dim] tile the rows' cos and sin are loaded into, mark the ropes
        computed (their results the rotated columns of `out`, the linear's [rows, cols] result) and
        return the emitter that rotates an f32 output tile (rows m0.. of the result) in place."""
        tables = kb.sram((2 * rows, self.head_dim), f32)
        for rope, start in self.ropes:
            shape = tfm.shape_of(rope.result)
            view = out.slice(1, start, start + shape[1] * shape[2], 1).reshape(shape)
            assert view is not None, "a column window of a dense result reshapes to heads"
            ctx.views[rope.result] = view
            ctx.fused.add(rope)

        def emit(work: SSAValue, m0: Pos, nm: int, nn: int) -> None:
            kb.load(self.cos, [m0, Pos()], nm, self.head_dim, tables)
            kb.load(self.sin, [m0, Pos()], nm, self.head_dim, tables, nm * self.head_dim)
            kb.add(tile.RopeOp(work, tables, work, nm, nn, self.head_dim, self.roped))

        return emit


def find_rope(ctx: TileContext, value: SSAValue, flat_shape: tuple[int, int]) -> RopeEpilogue | None:
    """The ropes of `value` (a linear's result after its epilogue steps, tiled as `flat_shape`) that its
    kernel can apply (module docstring), or None. Nothing is recorded until `emitter`."""
    rows, cols = flat_shape
    if not ctx.epilogue_fusion or tfm.shape_of(value) != flat_shape or value in ctx.output_names:
        return None
    if tfm.fp8_max(tfm.element_type(value)) is not None:
        return None
    ropes: list[tuple[tfm.RopeOp, int]] = []
    unrotated: list[tuple[int, int]] = []  # column ranges other users read
    for use in value.uses:
        user = use.operation
        start, end, source = 0, cols, value
        if isinstance(user, tfm.SliceOp) and user.dim.value.data == 1 and user.step.value.data == 1:
            start, end, source = user.start.value.data, user.end.value.data, user.result
        rope = _rope_of(source, rows) if source is value or source.has_one_use() else None
        if rope is None or rope.result in ctx.output_names:
            unrotated.append((start, end))
        else:
            ropes.append((rope, start))
    if not ropes:
        return None
    first = ropes[0][0]
    head_dim = tfm.shape_of(first.result)[2]
    spans = sorted((start, start + tfm.shape_of(rope.result)[1] * head_dim) for rope, start in ropes)
    roped = spans[-1][1]
    contiguous = all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1)) and spans[0][0] == 0
    same_tables = all(rope.cos is first.cos and rope.sin is first.sin for rope, _ in ropes)
    same_heads = all(tfm.shape_of(rope.result)[2] == head_dim for rope, _ in ropes)
    if not (contiguous and same_tables and same_heads) or any(start < roped for start, _ in unrotated):
        return None
    tables = [_table_view(ctx, table, rows, head_dim) for table in (first.cos, first.sin)]
    if tables[0] is None or tables[1] is None:
        return None
    return RopeEpilogue(ropes, roped, head_dim, tables[0], tables[1])


def _rope_of(source: SSAValue, rows: int) -> tfm.RopeOp | None:
    """The rope that is `source`'s only reader through one reshape to [rows, heads, head_dim], if any."""
    reshape = source.get_user_of_unique_use() if source.has_one_use() else None
    if not isinstance(reshape, tfm.ReshapeOp) or not reshape.result.has_one_use():
        return None
    shape = tfm.shape_of(reshape.result)
    rope = reshape.result.get_user_of_unique_use()
    if len(shape) != 3 or shape[0] != rows or not isinstance(rope, tfm.RopeOp) or rope.input is not reshape.result:
        return None
    return rope


def _table_view(ctx: TileContext, table: SSAValue, rows: int, head_dim: int) -> View | None:
    """A rope table ([rows, 1, head_dim]: the same for every head) as a [rows, head_dim] view, if it is
    in HBM already."""
    if tfm.shape_of(table) != (rows, 1, head_dim) or table not in ctx.views:
        return None
    return ctx.views[table].reshape((rows, head_dim))
