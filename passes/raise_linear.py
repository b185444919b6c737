"""raise-linear: matmul by a transposed weight (+ bias) -> tfm.linear.

torch.export turns `nn.Linear` on [B, S, K] into view -> addmm -> view, which
the importer emits as::

    %x2 = tfm.reshape %x : (tensor<1x8x32xf32>) -> tensor<8x32xf32>
    %wt = tfm.transpose %w {perm = [1, 0]} : (tensor<64x32xf32>) -> tensor<32x64xf32>
    %m  = tfm.matmul %x2, %wt : (tensor<8x32xf32>, tensor<32x64xf32>) -> tensor<8x64xf32>
    %a  = tfm.binary %m, %b {fn = "add"} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
    %y  = tfm.reshape %a : (tensor<8x64xf32>) -> tensor<1x8x64xf32>

and this pass rewrites to::

    %y = tfm.linear %x, %w, %b : (tensor<1x8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<1x8x64xf32>

%w must be a 2-D tfm.weight and %b a 1-D one; the bias and the reshapes are
absorbed only when the intermediate values have no other users.
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
    replace_and_erase,
    used_only_by,
    weight_vector,
)


def _only_user(value: SSAValue) -> Operation | None:
    users = {use.operation for use in value.uses}
    return users.pop() if len(users) == 1 else None


class LinearFromMatmul(RewritePattern):
    """matmul(x, transpose(W)) [+ b], optionally between a flatten and an unflatten reshape."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, matmul: tfm.MatmulOp, rewriter: PatternRewriter) -> None:
        transpose = producer(matmul.rhs, tfm.TransposeOp, matmul)
        if transpose is None or transpose.permutation != [1, 0] or defining(transpose.input, tfm.WeightOp) is None:
            return
        weight = transpose.input
        out_features, in_features = tfm.shape_of(weight)
        intermediates: list[Operation] = [transpose]
        root: Operation = matmul
        bias = None

        add = _only_user(matmul.result)
        if isinstance(add, tfm.BinaryOp) and fn_of(add) == "add":
            bias = next(
                (b for a, b in operand_orders(add) if a is matmul.result and weight_vector(b, out_features)), None
            )
            if bias is not None:
                intermediates.insert(0, matmul)
                root = add

        x = matmul.lhs
        flatten = defining(x, tfm.ReshapeOp)
        unflatten = _only_user(root.results[0])
        if flatten is not None and isinstance(unflatten, tfm.ReshapeOp):
            source = tfm.shape_of(flatten.input)
            if source[-1] == in_features and tfm.shape_of(unflatten.result) == (*source[:-1], out_features):
                x = flatten.input
                intermediates.insert(0, root)
                root = unflatten
                if used_only_by(flatten.result, matmul):
                    intermediates.append(flatten)

        linear = tfm.LinearOp(x, weight, bias, root.results[0].type)
        replace_and_erase(rewriter, root, [copy_location(matmul, linear)], intermediates)


@dataclass(frozen=True)
class RaiseLinearPass(ModulePass):
    """Fuse matmul-by-transposed-weight (+ bias, + flatten/unflatten reshapes) into tfm.linear."""

    name = "raise-linear"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Rewrite every match in the module."""
        PatternRewriteWalker(GreedyRewritePatternApplier([LinearFromMatmul()])).rewrite_module(op)
