"""quantize-fp8: linear layers in FP8 (E4M3) with fp32 accumulation.

Every `tfm.linear` whose weight is a 2-D `tfm.weight` becomes: the input
quantised to f8E4M3FN with one scale per tensor (or per row), the weight
quantised per output channel at compile time (derived weights, see
ir/weights.py), an f8 x f8 linear accumulating in f32, and a dequantising
multiply by (activation scale x weight scale). Before::

    %w = tfm.weight {name = "fc.weight"} : tensor<64x32xf32>
    %y = tfm.linear %x, %w {loc = "fc"} : (tensor<8x32xf32>, tensor<64x32xf32>) -> tensor<8x64xf32>

After (dynamic per-tensor scale = max|x| / 448, computed at run time)::

    %a  = tfm.unary %x {fn = "abs"} : (tensor<8x32xf32>) -> tensor<8x32xf32>
    %r  = tfm.reduce %a {fn = "max", dims = [1], keepdim = true} : (tensor<8x32xf32>) -> tensor<8x1xf32>
    %m  = tfm.reduce %r {fn = "max", dims = [0, 1], keepdim = true} : (tensor<8x1xf32>) -> tensor<1x1xf32>
    %m2 = tfm.scalar %m {fn = "max", value = 1.0e-30 : f64} : (tensor<1x1xf32>) -> tensor<1x1xf32>
    %s  = tfm.scalar %m2 {fn = "div", value = 448.0 : f64} : (tensor<1x1xf32>) -> tensor<1x1xf32>
    %q  = tfm.quantize %x, %s : (tensor<8x32xf32>, tensor<1x1xf32>) -> tensor<8x32xf8E4M3FN>
    %wq = tfm.weight {name = "fc.weight#fp8e4m3"} : tensor<64x32xf8E4M3FN>
    %ws = tfm.weight {name = "fc.weight#fp8e4m3_scale"} : tensor<64xf32>
    %yq = tfm.linear %q, %wq : (tensor<8x32xf8E4M3FN>, tensor<64x32xf8E4M3FN>) -> tensor<8x64xf32>
    %c  = tfm.binary %s, %ws {fn = "mul"} : (tensor<1x1xf32>, tensor<64xf32>) -> tensor<1x64xf32>
    %y  = tfm.binary %yq, %c {fn = "mul"} : (tensor<8x64xf32>, tensor<1x64xf32>) -> tensor<8x64xf32>

Options: `granularity=row` gives every row (token) its own scale (`%s` is
[8, 1]; the dequantisation multiplies by `%s`, then by `%ws`);
`calibration="scales.json"` reads static per-tensor scales, a JSON object of
weight name -> max |input| observed on sample inputs: `%q = tfm.quantize %x
{static_scale = amax / 448}`, values beyond it saturate at +-448.
`placeholder_scales=true` gives static scales of 1 without a calibration: for
timing-only binaries (no weights to calibrate on; scale values do not change
timing). Linears that share an input share its quantisation (q, k and v).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import prod
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import Float8E4M3FNType, ModuleOp, StringAttr, TensorType, f32
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass

from tasic.ir import tfm
from tasic.ir.weights import DERIVATIONS, FP8_E4M3_MAX, derived_name, scaled_name, split_derived

GRANULARITIES = ("tensor", "row")
AMAX_FLOOR = 1e-30
"""Smallest max |x| used for a dynamic scale, so that an all-zero input gives scale > 0 (and q = 0)."""


class QuantizeError(Exception):
    """A bad quantisation option or calibration file (message is user-facing)."""


@dataclass(frozen=True)
class QuantizeFp8Pass(ModulePass):
    """Rewrite linears with weight operands to f8E4M3FN x f8E4M3FN, f32 accumulation, dequantised outputs."""

    name = "quantize-fp8"
    granularity: str = "tensor"
    calibration: str = ""
    placeholder_scales: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Quantise every eligible linear of every function."""
        if self.granularity not in GRANULARITIES:
            raise QuantizeError(f"quantize-fp8: granularity must be one of {', '.join(GRANULARITIES)}")
        static = load_calibration(self.calibration) if self.calibration else None
        if self.placeholder_scales and static is None:
            static = {}  # every linear gets the placeholder (see _Rewriter.calibrated_amax)
        if static is not None and self.granularity != "tensor":
            raise QuantizeError("quantize-fp8: calibrated (static) scales are per tensor; drop granularity=row")
        for function in [f for f in op.body.block.ops if isinstance(f, func.FuncOp)]:
            _Rewriter(self.granularity, static).run(function)


def load_calibration(path: str) -> dict[str, float]:
    """Weight name -> calibrated max |input| of its linear, from a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise QuantizeError(f"cannot read the calibration file {path}: {err}") from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, int | float) and v > 0 for v in data.values()):
        raise QuantizeError(f"calibration file {path}: expected a JSON object of weight name -> positive max |x|")
    return {str(k): float(v) for k, v in data.items()}


def quantizable(linear: tfm.LinearOp) -> tfm.WeightOp | None:
    """The weight op of a float linear this pass rewrites, else None (non-weight or derived weights).

    Tensor-parallel weights (shard-tp runs first) keep their split: the quantised weight is split the
    same way, its per-output-channel scales with it when the output channels are split.
    """
    weight = linear.weight.owner
    if not isinstance(weight, tfm.WeightOp) or len(tfm.shape_of(weight.result)) != 2:
        return None
    derived = split_derived(weight.sym.data)
    if derived is not None and derived[1] in DERIVATIONS:
        return None  # already quantised (concatenations of fused linears are quantised like stored weights)
    if not (tfm.is_float(linear.input.type) and tfm.is_float(weight.result.type)):
        return None
    if tfm.fp8_max(tfm.element_type(linear.input)) is not None:
        return None
    return weight


class _Rewriter:
    """Rewrites the linears of one function, sharing quantised inputs and derived weights."""

    def __init__(self, granularity: str, static: dict[str, float] | None) -> None:
        self.granularity = granularity
        self.static = static
        self.inputs: dict[tuple[SSAValue, float | None], tuple[SSAValue, SSAValue | float]] = {}
        self.weights: dict[tuple[str, tuple[int, int] | None], SSAValue] = {}
        self.fp8 = Float8E4M3FNType()

    def run(self, function: func.FuncOp) -> None:
        """Rewrite every quantizable linear in order."""
        for linear in [o for o in function.body.block.ops if isinstance(o, tfm.LinearOp)]:
            weight = quantizable(linear)
            if weight is not None:
                self.rewrite(linear, weight)

    def rewrite(self, linear: tfm.LinearOp, weight: tfm.WeightOp) -> None:
        """Replace one linear by quantise -> f8 linear -> dequantise (-> bias)."""
        loc = tfm_loc(linear)
        name = weight.sym.data
        new: list[Operation] = []
        static = self.calibrated_amax(name) / FP8_E4M3_MAX if self.static is not None else None
        q, scale = self.quantized_input(linear.input, static, f"{loc}:quantize", new)
        shard = weight.shard
        wq = self.weight(derived_name(name, "fp8e4m3"), tfm.shape_of(weight.result), self.fp8, new, shard)
        out_features = tfm.shape_of(weight.result)[0]
        scale_shard = shard if shard is not None and shard[0] == 0 else None
        scales = derived_name(name, "fp8e4m3_scale")
        if isinstance(scale, float) and scale != 1.0:  # static: scale * ws is a constant, folded at compile time
            scales = scaled_name(scales, scale)
        ws = self.weight(scales, (out_features,), f32, new, scale_shard)
        result_type = linear.result.type
        y = _add(new, tfm.LinearOp(q, wq, None, result_type), loc)
        if isinstance(scale, float):
            y = _add(new, tfm.BinaryOp("mul", y, ws, result_type), f"{loc}:dequantize")
            self.finish(linear, y, new)
            return
        if prod(tfm.shape_of(scale)) == 1:
            factor_shape = (*tfm.shape_of(scale)[:-1], out_features)
            factor = _add(new, tfm.BinaryOp("mul", scale, ws, _tensor(factor_shape, f32)), f"{loc}:dequantize")
            y = _add(new, tfm.BinaryOp("mul", y, factor, result_type), f"{loc}:dequantize")
        else:
            y = _add(new, tfm.BinaryOp("mul", y, scale, result_type), f"{loc}:dequantize")
            y = _add(new, tfm.BinaryOp("mul", y, ws, result_type), f"{loc}:dequantize")
        self.finish(linear, y, new)

    def calibrated_amax(self, name: str) -> float:
        """The calibrated max |input| of the linear of weight `name` (fused linears: the largest of their parts');
        448 (scale 1) for every linear without a calibration file (placeholder scales)."""
        assert self.static is not None
        if not self.static:
            return FP8_E4M3_MAX
        if name in self.static:
            return self.static[name]
        derived = split_derived(name)
        if derived is not None and derived[1].startswith("cat"):
            return max(self.calibrated_amax(base) for base in derived[0].split("|"))
        if derived is not None and derived[1].startswith("scaled"):  # the same input as its base's linear
            return self.calibrated_amax(derived[0])
        raise QuantizeError(f"quantize-fp8: the calibration has no scale for the linear of weight '{name}'")

    def finish(self, linear: tfm.LinearOp, y: SSAValue, new: list[Operation]) -> None:
        """Add the bias, put the new ops in place of `linear` and erase it."""
        if linear.bias is not None:
            y = _add(new, tfm.BinaryOp("add", y, linear.bias, linear.result.type), f"{tfm_loc(linear)}:bias")
        assert tfm.shape_of(y) == tfm.shape_of(linear.result)
        block = linear.parent_block()
        assert block is not None
        block.insert_ops_before(new, linear)
        linear.result.replace_all_uses_with(y)
        linear.detach()
        linear.erase()

    def quantized_input(
        self, x: SSAValue, static: float | None, loc: str, new: list[Operation]
    ) -> tuple[SSAValue, SSAValue | float]:
        """(f8 input, its scale): a static float or a run-time tensor [1.., 1] / [..., 1]; once per input."""
        key = (x, static)
        if key in self.inputs:
            return self.inputs[key]
        shape = tfm.shape_of(x)
        q_type = _tensor(shape, self.fp8)
        if static is not None:
            q = _add(new, tfm.QuantizeOp(x, static, q_type), loc)
            self.inputs[key] = (q, static)
            return q, static
        elem = tfm.element_type(x)
        rank = len(shape)
        magnitude = _add(new, tfm.UnaryOp("abs", x), loc)
        row_shape = (*shape[:-1], 1)
        amax = _add(new, tfm.ReduceOp("max", magnitude, [rank - 1], True, _tensor(row_shape, elem)), loc)
        if self.granularity == "tensor" and prod(row_shape) > 1:
            amax = _add(new, tfm.ReduceOp("max", amax, list(range(rank)), True, _tensor((1,) * rank, elem)), loc)
        amax = _add(new, tfm.ScalarOp("max", amax, AMAX_FLOOR), loc)
        scale = _add(new, tfm.ScalarOp("div", amax, FP8_E4M3_MAX), loc)
        q = _add(new, tfm.QuantizeOp(x, scale, q_type), loc)
        self.inputs[key] = (q, scale)
        return q, scale

    def weight(
        self,
        name: str,
        shape: tuple[int, ...],
        elem: Attribute,
        new: list[Operation],
        shard: tuple[int, int] | None = None,
    ) -> SSAValue:
        """A derived weight handle (this chip's part when sharded), created once per function."""
        key = (name, shard)
        if key not in self.weights:
            self.weights[key] = _add(new, tfm.WeightOp(name, _tensor(shape, elem), shard), None)
        return self.weights[key]


def _tensor(shape: tuple[int, ...], elem: Attribute) -> TensorType:
    return TensorType(elem, shape)


def _add(ops: list[Operation], op: Operation, loc: str | None) -> SSAValue:
    if loc is not None:
        op.attributes["loc"] = StringAttr(loc)
    ops.append(op)
    return op.results[0]


def tfm_loc(op: Operation) -> str:
    """The op's source location, or its name."""
    loc = op.attributes.get("loc")
    return loc.data if isinstance(loc, StringAttr) else op.name
