"""raise-attention: softmax(q @ k^T * scale [+ mask]) @ v on 4-D tensors -> tfm.attention.

Three patterns, applied together:

1. batched matmuls that torch.export flattened to 3-D are restored to 4-D::

       %a3 = tfm.reshape %a : (tensor<1x4x8x16xf32>) -> tensor<4x8x16xf32>
       %b3 = tfm.reshape %b : (tensor<1x4x16x8xf32>) -> tensor<4x16x8xf32>
       %c3 = tfm.matmul %a3, %b3 : (tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<4x8x8xf32>
       %c  = tfm.reshape %c3 : (tensor<4x8x8xf32>) -> tensor<1x4x8x8xf32>
   ->  %c  = tfm.matmul %a, %b : (tensor<1x4x8x16xf32>, tensor<1x4x16x8xf32>) -> tensor<1x4x8x8xf32>

2. the attention itself (scale by tfm.scalar mul or div, optional additive mask)::

       %kt = tfm.transpose %k {perm = [0, 1, 3, 2]}
       %s  = tfm.matmul %q, %kt
       %ss = tfm.scalar %s {fn = "mul", value = 0.25}
       %sm = tfm.binary %ss, %mask {fn = "add"}
       %p  = tfm.softmax %sm
       %o  = tfm.matmul %p, %v
   ->  %o  = tfm.attention %q, %k, %v, %mask {causal = false, scale = 0.25}

3. keys/values repeated for grouped-query attention (HF repeat_kv:
   reshape [B,Hkv,1,S,D] -> expand [B,Hkv,g,S,D] -> reshape [B,Hkv*g,S,D])
   feed tfm.attention directly, which groups heads itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
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
    scaling_factor,
    used_only_by,
)


def _unflattened(value: SSAValue, batch: tuple[int, ...], consumer: Operation) -> tuple[SSAValue, list[Operation]]:
    """The [*batch, M, N] tensor that `value` ([prod(batch), M, N]) was flattened from, if any."""
    flatten = defining(value, tfm.ReshapeOp)
    if flatten is None or tfm.shape_of(flatten.input) != (*batch, *tfm.shape_of(value)[1:]):
        return value, []
    return flatten.input, [flatten] if used_only_by(flatten.result, consumer) else []


class MatmulFromFlattenedBatch(RewritePattern):
    """reshape(matmul(reshape(a), reshape(b))) -> matmul(a, b) when the reshapes only merge batch dims."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, unflatten: tfm.ReshapeOp, rewriter: PatternRewriter) -> None:
        matmul = producer(unflatten.input, tfm.MatmulOp, unflatten)
        shape = tfm.shape_of(unflatten.result)
        flat = tfm.shape_of(unflatten.input)
        if matmul is None or len(flat) != 3 or len(shape) < 4 or shape[-2:] != flat[-2:]:
            return
        batch = shape[:-2]
        lhs, lhs_ops = _unflattened(matmul.lhs, batch, matmul)
        rhs, rhs_ops = _unflattened(matmul.rhs, batch, matmul)
        if lhs is matmul.lhs or rhs is matmul.rhs:
            return
        batched = copy_location(matmul, tfm.MatmulOp(lhs, rhs, unflatten.result.type))
        replace_and_erase(rewriter, unflatten, [batched], [matmul, *lhs_ops, *rhs_ops])


def _key_from_transposed(transposed: SSAValue, consumer: Operation) -> tuple[SSAValue, list[Operation], list[int]]:
    """k given k^T: (value, ops to erase, permutation still to apply to the value)."""
    swap = [0, 1, 3, 2]
    transpose = producer(transposed, tfm.TransposeOp, consumer)
    if transpose is None or len(transpose.permutation) != len(swap):
        return transposed, [], swap
    return transpose.input, [transpose], [transpose.permutation[i] for i in swap]


@dataclass
class _Scores:
    """softmax input = (q @ k^T) * scale [+ mask], with the ops in between (users first)."""

    product: tfm.MatmulOp
    scale: float
    mask: SSAValue | None
    ops: list[Operation]


def _scaled_product(value: SSAValue, consumer: Operation) -> tuple[tfm.MatmulOp, float, list[Operation]] | None:
    """(the q @ k^T matmul, scale, ops) when `value` is (q @ k^T) [* scale or / d] used only by `consumer`."""
    scaling = producer(value, tfm.ScalarOp, consumer)
    if scaling is not None and (factor := scaling_factor(scaling)) is not None:
        product = producer(scaling.input, tfm.MatmulOp, scaling)
        return (product, factor, [scaling, product]) if product is not None else None
    product = producer(value, tfm.MatmulOp, consumer)
    return (product, 1.0, [product]) if product is not None else None


def _match_scores(scores: SSAValue, softmax: tfm.SoftmaxOp) -> _Scores | None:
    """The softmax input as scaled q @ k^T, plus an additive mask when there is one."""
    add = producer(scores, tfm.BinaryOp, softmax)
    if add is not None and fn_of(add) == "add":
        for scaled, mask in operand_orders(add):
            if (found := _scaled_product(scaled, add)) is not None:
                product, scale, ops = found
                return _Scores(product, scale, mask, [add, *ops])
        return None
    found = _scaled_product(scores, softmax)
    return None if found is None else _Scores(found[0], found[1], None, found[2])


def _fits_attention(
    query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...], mask: SSAValue | None, result: tuple[int, ...]
) -> bool:
    """Whether tfm.attention accepts these shapes (see AttentionOp.verify_)."""
    if not len(query) == len(key) == len(value) == 4 or not query[0] == key[0] == value[0]:
        return False
    if key[1] != value[1] or query[1] % key[1] or query[3] != key[3] or key[2] != value[2]:
        return False
    scores = (query[0], query[1], query[2], key[2])
    if mask is not None and tfm.broadcast_shapes(tfm.shape_of(mask), scores) != scores:
        return False
    return result == (*query[:3], value[3])


class AttentionFromPrimitives(RewritePattern):
    """matmul(softmax(scores(q, k)), v) on rank-4 tensors -> tfm.attention."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, output: tfm.MatmulOp, rewriter: PatternRewriter) -> None:
        softmax = producer(output.lhs, tfm.SoftmaxOp, output)
        if softmax is None or len(tfm.shape_of(output.result)) != 4:
            return
        scores = _match_scores(softmax.input, softmax)
        if scores is None or scores.scale <= 0 or not math.isfinite(scores.scale):
            return
        query, value = scores.product.lhs, output.rhs
        key, key_ops, perm = _key_from_transposed(scores.product.rhs, scores.product)
        key_shape = tuple(tfm.shape_of(key)[p] for p in perm)
        shapes = (tfm.shape_of(query), key_shape, tfm.shape_of(value))
        if not _fits_attention(*shapes, scores.mask, tfm.shape_of(output.result)):
            return
        new_ops: list[Operation] = []
        if perm != list(range(4)):
            key_type = TensorType(tfm.element_type(key), key_shape)
            new_ops.append(copy_location(scores.product, tfm.TransposeOp(key, perm, key_type)))
            key = new_ops[-1].results[0]
        attention = tfm.AttentionOp(query, key, value, scores.mask, False, scores.scale, output.result.type)
        new_ops.append(copy_location(output, attention))
        replace_and_erase(rewriter, output, new_ops, [softmax, *scores.ops, *key_ops])


def _repeated_heads(value: SSAValue, consumer: Operation) -> tuple[SSAValue, int, list[Operation]] | None:
    """(kv, groups, ops users first) when `value` is HF's repeat_kv(kv, groups): [B,H,S,D] -> [B,H*groups,S,D]."""
    merge = producer(value, tfm.ReshapeOp, consumer)
    expand = producer(merge.input, tfm.ExpandOp, merge) if merge else None
    split = producer(expand.input, tfm.ReshapeOp, expand) if expand else None
    if merge is None or expand is None or split is None or len(tfm.shape_of(split.input)) != 4:
        return None
    kv = split.input
    batch, heads, length, width = tfm.shape_of(kv)
    expanded = tfm.shape_of(expand.result)
    if tfm.shape_of(split.result) != (batch, heads, 1, length, width) or expanded[:2] != (batch, heads):
        return None
    if expanded[3:] != (length, width) or tfm.shape_of(value) != (batch, heads * expanded[2], length, width):
        return None
    return kv, expanded[2], [merge, expand, split]


class GroupedQueryAttention(RewritePattern):
    """tfm.attention on repeat_kv(k), repeat_kv(v) -> tfm.attention on k, v (heads grouped by the op)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, attention: tfm.AttentionOp, rewriter: PatternRewriter) -> None:
        key = _repeated_heads(attention.key, attention)
        value = _repeated_heads(attention.value, attention)
        if key is None or value is None or key[1] != value[1] or attention.key is attention.value:
            return
        grouped = tfm.AttentionOp(
            attention.query,
            key[0],
            value[0],
            attention.mask,
            attention.causal.value.data,
            attention.scale.value.data,
            attention.result.type,
        )
        for optional in ("softcap", "window"):
            if (setting := attention.properties.get(optional)) is not None:
                grouped.properties[optional] = setting
        replace_and_erase(rewriter, attention, [copy_location(attention, grouped)], [*key[2], *value[2]])


@dataclass(frozen=True)
class RaiseAttentionPass(ModulePass):
    """Fuse primitive scaled dot-product attention into tfm.attention (with GQA head grouping)."""

    name = "raise-attention"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Rewrite every match in the module."""
        patterns = [MatmulFromFlattenedBatch(), AttentionFromPrimitives(), GroupedQueryAttention()]
        PatternRewriteWalker(GreedyRewritePatternApplier(patterns)).rewrite_module(op)
