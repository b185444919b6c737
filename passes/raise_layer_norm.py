"""raise-layer-norm: layer normalisation written out in primitives -> tfm.layer_norm.

Matches, over the last dimension with keepdim reductions (mul/add either way round)::

    %mu  = tfm.reduce %x {fn = "mean", dims = [2], keepdim = true}
    %d   = tfm.binary %x, %mu {fn = "sub"}
    %sq  = tfm.scalar %d {fn = "pow", value = 2.0}          // or tfm.binary %d, %d {fn = "mul"}
    %var = tfm.reduce %sq {fn = "mean", dims = [2], keepdim = true}
    %ve  = tfm.scalar %var {fn = "add", value = 1.0e-05}
    %r   = tfm.unary %ve {fn = "rsqrt"}                     // or sqrt, then div below
    %n   = tfm.binary %d, %r {fn = "mul"}                   // or tfm.binary %d, %s {fn = "div"}
    %s   = tfm.binary %n, %gamma {fn = "mul"}
    %y   = tfm.binary %s, %beta {fn = "add"}

-> ``%y = tfm.layer_norm %x, %gamma, %beta {eps = 1.0e-05}``. %gamma and %beta
must be 1-D weights; `x - mean` may be computed once or twice (both uses).
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
    defining,
    fn_of,
    operand_orders,
    producer,
    reduces_last_dim,
    replace_and_erase,
    scalar_of,
    square_of,
    times_inverse_sqrt,
    used_only_by,
    weight_vector,
)


@dataclass
class _Normalized:
    """x, eps and the ops of `(x - mean(x)) * rsqrt(var(x) + eps)`, users first."""

    x: SSAValue
    eps: float
    ops: list[Operation]


def _match_normalized(normalize: tfm.BinaryOp) -> _Normalized | None:
    """Match `(x - mean(x)) * rsqrt(mean((x - mean(x))^2) + eps)` ending at `normalize`."""
    for centred, root, shifted in times_inverse_sqrt(normalize):
        variance = producer(shifted.input, tfm.ReduceOp, shifted)
        if variance is None or not reduces_last_dim(variance, "mean"):
            continue
        squared = square_of(variance.input, variance)
        if squared is not None:
            return _centred_variance(normalize, centred, squared, [root, shifted, variance], scalar_of(shifted))
    return None


def _centred_variance(
    normalize: tfm.BinaryOp,
    centred: SSAValue,
    squared: tuple[SSAValue, Operation],
    ops: list[Operation],
    eps: float,
) -> _Normalized | None:
    """Check that `centred` and the squared value are both x - mean(x) (one op or two)."""
    centred_for_variance, square = squared
    found = [defining(centred, tfm.BinaryOp), defining(centred_for_variance, tfm.BinaryOp)]
    subtractions = [s for s in dict.fromkeys(found) if s is not None and fn_of(s) == "sub"]
    if len(subtractions) != len(set(found)):
        return None
    mean = defining(subtractions[0].rhs, tfm.ReduceOp)
    if mean is None or not reduces_last_dim(mean, "mean") or not used_only_by(mean.result, *subtractions):
        return None
    x = mean.input
    if any(s.lhs is not x or s.rhs is not mean.result for s in subtractions):
        return None
    if not all(used_only_by(s.result, normalize, square) for s in subtractions):
        return None
    return _Normalized(x, eps, [*ops, square, *subtractions, mean])


class LayerNormFromPrimitives(RewritePattern):
    """The affine tail `normalized * gamma + beta`, with the normalisation before it."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, add: tfm.BinaryOp, rewriter: PatternRewriter) -> None:
        if fn_of(add) != "add" or not tfm.shape_of(add.result):  # a scalar has no rows to normalise
            return
        width = tfm.shape_of(add.result)[-1]
        for scaled, beta in operand_orders(add):
            scale = producer(scaled, tfm.BinaryOp, add)
            if not weight_vector(beta, width) or scale is None or fn_of(scale) != "mul":
                continue
            for normalized, gamma in operand_orders(scale):
                normalize = producer(normalized, tfm.BinaryOp, scale)
                if not weight_vector(gamma, width) or normalize is None:
                    continue
                match = _match_normalized(normalize)
                if match is None or tfm.shape_of(match.x) != tfm.shape_of(add.result):
                    continue
                layer_norm = copy_location(normalize, tfm.LayerNormOp(match.x, gamma, beta, match.eps))
                replace_and_erase(rewriter, add, [layer_norm], [scale, normalize, *match.ops])
                return


@dataclass(frozen=True)
class RaiseLayerNormPass(ModulePass):
    """Fuse primitive layer normalisation (mean, centre, variance, rsqrt, scale, shift) into tfm.layer_norm."""

    name = "raise-layer-norm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Rewrite every match in the module."""
        PatternRewriteWalker(GreedyRewritePatternApplier([LayerNormFromPrimitives()])).rewrite_module(op)
