"""fold-attention-scale: the attention's score scale moved into the weights of the query projection.

softmax(scale * q k^T) = softmax((scale * q) k^T), and the query reaches the attention through a
linear, layout ops and rope, all linear in it: scaling the projection's weight (and bias) scales
the query. The attention then has scale 1 and its kernels skip one vector operation per score
(about a ninth of the prefill's softmax work). The projection is folded only when every use of
its result leads, through layout ops and rope, to the query of attentions with one scale. Before::

    %wq = tfm.weight {name = "q.weight"} : tensor<32x32xf32>
    %q = tfm.linear %x, %wq : (tensor<8x32xf32>, tensor<32x32xf32>) -> tensor<8x32xf32>
    %o = tfm.attention %q4, %k4, %v4 {causal = true, scale = 2.500000e-01 : f64} : ...

After (`#scaled0.25` is a derived weight, ir/weights.py)::

    %wq = tfm.weight {name = "q.weight#scaled0.25"} : tensor<32x32xf32>
    %q = tfm.linear %x, %wq : (tensor<8x32xf32>, tensor<32x32xf32>) -> tensor<8x32xf32>
    %o = tfm.attention %q4, %k4, %v4 {causal = true, scale = 1.000000e+00 : f64} : ...
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import FloatAttr, ModuleOp, f64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from tasic.ir import tfm
from tasic.ir.weights import scaled_name

_PASS_THROUGH = (tfm.ReshapeOp, tfm.TransposeOp, tfm.SliceOp, tfm.CastOp)


@dataclass(frozen=True)
class FoldAttentionScalePass(ModulePass):
    """Fold each attention scale into the query projection (see the module docstring)."""

    name = "fold-attention-scale"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Fold every projection whose results reach only attention queries of one scale."""
        projections: dict[tfm.LinearOp, list[tfm.AttentionOp]] = {}
        for attention in [o for o in op.walk() if isinstance(o, tfm.AttentionOp)]:
            linear = _projection(attention.query)
            if linear is not None and attention.scale.value.data != 1.0:
                projections.setdefault(linear, []).append(attention)
        for linear, attentions in projections.items():
            scales = {a.scale.value.data for a in attentions}
            if len(scales) == 1 and _only_feeds(linear.result, set(attentions)):
                _fold(linear, attentions, scales.pop())


def _projection(query: SSAValue) -> tfm.LinearOp | None:
    """The linear (with weight operands) the query comes from through layout ops and rope, if any."""
    value = query
    while True:
        owner = value.owner
        if isinstance(owner, (*_PASS_THROUGH, tfm.RopeOp)):  # rope's input is operand 0
            value = owner.input
        elif isinstance(owner, tfm.LinearOp):
            weights_known = all(
                isinstance(v.owner, tfm.WeightOp) for v in (owner.weight, *([owner.bias] if owner.bias else []))
            )
            return owner if weights_known else None
        else:
            return None


def _only_feeds(value: SSAValue, attentions: set[tfm.AttentionOp]) -> bool:
    """Whether every use of `value` leads, through layout ops and rope's input, to one of `attentions`' query."""
    for use in value.uses:
        user: Operation = use.operation
        if isinstance(user, tfm.AttentionOp):
            if user not in attentions or use.index != 0:
                return False
        elif isinstance(user, _PASS_THROUGH) or (isinstance(user, tfm.RopeOp) and use.index == 0):
            if not _only_feeds(user.results[0], attentions):
                return False
        else:
            return False
    return True


def _fold(linear: tfm.LinearOp, attentions: list[tfm.AttentionOp], scale: float) -> None:
    """The linear's weight and bias replaced by scaled ones; the attentions' scale set to 1."""
    for index, operand in enumerate(linear.operands[1:], start=1):
        weight = operand.owner
        assert isinstance(weight, tfm.WeightOp)
        scaled = tfm.WeightOp(scaled_name(weight.sym.data, scale), weight.result.type, weight.shard)
        scaled.result.name_hint = weight.result.name_hint
        if "loc" in weight.attributes:
            scaled.attributes["loc"] = weight.attributes["loc"]
        block = weight.parent_block()
        assert block is not None
        block.insert_op_before(scaled, weight)
        operands = list(linear.operands)
        operands[index] = scaled.result
        linear.operands = operands
        if not weight.result.uses:
            weight.detach()
            weight.erase()
    for attention in attentions:
        attention.properties["scale"] = FloatAttr(1.0, f64)
