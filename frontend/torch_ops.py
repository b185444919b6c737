"""ATen operator handlers: one small function per operator family, in `ATEN_HANDLERS`.

A handler receives the `GraphBuilder` and the node's arguments in ATen schema
order, with FX nodes replaced by their imported values (`SSAValue` or a
constant `torch.Tensor`), and returns the node's value: an `SSAValue`, a
constant, a Python number (shape arithmetic) or a tuple for multi-result
operators. Handlers only run when at least one argument is a run-time value;
nodes on constants alone are folded by the importer.

    aten.addmm(bias, x, W)  ->  %m = tfm.matmul %x, %wt ; %y = tfm.binary %m, %bias {fn = "add"}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch._ops import OpOverload
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, f64, i64
from xdsl.ir import SSAValue

from tasic.frontend.attention import ATTENTION_OP
from tasic.frontend.graph_builder import (
    GraphBuilder,
    Operand,
    dtype_of,
    element_type_of,
    single_number,
    tensor_type,
)
from tasic.ir import tfm

aten = torch.ops.aten

Result = SSAValue | torch.Tensor | int | tuple[SSAValue | None, ...] | None
Handler = Callable[..., Result]

ATEN_HANDLERS: dict[OpOverload, Handler] = {}
"""Every ATen overload the importer maps to tfm ops."""


def handles(*overloads: OpOverload) -> Callable[[Handler], Handler]:
    """Register a handler for ATen overloads."""

    def register(handler: Handler) -> Handler:
        for overload in overloads:
            ATEN_HANDLERS[overload] = handler
        return handler

    return register


# ------------------------------------------------------------------ helpers


def _shape(x: Operand) -> tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else tfm.shape_of(x)


def _dtype(x: Operand) -> torch.dtype:
    return x.dtype if isinstance(x, torch.Tensor) else dtype_of(x)


def _dim(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def _dims(dims: int | Sequence[int] | None, rank: int) -> list[int]:
    """Normalised reduction dimensions; None or [] means all of them."""
    if dims is None or (isinstance(dims, Sequence) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted(_dim(d, rank) for d in dims)


def _promoted(lhs: Operand | float, rhs: Operand | float) -> torch.dtype:
    """torch's type promotion of two operands (0-d tensors count as scalars, as in torch)."""

    def proxy(x: Operand | float) -> torch.Tensor | float:
        if isinstance(x, SSAValue):
            return torch.empty([1] * len(tfm.shape_of(x)), dtype=dtype_of(x))
        return x

    return torch.result_type(proxy(lhs), proxy(rhs))


def _runtime_operand(b: GraphBuilder, x: Operand | float, dtype: torch.dtype) -> SSAValue:
    """x as an SSA value of element type `dtype` (constants converted at import time)."""
    if isinstance(x, SSAValue):
        return b.cast(x, element_type_of(dtype))
    if isinstance(x, torch.Tensor) and x.dtype != dtype:
        x = x.to(dtype)
    return b.value(x, dtype)


_COMMUTATIVE = frozenset({"add", "mul", "max", "min", "eq"})
_SWAPPED = {"sub": "rsub", "div": "rdiv", "lt": "gt", "gt": "lt"}


def elementwise(b: GraphBuilder, fn: str, lhs: Operand | float, rhs: Operand | float) -> SSAValue:
    """lhs `fn` rhs with torch promotion; a one-element constant side becomes a tfm.scalar."""
    out = b.result_type()
    compute = _promoted(lhs, rhs)
    result_shape = tuple(out.get_shape())
    if isinstance(lhs, SSAValue) and tfm.shape_of(lhs) == result_shape:
        number = single_number(rhs, result_shape)
        if number is not None:
            return b.scalar(fn, _runtime_operand(b, lhs, compute), number, out.element_type)
    if isinstance(rhs, SSAValue) and tfm.shape_of(rhs) == result_shape:
        number = single_number(lhs, result_shape)
        flipped = fn if fn in _COMMUTATIVE else _SWAPPED.get(fn)
        if number is not None and flipped is not None:
            return b.scalar(flipped, _runtime_operand(b, rhs, compute), number, out.element_type)
    left, right = _runtime_operand(b, lhs, compute), _runtime_operand(b, rhs, compute)
    return b.binary(fn, left, right, out.element_type)


def _scaled(b: GraphBuilder, x: Operand | float, factor: float) -> Operand | float:
    """x * factor, folded when x is a constant."""
    if factor == 1:
        return x
    if isinstance(x, SSAValue):
        return b.scalar("mul", x, factor)
    return x * factor


def _logical_not(b: GraphBuilder, x: SSAValue) -> SSAValue:
    return b.scalar("eq", x, 0.0, element_type_of(torch.bool))


def _reduced_shape(shape: Sequence[int], dims: Sequence[int], keepdim: bool) -> list[int]:
    if keepdim:
        return [1 if i in dims else n for i, n in enumerate(shape)]
    return [n for i, n in enumerate(shape) if i not in dims]


def _reduce(b: GraphBuilder, fn: str, x: SSAValue, dims: list[int], keepdim: bool) -> SSAValue:
    shape = _reduced_shape(tfm.shape_of(x), dims, keepdim)
    return b.emit(tfm.ReduceOp(fn, x, dims, keepdim, tensor_type(shape, tfm.element_type(x))))


# ---------------------------------------------------------- elementwise ops


def _arithmetic(fn: str, b: GraphBuilder, x: Operand | float, other: Operand | float, *, alpha: float = 1) -> SSAValue:
    return elementwise(b, fn, x, _scaled(b, other, alpha) if fn in ("add", "sub") else other)


for _fn, _overloads in {
    "add": (aten.add.Tensor, aten.add.Scalar),
    "sub": (aten.sub.Tensor, aten.sub.Scalar),
    "mul": (aten.mul.Tensor, aten.mul.Scalar),
    "div": (aten.div.Tensor, aten.div.Scalar),
    "max": (aten.maximum.default,),
    "min": (aten.minimum.default,),
    "pow": (aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor),
    "eq": (aten.eq.Tensor, aten.eq.Scalar),
    "lt": (aten.lt.Tensor, aten.lt.Scalar),
    "gt": (aten.gt.Tensor, aten.gt.Scalar),
}.items():
    handles(*_overloads)(partial(_arithmetic, _fn))


@handles(aten.rsub.Tensor, aten.rsub.Scalar)
def _rsub(b: GraphBuilder, x: Operand, other: Operand | float, alpha: float = 1) -> SSAValue:
    return elementwise(b, "sub", other, _scaled(b, x, alpha))


@handles(aten.div.Tensor_mode)
def _div_mode(b: GraphBuilder, x: Operand, other: Operand | float, *, rounding_mode: str | None) -> SSAValue:
    if rounding_mode is not None:
        b.unsupported(f"rounding_mode '{rounding_mode}' is not supported")
    return elementwise(b, "div", x, other)


_NEGATED = {"ne": "eq", "ge": "lt", "le": "gt"}


def _negated_comparison(fn: str, b: GraphBuilder, x: Operand, other: Operand | float) -> SSAValue:
    """a != b, a >= b and a <= b as the negation of ==, < and >."""
    return _logical_not(b, elementwise(b, _NEGATED[fn], x, other))


for _fn, _overloads in {
    "ne": (aten.ne.Tensor, aten.ne.Scalar),
    "ge": (aten.ge.Tensor, aten.ge.Scalar),
    "le": (aten.le.Tensor, aten.le.Scalar),
}.items():
    handles(*_overloads)(partial(_negated_comparison, _fn))


@handles(aten.logical_not.default, aten.bitwise_not.default)
def _not(b: GraphBuilder, x: SSAValue) -> SSAValue:
    if b.current.target == aten.bitwise_not.default and dtype_of(x) != torch.bool:
        b.unsupported("bitwise_not is only supported on bool tensors")
    return _logical_not(b, x)


def _bool_combine(identity: bool, fn: str, b: GraphBuilder, x: Operand, other: Operand) -> SSAValue:
    """and/or of bool tensors; a constant operand that is all `identity` is dropped."""
    out = b.result_type()
    operands = []
    for operand in (x, other):
        if isinstance(operand, torch.Tensor) and bool((operand.bool() == identity).all()):
            continue
        if _dtype(operand) != torch.bool:
            b.unsupported("logical and/or are only supported on bool tensors")
        operands.append(b.value(operand))
    if not operands:
        return b.value(torch.full(tuple(out.get_shape()), identity))
    if len(operands) == 1:
        return b.expand(operands[0], tuple(out.get_shape()))
    return b.binary(fn, operands[0], operands[1], out.element_type)


handles(aten.bitwise_and.Tensor, aten.logical_and.default, aten.__and__.Tensor)(partial(_bool_combine, True, "min"))
handles(aten.bitwise_or.Tensor, aten.logical_or.default, aten.__or__.Tensor)(partial(_bool_combine, False, "max"))


_UNARY = {
    "neg": aten.neg.default,
    "exp": aten.exp.default,
    "tanh": aten.tanh.default,
    "erf": aten.erf.default,
    "rsqrt": aten.rsqrt.default,
    "sqrt": aten.sqrt.default,
    "recip": aten.reciprocal.default,
    "sigmoid": aten.sigmoid.default,
    "silu": aten.silu.default,
    "relu": aten.relu.default,
    "abs": aten.abs.default,
    "log": aten.log.default,
    "cos": aten.cos.default,
    "sin": aten.sin.default,
}


def _unary(fn: str, b: GraphBuilder, x: SSAValue) -> SSAValue:
    return b.unary(fn, b.cast(x, b.result_type().element_type))


for _fn, _overload in _UNARY.items():
    handles(_overload)(partial(_unary, _fn))


@handles(aten.square.default)
def _square(b: GraphBuilder, x: SSAValue) -> SSAValue:
    return elementwise(b, "pow", x, 2)


@handles(aten.gelu.default)
def _gelu(b: GraphBuilder, x: SSAValue, *, approximate: str = "none") -> SSAValue:
    return b.unary("gelu_tanh" if approximate == "tanh" else "gelu_erf", x)


@handles(aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default)
def _clamp(b: GraphBuilder, x: SSAValue, low: float | None = None, high: float | None = None) -> SSAValue:
    """clamp(x, min, max), clamp_min(x, min), clamp_max(x, max) as scalar max then min."""
    if b.current.target == aten.clamp_max.default:
        low, high = None, low
    y = b.cast(x, b.result_type().element_type)
    if low is not None:
        y = b.scalar("max", y, low)
    if high is not None:
        y = b.scalar("min", y, high)
    return y


@handles(aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar)
def _where(b: GraphBuilder, condition: Operand, x: Operand | float, other: Operand | float) -> SSAValue:
    out = b.result_type()
    dtype = dtype_of(out.element_type)
    cond = _runtime_operand(b, condition, torch.bool)
    chosen = _runtime_operand(b, x, dtype), _runtime_operand(b, other, dtype)
    return b.emit(tfm.WhereOp(cond, *chosen, out))


@handles(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(b: GraphBuilder, x: Operand, mask: Operand, value: Operand | float) -> SSAValue:
    return _where(b, mask, value, x)


@handles(aten._to_copy.default, aten.to.dtype)
def _to_copy(b: GraphBuilder, x: SSAValue, *_dtype_and_options: object, **_options: object) -> SSAValue:
    return b.cast(x, b.result_type().element_type)


@handles(aten.clone.default, aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default)
@handles(aten.contiguous.default)
def _identity(b: GraphBuilder, x: SSAValue, **_memory_format: object) -> SSAValue:
    """Copies and views that change nothing with value semantics."""
    return x


@handles(aten._assert_tensor_metadata.default, aten._assert_scalar.default)
def _check_only(b: GraphBuilder, *_args: object, **_kwargs: object) -> None:
    """Export-time checks: nothing to compute."""


# --------------------------------------------------------------- shape ops


@handles(aten.view.default, aten._unsafe_view.default, aten.reshape.default)
@handles(aten.unsqueeze.default, aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims)
def _reshape(b: GraphBuilder, x: SSAValue, *_shape_args: object) -> SSAValue:
    return b.reshape(x, tuple(b.result_type().get_shape()))


@handles(aten.expand.default)
def _expand(b: GraphBuilder, x: SSAValue, size: Sequence[int], *, implicit: bool = False) -> SSAValue:
    return b.expand(x, tuple(b.result_type().get_shape()))


@handles(aten.permute.default)
def _permute(b: GraphBuilder, x: SSAValue, dims: Sequence[int]) -> SSAValue:
    rank = len(tfm.shape_of(x))
    return b.transpose(x, [_dim(d, rank) for d in dims])


@handles(aten.transpose.int)
def _transpose(b: GraphBuilder, x: SSAValue, dim0: int, dim1: int) -> SSAValue:
    rank = len(tfm.shape_of(x))
    perm = list(range(rank))
    first, second = _dim(dim0, rank), _dim(dim1, rank)
    perm[first], perm[second] = perm[second], perm[first]
    return b.transpose(x, perm)


@handles(aten.t.default)
def _t(b: GraphBuilder, x: SSAValue) -> SSAValue:
    return b.transpose(x, [1, 0]) if len(tfm.shape_of(x)) == 2 else x


def _clamped(index: int | None, size: int, default: int) -> int:
    if index is None:
        return default
    if index < 0:
        index += size
    return min(max(index, 0), size)


@handles(aten.slice.Tensor)
def _slice(
    b: GraphBuilder, x: SSAValue, dim: int = 0, start: int | None = None, end: int | None = None, step: int = 1
) -> SSAValue:
    shape = tfm.shape_of(x)
    dim = _dim(dim, len(shape))
    first = _clamped(start, shape[dim], 0)
    last = max(_clamped(end, shape[dim], shape[dim]), first)
    return b.slice(x, dim, first, last, step)


@handles(aten.select.int)
def _select(b: GraphBuilder, x: SSAValue, dim: int, index: int) -> SSAValue:
    shape = tfm.shape_of(x)
    dim = _dim(dim, len(shape))
    index = _dim(index, shape[dim])
    return b.reshape(b.slice(x, dim, index, index + 1), tuple(b.result_type().get_shape()))


@handles(aten.unbind.int)
def _unbind(b: GraphBuilder, x: SSAValue, dim: int = 0) -> tuple[SSAValue, ...]:
    shape = tfm.shape_of(x)
    dim = _dim(dim, len(shape))
    rest = shape[:dim] + shape[dim + 1 :]
    return tuple(b.reshape(b.slice(x, dim, i, i + 1), rest) for i in range(shape[dim]))


@handles(aten.split_with_sizes.default, aten.split.Tensor)
def _split(b: GraphBuilder, x: SSAValue, sizes: int | Sequence[int], dim: int = 0) -> tuple[SSAValue, ...]:
    shape = tfm.shape_of(x)
    dim = _dim(dim, len(shape))
    if isinstance(sizes, int):
        sizes = [min(sizes, shape[dim] - start) for start in range(0, shape[dim], sizes)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return tuple(b.slice(x, dim, start, start + size) for start, size in zip(starts, sizes, strict=True))


@handles(aten.cat.default)
def _cat(b: GraphBuilder, tensors: Sequence[Operand], dim: int = 0) -> SSAValue:
    out = b.result_type()
    dtype = dtype_of(out.element_type)
    parts = [_runtime_operand(b, t, dtype) for t in tensors if math.prod(_shape(t)) > 0]
    if len(parts) == 1:
        return parts[0]
    return b.emit(tfm.ConcatOp(parts, _dim(dim, len(out.get_shape())), out))


@handles(aten.stack.default)
def _stack(b: GraphBuilder, tensors: Sequence[Operand], dim: int = 0) -> SSAValue:
    """Concatenation of the tensors each given a size-1 axis at `dim`."""
    out = b.result_type()
    dim = _dim(dim, len(out.get_shape()))
    dtype = dtype_of(out.element_type)
    parts = [_runtime_operand(b, t, dtype) for t in tensors]
    parts = [b.reshape(p, (*tfm.shape_of(p)[:dim], 1, *tfm.shape_of(p)[dim:])) for p in parts]
    if len(parts) == 1:
        return parts[0]
    return b.emit(tfm.ConcatOp(parts, dim, out))


@handles(aten.embedding.default)
def _embedding(
    b: GraphBuilder, table: Operand, ids: Operand, padding_idx: int = -1, *_training_options: bool
) -> SSAValue:
    return b.emit(tfm.EmbeddingOp(b.value(table), b.value(ids), b.result_type()))


def _progression(b: GraphBuilder, index: torch.Tensor) -> tuple[int | None, int, int]:
    """(grid axis the index runs along or None when constant, start, step) of an arange-like index tensor."""
    varying = [
        axis
        for axis in range(index.dim())
        if index.shape[axis] > 1 and not torch.equal(index, index.narrow(axis, 0, 1).expand_as(index))
    ]
    if index.numel() == 0 or len(varying) > 1:
        b.unsupported("only arange-like constant indices are supported")
    if not varying:
        return None, int(index.flatten()[0]), 1
    axis = varying[0]
    line = index.movedim(axis, 0).reshape(index.shape[axis], -1)[:, 0]
    start, step = int(line[0]), int(line[1] - line[0])
    if step < 1 or not torch.equal(line, start + step * torch.arange(len(line))):
        b.unsupported("only arange-like constant indices are supported")
    return axis, start, step


@handles(aten.index.Tensor)
def _index(b: GraphBuilder, x: Operand, indices: Sequence[Operand | None]) -> SSAValue:
    """table[ids] with run-time ids (a row lookup), or x[i0, i1, ...] with constant arange-like indices.

    The second kind is slices + a transpose + a reshape + an expand, e.g. HF's
    padding mask `mask[batch_arange[:, None, None, None], kv_arange[None, None, None, :]]`.
    """
    if len(indices) == 1 and isinstance(indices[0], SSAValue) and len(_shape(x)) == 2:
        return _embedding(b, x, indices[0])
    if not isinstance(x, SSAValue):
        b.unsupported("only row lookups table[ids] are supported on constant tensors")
    shape = tfm.shape_of(x)
    lead = next((i for i, index in enumerate(indices) if index is not None), len(indices))
    picked = indices[lead:]
    if not all(isinstance(i, torch.Tensor) and not i.dtype.is_floating_point and i.dtype != torch.bool for i in picked):
        b.unsupported("only constant integer indices on consecutive dimensions are supported")
    grid = tuple(torch.broadcast_shapes(*(i.shape for i in picked)))
    axis_of: dict[int, int | None] = {}
    y = x
    for offset, index in enumerate(picked):
        dim = lead + offset
        index = torch.where(index < 0, index + shape[dim], index).expand(grid)
        axis, start, step = _progression(b, index)
        if axis is not None and axis in axis_of.values():
            b.unsupported("two indices run along the same result axis")
        axis_of[dim] = axis
        length = grid[axis] if axis is not None else 1
        y = b.slice(y, dim, start, start + step * (length - 1) + 1, step)
    indexed = sorted(axis_of, key=lambda d: -1 if axis_of[d] is None else axis_of[d])
    trailing = range(lead + len(picked), len(shape))
    y = b.transpose(y, [*range(lead), *indexed, *trailing])
    grid_shape = [n if a in axis_of.values() else 1 for a, n in enumerate(grid)]
    y = b.reshape(y, [*shape[:lead], *grid_shape, *(shape[d] for d in trailing)])
    return b.expand(y, tuple(b.result_type().get_shape()))


@handles(aten.sym_size.int)
def _sym_size(b: GraphBuilder, x: SSAValue, dim: int) -> int:
    shape = tfm.shape_of(x)
    return shape[_dim(dim, len(shape))]


@handles(
    aten.full_like.default,
    aten.zeros_like.default,
    aten.ones_like.default,
    aten.empty_like.default,
    aten.new_zeros.default,
    aten.new_ones.default,
    aten.new_full.default,
    aten.new_empty.default,
)
def _from_shape(b: GraphBuilder, x: SSAValue, *args: object, **kwargs: object) -> torch.Tensor:
    """Ops that only read x's shape and dtype: evaluated now into a constant."""
    like = torch.zeros(tfm.shape_of(x), dtype=dtype_of(x))
    target = b.current.target
    assert isinstance(target, OpOverload)
    result = target(like, *args, **kwargs)
    return result.zero_() if target in (aten.empty_like.default, aten.new_empty.default) else result


# ----------------------------------------------------------- linear algebra


def _matmul_rhs(b: GraphBuilder, rhs: Operand) -> SSAValue:
    """A constant 2-D rhs W becomes transpose(weight W^T), the form raise-linear turns into tfm.linear."""
    if isinstance(rhs, torch.Tensor) and rhs.dim() == 2:
        return b.transpose(b.weight(rhs.T, suffix="T"), [1, 0])
    return b.value(rhs)


@handles(aten.mm.default, aten.bmm.default, aten.matmul.default)
def _matmul(b: GraphBuilder, x: Operand, other: Operand) -> SSAValue:
    out = b.result_type()
    lhs, rhs = b.value(x), _matmul_rhs(b, other)
    if len(tfm.shape_of(lhs)) == 1:
        lhs = b.reshape(lhs, (1, *tfm.shape_of(lhs)))
    if len(tfm.shape_of(rhs)) == 1:
        rhs = b.reshape(rhs, (*tfm.shape_of(rhs), 1))
    a, c = tfm.shape_of(lhs), tfm.shape_of(rhs)
    batch = tfm.broadcast_shapes(a[:-2], c[:-2])
    if batch is None:
        b.unsupported(f"batch dimensions of {a} and {c} do not broadcast")
    product = b.emit(tfm.MatmulOp(lhs, rhs, tensor_type((*batch, a[-2], c[-1]), out.element_type)))
    return b.reshape(product, tuple(out.get_shape()))


@handles(aten.addmm.default)
def _addmm(
    b: GraphBuilder, bias: Operand, x: Operand, other: Operand, *, beta: float = 1, alpha: float = 1
) -> SSAValue:
    out = b.result_type()
    lhs, rhs = b.value(x), _matmul_rhs(b, other)
    product = b.emit(tfm.MatmulOp(lhs, rhs, out))
    product = b.scalar("mul", product, alpha) if alpha != 1 else product
    bias_value = _runtime_operand(b, _scaled(b, bias, beta), dtype_of(out.element_type))
    return b.binary("add", product, bias_value, out.element_type)


@handles(aten.linear.default)
def _linear(b: GraphBuilder, x: SSAValue, weight: Operand, bias: Operand | None = None) -> SSAValue:
    bias_value = None if bias is None else b.value(bias)
    return b.emit(tfm.LinearOp(x, b.value(weight), bias_value, b.result_type()))


# ------------------------------------------------------------ normalisation


def _layer_norm(
    b: GraphBuilder,
    x: SSAValue,
    normalized_shape: Sequence[int],
    weight: Operand | None,
    bias: Operand | None,
    eps: float,
) -> SSAValue:
    if len(normalized_shape) != 1:
        b.unsupported("only normalisation over the last dimension is supported")
    dtype = dtype_of(x)
    size = normalized_shape[0]
    scale = b.weight(torch.ones(size, dtype=dtype), suffix="ones") if weight is None else b.value(weight)
    shift = b.weight(torch.zeros(size, dtype=dtype), suffix="zeros") if bias is None else b.value(bias)
    return b.emit(tfm.LayerNormOp(x, scale, shift, eps))


@handles(aten.native_layer_norm.default)
def _native_layer_norm(
    b: GraphBuilder,
    x: SSAValue,
    normalized_shape: Sequence[int],
    weight: Operand | None,
    bias: Operand | None,
    eps: float,
) -> tuple[SSAValue, None, None]:
    """The normalised tensor; the saved mean and rstd are for autograd and stay unused."""
    return _layer_norm(b, x, normalized_shape, weight, bias, eps), None, None


@handles(aten.layer_norm.default)
def _layer_norm_op(
    b: GraphBuilder,
    x: SSAValue,
    normalized_shape: Sequence[int],
    weight: Operand | None = None,
    bias: Operand | None = None,
    eps: float = 1e-5,
    cudnn_enable: bool = True,
) -> SSAValue:
    return _layer_norm(b, x, normalized_shape, weight, bias, eps)


@handles(aten._softmax.default, aten.softmax.int, aten._safe_softmax.default)
def _softmax(b: GraphBuilder, x: SSAValue, dim: int, *_dtype_options: object) -> SSAValue:
    """Softmax over any dimension: moved last, normalised, moved back."""
    rank = len(tfm.shape_of(x))
    perm = list(range(rank))
    dim = _dim(dim, rank)
    perm[dim], perm[-1] = perm[-1], perm[dim]
    y = b.transpose(b.cast(x, b.result_type().element_type), perm)
    return b.transpose(b.emit(tfm.SoftmaxOp(y)), perm)


# --------------------------------------------------------------- reductions


def _reduction(
    fn: str,
    b: GraphBuilder,
    x: SSAValue,
    dim: int | Sequence[int] | None = None,
    keepdim: bool = False,
    **_dtype: object,
) -> SSAValue:
    y = b.cast(x, b.result_type().element_type)
    return _reduce(b, fn, y, _dims(dim, len(tfm.shape_of(x))), keepdim)


for _fn, _overloads in {
    "mean": (aten.mean.dim, aten.mean.default),
    "sum": (aten.sum.dim_IntList, aten.sum.default),
    "max": (aten.amax.default,),
    "min": (aten.amin.default,),
}.items():
    handles(*_overloads)(partial(_reduction, _fn))


def _extremum(fn: str, b: GraphBuilder, x: SSAValue, dim: int, keepdim: bool = False) -> tuple[SSAValue, None]:
    """values of max.dim/min.dim; the indices are not supported (None)."""
    return _reduce(b, fn, x, _dims(dim, len(tfm.shape_of(x))), keepdim), None


handles(aten.max.dim)(partial(_extremum, "max"))
handles(aten.min.dim)(partial(_extremum, "min"))


def _variance(
    b: GraphBuilder, x: SSAValue, dim: Sequence[int] | None, correction: float | None, keepdim: bool
) -> tuple[SSAValue, SSAValue]:
    """(variance, mean) as mean, centred square, sum and divide."""
    shape = tfm.shape_of(x)
    dims = _dims(dim, len(shape))
    mean = _reduce(b, "mean", x, dims, keepdim=True)
    centred = b.binary("sub", x, mean)
    total = _reduce(b, "sum", b.binary("mul", centred, centred), dims, keepdim)
    count = math.prod(shape[d] for d in dims)
    variance = b.scalar("div", total, count - (1 if correction is None else correction))
    return variance, b.reshape(mean, _reduced_shape(shape, dims, keepdim))


@handles(aten.var.correction)
def _var(
    b: GraphBuilder,
    x: SSAValue,
    dim: Sequence[int] | None = None,
    *,
    correction: float | None = None,
    keepdim: bool = False,
) -> SSAValue:
    return _variance(b, x, dim, correction, keepdim)[0]


@handles(aten.var.dim)
def _var_unbiased(
    b: GraphBuilder, x: SSAValue, dim: Sequence[int] | None, unbiased: bool = True, keepdim: bool = False
) -> SSAValue:
    return _variance(b, x, dim, 1 if unbiased else 0, keepdim)[0]


@handles(aten.var_mean.correction)
def _var_mean(
    b: GraphBuilder,
    x: SSAValue,
    dim: Sequence[int] | None = None,
    *,
    correction: float | None = None,
    keepdim: bool = False,
) -> tuple[SSAValue, SSAValue]:
    return _variance(b, x, dim, correction, keepdim)


# ---------------------------------------------------------------- attention


def _kept(mask: torch.Tensor) -> torch.Tensor | None:
    """Which scores a constant mask keeps: a bool mask itself, a float mask where it is 0 (else -inf or min)."""
    if mask.dtype == torch.bool:
        return mask
    keep = mask == 0
    return keep if bool((keep | (mask <= torch.finfo(mask.dtype).min / 2)).all()) else None


def _causal_keep(queries: int, keys: int, window: int | None = None) -> torch.Tensor:
    """tfm.attention's causal pattern [queries, keys] (query i sees keys up to i + keys - queries), limited
    to the last `window` keys when given; torch's is_causal pattern (top-left) when queries == keys."""
    offset = keys - queries
    keep = torch.ones(queries, keys, dtype=torch.bool).tril(offset)
    return keep if window is None else keep.triu(offset + 1 - window)


def _constant_mask_kind(mask: torch.Tensor, queries: int, keys: int) -> tuple[str, int | None]:
    """('none', None): keeps everything; ('causal', window or None): torch's is_causal, optionally a sliding
    window of `window` keys including the query's own (HF semantics); ('general', None) otherwise."""
    keep = _kept(mask)
    if keep is None:
        return "general", None
    if bool(keep.all()):
        return "none", None
    if keep.dim() < 2 or tuple(keep.shape[-2:]) != (queries, keys):
        return "general", None
    window = int(keep.sum(-1).max())
    for candidate in (None, window):
        if torch.equal(keep, _causal_keep(queries, keys, candidate).expand_as(keep)):
            return "causal", candidate
    return "general", None


def _emit_attention(
    b: GraphBuilder,
    query: Operand,
    key: Operand,
    value: Operand,
    attn_mask: Operand | None,
    is_causal: bool,
    scale: float | None,
    softcap: float | None = None,
) -> SSAValue:
    """tfm.attention on [B, H, S, D]; 3-D inputs get a head axis; constant causal (and sliding-window) masks
    become `causal` (and `window`) properties."""
    out = b.result_type()
    q, k, v = b.value(query), b.value(key), b.value(value)
    rank = len(tfm.shape_of(q))
    if rank not in (3, 4):
        b.unsupported(f"query of rank {rank}; expected 3 or 4")
    if rank == 3:
        q, k, v = (b.reshape(t, (tfm.shape_of(t)[0], 1, *tfm.shape_of(t)[1:])) for t in (q, k, v))
    queries, keys = tfm.shape_of(q)[2], tfm.shape_of(k)[2]
    causal, window, mask = bool(is_causal), None, None
    if causal and queries != keys:  # torch aligns is_causal's triangle top-left, tfm bottom-right: a mask
        causal, attn_mask = False, torch.ones(queries, keys, dtype=torch.bool).tril()
    if isinstance(attn_mask, torch.Tensor):
        kind, window = _constant_mask_kind(attn_mask, queries, keys)
        causal = causal or kind == "causal"
        mask = b.weight(attn_mask) if kind == "general" else None
    elif attn_mask is not None:
        mask = attn_mask
    if mask is not None and rank == 3 and len(tfm.shape_of(mask)) == 3:
        mask = b.reshape(mask, (tfm.shape_of(mask)[0], 1, *tfm.shape_of(mask)[1:]))
    head_dim = tfm.shape_of(q)[3]
    scale = 1 / math.sqrt(head_dim) if scale is None else scale
    result = (*tfm.shape_of(q)[:3], tfm.shape_of(v)[3])
    op = tfm.AttentionOp(q, k, v, mask, causal, scale, tensor_type(result, out.element_type))
    if softcap is not None:
        op.properties["softcap"] = FloatAttr(float(softcap), f64)
    if window is not None:
        op.properties["window"] = IntegerAttr(window, i64)
    return b.reshape(b.emit(op), tuple(out.get_shape()))


@handles(aten.scaled_dot_product_attention.default)
def _attention(
    b: GraphBuilder,
    query: Operand,
    key: Operand,
    value: Operand,
    attn_mask: Operand | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> SSAValue:
    """torch's SDPA as tfm.attention."""
    if dropout_p:
        b.unsupported("dropout_p must be 0 for inference")
    return _emit_attention(b, query, key, value, attn_mask, is_causal, scale)


@handles(ATTENTION_OP)
def _capped_attention(
    b: GraphBuilder,
    query: Operand,
    key: Operand,
    value: Operand,
    mask: Operand | None,
    scale: float,
    softcap: float | None,
    is_causal: bool,
) -> SSAValue:
    """tasic::attention (frontend/attention.py, soft-capped scores) as tfm.attention {softcap}."""
    return _emit_attention(b, query, key, value, mask, is_causal, scale, softcap)


@handles(aten.index_copy.default)
def _index_copy(b: GraphBuilder, x: Operand, dim: int, index: Operand, source: Operand) -> SSAValue:
    """x with slices `index` along `dim` replaced by source's: tfm.index_copy (a KV-cache write)."""
    dest = b.value(x)
    dim = _dim(dim, len(tfm.shape_of(dest)))
    positions = _runtime_operand(b, index, torch.int64)
    if len(tfm.shape_of(positions)) != 1:
        b.unsupported("the index must be 1-D")
    update = _runtime_operand(b, source, dtype_of(dest))
    return b.emit(tfm.IndexCopyOp(dest, positions, update, dim))
