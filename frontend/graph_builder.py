"""Emission of tfm ops for one FX node at a time: types, weights, locations.

The importer walks the exported FX graph and hands each node to a handler
(`tasic.frontend.torch_ops`). Handlers see two kinds of tensors: `SSAValue`
(computed at run time) and `torch.Tensor` (a compile-time constant: a
parameter, a buffer or a folded value). `GraphBuilder.value` turns a constant
into a `tfm.weight` the first time an op needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import ml_dtypes
import numpy as np
import torch
from torch.fx import Node
from xdsl.dialects.builtin import TensorType, bf16, f16, f32, f64, i1, i8, i16, i32, i64
from xdsl.ir import Attribute, Block, SSAValue

from tasic.frontend.errors import FrontendError, UnsupportedOpError
from tasic.frontend.tfm_emitter import TfmEmitter, unique_name
from tasic.ir import tfm
from tasic.ir.weights import WeightStore

Operand = SSAValue | torch.Tensor
"""A run-time tensor (SSA value) or a compile-time constant tensor."""

ROOT_MODULE = "<root>"
"""Module path shown for code of the top-level module itself."""

_ELEMENT_TYPES: dict[torch.dtype, Attribute] = {
    torch.float32: f32,
    torch.float16: f16,
    torch.bfloat16: bf16,
    torch.float64: f64,
    torch.int64: i64,
    torch.int32: i32,
    torch.int16: i16,
    torch.int8: i8,
    torch.bool: i1,
}
_DTYPES: dict[Attribute, torch.dtype] = {element: dtype for dtype, element in _ELEMENT_TYPES.items()}

_TensorKey = tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype]


def element_type_of(dtype: torch.dtype) -> Attribute:
    """The tfm element type of a torch dtype."""
    if dtype not in _ELEMENT_TYPES:
        raise FrontendError(f"unsupported tensor element type {dtype}")
    return _ELEMENT_TYPES[dtype]


def dtype_of(value: SSAValue | Attribute) -> torch.dtype:
    """The torch dtype of a tensor value, tensor type or element type."""
    element = tfm.element_type(value) if isinstance(value, SSAValue | TensorType) else value
    return _DTYPES[element]


def tensor_type(shape: Sequence[int], dtype: torch.dtype | Attribute) -> TensorType:
    """A ranked tensor type from a shape and a torch dtype or element type."""
    element = element_type_of(dtype) if isinstance(dtype, torch.dtype) else dtype
    return TensorType(element, [int(n) for n in shape])


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A contiguous numpy copy (or view) of a tensor; bfloat16 becomes ml_dtypes.bfloat16."""
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _key(tensor: torch.Tensor) -> _TensorKey:
    """Identity of a tensor's bytes: equal keys mean the same data viewed the same way."""
    storage = tensor.untyped_storage().data_ptr()
    return (storage, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)


def module_path(node: Node) -> str:
    """Dotted path of the innermost nn.Module that produced `node`."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ROOT_MODULE
    path, _ = list(stack.values())[-1]
    return path or ROOT_MODULE


def source_line(node: Node) -> str:
    """The last line of Python source recorded for `node`, or '' when unknown."""
    trace = (node.meta.get("stack_trace") or "").strip()
    return trace.splitlines()[-1].strip() if trace else ""


def op_short_name(node: Node) -> str:
    """'addmm' for aten.addmm.default; the function name for other targets."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    return getattr(target, "__name__", str(target))


class GraphBuilder(TfmEmitter):
    """Appends tfm ops to a block on behalf of the FX node being imported."""

    def __init__(self, block: Block, weights: WeightStore) -> None:
        self.block = block
        self.weights = weights
        self.node: Node | None = None
        self._weight_values: dict[_TensorKey, tuple[SSAValue, torch.Tensor]] = {}
        """Materialised weights by tensor identity; holding the tensor keeps its address from being reused."""
        self._names_by_key: dict[_TensorKey, str] = {}
        self._names_by_storage: dict[int, str] = {}
        self.reserved: set[str] = set()
        """Input, output and state names: a weight named like one gets a suffix (symbol names are distinct)."""

    # ----------------------------------------------------------------- context

    def name_constant(self, tensor: torch.Tensor, name: str) -> None:
        """Record that `tensor` is the parameter, buffer or constant called `name`."""
        self._names_by_key.setdefault(_key(tensor), name)
        self._names_by_storage.setdefault(tensor.untyped_storage().data_ptr(), name)

    @property
    def current(self) -> Node:
        """The node being imported."""
        assert self.node is not None, "no node is being imported"
        return self.node

    def location(self) -> str:
        """'<module path>:<aten op>' of the current node."""
        return f"{module_path(self.current)}:{op_short_name(self.current)}"

    def unsupported(self, reason: str | None = None) -> NoReturn:
        """Raise the one-line error for the current node, with an optional reason."""
        node = self.current
        source = source_line(node)
        message = f"unsupported operator {node.target} in module '{module_path(node)}'"
        message += f" (source: {source})" if source else ""
        message += f": {reason}" if reason else ""
        raise UnsupportedOpError(message + "; supported operators are listed in docs/frontend.md")

    def result_type(self, index: int | None = None) -> TensorType:
        """Type of the current node's result (or of result `index` of a multi-result node)."""
        val = self.current.meta["val"]
        if index is not None:
            val = val[index]
        return tensor_type(val.shape, val.dtype)

    # ---------------------------------------------------------------- emission

    def weight(self, tensor: torch.Tensor, suffix: str | None = None) -> SSAValue:
        """The `tfm.weight` holding `tensor`; one op per distinct tensor view.

        A parameter keeps its name ("lm_head.weight"); a view of one is named
        after it plus `suffix` ("c_attn.weight.T"); anything else after the node.
        A store shared by several functions keeps one entry per name and data.
        A name that is taken by other data or `reserved` gets `_1`, `_2`, ...
        """
        key = _key(tensor)
        if key in self._weight_values:
            return self._weight_values[key][0]
        name = self._names_by_key.get(key)
        if name is None:
            base = self._names_by_storage.get(tensor.untyped_storage().data_ptr(), self.current.name)
            name = f"{base}.{suffix}" if suffix else base
        array = to_numpy(tensor)
        name = unique_name(
            name, lambda n: n in self.reserved or (n in self.weights and not _same_array(self.weights[n], array))
        )
        if name not in self.weights:
            self.weights.add(name, array)
        value = self.emit(tfm.WeightOp(name, tensor_type(tensor.shape, tensor.dtype)))
        self._weight_values[key] = (value, tensor)
        return value

    def value(self, x: Operand | float | bool, dtype: torch.dtype | None = None) -> SSAValue:
        """`x` as an SSA value: constants and Python scalars become weights (scalars 0-d of `dtype`)."""
        if isinstance(x, SSAValue):
            return x
        if not isinstance(x, torch.Tensor):
            x = torch.tensor(x, dtype=dtype or self.current.meta["val"].dtype)
        return self.weight(x)


def _same_array(stored: np.ndarray | None, array: np.ndarray) -> bool:
    """Whether a stored weight holds exactly `array` (the same memory, or equal values)."""
    if stored is None or stored.shape != array.shape or stored.dtype != array.dtype:
        return False
    same_memory = stored.__array_interface__["data"][0] == array.__array_interface__["data"][0]
    return (same_memory and stored.strides == array.strides) or bool(np.array_equal(stored, array))


def single_number(x: object, result_shape: Sequence[int] | None = None) -> float | None:
    """The number `x` stands for: a Python scalar, or a one-element constant that does not widen the result."""
    if isinstance(x, bool | int | float):
        return float(x)
    if not isinstance(x, torch.Tensor) or x.numel() != 1:
        return None
    widens = result_shape is not None and tfm.broadcast_shapes(tuple(x.shape), result_shape) != tuple(result_shape)
    return None if widens else float(x.item())
