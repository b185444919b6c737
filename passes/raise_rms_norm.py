"""raise-rms-norm: Hugging Face RMSNorm as written -> tfm.rms_norm.

Matches (mul either way round; the cast back to the input dtype optional)::

    %sq = tfm.scalar %x {fn = "pow", value = 2.0}             // or tfm.binary %x, %x {fn = "mul"}
    %ms = tfm.reduce %sq {fn = "mean", dims = [2], keepdim = true}
    %ve = tfm.scalar %ms {fn = "add", value = 1.0e-06}
    %r  = tfm.unary %ve {fn = "rsqrt"}                        // or sqrt, then div below
    %n  = tfm.binary %x, %r {fn = "mul"}                      // or tfm.binary %x, %s {fn = "div"}
    %c  = tfm.cast %n                                         // optional
    %y  = tfm.binary %gamma, %c {fn = "mul"}

-> ``%y = tfm.rms_norm %x, %gamma {eps = 1.0e-06}`` (+ tfm.cast when %c changed
the element type: the scale is then applied before rounding to the narrower
type, which differs from the original by at most one ulp of that type).
%gamma must be a 1-D weight.
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
from tasic.passes.raise_matching import (
    copy_location,
    fn_of,
    operand_orders,
    producer,
    reduces_last_dim,
    replace_and_erase,
    scalar_of,
    square_of,
    times_inverse_sqrt,
    weight_vector,
)


def _match_rms(normalize: tfm.BinaryOp) -> tuple[SSAValue, float, list[Operation]] | None:
    """(x, eps, ops users first) of `x * rsqrt(mean(x^2) + eps)` or `x / sqrt(mean(x^2) + eps)` at `normalize`."""
    for x, root, shifted in times_inverse_sqrt(normalize):
        mean = producer(shifted.input, tfm.ReduceOp, shifted)
        if mean is None or not reduces_last_dim(mean, "mean"):
            continue
        squared = square_of(mean.input, mean)
        if squared is not None and squared[0] is x:
            return x, scalar_of(shifted), [root, shifted, mean, squared[1]]
    return None


class RmsNormFromPrimitives(RewritePattern):
    """`gamma * (x * rsqrt(mean(x^2) + eps))`, optionally with a cast before the scale."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, scale: tfm.BinaryOp, rewriter: PatternRewriter) -> None:
        if fn_of(scale) != "mul" or not tfm.shape_of(scale.result):  # a scalar has no rows to normalise
            return
        width = tfm.shape_of(scale.result)[-1]
        for normalized, gamma in operand_orders(scale):
            if not weight_vector(gamma, width):
                continue
            cast = producer(normalized, tfm.CastOp, scale)
            normalize = producer(cast.input if cast else normalized, tfm.BinaryOp, cast or scale)
            match = _match_rms(normalize) if normalize is not None else None
            if match is None or tfm.shape_of(match[0]) != tfm.shape_of(scale.result):
                continue
            x, eps, ops = match
            new_ops: list[Operation] = [copy_location(normalize, tfm.RmsNormOp(x, gamma, eps))]
            if tfm.element_type(x) != tfm.element_type(scale.result):
                new_ops.append(copy_location(normalize, tfm.CastOp(new_ops[0].results[0], scale.result.type)))
            intermediates = [cast, normalize, *ops] if cast else [normalize, *ops]
            replace_and_erase(rewriter, scale, new_ops, intermediates)
            return


@dataclass(frozen=True)
class RaiseRmsNormPass(ModulePass):
    """Fuse primitive RMS normalisation (square, mean, + eps, rsqrt, scale) into tfm.rms_norm."""

    name = "raise-rms-norm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Rewrite every match in the module."""
        PatternRewriteWalker(GreedyRewritePatternApplier([RmsNormFromPrimitives()])).rewrite_module(op)
