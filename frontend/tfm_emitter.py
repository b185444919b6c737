"""TfmEmitter: the tfm-building helpers both importers (torch, ONNX) share; torch-free.

class OnnxBuilder(TfmEmitter): ...
y = builder.transpose(builder.reshape(x, (2, 4, 8)), (0, 2, 1))   # no op when nothing changes
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn

from xdsl.dialects.builtin import StringAttr, TensorType
from xdsl.ir import Attribute, Block, Operation, SSAValue

from tasic.ir import tfm


def tensor_type(dims: Sequence[int], element: Attribute) -> TensorType:
    """A ranked tensor type."""
    return TensorType(element, [int(n) for n in dims])


def unique_name(base: str, taken: Callable[[str], bool]) -> str:
    """`base`, else `base_1`, `base_2`, ...: the first name `taken` rejects not."""
    name, suffix = base, 0
    while taken(name):
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def distinct_output_names(output_names: Sequence[str], input_names: Sequence[str]) -> list[str]:
    """Output names renamed where they repeat an input name or an earlier output (a binary's symbols need
    distinct names): `x` becomes `x_out` (`x_out_1`, ... when that is taken too)."""
    taken = set(input_names) | set(output_names)
    result: list[str] = []
    for name in output_names:
        if name in input_names or name in result:
            name = unique_name(f"{name}_out", lambda candidate: candidate in taken)
            taken.add(name)
        result.append(name)
    return result


class TfmEmitter:
    """Appends tfm ops to `block`, each with the importer's current source location."""

    block: Block

    def location(self) -> str:
        """Source location of the op being imported (module path or node name, and op)."""
        raise NotImplementedError

    def unsupported(self, reason: str | None = None) -> NoReturn:
        """Raise the importer's one-line unsupported-operator error."""
        raise NotImplementedError

    def shape_error(self, reason: str) -> NoReturn:
        """Raise the one-line error for operands whose shapes disagree (by default: unsupported)."""
        self.unsupported(reason)

    def emit(self, op: Operation) -> SSAValue:
        """Append `op` with the current location; return its result."""
        op.attributes["loc"] = StringAttr(self.location())
        self.block.add_op(op)
        return op.results[0]

    # --------------------------------------------------------- shape-only ops

    def reshape(self, x: SSAValue, dims: Sequence[int]) -> SSAValue:
        """x viewed with `dims`; no op when unchanged."""
        if tfm.shape_of(x) == tuple(dims):
            return x
        return self.emit(tfm.ReshapeOp(x, tensor_type(dims, tfm.element_type(x))))

    def transpose(self, x: SSAValue, perm: Sequence[int]) -> SSAValue:
        """x with dimensions permuted; no op for the identity."""
        if list(perm) == list(range(len(perm))):
            return x
        dims = tfm.shape_of(x)
        return self.emit(tfm.TransposeOp(x, perm, tensor_type([dims[p] for p in perm], tfm.element_type(x))))

    def expand(self, x: SSAValue, dims: Sequence[int]) -> SSAValue:
        """x broadcast to `dims`; no op when already that shape."""
        if tfm.shape_of(x) == tuple(dims):
            return x
        return self.emit(tfm.ExpandOp(x, tensor_type(dims, tfm.element_type(x))))

    def slice(self, x: SSAValue, dim: int, start: int, end: int, step: int = 1) -> SSAValue:
        """Elements start, start+step, ... < end along `dim` (clamped, step >= 1); no op when whole."""
        dims = list(tfm.shape_of(x))
        if (start, end, step) == (0, dims[dim], 1):
            return x
        dims[dim] = len(range(start, end, step))
        end = max(start, end)
        return self.emit(tfm.SliceOp(x, dim, start, end, step, tensor_type(dims, tfm.element_type(x))))

    def cast(self, x: SSAValue, element: Attribute) -> SSAValue:
        """x converted to `element`; no op when it already has that type."""
        if tfm.element_type(x) == element:
            return x
        return self.emit(tfm.CastOp(x, tensor_type(tfm.shape_of(x), element)))

    # ------------------------------------------------------- elementwise ops

    def unary(self, fn: str, x: SSAValue) -> SSAValue:
        """tfm.unary `fn` of x."""
        return self.emit(tfm.UnaryOp(fn, x))

    def scalar(self, fn: str, x: SSAValue, number: float, result_element: Attribute | None = None) -> SSAValue:
        """tfm.scalar `fn` of x and a compile-time number."""
        result = tensor_type(tfm.shape_of(x), result_element or tfm.element_type(x))
        return self.emit(tfm.ScalarOp(fn, x, number, result))

    def binary(self, fn: str, lhs: SSAValue, rhs: SSAValue, result_element: Attribute | None = None) -> SSAValue:
        """tfm.binary `fn` of two tensors with broadcasting."""
        dims = tfm.broadcast_shapes(tfm.shape_of(lhs), tfm.shape_of(rhs))
        if dims is None:
            self.shape_error(f"shapes {tfm.shape_of(lhs)} and {tfm.shape_of(rhs)} do not broadcast")
        return self.emit(tfm.BinaryOp(fn, lhs, rhs, tensor_type(dims, result_element or tfm.element_type(lhs))))
