"""Matching helpers shared by the raise-* passes (tfm primitives -> fused tfm ops).

A raised pattern replaces its root op and erases the intermediate ops, so
every intermediate value must be used only inside the pattern; the helpers
here make that check explicit (`producer(value, Op, consumer)`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

from xdsl.ir import Operation, OpResult, SSAValue
from xdsl.pattern_rewriter import PatternRewriter

from tasic.ir import tfm

OpT = TypeVar("OpT", bound=Operation)

CONSTANT_TOLERANCE = 1e-4
"""Relative tolerance when recognising a literal such as 0.044715 or sqrt(2/pi)."""


def close_to(value: float, expected: float) -> bool:
    """Whether a matched literal is `expected` up to CONSTANT_TOLERANCE."""
    return math.isclose(value, expected, rel_tol=CONSTANT_TOLERANCE, abs_tol=1e-12)


def defining(value: SSAValue, op_type: type[OpT]) -> OpT | None:
    """The op of type `op_type` producing `value`, or None."""
    if isinstance(value, OpResult) and isinstance(value.op, op_type):
        return value.op
    return None


def used_only_by(value: SSAValue, *consumers: Operation) -> bool:
    """Whether `value` has uses and all of them are in `consumers`."""
    uses = list(value.uses)
    return bool(uses) and all(use.operation in consumers for use in uses)


def producer(value: SSAValue, op_type: type[OpT], consumer: Operation) -> OpT | None:
    """The `op_type` op producing `value` when `consumer` is its only user: an intermediate of a pattern."""
    op = defining(value, op_type)
    return op if op is not None and used_only_by(value, consumer) else None


def fn_of(op: Operation) -> str:
    """The `fn` property of a tfm.unary/binary/scalar/reduce op."""
    assert isinstance(op, tfm.UnaryOp | tfm.BinaryOp | tfm.ScalarOp | tfm.ReduceOp)
    return op.fn.data


def scalar_of(op: tfm.ScalarOp) -> float:
    """The compile-time operand of a tfm.scalar op."""
    return op.value.value.data


def operand_orders(op: tfm.BinaryOp) -> Iterator[tuple[SSAValue, SSAValue]]:
    """(lhs, rhs) then (rhs, lhs): for matching commutative ops either way round."""
    yield op.lhs, op.rhs
    yield op.rhs, op.lhs


def weight_vector(value: SSAValue, length: int) -> bool:
    """Whether `value` is a 1-D tfm.weight of `length` elements (a scale, shift or bias)."""
    return defining(value, tfm.WeightOp) is not None and tfm.shape_of(value) == (length,)


def reduces_last_dim(op: tfm.ReduceOp, fn: str) -> bool:
    """Whether `op` is reduction `fn` over the last dimension with keepdim."""
    rank = len(tfm.shape_of(op.input))
    return fn_of(op) == fn and op.reduced_dims == [rank - 1] and op.keepdim.value.data


def square_of(value: SSAValue, consumer: Operation) -> tuple[SSAValue, Operation] | None:
    """(x, op) when `value` is x**2 (tfm.scalar pow 2) or x*x feeding only `consumer`."""
    if (power := producer(value, tfm.ScalarOp, consumer)) and fn_of(power) == "pow" and scalar_of(power) == 2:
        return power.input, power
    if (product := producer(value, tfm.BinaryOp, consumer)) and fn_of(product) == "mul" and product.lhs is product.rhs:
        return product.lhs, product
    return None


def copy_location(source: Operation, target: Operation) -> Operation:
    """Give `target` the source location of `source`; returns `target`."""
    if "loc" in source.attributes:
        target.attributes["loc"] = source.attributes["loc"]
    return target


def replace_and_erase(
    rewriter: PatternRewriter, root: Operation, new_ops: Sequence[Operation], intermediates: Sequence[Operation]
) -> None:
    """Replace `root` by `new_ops`, then erase the matched intermediates (listed users first)."""
    rewriter.replace(root, list(new_ops))
    for op in intermediates:
        rewriter.erase(op)


def times_inverse_sqrt(normalize: tfm.BinaryOp) -> Iterator[tuple[SSAValue, tfm.UnaryOp, tfm.ScalarOp]]:
    """Each reading of `normalize` as `a * rsqrt(v + eps)` or `a / sqrt(v + eps)`: (a, the root op, the + eps op)."""
    if fn_of(normalize) == "mul":
        orders, root_fn = list(operand_orders(normalize)), "rsqrt"
    elif fn_of(normalize) == "div":
        orders, root_fn = [(normalize.lhs, normalize.rhs)], "sqrt"
    else:
        return
    for value, factor in orders:
        root = producer(factor, tfm.UnaryOp, normalize)
        if root is None or fn_of(root) != root_fn:
            continue
        shifted = producer(root.input, tfm.ScalarOp, root)
        if shifted is not None and fn_of(shifted) == "add":
            yield value, root, shifted


def scaling_factor(op: tfm.ScalarOp) -> float | None:
    """The factor `op` multiplies by (tfm.scalar mul c -> c, div c -> 1/c), or None for other functions."""
    if fn_of(op) == "mul":
        return scalar_of(op)
    if fn_of(op) == "div" and scalar_of(op) != 0:
        return 1 / scalar_of(op)
    return None
