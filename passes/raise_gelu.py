"""raise-gelu: GELU written out in primitives -> tfm.unary gelu_erf / gelu_tanh.

Recognises the product `0.5 * x * (1 + f(p(x)))` in any association and order
of multiplications, where f(p(x)) is

* erf(x / sqrt(2))                                   -> gelu_erf
* tanh(sqrt(2/pi) * (x + 0.044715 * x^3))            -> gelu_tanh (GPT-2's gelu_new)

and p is any polynomial expression of tfm.scalar/binary add, sub, mul, div and
pow (x**3 or x*x*x) whose coefficients match up to a relative 1e-4. GPT-2's
exported gelu_new::

    %h = tfm.scalar %x {fn = "mul", value = 0.5}
    %c = tfm.scalar %x {fn = "pow", value = 3.0}
    %d = tfm.scalar %c {fn = "mul", value = 0.044715}
    %e = tfm.binary %x, %d {fn = "add"}
    %f = tfm.scalar %e {fn = "mul", value = 0.7978845608}
    %t = tfm.unary %f {fn = "tanh"}
    %u = tfm.scalar %t {fn = "add", value = 1.0}
    %y = tfm.binary %h, %u {fn = "mul"}

-> ``%y = tfm.unary %x {fn = "gelu_tanh"}``.
"""

from __future__ import annotations

import math
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
    close_to,
    copy_location,
    fn_of,
    producer,
    replace_and_erase,
    scalar_of,
    scaling_factor,
)

Polynomial = dict[int, float]
"""Coefficient by power of x."""

GELU_ARGUMENTS: dict[str, tuple[str, Polynomial]] = {
    "gelu_erf": ("erf", {1: 1 / math.sqrt(2)}),
    "gelu_tanh": ("tanh", {1: math.sqrt(2 / math.pi), 3: math.sqrt(2 / math.pi) * 0.044715}),
}
"""The tfm.unary gelu variant -> (inner function, its argument as a polynomial in x)."""

_MAX_DEGREE = 4


def _add(p: Polynomial, q: Polynomial, sign: float = 1.0) -> Polynomial:
    return {k: p.get(k, 0.0) + sign * q.get(k, 0.0) for k in p.keys() | q.keys()}


def _times(p: Polynomial, q: Polynomial) -> Polynomial | None:
    product: Polynomial = {}
    for i, a in p.items():
        for j, b in q.items():
            product[i + j] = product.get(i + j, 0.0) + a * b
    return product if max(product, default=0) <= _MAX_DEGREE else None


def _scaled(p: Polynomial, factor: float) -> Polynomial:
    return {k: c * factor for k, c in p.items()}


@dataclass
class _PolynomialMatcher:
    """Reads a single-use expression tree in x as a polynomial, collecting its ops users first."""

    x: SSAValue
    ops: list[Operation]

    def read(self, value: SSAValue, consumer: Operation) -> Polynomial | None:
        """The polynomial computed by `value`, which only `consumer` may use."""
        if value is self.x:
            return {1: 1.0}
        if scalar := producer(value, tfm.ScalarOp, consumer):
            self.ops.append(scalar)
            inner = self.read(scalar.input, scalar)
            return None if inner is None else _with_constant(fn_of(scalar), inner, scalar_of(scalar))
        if binary := producer(value, tfm.BinaryOp, consumer):
            self.ops.append(binary)
            lhs = self.read(binary.lhs, binary)
            rhs = lhs if binary.rhs is binary.lhs else self.read(binary.rhs, binary)
            return None if lhs is None or rhs is None else _combine(fn_of(binary), lhs, rhs)
        if (negation := producer(value, tfm.UnaryOp, consumer)) and fn_of(negation) == "neg":
            self.ops.append(negation)
            inner = self.read(negation.input, negation)
            return None if inner is None else _scaled(inner, -1.0)
        return None


def _combine(fn: str, p: Polynomial, q: Polynomial) -> Polynomial | None:
    """p `fn` q for tfm.binary add, sub and mul."""
    if fn == "add":
        return _add(p, q)
    if fn == "sub":
        return _add(p, q, -1.0)
    if fn == "mul":
        return _times(p, q)
    return None


def _with_constant(fn: str, p: Polynomial, c: float) -> Polynomial | None:
    """p `fn` c for tfm.scalar (pow only to small whole powers)."""
    if fn == "add":
        return _add(p, {0: c})
    if fn == "sub":
        return _add(p, {0: c}, -1.0)
    if fn == "rsub":
        return _add({0: c}, p, -1.0)
    if fn == "mul":
        return _scaled(p, c)
    if fn == "div" and c != 0:
        return _scaled(p, 1 / c)
    if fn != "pow" or c not in range(1, _MAX_DEGREE + 1):
        return None
    power: Polynomial | None = p
    for _ in range(int(c) - 1):
        power = _times(power, p) if power is not None else None
    return power


def _same_polynomial(p: Polynomial, expected: Polynomial) -> bool:
    scale = max(abs(c) for c in expected.values())
    terms = {k: c for k, c in p.items() if abs(c) > 1e-9 * scale}
    return terms.keys() == expected.keys() and all(close_to(terms[k], expected[k]) for k in expected)


Leaf = tuple[SSAValue, Operation]
"""A factor of a product and the multiplication that consumes it."""


def _factors(value: SSAValue, consumer: Operation, ops: list[Operation]) -> tuple[float, list[Leaf]]:
    """value as constant * product of leaves, looking through single-use multiplications."""
    scalar = producer(value, tfm.ScalarOp, consumer)
    if scalar is not None and (factor := scaling_factor(scalar)) is not None:
        ops.append(scalar)
        constant, leaves = _factors(scalar.input, scalar, ops)
        return constant * factor, leaves
    binary = producer(value, tfm.BinaryOp, consumer)
    if binary is not None and fn_of(binary) == "mul" and binary.lhs is not binary.rhs:
        ops.append(binary)
        return _product_factors(binary, ops)
    return 1.0, [(value, consumer)]


def _product_factors(product: tfm.BinaryOp, ops: list[Operation]) -> tuple[float, list[Leaf]]:
    lhs_constant, lhs_leaves = _factors(product.lhs, product, ops)
    rhs_constant, rhs_leaves = _factors(product.rhs, product, ops)
    return lhs_constant * rhs_constant, lhs_leaves + rhs_leaves


def _root_factors(root: tfm.BinaryOp | tfm.ScalarOp, ops: list[Operation]) -> tuple[float, list[Leaf]] | None:
    """Factors of the last multiplication of a product, or None when `root` is not one."""
    if isinstance(root, tfm.ScalarOp):
        factor = scaling_factor(root)
        if factor is None:
            return None
        constant, leaves = _factors(root.input, root, ops)
        return constant * factor, leaves
    if fn_of(root) != "mul" or root.lhs is root.rhs:
        return None
    return _product_factors(root, ops)


def _match_gelu(root: tfm.BinaryOp | tfm.ScalarOp) -> tuple[str, SSAValue, list[Operation]] | None:
    """(gelu variant, x, intermediate ops users first) when `root` computes 0.5 * x * (1 + f(p(x)))."""
    product_ops: list[Operation] = []
    factors = _root_factors(root, product_ops)
    if factors is None or len(factors[1]) != 2 or not close_to(factors[0], 0.5):
        return None
    leaves = factors[1]
    for (x, _), (one_plus, consumer) in (leaves, leaves[::-1]):
        shifted = producer(one_plus, tfm.ScalarOp, consumer)
        if shifted is None or fn_of(shifted) != "add" or not close_to(scalar_of(shifted), 1.0):
            continue
        inner = producer(shifted.input, tfm.UnaryOp, shifted)
        if inner is None or tfm.shape_of(x) != tfm.shape_of(root.results[0]):
            continue
        for variant, (function, expected) in GELU_ARGUMENTS.items():
            matcher = _PolynomialMatcher(x, [])
            argument = matcher.read(inner.input, inner) if fn_of(inner) == function else None
            if argument is not None and _same_polynomial(argument, expected):
                return variant, x, [*product_ops, shifted, inner, *matcher.ops]
    return None


class GeluFromPrimitives(RewritePattern):
    """0.5 * x * (1 + erf(x / sqrt 2)) and the tanh approximation, rooted at their last multiplication."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, root: tfm.BinaryOp | tfm.ScalarOp, rewriter: PatternRewriter) -> None:
        match = _match_gelu(root)
        if match is None:
            return
        variant, x, intermediates = match
        gelu = copy_location(root, tfm.UnaryOp(variant, x, root.results[0].type))
        replace_and_erase(rewriter, root, [gelu], intermediates)


@dataclass(frozen=True)
class RaiseGeluPass(ModulePass):
    """Fuse primitive GELU (erf form and tanh approximation) into tfm.unary gelu_erf / gelu_tanh."""

    name = "raise-gelu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Rewrite every match in the module."""
        PatternRewriteWalker(GreedyRewritePatternApplier([GeluFromPrimitives()])).rewrite_module(op)
