"""Epilogue fusion: elementwise ops that consume a matmul's (or all-reduce's) result, applied to its
output tile in SRAM before the one store, instead of a kernel each with a round trip through HBM.

A chain grows from the producer's result while the value has exactly one use, that use is a
tfm.unary / tfm.scalar / tfm.binary of the same shape and float type, and a binary op's other
operand is already in HBM (computed earlier) and tiles like the result; an operand that only varies
along columns (a per-channel scale, a bias) is loaded as one row. A tfm.quantize with a static scale
ends a chain: the tile is scaled, and the store saturates and rounds it to the 8-bit float. A matmul's
chain may include one tfm.all_reduce (tensor parallelism, after elementwise steps such as an FP8
dequantisation): each output tile is reduced over the links while the MXU computes the next one.
Example (SwiGLU and the residual add):

    %g = tfm.linear %h, %wg ; %s = tfm.unary %g {fn = "silu"}        -> one kernel: matmul, silu
    %u = tfm.linear %h, %wu ; %m = tfm.binary %s, %u {fn = "mul"}    -> one kernel: matmul, * s tile
    %n = tfm.rms_norm %x, %g ; %q = tfm.quantize %n {static_scale}   -> one kernel: norm, / scale, store
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from xdsl.dialects.builtin import f32
from xdsl.ir import SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.builder import KernelBuilder, Pos
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.views import View


@dataclass(frozen=True)
class EpilogueStep:
    """One fused op: its tfm op and, for a binary op, the other operand's view (result-shaped)."""

    op: tfm.UnaryOp | tfm.ScalarOp | tfm.BinaryOp | tfm.AllReduceOp | tfm.QuantizeOp
    other: View | None = None
    chain_is_lhs: bool = True
    prescaled: bool = False  # a static quantisation whose division the producer folded in (nothing left)

    @property
    def other_is_row(self) -> bool:
        """Whether the other operand is one row broadcast down the tile (loaded once per tile as [1, cols])."""
        return self.other is not None and self.other.strides[0] == 0


@dataclass(frozen=True)
class Scratch:
    """SRAM tiles for the other operands of binary steps: a whole tile, and one row."""

    tile: SSAValue | None
    row: SSAValue | None


def collect(ctx: TileContext, value: SSAValue, flat_shape: tuple[int, ...]) -> tuple[list[EpilogueStep], SSAValue]:
    """The fusable chain after `value` and the value it ends with (`value` itself when nothing fuses).

    `flat_shape` is the 2-D [rows, cols] shape the producer's kernel tiles its result as; the other
    operands of binary steps must reshape to it. Fused ops are recorded in `ctx.fused`.
    """
    steps: list[EpilogueStep] = []
    if not ctx.epilogue_fusion:
        return steps, value
    shape, element = tfm.shape_of(value), tfm.element_type(value)
    while value.has_one_use():
        user = value.get_user_of_unique_use()
        if isinstance(user, tfm.AllReduceOp) and ctx.allreduce_overlap and not reduces(steps):
            steps.append(EpilogueStep(user))  # reduced tile by tile, overlapping the next tiles' products
            ctx.fused.add(user)
            value = user.result
            continue
        if isinstance(user, tfm.QuantizeOp) and user.static_scale is not None:
            steps.append(EpilogueStep(user))  # the last step: the store rounds to the 8-bit float
            ctx.fused.add(user)
            return steps, user.result
        if not isinstance(user, tfm.UnaryOp | tfm.ScalarOp | tfm.BinaryOp):
            break
        if tfm.shape_of(user.result) != shape or tfm.element_type(user.result) != element:
            break
        step = EpilogueStep(user)
        if isinstance(user, tfm.BinaryOp):
            if user.lhs is user.rhs:
                break
            chain_is_lhs = user.lhs is value
            other = user.rhs if chain_is_lhs else user.lhs
            if other not in ctx.views and not isinstance(other.owner, tfm.WeightOp):
                break  # computed later: the chain stops here
            flat = ctx.view_of(other).broadcast_to(shape).reshape(flat_shape)
            if flat is None:
                break
            step = EpilogueStep(user, flat, chain_is_lhs)
        steps.append(step)
        ctx.fused.add(user)
        value = user.result
    return steps, value


@dataclass(frozen=True)
class GatedEpilogue:
    """silu(gate) * up on the two halves of a fused gate/up linear (passes/fuse_linears.py):

        %y = tfm.linear %x, %w_gate_up   (+ `shared` steps on all 2F columns, e.g. FP8 dequantisation)
        %g = tfm.slice %y [0, F) ; %u = tfm.slice %y [F, 2F)
        %s = tfm.unary %g {fn = "silu"}  (`gate` steps) ; %m = tfm.binary %s, %u {fn = "mul"}  (`join`)
        (+ `after` steps on %m, ending at `final`)

    The kernel computes a gate tile and the matching up tile, so %y is never stored."""

    width: int
    gate: list[EpilogueStep]
    join: tfm.BinaryOp
    after: list[EpilogueStep]
    final: SSAValue


def collect_gated(ctx: TileContext, value: SSAValue, flat_shape: tuple[int, int]) -> GatedEpilogue | None:
    """The gated epilogue after `value` (a fused linear's result after its shared steps), or None."""
    if not ctx.epilogue_fusion or flat_shape[1] % 2:
        return None
    half = flat_shape[1] // 2
    rank = len(tfm.shape_of(value))
    slices = [use.operation for use in value.uses]
    if len(slices) != 2 or not all(isinstance(s, tfm.SliceOp) for s in slices):
        return None
    bounds = {(s.dim.value.data, s.start.value.data, s.end.value.data, s.step.value.data): s for s in slices}  # type: ignore[attr-defined]
    gate_slice, up_slice = bounds.get((rank - 1, 0, half, 1)), bounds.get((rank - 1, half, 2 * half, 1))
    if gate_slice is None or up_slice is None or not up_slice.result.has_one_use():
        return None
    chain, current = [], gate_slice.result
    while current.has_one_use():
        user = current.get_user_of_unique_use()
        if not isinstance(user, tfm.UnaryOp | tfm.ScalarOp) or user.result.type != current.type:
            break
        chain.append(user)
        current = user.result
    join = current.get_user_of_unique_use() if current.has_one_use() else None
    if not isinstance(join, tfm.BinaryOp) or join.fn.data != "mul" or join.result.type != current.type:
        return None
    if set(join.operands) != {current, up_slice.result}:
        return None
    ctx.fused.update([gate_slice, up_slice, *chain, join])
    after, final = collect(ctx, join.result, (flat_shape[0], half))
    return GatedEpilogue(half, [EpilogueStep(op) for op in chain], join, after, final)


def apply(kb: KernelBuilder, steps: list[EpilogueStep], work: SSAValue, scratch: Scratch,
          starts: list[Pos], rows: int, cols: int, link: SSAValue | None = None,
          loaded: bool = False) -> None:  # fmt: skip
    """Emit the chain on the f32 tile `work` (in place); `scratch` holds binary ops' other operands
    (already, when `loaded`: see `load_operands`), `link` the tile an all-reduce sends (in the HBM
    dtype, as the unfused all-reduce would)."""
    for step in steps:
        op = step.op
        if isinstance(op, tfm.AllReduceOp):
            assert link is not None
            kb.add(tile.UnaryOp("copy", work, link, rows, cols))
            kb.add(tile.AllReduceOp(link, work, op.chips.value.data, rows, cols))
        elif isinstance(op, tfm.QuantizeOp):
            assert op.static_scale is not None
            if not step.prescaled:  # the store rounds to the 8-bit float, saturating
                kb.add(tile.ScalarOp("div", work, work, op.static_scale.value.data, rows, cols))
        elif isinstance(op, tfm.UnaryOp):
            kb.add(tile.UnaryOp(op.fn.data, work, work, rows, cols))
        elif isinstance(op, tfm.ScalarOp):
            kb.add(tile.ScalarOp(op.fn.data, work, work, op.value.value.data, rows, cols))
        elif not _needs_whole_tile(step):
            assert scratch.row is not None and step.other is not None
            if not loaded:
                kb.load(step.other, [Pos(), starts[-1]], 1, cols, scratch.row)
            kb.add(tile.BinaryOp(op.fn.data, work, scratch.row, work, rows, cols, "col"))
        else:
            assert scratch.tile is not None and step.other is not None
            if not loaded:
                kb.load(step.other, starts, rows, cols, scratch.tile)
            lhs, rhs = (work, scratch.tile) if step.chain_is_lhs else (scratch.tile, work)
            kb.add(tile.BinaryOp(op.fn.data, lhs, rhs, work, rows, cols))


def loads_ahead(steps: list[EpilogueStep]) -> bool:
    """Whether the chain's other operands can be loaded before its tile is computed (`load_operands`):
    at most one of them in each scratch tile, and no all-reduce."""
    whole = sum(_needs_whole_tile(s) for s in steps)
    rows = sum(s.other is not None and not _needs_whole_tile(s) for s in steps)
    return whole <= 1 and rows <= 1 and not reduces(steps)


def load_operands(kb: KernelBuilder, steps: list[EpilogueStep], scratch: Scratch, starts: list[Pos],
                  rows: int, cols: int) -> None:  # fmt: skip
    """Load the chain's other operands into `scratch` now, for `apply(..., loaded=True)` later: a
    single output tile's epilogue then needs no DMA after its last product (`loads_ahead` must hold)."""
    for step in steps:
        if step.other is None:
            continue
        if _needs_whole_tile(step):
            assert scratch.tile is not None
            kb.load(step.other, starts, rows, cols, scratch.tile)
        else:
            assert scratch.row is not None
            kb.load(step.other, [Pos(), starts[-1]], 1, cols, scratch.row)


def prescale(steps: list[EpilogueStep]) -> tuple[list[EpilogueStep], float]:
    """For a producer that ends in a per-row multiply (a norm): when the chain starts with a static
    quantisation, the factor 1 / scale to fold into that multiply and the chain with the division
    marked done; else the chain and 1.0."""
    if steps and isinstance(steps[0].op, tfm.QuantizeOp) and steps[0].op.static_scale is not None:
        first = replace(steps[0], prescaled=True)
        return [first, *steps[1:]], 1.0 / steps[0].op.static_scale.value.data
    return steps, 1.0


def _needs_whole_tile(step: EpilogueStep) -> bool:
    """A binary step whose other operand is loaded as a whole tile (not one row in "col" mode)."""
    if step.other is None:
        return False
    return not (step.other_is_row and (step.chain_is_lhs or step.op.fn.data in ("add", "mul")))  # type: ignore[union-attr]


def scratch_tiles(kb: KernelBuilder, steps: list[EpilogueStep], rows: int, cols: int) -> Scratch:
    """Tiles for binary steps' other operands, as the steps need: a whole tile, in the operands' HBM
    type when they share one (a bf16 residual takes half the SRAM of f32; the vector engine reads
    it widened, exactly), and a single f32 row."""
    types = {s.other.buffer.type.element_type for s in steps if _needs_whole_tile(s)}  # type: ignore[union-attr]
    whole = kb.sram((rows, cols), types.pop() if len(types) == 1 else f32) if types else None
    row = any(s.other is not None and not _needs_whole_tile(s) for s in steps)
    return Scratch(whole, kb.sram((1, cols), f32) if row else None)


def scratch_tiles_needed(steps: list[EpilogueStep]) -> int:
    """How many whole result tiles `scratch_tiles` declares (0 or 1), for SRAM budgets (counted as f32)."""
    return int(any(_needs_whole_tile(s) for s in steps))


def reduces(steps: list[EpilogueStep]) -> bool:
    """Whether the chain includes an all-reduce."""
    return any(isinstance(s.op, tfm.AllReduceOp) for s in steps)
