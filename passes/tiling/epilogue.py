"""Epilogue fusion: elementwise ops that consume a matmul's (or all-reduce's) result, applied to its
output tile in SRAM before the one store, instead of a kernel each with a round trip through HBM.

A chain grows from the producer's result while the value has exactly one use, that use is a
tfm.unary / tfm.scalar / tfm.binary of the same shape and float type, and a binary op's other
operand is already in HBM (computed earlier) and tiles like the result. A matmul's chain may start
with its tfm.all_reduce (tensor parallelism): each output tile is reduced over the links while the
MXU computes the next one. Example (SwiGLU and the residual add):

    %g = tfm.linear %h, %wg ; %s = tfm.unary %g {fn = "silu"}        -> one kernel: matmul, silu
    %u = tfm.linear %h, %wu ; %m = tfm.binary %s, %u {fn = "mul"}    -> one kernel: matmul, * s tile
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import f32
from xdsl.ir import SSAValue

from tasic.ir import tfm, tile
from tasic.passes.tiling.builder import KernelBuilder, Pos
from tasic.passes.tiling.context import TileContext
from tasic.passes.tiling.views import View


@dataclass(frozen=True)
class EpilogueStep:
    """One fused op: its tfm op and, for a binary op, the other operand's view (result-shaped)."""

    op: tfm.UnaryOp | tfm.ScalarOp | tfm.BinaryOp | tfm.AllReduceOp
    other: View | None = None
    chain_is_lhs: bool = True


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
        if isinstance(user, tfm.AllReduceOp) and ctx.allreduce_overlap and not steps:
            steps.append(EpilogueStep(user))  # reduced tile by tile, overlapping the next tiles' products
            ctx.fused.add(user)
            value = user.result
            continue
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


def apply(kb: KernelBuilder, steps: list[EpilogueStep], work: SSAValue, scratch: SSAValue | None,
          starts: list[Pos], rows: int, cols: int, link: SSAValue | None = None) -> None:  # fmt: skip
    """Emit the chain on the f32 tile `work` (in place); `scratch` holds a binary op's other operand,
    `link` the tile an all-reduce sends (in the HBM dtype, as the unfused all-reduce would)."""
    for step in steps:
        op = step.op
        if isinstance(op, tfm.AllReduceOp):
            assert link is not None
            kb.add(tile.UnaryOp("copy", work, link, rows, cols))
            kb.add(tile.AllReduceOp(link, work, op.chips.value.data, rows, cols))
        elif isinstance(op, tfm.UnaryOp):
            kb.add(tile.UnaryOp(op.fn.data, work, work, rows, cols))
        elif isinstance(op, tfm.ScalarOp):
            kb.add(tile.ScalarOp(op.fn.data, work, work, op.value.value.data, rows, cols))
        else:
            assert scratch is not None and step.other is not None
            kb.load(step.other, starts, rows, cols, scratch)
            lhs, rhs = (work, scratch) if step.chain_is_lhs else (scratch, work)
            kb.add(tile.BinaryOp(op.fn.data, lhs, rhs, work, rows, cols))


def scratch_tile(kb: KernelBuilder, steps: list[EpilogueStep], rows: int, cols: int) -> SSAValue | None:
    """An f32 tile for binary steps' other operands, if there are any."""
    return kb.sram((rows, cols), f32) if any(s.other is not None for s in steps) else None


def reduces(steps: list[EpilogueStep]) -> bool:
    """Whether the chain includes an all-reduce."""
    return any(isinstance(s.op, tfm.AllReduceOp) for s in steps)
