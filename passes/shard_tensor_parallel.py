"""shard-tp: Megatron-style tensor parallelism over `chips` chips, found by propagating shardings.

A `tfm.linear` on a replicated input may become column-parallel (weight rows split, output split on
its last dim). The split then flows forward through reshapes, transposes, rope arithmetic,
attention heads, activations and KV-cache writes until it reaches a linear that contracts over the
split dim: that one becomes row-parallel (weight columns split) and is followed by a
`tfm.all_reduce`. A column-parallel candidate whose split reaches anything else (a norm over the
split dim, a function result, a mismatched operand) is kept replicated, with all candidates it
met. Every chip runs the same program on its own weight shards (SPMD)::

    %q = tfm.linear %x, %wq : (tensor<8x32xf32>, tensor<32x32xf32>) -> tensor<8x32xf32>
    ... attention ...
    %o = tfm.linear %a, %wo : (tensor<8x32xf32>, tensor<32x32xf32>) -> tensor<8x32xf32>
  becomes, with chips=2,
    %wq = tfm.weight {name = "q", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<16x32xf32>
    %q = tfm.linear %x, %wq : (tensor<8x32xf32>, tensor<16x32xf32>) -> tensor<8x16xf32>
    ...
    %wo = tfm.weight {name = "o", shard_dim = 1 : i64, shard_parts = 2 : i64} : tensor<32x16xf32>
    %p = tfm.linear %a, %wo : (tensor<8x16xf32>, tensor<32x16xf32>) -> tensor<8x32xf32>
    %o = tfm.all_reduce %p {chips = 2 : i64} : (tensor<8x32xf32>) -> tensor<8x32xf32>

Sharded function arguments and results (KV caches) are listed in the function attribute
`tfm.shards` (name -> dim); the function gets `tfm.chips`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from math import prod

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, FunctionType, IntegerAttr, ModuleOp, StringAttr, TensorType, i64
from xdsl.ir import Attribute, BlockArgument, Operation, SSAValue
from xdsl.passes import ModulePass

from tasic.ir import tfm


class ShardingError(Exception):
    """A tensor-parallel degree the model cannot be split into (message is user-facing)."""


class _RejectError(Exception):
    """Propagation met an op that cannot take a split operand; `sources` are the candidates to drop."""

    def __init__(self, sources: frozenset[tfm.LinearOp]) -> None:
        super().__init__()
        self.sources = sources


@dataclass
class _Split:
    """A value split across chips along `dim`, and the column-parallel linears it comes from."""

    dim: int
    sources: frozenset[tfm.LinearOp]


@dataclass
class _Plan:
    """What propagation decided: split values, row-parallel linears, weights to slice."""

    splits: dict[SSAValue, _Split] = field(default_factory=dict)
    rows: list[tfm.LinearOp] = field(default_factory=list)
    sliced_weights: list[tuple[Operation, int, tfm.WeightOp, int]] = field(default_factory=list)


def _new_type(typ: Attribute, dim: int, parts: int) -> TensorType:
    assert isinstance(typ, TensorType)
    dims = list(typ.get_shape())
    dims[dim] //= parts
    return TensorType(typ.element_type, dims)


def _reshape_dim(src: Sequence[int], dst: Sequence[int], dim: int, parts: int) -> int | None:
    """The dim of `dst` that carries `src`'s split `dim` through a row-major reshape, if one does."""
    prefix, extent = prod(src[:dim]), src[dim] * prod(src[dim + 1 :])
    for out in range(len(dst)):
        if prod(dst[:out]) == prefix and dst[out] * prod(dst[out + 1 :]) == extent and dst[out] % parts == 0:
            return out
    return None


class _Propagation:
    def __init__(self, function: func.FuncOp, chips: int, candidates: set[tfm.LinearOp]) -> None:
        self.function, self.chips, self.candidates = function, chips, candidates
        self.plan = _Plan()

    def split_of(self, value: SSAValue) -> _Split | None:
        return self.plan.splits.get(value)

    def run(self) -> _Plan:
        for op in self.function.body.block.ops:
            if isinstance(op, tfm.LinearOp) and op in self.candidates and op.input not in self.plan.splits:
                self.plan.splits[op.result] = _Split(len(tfm.shape_of(op.result)) - 1, frozenset([op]))
                continue
            splits = [self.split_of(v) for v in op.operands]
            if any(s is not None for s in splits) and not isinstance(op, func.ReturnOp):
                self.visit(op, splits)
        return self.plan

    def fail(self, *splits: _Split | None) -> _RejectError:
        return _RejectError(frozenset().union(*(s.sources for s in splits if s is not None)))

    def out(self, op: Operation, dim: int, sources: frozenset[tfm.LinearOp]) -> None:
        self.plan.splits[op.results[0]] = _Split(dim, sources)

    def visit(self, op: Operation, splits: list[_Split | None]) -> None:
        split = next(s for s in splits if s is not None)
        sources = frozenset().union(*(s.sources for s in splits if s is not None))
        if isinstance(op, tfm.UnaryOp | tfm.ScalarOp | tfm.CastOp):
            self.out(op, split.dim, sources)
        elif isinstance(op, tfm.BinaryOp | tfm.WhereOp):
            self.elementwise(op, splits, sources)
        elif isinstance(op, tfm.RopeOp):
            if splits[0] is None or splits[0].dim == len(tfm.shape_of(op.result)) - 1:
                raise self.fail(*splits)
            self.elementwise(op, splits, sources)
        elif isinstance(op, tfm.ReshapeOp):
            dim = _reshape_dim(tfm.shape_of(op.input), tfm.shape_of(op.result), split.dim, self.chips)
            if dim is None:
                raise self.fail(split)
            self.out(op, dim, sources)
        elif isinstance(op, tfm.TransposeOp):
            self.out(op, op.permutation.index(split.dim), sources)
        elif isinstance(op, tfm.SliceOp):
            if op.dim.value.data == split.dim:
                raise self.fail(split)
            self.out(op, split.dim, sources)
        elif isinstance(op, tfm.ConcatOp):
            if op.dim.value.data == split.dim or any(s is None or s.dim != split.dim for s in splits):
                raise self.fail(*splits)
            self.out(op, split.dim, sources)
        elif isinstance(op, tfm.AttentionOp):
            self.attention(op, splits, sources)
        elif isinstance(op, tfm.IndexCopyOp):
            self.index_copy(op, splits, sources)
        elif isinstance(op, tfm.SoftmaxOp | tfm.RmsNormOp | tfm.LayerNormOp):
            rank = len(tfm.shape_of(op.results[0]))
            if split.dim == rank - 1 or any(s is not None for s in splits[1:]):
                raise self.fail(*splits)
            self.out(op, split.dim, sources)
        elif isinstance(op, tfm.LinearOp):
            self.linear(op, splits, sources)
        else:
            raise self.fail(*splits)

    def elementwise(self, op: Operation, splits: list[_Split | None], sources: frozenset[tfm.LinearOp]) -> None:
        result = tfm.shape_of(op.results[0])
        rank = len(result)
        dims = {s.dim + rank - len(tfm.shape_of(v)) for s, v in zip(splits, op.operands, strict=True) if s}
        if len(dims) != 1:
            raise self.fail(*splits)
        dim = dims.pop()
        for index, (value, split) in enumerate(zip(op.operands, splits, strict=True)):
            if split is not None:
                continue
            shape = tfm.shape_of(value)
            axis = dim - rank + len(shape)
            if axis < 0 or shape[axis] == 1:
                continue
            owner = value.owner
            if not isinstance(owner, tfm.WeightOp) or owner.shard is not None:
                raise self.fail(*splits)
            self.plan.sliced_weights.append((op, index, owner, axis))
        self.out(op, dim, sources)

    def attention(self, op: tfm.AttentionOp, splits: list[_Split | None], sources: frozenset[tfm.LinearOp]) -> None:
        q, k, v = splits[:3]
        mask = splits[3] if len(splits) > 3 else None
        if any(s is None or s.dim != 1 for s in (q, k, v)) or mask is not None:
            raise self.fail(*splits)
        if op.mask is not None and tfm.shape_of(op.mask)[-3] != 1:
            raise self.fail(*splits)
        self.out(op, 1, sources)

    def index_copy(self, op: tfm.IndexCopyOp, splits: list[_Split | None], sources: frozenset[tfm.LinearOp]) -> None:
        dest, index, source = splits
        if source is None or index is not None or source.dim == op.dim.value.data:
            raise self.fail(*splits)
        if dest is None:
            if not isinstance(op.dest, BlockArgument) or not op.dest.has_one_use():
                raise self.fail(*splits)
            self.plan.splits[op.dest] = _Split(source.dim, sources)
        elif dest.dim != source.dim:
            raise self.fail(*splits)
        self.out(op, source.dim, sources)

    def linear(self, op: tfm.LinearOp, splits: list[_Split | None], sources: frozenset[tfm.LinearOp]) -> None:
        x, *others = splits
        rank = len(tfm.shape_of(op.result))
        if x is None or any(s is not None for s in others) or not isinstance(op.weight.owner, tfm.WeightOp):
            raise self.fail(*splits)
        if x.dim != rank - 1:
            self.out(op, x.dim, sources)
            return
        if op.weight.owner.shard is not None:
            raise self.fail(x)
        self.plan.rows.append(op)


def _plan(function: func.FuncOp, chips: int) -> _Plan:
    """Propagate from every candidate, dropping the groups that meet an op they cannot pass."""
    candidates = {
        op
        for op in function.body.block.ops
        if isinstance(op, tfm.LinearOp)
        and isinstance(op.weight.owner, tfm.WeightOp)
        and op.weight.owner.shard is None
        and tfm.shape_of(op.weight)[0] % chips == 0
        and (op.bias is None or isinstance(op.bias.owner, tfm.WeightOp))
    }
    while True:
        propagation = _Propagation(function, chips, candidates)
        try:
            plan = propagation.run()
        except _RejectError as reject:
            if not reject.sources:
                raise AssertionError("rejection without a candidate") from None
            candidates -= reject.sources
            continue
        returned = {v for op in function.body.block.ops if isinstance(op, func.ReturnOp) for v in op.operands}
        bad = [plan.splits[v] for v in returned if v in plan.splits and not isinstance(v.owner, tfm.IndexCopyOp)]
        if not bad:
            return plan
        candidates -= frozenset().union(*(s.sources for s in bad))


def _retype(value: SSAValue, typ: TensorType) -> None:
    value._type = typ


def _sharded_weight(weight: tfm.WeightOp, dim: int, chips: int, before: Operation) -> SSAValue:
    new = tfm.WeightOp(weight.sym.data, _new_type(weight.result.type, dim, chips), (dim, chips))
    new.attributes.update(weight.attributes)
    assert before.parent is not None
    before.parent.insert_op_before(new, before)
    return new.result


def _apply(function: func.FuncOp, plan: _Plan, chips: int) -> None:
    block = function.body.block
    columns = frozenset().union(*(split.sources for split in plan.splits.values()))
    for op in list(block.ops):
        if isinstance(op, tfm.LinearOp) and op in columns and op.input not in plan.splits:
            assert isinstance(op.weight.owner, tfm.WeightOp)
            op.operands[1] = _sharded_weight(op.weight.owner, 0, chips, op)
            if op.bias is not None:
                assert isinstance(op.bias.owner, tfm.WeightOp)
                op.operands[2] = _sharded_weight(op.bias.owner, 0, chips, op)
    for op, index, weight, axis in plan.sliced_weights:
        op.operands[index] = _sharded_weight(weight, axis, chips, op)
    for value, split in plan.splits.items():
        _retype(value, _new_type(value.type, split.dim, chips))
    for op in plan.rows:
        _row_parallel(op, chips)
    for op in list(block.ops):
        if isinstance(op, tfm.WeightOp) and not op.result.uses:
            op.detach()
            op.erase()
    _record_shards(function, plan, chips)


def _row_parallel(op: tfm.LinearOp, chips: int) -> None:
    """x[..., k/chips] @ W[:, k/chips]^T on each chip, summed by an all-reduce, then the bias."""
    assert isinstance(op.weight.owner, tfm.WeightOp)
    weight = _sharded_weight(op.weight.owner, 1, chips, op)
    partial = tfm.LinearOp(op.input, weight, None, op.result.type)
    reduced = tfm.AllReduceOp(partial.result, chips)
    new_ops: list[Operation] = [partial, reduced]
    if op.bias is not None:
        new_ops.append(tfm.BinaryOp("add", reduced.result, op.bias, op.result.type))
    loc = op.attributes.get("loc")
    for new in new_ops:
        if isinstance(loc, StringAttr):
            new.attributes["loc"] = loc
    if isinstance(loc, StringAttr):
        reduced.attributes["loc"] = StringAttr(loc.data.rsplit(":", 1)[0] + ":all_reduce")
    assert op.parent is not None
    op.parent.insert_ops_before(new_ops, op)
    op.result.replace_all_uses_with(new_ops[-1].results[0])
    op.detach()
    op.erase()


def _names(function: func.FuncOp, attribute: str) -> list[str]:
    names = function.attributes.get(attribute)
    return [n.data for n in names.data] if names is not None else []  # type: ignore[attr-defined]


def _record_shards(function: func.FuncOp, plan: _Plan, chips: int) -> None:
    block = function.body.block
    returns = [op for op in block.ops if isinstance(op, func.ReturnOp)]
    shards: dict[str, Attribute] = {}
    for name, arg in zip(_names(function, "tfm.input_names"), block.args, strict=False):
        if arg in plan.splits:
            shards[name] = IntegerAttr(plan.splits[arg].dim, i64)
    for name, value in zip(_names(function, "tfm.output_names"), returns[0].operands if returns else [], strict=False):
        if value in plan.splits:
            shards[name] = IntegerAttr(plan.splits[value].dim, i64)
    function.attributes["tfm.shards"] = DictionaryAttr(shards)
    function.attributes["tfm.chips"] = IntegerAttr(chips, i64)
    outputs = [v.type for v in returns[0].operands] if returns else []
    function.function_type = FunctionType.from_lists([a.type for a in block.args], outputs)


@dataclass(frozen=True)
class ShardTensorParallelPass(ModulePass):
    """Split every function over `chips` chips (see the module docstring); chips=1 changes nothing."""

    name = "shard-tp"
    chips: int = 1

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Shard each function in place."""
        if self.chips < 1:
            raise ShardingError(f"shard-tp: chips must be positive, not {self.chips}")
        if self.chips == 1:
            return
        for function in [f for f in op.body.block.ops if isinstance(f, func.FuncOp)]:
            _check_heads(function, self.chips)
            plan = _plan(function, self.chips)
            if not plan.rows:
                raise ShardingError(
                    f"tensor parallelism over {self.chips} chips found nothing to split in @{function.sym_name.data}"
                )
            _apply(function, plan, self.chips)


def _check_heads(function: func.FuncOp, chips: int) -> None:
    """Attention heads (query and key/value) must divide over the chips."""
    for op in function.body.block.ops:
        if isinstance(op, tfm.AttentionOp):
            heads, kv_heads = tfm.shape_of(op.query)[1], tfm.shape_of(op.key)[1]
            if heads % chips or kv_heads % chips:
                raise ShardingError(
                    f"tensor parallelism over {chips} chips needs the attention heads to divide evenly, but the"
                    f" model has {heads} query and {kv_heads} key/value heads: choose a degree dividing {kv_heads}"
                )
