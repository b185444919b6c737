"""ONNX operator handlers: one function per op type, emitting tfm ops (`ONNX_HANDLERS`).

A handler gets the `OnnxBuilder`, the node's inputs (an `SSAValue` for a
run-time tensor, a numpy array for a compile-time constant, None for an
omitted optional input) and its attributes as Python values; it returns the
node's outputs. Handlers run only when at least one input is a run-time
value: nodes on constants are evaluated at import time (`fold_node`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import ml_dtypes
import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator
from xdsl.dialects.builtin import FloatAttr, bf16, f16, f32, f64, i1, i8, i16, i32, i64
from xdsl.ir import Attribute, Block, SSAValue

from tasic.frontend.errors import FrontendError, UnsupportedOpError
from tasic.frontend.tfm_emitter import TfmEmitter, tensor_type, unique_name
from tasic.ir import tfm
from tasic.ir.weights import WeightStore

Operand = SSAValue | np.ndarray
"""A run-time tensor (SSA value) or a compile-time constant (numpy array)."""

Handler = Callable[..., Operand | Sequence[Operand | None]]
"""handler(builder, inputs, attrs) -> output(s) (None for an output nobody reads)."""

_ELEMENTS: dict[np.dtype, Attribute] = {
    np.dtype(np.float32): f32,
    np.dtype(np.float16): f16,
    np.dtype(ml_dtypes.bfloat16): bf16,
    np.dtype(np.float64): f64,
    np.dtype(np.int64): i64,
    np.dtype(np.int32): i32,
    np.dtype(np.int16): i16,
    np.dtype(np.int8): i8,
    np.dtype(np.bool_): i1,
}
_DTYPES: dict[Attribute, np.dtype] = {element: dtype for dtype, element in _ELEMENTS.items()}


def element_of(dtype: np.dtype | int) -> Attribute:
    """The tfm element type of a numpy dtype or an ONNX TensorProto data type."""
    if isinstance(dtype, int):
        dtype = helper.tensor_dtype_to_np_dtype(dtype)
    dtype = np.dtype(dtype)
    if dtype not in _ELEMENTS:
        raise FrontendError(f"unsupported tensor element type {dtype}")
    return _ELEMENTS[dtype]


def dtype_of(x: Operand) -> np.dtype:
    """The numpy dtype of a run-time or constant tensor."""
    return x.dtype if isinstance(x, np.ndarray) else _DTYPES[tfm.element_type(x)]


def shape(x: Operand) -> tuple[int, ...]:
    """Static shape of a run-time or constant tensor."""
    return tuple(x.shape) if isinstance(x, np.ndarray) else tfm.shape_of(x)


class OnnxBuilder(TfmEmitter):
    """Appends tfm ops to a block on behalf of the ONNX node being imported."""

    def __init__(self, block: Block, weights: WeightStore, opset: int) -> None:
        self.block = block
        self.weights = weights
        self.opset = opset
        self.node: onnx.NodeProto | None = None
        self.wanted: list[bool] = []
        """Which outputs of the current node are read later (or are graph outputs)."""
        self._weight_values: dict[int, tuple[SSAValue, np.ndarray]] = {}
        self._names: dict[int, str] = {}
        self.io_names: set[str] = set()
        """Graph input and output names (symbols of the binary): no weight takes one."""
        self.value_names: set[str] = set()
        """Every value and initializer name of the graph: only the constant of that name takes one."""
        self.bound_inputs = False
        """Whether the user gave input shapes (a shape mismatch then most likely comes from them)."""

    # ----------------------------------------------------------------- context

    def name_constant(self, array: np.ndarray, name: str) -> None:
        """Record that `array` is the initializer or folded value called `name`."""
        self._names.setdefault(id(array), name)

    def location(self) -> str:
        """'<node name>:<op type>' of the current node."""
        node = self.node
        if node is None:
            return "<graph>:output"
        return f"{node_label(node)}:{node.op_type}"

    def unsupported(self, reason: str | None = None) -> NoReturn:
        """Raise the one-line error for the current node, with an optional reason."""
        assert self.node is not None
        message = f"unsupported ONNX operator {self.node.op_type} (node '{node_label(self.node)}', opset {self.opset})"
        message += f": {reason};" if reason else ":"
        raise UnsupportedOpError(message + " supported operators are listed in docs/onnx.md")

    def shape_error(self, reason: str) -> NoReturn:
        """Raise the one-line error for a node whose operand shapes disagree: the shapes given with
        --input-shape (or the model itself) are inconsistent, not the operator unsupported."""
        assert self.node is not None
        cause = (
            "check the --input-shape values, which must agree with each other and the model"
            if self.bound_inputs
            else "the model's shapes are inconsistent (onnx.checker.check_model(model, full_check=True) shows where)"
        )
        raise FrontendError(f"ONNX node '{node_label(self.node)}' ({self.node.op_type}): {reason}; {cause}")

    # ---------------------------------------------------------------- emission

    def weight(self, array: np.ndarray, name: str | None = None) -> SSAValue:
        """The `tfm.weight` holding `array`; one op per array object.

        An initializer or folded value is named after itself; a weight a handler creates after `name` or
        the node. A name taken by another weight, a graph input or output, or (for a created weight) any
        value of the graph gets `_1`, `_2`, ...
        """
        if id(array) in self._weight_values:
            return self._weight_values[id(array)][0]
        own = None if name else self._names.get(id(array))
        hint = name or own or self.location().rsplit(":", 1)[0] or "const"

        def taken(candidate: str) -> bool:
            named_value = candidate in self.value_names and candidate != own
            return candidate in self.weights or candidate in self.io_names or named_value

        stored = np.ascontiguousarray(array)
        stored_name = self.weights.add(unique_name(hint, taken), stored)
        value = self.emit(tfm.WeightOp(stored_name, tensor_type(array.shape, element_of(array.dtype))))
        self._weight_values[id(array)] = (value, array)
        return value

    def value(self, x: Operand) -> SSAValue:
        """`x` as an SSA value: constants become weights."""
        return x if isinstance(x, SSAValue) else self.weight(x)


# ------------------------------------------------------------------ folding


def fold_node(node: onnx.NodeProto, inputs: Sequence[np.ndarray | None], opset: int) -> list[np.ndarray]:
    """Evaluate a node on constant inputs with onnx's reference evaluator."""
    feeds = {name: value for name, value in zip(node.input, inputs, strict=True) if name and value is not None}
    if node.op_type in _NUMPY_FOLDS:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return _NUMPY_FOLDS[node.op_type](inputs, attrs)
    try:
        evaluator = ReferenceEvaluator(node, opsets={"": opset})
        results = evaluator.run(None, feeds)
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FrontendError(
            f"cannot fold constant ONNX node '{node_label(node)}' ({node.op_type}): {first_line}"
        ) from err
    return [np.asarray(result) for result in results]


def node_label(node: onnx.NodeProto) -> str:
    """A node's name, or its first output's name when it has none (as in error messages and locations)."""
    return node.name or next((name for name in node.output if name), "")


def _gather_elements(inputs: Sequence[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    """GatherElements with numpy (the reference evaluator's np.choose allows at most 64 rows)."""
    data, indices = inputs[0], inputs[1]
    assert data is not None and indices is not None
    axis = _axis(int(attrs.get("axis", 0)), data.ndim)
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    return [np.take_along_axis(data, indices, axis)]


_NUMPY_FOLDS: dict[str, Callable[[Sequence[np.ndarray | None], dict[str, Any]], list[np.ndarray]]] = {
    "GatherElements": _gather_elements,
}
"""Folds done with numpy instead of onnx.reference."""


# ----------------------------------------------------------------- helpers


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _ints(x: Operand | None, builder: OnnxBuilder, what: str) -> list[int] | None:
    """A constant integer tensor as a list (None when omitted)."""
    if x is None:
        return None
    if not isinstance(x, np.ndarray):
        builder.unsupported(f"{what} must be a compile-time constant")
    return [int(v) for v in x.reshape(-1)]


def _number(x: Operand, result_shape: Sequence[int]) -> float | None:
    """The number a one-element constant stands for, when it does not widen the result."""
    if not isinstance(x, np.ndarray) or x.size != 1:
        return None
    if tfm.broadcast_shapes(x.shape, result_shape) != tuple(result_shape):
        return None
    return float(x.reshape(-1)[0])


def _same_type(builder: OnnxBuilder, x: Operand, like: Operand) -> Operand:
    """A constant converted to the dtype of `like` (ONNX operands already agree)."""
    if isinstance(x, np.ndarray) and x.dtype != dtype_of(like):
        return x.astype(dtype_of(like))
    return x


_REVERSED = {"sub": "rsub", "div": "rdiv", "add": "add", "mul": "mul", "max": "max", "min": "min"}


def _elementwise(builder: OnnxBuilder, fn: str, a: Operand, b: Operand, result: Attribute | None = None) -> SSAValue:
    """A binary op, or tfm.scalar when one side is a single constant number."""
    out_shape = tfm.broadcast_shapes(shape(a), shape(b))
    if out_shape is None:
        builder.shape_error(f"shapes {shape(a)} and {shape(b)} do not broadcast")
    number = _number(b, out_shape)
    if number is not None and isinstance(a, SSAValue):
        return builder.scalar(fn, builder.expand(a, out_shape), number, result)
    number = _number(a, out_shape)
    if number is not None and isinstance(b, SSAValue) and fn in _REVERSED:
        return builder.scalar(_REVERSED[fn], builder.expand(b, out_shape), number, result)
    if number is not None and isinstance(b, SSAValue) and fn in ("lt", "gt"):
        return builder.scalar("gt" if fn == "lt" else "lt", builder.expand(b, out_shape), number, result)
    if number is not None and isinstance(b, SSAValue) and fn == "eq":
        return builder.scalar("eq", builder.expand(b, out_shape), number, result)
    a, b = builder.value(_same_type(builder, a, b)), builder.value(_same_type(builder, b, a))
    return builder.binary(fn, a, b, result)


def _binary(fn: str) -> Handler:
    def handle(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
        result = inputs[0]
        for other in inputs[1:]:
            result = _elementwise(builder, fn, result, other)
        base = dtype_of(inputs[0])
        if dtype_of(result) != base:  # Pow with an exponent of another type: the base's type
            result = builder.cast(builder.value(result), element_of(base))
        return result

    handle.__doc__ = f"tfm.binary/tfm.scalar {fn} (variadic inputs fold left)."
    return handle


def _compare(fn: str) -> Handler:
    def handle(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
        return _elementwise(builder, fn, inputs[0], inputs[1], i1)

    handle.__doc__ = f"tfm.binary/tfm.scalar {fn} with an i1 result."
    return handle


def _unary(fn: str) -> Handler:
    def handle(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
        return builder.unary(fn, builder.value(inputs[0]))

    handle.__doc__ = f"tfm.unary {fn}."
    return handle


# ---------------------------------------------------------------- handlers


def _matmul_operand(builder: OnnxBuilder, b: Operand) -> SSAValue:
    """A constant 2-D right operand W as transpose(weight W^T), the layout raise-linear expects."""
    if isinstance(b, np.ndarray) and b.ndim == 2:
        name = builder._names.get(id(b))
        transposed = np.ascontiguousarray(b.T)
        return builder.transpose(builder.weight(transposed, f"{name}.T" if name else None), [1, 0])
    return builder.value(b)


def _matmul(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """MatMul: tfm.matmul; 1-D operands get (and lose) a unit dimension."""
    a, b = inputs
    a_dims, b_dims = shape(a), shape(b)
    lhs = builder.value(a)
    if len(a_dims) == 1:
        lhs = builder.reshape(lhs, (1, a_dims[0]))
    rhs = builder.reshape(builder.value(b), (b_dims[0], 1)) if len(b_dims) == 1 else _matmul_operand(builder, b)
    l_dims, r_dims = tfm.shape_of(lhs), tfm.shape_of(rhs)
    batch = tfm.broadcast_shapes(l_dims[:-2], r_dims[:-2])
    if batch is None or l_dims[-1] != r_dims[-2]:
        builder.shape_error(f"shapes {a_dims} and {b_dims} do not multiply")
    out = builder.emit(tfm.MatmulOp(lhs, rhs, tensor_type((*batch, l_dims[-2], r_dims[-1]), tfm.element_type(lhs))))
    dims = list(tfm.shape_of(out))
    if len(b_dims) == 1:
        dims.pop(-1)
    if len(a_dims) == 1:
        dims.pop(-2 if len(b_dims) != 1 else -1)
    return builder.reshape(out, dims)


def _gemm(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Gemm: alpha * A' @ B' + beta * C as matmul, scalar mul and add."""
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    lhs = builder.value(a)
    if attrs.get("transA", 0):
        lhs = builder.transpose(lhs, [1, 0])
    rhs = builder.transpose(builder.value(b), [1, 0]) if attrs.get("transB", 0) else _matmul_operand(builder, b)
    dims = (tfm.shape_of(lhs)[0], tfm.shape_of(rhs)[1])
    out = builder.emit(tfm.MatmulOp(lhs, rhs, tensor_type(dims, tfm.element_type(lhs))))
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if alpha != 1.0:
        out = builder.scalar("mul", out, alpha)
    if c is None or beta == 0.0:
        return out
    if isinstance(c, np.ndarray):
        c = (c * beta).astype(c.dtype) if beta != 1.0 else c
    elif beta != 1.0:
        c = builder.scalar("mul", c, beta)
    return _elementwise(builder, "add", out, c)


def _softmax(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Softmax over one axis (opset >= 13): transposed to the last axis and back."""
    x = builder.value(inputs[0])
    rank = len(tfm.shape_of(x))
    axis = _axis(int(attrs.get("axis", -1)), rank)
    if builder.opset < 13 and axis != rank - 1:
        builder.unsupported("axis other than the last before opset 13 (flattening semantics)")
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    result = builder.emit(tfm.SoftmaxOp(builder.transpose(x, perm)))
    return builder.transpose(result, perm)


def _normalized(builder: OnnxBuilder, x: SSAValue, attrs: dict[str, Any]) -> tuple[int, int]:
    """(axis, element count) of the trailing dimensions a norm normalises over."""
    dims = tfm.shape_of(x)
    axis = _axis(int(attrs.get("axis", -1)), len(dims))
    return axis, math.prod(dims[axis:])


def _param(builder: OnnxBuilder, p: Operand | None, size: int, fill: float, dtype: np.dtype) -> SSAValue:
    """A norm's scale or shift as a [size] tensor (a constant fill when omitted)."""
    if p is None:
        return builder.weight(np.full((size,), fill, dtype=dtype), f"{builder.location().rsplit(':', 1)[0]}.{fill:g}")
    if isinstance(p, np.ndarray):
        if p.size != size:
            builder.unsupported(f"scale/bias of shape {p.shape} over {size} normalised elements")
        flat = np.ascontiguousarray(p.reshape(size).astype(dtype))
        if id(p) in builder._names:
            builder.name_constant(flat, builder._names[id(p)])  # the initializer's data: keep its name
        return builder.weight(flat)
    if math.prod(tfm.shape_of(p)) != size:
        builder.unsupported(f"scale/bias of shape {tfm.shape_of(p)} over {size} normalised elements")
    return builder.reshape(p, (size,))


def _layer_norm(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> list[Operand]:
    """LayerNormalization: tfm.layer_norm over the flattened trailing axes (+ Mean and InvStdDev outputs)."""
    x = builder.value(inputs[0])
    dims = tfm.shape_of(x)
    axis, size = _normalized(builder, x, attrs)
    flat = builder.reshape(x, (*dims[:axis], size))
    dtype = dtype_of(x)
    eps = float(attrs.get("epsilon", 1e-5))
    scale = _param(builder, inputs[1], size, 1.0, dtype)
    bias = _param(builder, inputs[2] if len(inputs) > 2 else None, size, 0.0, dtype)
    result = builder.reshape(builder.emit(tfm.LayerNormOp(flat, scale, bias, eps)), dims)
    if not any(builder.wanted[1:]):
        return [result]
    stat_dims = (*dims[:axis], *[1] * (len(dims) - axis))
    keep = tensor_type((*dims[:axis], 1), tfm.element_type(x))
    mean = builder.emit(tfm.ReduceOp("mean", flat, [axis], True, keep))
    centred = builder.binary("sub", flat, mean)
    variance = builder.emit(tfm.ReduceOp("mean", builder.binary("mul", centred, centred), [axis], True, keep))
    inv_std = builder.unary("rsqrt", builder.scalar("add", variance, eps))
    return [result, builder.reshape(mean, stat_dims), builder.reshape(inv_std, stat_dims)]


def _rms_norm(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """RMSNormalization (opset 23): tfm.rms_norm over the flattened trailing axes."""
    x = builder.value(inputs[0])
    dims = tfm.shape_of(x)
    axis, size = _normalized(builder, x, attrs)
    flat = builder.reshape(x, (*dims[:axis], size))
    scale = _param(builder, inputs[1], size, 1.0, dtype_of(x))
    return builder.reshape(builder.emit(tfm.RmsNormOp(flat, scale, float(attrs.get("epsilon", 1e-5)))), dims)


def _flatten(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Flatten: tfm.reshape to 2-D at `axis`."""
    x = builder.value(inputs[0])
    dims = tfm.shape_of(x)
    axis = _axis(int(attrs.get("axis", 1)), len(dims))
    return builder.reshape(x, (math.prod(dims[:axis]), math.prod(dims[axis:])))


def _cast_like(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """CastLike: tfm.cast to the element type of the second input."""
    return builder.cast(builder.value(inputs[0]), element_of(dtype_of(inputs[1])))


def _log_softmax(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """LogSoftmax: x - max - log(sum(exp(x - max))) over one axis."""
    x = builder.value(inputs[0])
    dims = tfm.shape_of(x)
    axis = _axis(int(attrs.get("axis", -1)), len(dims))
    if builder.opset < 13 and axis != len(dims) - 1:
        builder.unsupported("axis other than the last before opset 13 (flattening semantics)")
    keep = tensor_type([1 if i == axis else n for i, n in enumerate(dims)], tfm.element_type(x))
    shifted = builder.binary("sub", x, builder.emit(tfm.ReduceOp("max", x, [axis], True, keep)))
    total = builder.emit(tfm.ReduceOp("sum", builder.unary("exp", shifted), [axis], True, keep))
    return builder.binary("sub", shifted, builder.unary("log", total))


def _gelu(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Gelu (opset 20): tfm.unary gelu_erf / gelu_tanh."""
    approximate = attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        builder.unsupported(f"approximate='{approximate}'")
    return builder.unary("gelu_erf" if approximate == "none" else "gelu_tanh", builder.value(inputs[0]))


def _where(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Where: tfm.where (constants become weights)."""
    cond, a, b = inputs
    a = _same_type(builder, a, b) if isinstance(b, SSAValue) else a
    b = _same_type(builder, b, a)
    dims = tfm.broadcast_shapes(shape(cond), shape(a), shape(b))
    if dims is None:
        builder.shape_error(f"shapes {shape(cond)}, {shape(a)} and {shape(b)} do not broadcast")
    values = [builder.value(v) for v in (cond, a, b)]
    return builder.emit(tfm.WhereOp(*values, tensor_type(dims, tfm.element_type(values[1]))))


def _gather(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Gather: an embedding lookup (constant 2-D table, run-time ids, axis 0) or slices (constant indices)."""
    data, indices = inputs
    rank = len(shape(data))
    axis = _axis(int(attrs.get("axis", 0)), rank)
    if isinstance(indices, SSAValue):
        if not isinstance(data, np.ndarray) or rank != 2 or axis != 0:
            builder.unsupported("run-time indices need a constant 2-D table and axis 0")
        ids = indices
        dims = (*tfm.shape_of(ids), shape(data)[1])
        return builder.emit(tfm.EmbeddingOp(builder.weight(data), ids, tensor_type(dims, element_of(data.dtype))))
    assert isinstance(data, SSAValue)
    size = shape(data)[axis]
    flat = [int(i) + size if int(i) < 0 else int(i) for i in indices.reshape(-1)]
    if any(not 0 <= i < size for i in flat):
        builder.unsupported(f"an index out of range [0, {size})")
    joined = _take(builder, data, axis, flat)
    dims = list(shape(data))
    dims[axis : axis + 1] = list(indices.shape)
    return builder.reshape(joined, dims)


def _take(builder: OnnxBuilder, data: SSAValue, axis: int, indices: Sequence[int]) -> SSAValue:
    """Entries `indices` of `data` along `axis`: one tfm.slice per run of consecutive indices, concatenated."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([index, index + 1])
    pieces = [builder.slice(data, axis, start, end) for start, end in runs]
    return pieces[0] if len(pieces) == 1 else _concat_values(builder, pieces, axis)


def _gather_nd(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """GatherND with constant indices: the indexed dimensions flattened, rows taken as slices, reshaped."""
    data, indices = inputs
    if not isinstance(indices, np.ndarray):
        builder.unsupported("indices must be a compile-time constant")
    x = builder.value(data)
    dims = tfm.shape_of(x)
    batch_dims = int(attrs.get("batch_dims", 0))
    depth = indices.shape[-1]
    if tuple(indices.shape[:batch_dims]) != dims[:batch_dims]:
        builder.unsupported(f"indices of shape {indices.shape} for the batch dimensions {dims[:batch_dims]}")
    batch, indexed, rest = dims[:batch_dims], dims[batch_dims : batch_dims + depth], dims[batch_dims + depth :]
    tuples = indices.astype(np.int64).reshape(math.prod(batch), -1, depth)
    tuples = np.where(tuples < 0, tuples + np.array(indexed, dtype=np.int64), tuples)
    if ((tuples < 0) | (tuples >= np.array(indexed, dtype=np.int64))).any():
        builder.unsupported(f"an index out of range of dimensions {tuple(indexed)}")
    local = np.ravel_multi_index(tuple(np.moveaxis(tuples, -1, 0)), indexed)
    rows = np.arange(math.prod(batch))[:, None] * math.prod(indexed) + local
    table = builder.reshape(x, (math.prod(batch) * math.prod(indexed), *rest))
    taken = _take(builder, table, 0, [int(i) for i in rows.reshape(-1)])
    return builder.reshape(taken, (*indices.shape[:-1], *rest))


def _split(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> list[Operand | None]:
    """Split: one tfm.slice per output; sizes from `split` (input or attribute), else equal (last one smaller)."""
    x = builder.value(inputs[0])
    dims = tfm.shape_of(x)
    axis = _axis(int(attrs.get("axis", 0)), len(dims))
    sizes = _ints(inputs[1] if len(inputs) > 1 else None, builder, "split")
    if sizes is None and "split" in attrs:
        sizes = [int(n) for n in attrs["split"]]
    if sizes is None:
        count = int(attrs.get("num_outputs", len(builder.wanted)))
        chunk = -(-dims[axis] // count)
        sizes = [max(0, min(chunk, dims[axis] - i * chunk)) for i in range(count)]
    if sum(sizes) != dims[axis] or min(sizes, default=0) < 0 or len(sizes) != len(builder.wanted):
        builder.unsupported(f"split sizes {sizes} of a dimension of {dims[axis]} into {len(builder.wanted)} outputs")
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [
        builder.slice(x, axis, start, start + size) if keep else None
        for start, size, keep in zip(starts, sizes, builder.wanted, strict=True)
    ]


def _concat_values(builder: OnnxBuilder, values: Sequence[SSAValue], axis: int) -> SSAValue:
    dims = list(tfm.shape_of(values[0]))
    dims[axis] = sum(tfm.shape_of(v)[axis] for v in values)
    return builder.emit(tfm.ConcatOp(values, axis, tensor_type(dims, tfm.element_type(values[0]))))


def _concat(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Concat: tfm.concat (empty inputs skipped)."""
    rank = len(shape(inputs[0]))
    axis = _axis(int(attrs["axis"]), rank)
    values = [builder.value(x) for x in inputs if math.prod(shape(x)) > 0]
    return values[0] if len(values) == 1 else _concat_values(builder, values, axis)


def _slice(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Slice with constant starts/ends/axes/steps: one tfm.slice per axis (positive steps)."""
    x = builder.value(inputs[0])
    rank = len(tfm.shape_of(x))
    starts = _ints(inputs[1], builder, "starts") or []
    ends = _ints(inputs[2], builder, "ends") or []
    axes = _ints(inputs[3] if len(inputs) > 3 else None, builder, "axes") or list(range(len(starts)))
    steps = _ints(inputs[4] if len(inputs) > 4 else None, builder, "steps") or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step < 1:
            builder.unsupported("negative steps")
        axis = _axis(axis, rank)
        first, last, _ = slice(start, end, step).indices(tfm.shape_of(x)[axis])
        x = builder.slice(x, axis, first, last, step)
    return x


def _reshape(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Reshape with a constant shape (0 copies a dimension unless allowzero, -1 is inferred)."""
    x = builder.value(inputs[0])
    target = _ints(inputs[1], builder, "shape") or []
    dims = tfm.shape_of(x)
    if not attrs.get("allowzero", 0):
        target = [dims[i] if n == 0 else n for i, n in enumerate(target)]
    if -1 in target:
        known = math.prod(n for n in target if n != -1)
        target[target.index(-1)] = math.prod(dims) // known if known else 0
    return builder.reshape(x, target)


def _transpose(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Transpose (default: reverse the dimensions)."""
    x = builder.value(inputs[0])
    rank = len(tfm.shape_of(x))
    perm = [int(p) for p in attrs.get("perm", list(range(rank))[::-1])]
    return builder.transpose(x, perm)


def _axes(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> list[int] | None:
    """Axes from the second input (newer opsets) or the `axes` attribute."""
    if len(inputs) > 1 and inputs[1] is not None:
        return _ints(inputs[1], builder, "axes")
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    return None


def _squeeze(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Squeeze: tfm.reshape without the listed (or all) unit dimensions."""
    x = builder.value(inputs[0])
    dims = tfm.shape_of(x)
    axes = _axes(builder, inputs, attrs)
    dropped = {_axis(a, len(dims)) for a in axes} if axes is not None else {i for i, n in enumerate(dims) if n == 1}
    return builder.reshape(x, [n for i, n in enumerate(dims) if i not in dropped])


def _unsqueeze(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Unsqueeze: tfm.reshape with unit dimensions inserted."""
    x = builder.value(inputs[0])
    dims = list(tfm.shape_of(x))
    axes = _axes(builder, inputs, attrs) or []
    rank = len(dims) + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        dims.insert(axis, 1)
    return builder.reshape(x, dims)


def _expand(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Expand: tfm.expand to broadcast(input shape, shape)."""
    x = builder.value(inputs[0])
    target = _ints(inputs[1], builder, "shape") or []
    dims = tfm.broadcast_shapes(tfm.shape_of(x), target)
    if dims is None:
        builder.shape_error(f"shape {tfm.shape_of(x)} does not broadcast to {target}")
    if len(dims) > len(tfm.shape_of(x)):
        x = builder.reshape(x, [1] * (len(dims) - len(tfm.shape_of(x))) + list(tfm.shape_of(x)))
    return builder.expand(x, dims)


def _cast(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Cast: tfm.cast (no op when the type does not change)."""
    return builder.cast(builder.value(inputs[0]), element_of(int(attrs["to"])))


def _trilu(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Trilu on a run-time tensor: tfm.where with a constant triangle mask."""
    x = builder.value(inputs[0])
    k = (_ints(inputs[1], builder, "k") or [0])[0] if len(inputs) > 1 else 0
    rows, cols = tfm.shape_of(x)[-2:]
    triangle = np.triu if attrs.get("upper", 1) else np.tril
    mask = triangle(np.ones((rows, cols), dtype=np.bool_), k)
    zero = np.zeros((), dtype=dtype_of(x))
    return builder.emit(tfm.WhereOp(builder.weight(mask), x, builder.weight(zero), x.type))


def _reduce(fn: str) -> Handler:
    def handle(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
        x = builder.value(inputs[0])
        dims = tfm.shape_of(x)
        axes = _axes(builder, inputs, attrs)
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):  # no axes (omitted or empty): the input unchanged
                return x
            axes = list(range(len(dims)))
        reduced = sorted({_axis(a, len(dims)) for a in axes})
        keep = bool(attrs.get("keepdims", 1))
        out = [1 if i in reduced else n for i, n in enumerate(dims)] if keep else []
        if not keep:
            out = [n for i, n in enumerate(dims) if i not in reduced]
        return builder.emit(tfm.ReduceOp(fn, x, reduced, keep, tensor_type(out, tfm.element_type(x))))

    handle.__doc__ = f"Reduce{fn.capitalize()}: tfm.reduce {fn} (axes as input or attribute, keepdims)."
    return handle


def _heads(builder: OnnxBuilder, x: SSAValue, heads: int) -> SSAValue:
    """[B, S, heads * D] -> [B, heads, S, D]."""
    batch, length, width = tfm.shape_of(x)
    if heads < 1 or width % heads:
        builder.unsupported(f"hidden size {width} is not a multiple of {heads} heads")
    return builder.transpose(builder.reshape(x, (batch, length, heads, width // heads)), [0, 2, 1, 3])


def _causal_mask(builder: OnnxBuilder, mask: Operand | None, length: int, keys: int, dtype: np.dtype) -> Operand:
    """A top-left causal [length, keys] mask combined with `mask` (bool: and; float: -inf added)."""
    keep = np.tril(np.ones((length, keys), dtype=np.bool_))
    if mask is None:
        return keep
    if dtype_of(mask) == np.bool_:
        return mask & keep if isinstance(mask, np.ndarray) else _elementwise(builder, "min", mask, keep, i1)
    bias = np.where(keep, 0.0, -np.inf).astype(dtype_of(mask))
    return mask + bias if isinstance(mask, np.ndarray) else _elementwise(builder, "add", mask, bias)


_ATTENTION_ATTRIBUTES = {"is_causal", "kv_num_heads", "q_num_heads", "qk_matmul_output_mode", "scale", "softcap"}


def _attention(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Attention (opset 23): tfm.attention; 3-D inputs are split into heads and merged back."""
    unknown = sorted(set(attrs) - _ATTENTION_ATTRIBUTES - {"softmax_precision"})
    if unknown:
        builder.unsupported(f"attribute {unknown[0]}")
    if any(x is not None for x in inputs[4:]):
        builder.unsupported("past_key / past_value / nonpad_kv_seqlen inputs")
    if any(builder.wanted[1:]):
        builder.unsupported("only the first output (Y) is supported")
    q, k, v = (builder.value(x) for x in inputs[:3])
    three_d = len(tfm.shape_of(q)) == 3
    if three_d:
        q = _heads(builder, q, int(attrs.get("q_num_heads", 0)))
        k = _heads(builder, k, int(attrs.get("kv_num_heads", 0)))
        v = _heads(builder, v, int(attrs.get("kv_num_heads", 0)))
    batch, heads, length, depth = tfm.shape_of(q)
    keys = tfm.shape_of(k)[2]
    mask = inputs[3] if len(inputs) > 3 else None
    if mask is not None and shape(mask)[-1] != keys:
        builder.unsupported(f"a mask over {shape(mask)[-1]} keys for {keys} keys")
    causal = bool(attrs.get("is_causal", 0))
    if causal and length != keys:  # ONNX aligns the causal triangle top-left: an explicit mask
        mask = _causal_mask(builder, mask, length, keys, dtype_of(q))
        causal = False
    if isinstance(mask, np.ndarray):
        kept = mask if mask.dtype == np.bool_ else mask > -np.inf
        full = np.broadcast_to(kept, (batch, heads, length, keys))
        if causal:
            full = full & np.tril(np.ones((length, keys), dtype=np.bool_))
        if not full.any(axis=-1).all():
            builder.unsupported("a mask that hides every key of a query")
    scale = float(attrs.get("scale", 1.0 / math.sqrt(depth)))
    result = tensor_type((batch, heads, length, tfm.shape_of(v)[3]), tfm.element_type(q))
    mask_value = builder.value(mask) if mask is not None else None
    op = tfm.AttentionOp(q, k, v, mask_value, causal, scale, result)
    if float(attrs.get("softcap", 0.0)) != 0.0:
        op.properties["softcap"] = FloatAttr(float(attrs["softcap"]), f64)
    out = builder.emit(op)
    if not three_d:
        return out
    merged = builder.transpose(out, [0, 2, 1, 3])
    return builder.reshape(merged, (batch, length, heads * tfm.shape_of(v)[3]))


def _negated_compare(fn: str) -> Handler:
    def handle(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
        return builder.scalar("eq", _elementwise(builder, fn, inputs[0], inputs[1], i1), 0.0, i1)

    handle.__doc__ = f"not({fn}) as tfm {fn} + tfm.scalar eq 0."
    return handle


def _logical(fn: str) -> Handler:
    def handle(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
        return _elementwise(builder, fn, inputs[0], inputs[1], i1)

    handle.__doc__ = f"And / Or on booleans: tfm.binary {fn} on i1."
    return handle


def _is_nan(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """IsNaN: not (x == x)."""
    x = builder.value(inputs[0])
    return builder.scalar("eq", builder.binary("eq", x, x, i1), 0.0, i1)


def _not(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Not: tfm.scalar eq 0."""
    return builder.scalar("eq", builder.value(inputs[0]), 0.0, i1)


def _identity(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Identity: the input itself."""
    return inputs[0]


def _dropout(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> list[Operand]:
    """Dropout at inference (training_mode absent or false): the input itself, and an all-true mask."""
    data, training_mode = inputs[0], inputs[2] if len(inputs) > 2 else None
    if training_mode is not None and not isinstance(training_mode, np.ndarray):
        builder.unsupported("a run-time training_mode (dropout is compiled for inference)")
    if training_mode is not None and bool(training_mode):
        builder.unsupported("training_mode=true (random dropout; export the model in eval mode)")
    return [data, np.ones(shape(data), dtype=np.bool_)]


def _shape(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Shape of a run-time tensor: a constant (shapes are static)."""
    dims = np.array(shape(inputs[0]), dtype=np.int64)
    rank = len(dims)
    start = int(attrs.get("start", 0))
    end = int(attrs.get("end", rank))
    return dims[slice(*slice(start, end).indices(rank)[:2])]


def _size(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> Operand:
    """Size of a run-time tensor: a constant."""
    return np.array(math.prod(shape(inputs[0])), dtype=np.int64)


def _constant_only(builder: OnnxBuilder, inputs: list[Operand], attrs: dict[str, Any]) -> NoReturn:
    """Range / ConstantOfShape: folded on constants; a run-time input is not supported."""
    builder.unsupported("its inputs must be compile-time constants")


ONNX_HANDLERS: dict[str, Handler] = {
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Sum": _binary("add"),
    **{op: _binary(fn) for op, fn in [("Add", "add"), ("Sub", "sub"), ("Mul", "mul"), ("Div", "div")]},
    **{op: _binary(fn) for op, fn in [("Pow", "pow"), ("Max", "max"), ("Min", "min")]},
    **{op: _compare(fn) for op, fn in [("Equal", "eq"), ("Less", "lt"), ("Greater", "gt")]},
    **{
        op: _unary(fn)
        for op, fn in [
            ("Neg", "neg"),
            ("Exp", "exp"),
            ("Tanh", "tanh"),
            ("Erf", "erf"),
            ("Sigmoid", "sigmoid"),
            ("Sqrt", "sqrt"),
            ("Reciprocal", "recip"),
            ("Relu", "relu"),
            ("Abs", "abs"),
            ("Log", "log"),
            ("Cos", "cos"),
            ("Sin", "sin"),
        ]
    },
    "Softmax": _softmax,
    "LayerNormalization": _layer_norm,
    "RMSNormalization": _rms_norm,
    "Gelu": _gelu,
    "Attention": _attention,
    "Flatten": _flatten,
    "CastLike": _cast_like,
    "LogSoftmax": _log_softmax,
    "Where": _where,
    "Gather": _gather,
    "GatherND": _gather_nd,
    "Concat": _concat,
    "Slice": _slice,
    "Split": _split,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Expand": _expand,
    "Cast": _cast,
    "Trilu": _trilu,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "Not": _not,
    "GreaterOrEqual": _negated_compare("lt"),
    "LessOrEqual": _negated_compare("gt"),
    "And": _logical("min"),
    "Or": _logical("max"),
    "IsNaN": _is_nan,
    "Identity": _identity,
    "Dropout": _dropout,
    "Shape": _shape,
    "Size": _size,
    "Range": _constant_only,
    "Constant": _constant_only,
    "ConstantOfShape": _constant_only,
}
"""Handlers by ONNX op type (default domain)."""
