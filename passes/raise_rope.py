"""raise-rope: rotary position embedding as Hugging Face writes it -> tfm.rope.

Matches (adds and multiplies either way round; D the size of the last dim)::

    %lo  = tfm.slice %x {dim = -1, start = 0, end = D/2}
    %hi  = tfm.slice %x {dim = -1, start = D/2, end = D}
    %neg = tfm.unary %hi {fn = "neg"}
    %rot = tfm.concat %neg, %lo {dim = -1}
    %a   = tfm.binary %x, %cos {fn = "mul"}
    %b   = tfm.binary %rot, %sin {fn = "mul"}
    %y   = tfm.binary %a, %b {fn = "add"}

-> ``%y = tfm.rope %x, %cos, %sin`` when cos and sin broadcast to x's shape. One kernel then reads
x once and writes y once, instead of six kernels with a round trip through HBM each.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from tasic.ir import tfm
from tasic.passes.raise_matching import copy_location, fn_of, operand_orders, producer, replace_and_erase


def _half(value: SSAValue, x: SSAValue, consumer: Operation, upper: bool) -> tfm.SliceOp | None:
    """The slice of x's lower or upper half along its last dim producing `value` (used by `consumer` only)."""
    cut = producer(value, tfm.SliceOp, consumer)
    if cut is None or cut.input is not x:
        return None
    size = tfm.shape_of(x)[-1]
    dim, start, end = cut.dim.value.data, cut.start.value.data, cut.end.value.data
    half = (size // 2, size) if upper else (0, size // 2)
    if dim % len(tfm.shape_of(x)) != len(tfm.shape_of(x)) - 1 or (start, end) != half or cut.step.value.data != 1:
        return None
    return cut


def _rotated_half(value: SSAValue, consumer: Operation) -> tuple[SSAValue, list[Operation]] | None:
    """(x, ops users first) when `value` is concat(-x[..., D/2:], x[..., :D/2])."""
    concat = producer(value, tfm.ConcatOp, consumer)
    if concat is None or len(concat.inputs) != 2:
        return None
    rank = len(tfm.shape_of(concat.result))
    if concat.dim.value.data % rank != rank - 1:
        return None
    neg = producer(concat.inputs[0], tfm.UnaryOp, concat)
    if neg is None or fn_of(neg) != "neg":
        return None
    upper = producer(neg.input, tfm.SliceOp, neg)
    if upper is None:
        return None
    x = upper.input
    if _half(neg.input, x, neg, upper=True) is None:
        return None
    lower = _half(concat.inputs[1], x, concat, upper=False)
    if lower is None or tfm.shape_of(x)[-1] % 2:
        return None
    return x, [concat, neg, upper, lower]


class RopeFromPrimitives(RewritePattern):
    """`x * cos + rotate_half(x) * sin` -> tfm.rope."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, add: tfm.BinaryOp, rewriter: PatternRewriter) -> None:
        if fn_of(add) != "add":
            return
        for first, second in operand_orders(add):
            direct = producer(first, tfm.BinaryOp, add)
            rotated = producer(second, tfm.BinaryOp, add)
            if direct is None or rotated is None or fn_of(direct) != "mul" or fn_of(rotated) != "mul":
                continue
            for rot, sin in operand_orders(rotated):
                match = _rotated_half(rot, rotated)
                if match is None:
                    continue
                x, ops = match
                cos = next((c for v, c in operand_orders(direct) if v is x), None)
                x_shape = tfm.shape_of(x)
                if cos is None or tfm.shape_of(add.result) != x_shape:
                    continue
                if any(tfm.broadcast_shapes(tfm.shape_of(t), x_shape) != x_shape for t in (cos, sin)):
                    continue
                rope = copy_location(add, tfm.RopeOp(x, cos, sin))
                replace_and_erase(rewriter, add, [rope], [direct, rotated, *ops])
                return


@dataclass(frozen=True)
class RaiseRopePass(ModulePass):
    """Fuse rotary position embeddings written with slices, neg and concat into tfm.rope."""

    name = "raise-rope"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Rewrite every match in the module."""
        PatternRewriteWalker(GreedyRewritePatternApplier([RopeFromPrimitives()])).rewrite_module(op)
