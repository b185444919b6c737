"""The `tfm` dialect: transformer graphs on tensors, with value semantics.

Weights are not inlined: `tfm.weight` names an entry of a side table
(`tasic.ir.weights.WeightStore`), so a large model's IR stays small. Every op
prints as ``operands {properties} : (types) -> types``, for example::

    %w = tfm.weight {name = "fc.weight"} : tensor<64x32xf32>
    %y = tfm.linear %x, %w {} : (tensor<2x8x32xf32>, tensor<64x32xf32>) -> tensor<2x8x64xf32>
    %z = tfm.unary %y {fn = "gelu_erf"} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>

The optional discardable attribute ``loc`` (a string) carries the source
location (module path and source op) down to the binary's per-op report.

Functions name their arguments and results with `tfm.input_names` and
`tfm.output_names`. Persistent state (a KV cache) is listed in
`tfm.state_names`: each such argument is also returned, updated, under the
same name; it lives in HBM across calls and entry points.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    AnyFloat,
    ArrayAttr,
    BoolAttr,
    Float8E4M3FNType,
    Float8E5M2Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from tasic.ir.attrs import read_shard, shard_properties

UNARY_FNS = (
    *("copy", "neg", "exp", "tanh", "erf", "rsqrt", "sqrt", "recip", "sigmoid", "silu"),
    *("gelu_erf", "gelu_tanh", "abs", "log", "relu", "cos", "sin"),
)
BINARY_FNS = ["add", "sub", "mul", "div", "max", "min", "pow", "rsub", "rdiv", "eq", "lt", "gt"]
REDUCE_FNS = ("sum", "mean", "max", "min")
_FORMAT = "operands attr-dict `:` functional-type(operands, results)"


def shape_of(value: SSAValue | Attribute) -> tuple[int, ...]:
    """Static shape of a tensor value or type."""
    typ = value.type if isinstance(value, SSAValue) else value
    assert isinstance(typ, TensorType)
    return tuple(typ.get_shape())


def element_type(value: SSAValue | Attribute) -> Attribute:
    """Element type of a tensor value or type."""
    typ = value.type if isinstance(value, SSAValue) else value
    assert isinstance(typ, TensorType)
    return typ.element_type


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """numpy broadcasting of shapes, or None when they do not broadcast."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)


class TfmOp(IRDLOperation):
    """Common printing and helpers of tfm ops."""

    assembly_format = _FORMAT
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())

    def _require(self, condition: bool, message: str) -> None:
        if not condition:
            raise VerifyException(f"{self.name}: {message}")


@irdl_op_definition
class WeightOp(TfmOp):
    """A constant tensor stored in the weight side table under `name`.

    With `shard_dim` and `shard_parts` (tensor parallelism) chip c holds part c of `shard_parts`
    equal parts of the stored tensor along `shard_dim`, and the result type is that part's:

    %w = tfm.weight {name = "wte"} : tensor<50x16xf32>
    %q = tfm.weight {name = "q.weight", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<16x32xf32>
    """

    name = "tfm.weight"
    assembly_format = "attr-dict `:` type($result)"
    sym = prop_def(StringAttr, prop_name="name")
    shard_dim = opt_prop_def(IntegerAttr)
    shard_parts = opt_prop_def(IntegerAttr)
    result = result_def(TensorType)

    def __init__(self, name: str, typ: TensorType, shard: tuple[int, int] | None = None):
        props: dict[str, Attribute] = {"name": StringAttr(name)}
        props |= shard_properties(shard)
        super().__init__(properties=props, result_types=[typ])

    @property
    def shard(self) -> tuple[int, int] | None:
        """(dim, parts) of a tensor-parallel weight, else None."""
        return read_shard(self.shard_dim, self.shard_parts)

    def verify_(self) -> None:
        if (self.shard_dim is None) != (self.shard_parts is None):
            raise VerifyException("tfm.weight: shard_dim and shard_parts go together")
        shard = self.shard
        if shard is not None:
            self._require(0 <= shard[0] < len(shape_of(self.result)) and shard[1] >= 1, "bad shard")


@irdl_op_definition
class UnaryOp(TfmOp):
    """Elementwise function of one tensor.

    %y = tfm.unary %x {fn = "exp"} : (tensor<4xf32>) -> tensor<4xf32>
    """

    name = "tfm.unary"
    fn = prop_def(StringAttr)
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, fn: str, x: SSAValue, result_type: Attribute | None = None):
        super().__init__(operands=[x], properties={"fn": StringAttr(fn)}, result_types=[result_type or x.type])

    def verify_(self) -> None:
        self._require(self.fn.data in UNARY_FNS, f"unknown function '{self.fn.data}'")
        self._require(shape_of(self.input) == shape_of(self.result), "result shape must equal the input shape")


@irdl_op_definition
class BinaryOp(TfmOp):
    """Elementwise function of two tensors with numpy broadcasting.

    %z = tfm.binary %a, %b {fn = "add"} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    """

    name = "tfm.binary"
    fn = prop_def(StringAttr)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, fn: str, lhs: SSAValue, rhs: SSAValue, result_type: Attribute):
        super().__init__(operands=[lhs, rhs], properties={"fn": StringAttr(fn)}, result_types=[result_type])

    def verify_(self) -> None:
        self._require(self.fn.data in BINARY_FNS, f"unknown function '{self.fn.data}'")
        expected = broadcast_shapes(shape_of(self.lhs), shape_of(self.rhs))
        self._require(expected == shape_of(self.result), f"operands broadcast to {expected}, not the result shape")


@irdl_op_definition
class ScalarOp(TfmOp):
    """Elementwise function of a tensor and a compile-time scalar.

    %y = tfm.scalar %x {fn = "mul", value = 5.000000e-01 : f64} : (tensor<4xf32>) -> tensor<4xf32>
    """

    name = "tfm.scalar"
    fn = prop_def(StringAttr)
    value = prop_def(FloatAttr)
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, fn: str, x: SSAValue, value: float, result_type: Attribute | None = None):
        super().__init__(
            operands=[x],
            properties={"fn": StringAttr(fn), "value": FloatAttr(float(value), f64)},
            result_types=[result_type or x.type],
        )

    def verify_(self) -> None:
        self._require(self.fn.data in BINARY_FNS, f"unknown function '{self.fn.data}'")
        self._require(shape_of(self.input) == shape_of(self.result), "result shape must equal the input shape")


@irdl_op_definition
class MatmulOp(TfmOp):
    """Batched matrix product; batch dimensions broadcast.

    %c = tfm.matmul %a, %b {} : (tensor<2x8x16xf32>, tensor<16x4xf32>) -> tensor<2x8x4xf32>
    """

    name = "tfm.matmul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, lhs: SSAValue, rhs: SSAValue, result_type: Attribute):
        super().__init__(operands=[lhs, rhs], result_types=[result_type])

    def verify_(self) -> None:
        a, b = shape_of(self.lhs), shape_of(self.rhs)
        self._require(len(a) >= 2 and len(b) >= 2, "operands must have rank >= 2")
        self._require(a[-1] == b[-2], f"contraction mismatch {a} @ {b}")
        batch = broadcast_shapes(a[:-2], b[:-2])
        self._require(batch is not None, f"batch dimensions of {a} and {b} do not broadcast")
        self._require(shape_of(self.result) == (*batch, a[-2], b[-1]), "wrong result shape")


@irdl_op_definition
class LinearOp(TfmOp):
    """x @ weight^T (+ bias), weight in torch layout [out, in].

    %y = tfm.linear %x, %w, %b {} : (tensor<8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<8x64xf32>
    """

    name = "tfm.linear"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, weight: SSAValue, bias: SSAValue | None, result_type: Attribute):
        super().__init__(operands=[x, weight, [bias] if bias else []], result_types=[result_type])

    def verify_(self) -> None:
        x, w = shape_of(self.input), shape_of(self.weight)
        self._require(len(w) == 2 and x[-1] == w[1], f"weight {w} does not fit input {x}")
        if self.bias is not None:
            self._require(shape_of(self.bias) == (w[0],), "bias must be [out]")
        self._require(shape_of(self.result) == (*x[:-1], w[0]), "wrong result shape")


class _NormOp(TfmOp):
    # Each subclass declares `input` before its scale/shift operands: xDSL
    # orders a subclass's own fields before inherited ones.
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)

    def verify_(self) -> None:
        x = shape_of(self.input)
        self._require(shape_of(self.result) == x, "result shape must equal the input shape")
        for operand in self.operands[1:]:
            self._require(shape_of(operand) == (x[-1],), "scale and shift must be [last dim]")


@irdl_op_definition
class LayerNormOp(_NormOp):
    """Layer normalisation over the last dimension.

    %y = tfm.layer_norm %x, %g, %b {eps = 1.0e-05 : f64}
        : (tensor<8x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
    """

    name = "tfm.layer_norm"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = operand_def(TensorType)

    def __init__(self, x: SSAValue, weight: SSAValue, bias: SSAValue, eps: float):
        super().__init__(operands=[x, weight, bias], properties={"eps": FloatAttr(eps, f64)}, result_types=[x.type])


@irdl_op_definition
class RmsNormOp(_NormOp):
    """RMS normalisation over the last dimension: x * rsqrt(mean(x^2) + eps) * weight.

    %y = tfm.rms_norm %x, %g {eps = 1.0e-06 : f64} : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
    """

    name = "tfm.rms_norm"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)

    def __init__(self, x: SSAValue, weight: SSAValue, eps: float):
        super().__init__(operands=[x, weight], properties={"eps": FloatAttr(eps, f64)}, result_types=[x.type])


@irdl_op_definition
class SoftmaxOp(TfmOp):
    """Softmax over the last dimension.

    %y = tfm.softmax %x {} : (tensor<2x8x8xf32>) -> tensor<2x8x8xf32>
    """

    name = "tfm.softmax"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue):
        super().__init__(operands=[x], result_types=[x.type])

    def verify_(self) -> None:
        self._require(shape_of(self.input) == shape_of(self.result), "result shape must equal the input shape")


@irdl_op_definition
class AttentionOp(TfmOp):
    """Scaled dot-product attention, q [B,H,Sq,D], k [B,Hkv,Sk,D], v [B,Hkv,Sk,Dv].

    H must be a multiple of Hkv (GQA/MQA). The optional mask broadcasts to
    [B,H,Sq,Sk]: bool (true keeps) or float (added to the scores). `causal`:
    query i sees keys j <= i + Sk - Sq (the queries are the last Sq positions of
    the keys: a prompt's tail, a decode token); with `window` also only
    j > i + Sk - Sq - window. (torch and ONNX align their causal triangle at the
    top left instead: the frontends give such a pattern with Sq != Sk as a mask.)

    %o = tfm.attention %q, %k, %v {causal = true, scale = 1.250000e-01 : f64}
        : (tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32>
    """

    name = "tfm.attention"
    causal = prop_def(BoolAttr)
    scale = prop_def(FloatAttr)
    softcap = opt_prop_def(FloatAttr)
    window = opt_prop_def(IntegerAttr)
    query = operand_def(TensorType)
    key = operand_def(TensorType)
    value = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(
        self,
        q: SSAValue,
        k: SSAValue,
        v: SSAValue,
        mask: SSAValue | None,
        causal: bool,
        scale: float,
        result_type: Attribute,
    ):
        super().__init__(
            operands=[q, k, v, [mask] if mask else []],
            properties={"causal": BoolAttr.from_bool(causal), "scale": FloatAttr(scale, f64)},
            result_types=[result_type],
        )

    def verify_(self) -> None:
        q, k, v = shape_of(self.query), shape_of(self.key), shape_of(self.value)
        self._require(len(q) == len(k) == len(v) == 4, "q, k and v must be rank 4 [B, H, S, D]")
        self._require(q[0] == k[0] == v[0], "batch sizes differ")
        self._require(k[1] == v[1] and q[1] % k[1] == 0, f"{q[1]} query heads do not group over {k[1]} kv heads")
        self._require(q[3] == k[3] and k[2] == v[2], "q/k head dims or k/v lengths differ")
        self._require(shape_of(self.result) == (q[0], q[1], q[2], v[3]), "wrong result shape")
        if self.mask is not None:
            full = (q[0], q[1], q[2], k[2])
            self._require(broadcast_shapes(shape_of(self.mask), full) == full, "mask does not broadcast to the scores")


@irdl_op_definition
class EmbeddingOp(TfmOp):
    """Rows of a table picked by integer ids: result [ids..., dim].

    %e = tfm.embedding %table, %ids {} : (tensor<100x16xf32>, tensor<1x8xi64>) -> tensor<1x8x16xf32>
    """

    name = "tfm.embedding"
    table = operand_def(TensorType)
    ids = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, table: SSAValue, ids: SSAValue, result_type: Attribute):
        super().__init__(operands=[table, ids], result_types=[result_type])

    def verify_(self) -> None:
        table = shape_of(self.table)
        self._require(len(table) == 2, "table must be rank 2")
        self._require(shape_of(self.result) == (*shape_of(self.ids), table[1]), "wrong result shape")


@irdl_op_definition
class ReshapeOp(TfmOp):
    """Same elements, new shape (row-major order).

    %y = tfm.reshape %x {} : (tensor<2x8xf32>) -> tensor<16xf32>
    """

    name = "tfm.reshape"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])

    def verify_(self) -> None:
        count_in = _count(shape_of(self.input))
        self._require(count_in == _count(shape_of(self.result)), "element counts differ")


@irdl_op_definition
class TransposeOp(TfmOp):
    """Permute dimensions: result dim i is input dim perm[i].

    %y = tfm.transpose %x {perm = [0, 2, 1]} : (tensor<2x8x4xf32>) -> tensor<2x4x8xf32>
    """

    name = "tfm.transpose"
    perm = prop_def(ArrayAttr[IntegerAttr])
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, perm: Sequence[int], result_type: Attribute):
        perm_attr = ArrayAttr([IntegerAttr(p, i64) for p in perm])
        super().__init__(operands=[x], properties={"perm": perm_attr}, result_types=[result_type])

    @property
    def permutation(self) -> list[int]:
        """The permutation as Python ints."""
        return [p.value.data for p in self.perm.data]

    def verify_(self) -> None:
        x, perm = shape_of(self.input), self.permutation
        self._require(sorted(perm) == list(range(len(x))), f"{perm} is not a permutation of rank {len(x)}")
        self._require(shape_of(self.result) == tuple(x[p] for p in perm), "wrong result shape")


@irdl_op_definition
class SliceOp(TfmOp):
    """Elements start, start+step, ... < end along one dimension.

    %y = tfm.slice %x {dim = 1 : i64, start = 0 : i64, end = 4 : i64, step = 1 : i64}
        : (tensor<2x8xf32>) -> tensor<2x4xf32>
    """

    name = "tfm.slice"
    dim = prop_def(IntegerAttr)
    start = prop_def(IntegerAttr)
    end = prop_def(IntegerAttr)
    step = prop_def(IntegerAttr)
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, dim: int, start: int, end: int, step: int, result_type: Attribute):
        props = {k: IntegerAttr(v, i64) for k, v in dict(dim=dim, start=start, end=end, step=step).items()}
        super().__init__(operands=[x], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        x = list(shape_of(self.input))
        dim, start, end, step = (a.value.data for a in (self.dim, self.start, self.end, self.step))
        self._require(0 <= dim < len(x) and step >= 1 and 0 <= start <= end <= x[dim], "slice out of range")
        x[dim] = len(range(start, end, step))
        self._require(shape_of(self.result) == tuple(x), "wrong result shape")


@irdl_op_definition
class ConcatOp(TfmOp):
    """Join tensors along one dimension.

    %y = tfm.concat %a, %b {dim = 0 : i64} : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<5x4xf32>
    """

    name = "tfm.concat"
    dim = prop_def(IntegerAttr)
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, inputs: Sequence[SSAValue], dim: int, result_type: Attribute):
        super().__init__(operands=[inputs], properties={"dim": IntegerAttr(dim, i64)}, result_types=[result_type])

    def verify_(self) -> None:
        dim = self.dim.value.data
        shapes = [list(shape_of(v)) for v in self.inputs]
        self._require(len(shapes) >= 1, "needs at least one input")
        total = sum(s[dim] for s in shapes)
        for s in shapes:
            s[dim] = total
            self._require(tuple(s) == shape_of(self.result), "inputs differ outside the concat dimension")


@irdl_op_definition
class ExpandOp(TfmOp):
    """Broadcast to the result shape (numpy rules).

    %y = tfm.expand %x {} : (tensor<1x4xf32>) -> tensor<3x4xf32>
    """

    name = "tfm.expand"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])

    def verify_(self) -> None:
        out = shape_of(self.result)
        self._require(broadcast_shapes(shape_of(self.input), out) == out, "input does not broadcast to the result")


@irdl_op_definition
class WhereOp(TfmOp):
    """cond ? a : b, elementwise with broadcasting.

    %y = tfm.where %c, %a, %b {} : (tensor<4xi1>, tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    """

    name = "tfm.where"
    cond = operand_def(TensorType)
    true_value = operand_def(TensorType)
    false_value = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, cond: SSAValue, a: SSAValue, b: SSAValue, result_type: Attribute):
        super().__init__(operands=[cond, a, b], result_types=[result_type])

    def verify_(self) -> None:
        shapes = [shape_of(v) for v in self.operands]
        self._require(broadcast_shapes(*shapes) == shape_of(self.result), "operands do not broadcast to the result")


@irdl_op_definition
class CastOp(TfmOp):
    """Convert the element type.

    %y = tfm.cast %x {} : (tensor<4xi64>) -> tensor<4xf32>
    """

    name = "tfm.cast"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])

    def verify_(self) -> None:
        self._require(shape_of(self.input) == shape_of(self.result), "cast keeps the shape")


@irdl_op_definition
class ReduceOp(TfmOp):
    """Reduce over the listed dimensions.

    %y = tfm.reduce %x {fn = "mean", dims = [1 : i64], keepdim = true} : (tensor<2x8xf32>) -> tensor<2x1xf32>
    """

    name = "tfm.reduce"
    fn = prop_def(StringAttr)
    dims = prop_def(ArrayAttr[IntegerAttr])
    keepdim = prop_def(BoolAttr)
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, fn: str, x: SSAValue, dims: Sequence[int], keepdim: bool, result_type: Attribute):
        props = {
            "fn": StringAttr(fn),
            "dims": ArrayAttr([IntegerAttr(d, i64) for d in dims]),
            "keepdim": BoolAttr.from_bool(keepdim),
        }
        super().__init__(operands=[x], properties=props, result_types=[result_type])

    @property
    def reduced_dims(self) -> list[int]:
        """The reduced dimensions as Python ints."""
        return [d.value.data for d in self.dims.data]

    def verify_(self) -> None:
        self._require(self.fn.data in REDUCE_FNS, f"unknown reduction '{self.fn.data}'")
        x = shape_of(self.input)
        dims = self.reduced_dims
        self._require(all(0 <= d < len(x) for d in dims), "dimension out of range")
        if self.keepdim.value.data:
            expected = tuple(1 if i in dims else n for i, n in enumerate(x))
        else:
            expected = tuple(n for i, n in enumerate(x) if i not in dims)
        self._require(shape_of(self.result) == expected, f"expected result shape {expected}")


@irdl_op_definition
class IndexCopyOp(TfmOp):
    """dest with its slices along `dim` at `index[i]` replaced by slice i of source (a KV-cache write).

    %c2 = tfm.index_copy %cache, %pos, %k {dim = 2 : i64}
        : (tensor<1x2x64x16xf32>, tensor<4xi64>, tensor<1x2x4x16xf32>) -> tensor<1x2x64x16xf32>
    """

    name = "tfm.index_copy"
    dim = prop_def(IntegerAttr)
    dest = operand_def(TensorType)
    index = operand_def(TensorType)
    source = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, dest: SSAValue, index: SSAValue, source: SSAValue, dim: int):
        props = {"dim": IntegerAttr(dim, i64)}
        super().__init__(operands=[dest, index, source], properties=props, result_types=[dest.type])

    def verify_(self) -> None:
        dest, index, source = shape_of(self.dest), shape_of(self.index), shape_of(self.source)
        dim = self.dim.value.data
        self._require(0 <= dim < len(dest) and len(index) == 1, "index must be 1-D and dim in range")
        expected = tuple(index[0] if i == dim else n for i, n in enumerate(dest))
        self._require(source == expected, f"source shape {source} does not match {expected}")
        self._require(shape_of(self.result) == dest, "result has the shape of dest")


@irdl_op_definition
class RopeOp(TfmOp):
    """Rotary position embedding: x * cos + rotate_half(x) * sin over the last dim of x.

    rotate_half(x) = concat(-x[..., D/2:], x[..., :D/2]); cos and sin broadcast to x's shape.

    %y = tfm.rope %x, %cos, %sin : (tensor<8x4x16xf32>, tensor<8x1x16xf32>, tensor<8x1x16xf32>) -> tensor<8x4x16xf32>
    """

    name = "tfm.rope"
    input = operand_def(TensorType)
    cos = operand_def(TensorType)
    sin = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, cos: SSAValue, sin: SSAValue):
        super().__init__(operands=[x, cos, sin], result_types=[x.type])

    def verify_(self) -> None:
        x = shape_of(self.input)
        self._require(len(x) >= 1 and x[-1] % 2 == 0, "the rotated dim must have even size")
        for table in (self.cos, self.sin):
            self._require(broadcast_shapes(shape_of(table), x) == x, "cos and sin must broadcast to x")
        self._require(self.result.type == self.input.type, "result type must be the input's")


@irdl_op_definition
class AllReduceOp(TfmOp):
    """The element-wise sum of `input` over the `chips` chips of a tensor-parallel group, on every chip.

    %y = tfm.all_reduce %x {chips = 2 : i64} : (tensor<8x32xf32>) -> tensor<8x32xf32>
    """

    name = "tfm.all_reduce"
    chips = prop_def(IntegerAttr)
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, chips: int):
        super().__init__(operands=[x], properties={"chips": IntegerAttr(chips, i64)}, result_types=[x.type])

    def verify_(self) -> None:
        self._require(self.result.type == self.input.type, "result type differs from the input's")
        self._require(self.chips.value.data >= 1, "chips must be positive")


@irdl_op_definition
class SendOp(TfmOp):
    """`input` sent to the next pipeline stage: the result is the copy in that stage's chip.

    A stage ends by returning it; the next stage takes it as its input (pipeline parallelism).

    %y = tfm.send %x : (tensor<8x32xf32>) -> tensor<8x32xf32>
    """

    name = "tfm.send"
    input = operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue):
        super().__init__(operands=[x], result_types=[x.type])

    def verify_(self) -> None:
        self._require(self.result.type == self.input.type, "result type differs from the input's")


@irdl_op_definition
class QuantizeOp(TfmOp):
    """Scale, saturate and round to an 8-bit float: round(clamp(x / scale, -max, max)).

    max is 448 for f8E4M3FN and 57344 for f8E5M2; rounding is to nearest even (NaN stays NaN).
    The scale is an operand that broadcasts to x with a last dim of 1 (one per tensor or per
    row, computed at run time) or the `static_scale` property (calibrated at compile time).

    %q = tfm.quantize %x, %s : (tensor<8x32xf32>, tensor<1x1xf32>) -> tensor<8x32xf8E4M3FN>
    %p = tfm.quantize %x {static_scale = 1.0e-02 : f64} : (tensor<8x32xf32>) -> tensor<8x32xf8E4M3FN>
    """

    name = "tfm.quantize"
    static_scale = opt_prop_def(FloatAttr)
    input = operand_def(TensorType)
    scale = opt_operand_def(TensorType)
    result = result_def(TensorType)

    def __init__(self, x: SSAValue, scale: SSAValue | float, result_type: Attribute):
        if isinstance(scale, SSAValue):
            super().__init__(operands=[x, [scale]], result_types=[result_type])
        else:
            props = {"static_scale": FloatAttr(float(scale), f64)}
            super().__init__(operands=[x, []], properties=props, result_types=[result_type])

    def verify_(self) -> None:
        x = shape_of(self.input)
        self._require(is_float(self.input.type), "the input must be a float tensor")
        self._require(fp8_max(element_type(self.result)) is not None, "the result must be f8E4M3FN or f8E5M2")
        self._require(shape_of(self.result) == x, "result shape must equal the input shape")
        self._require((self.scale is None) != (self.static_scale is None), "needs a scale operand or static_scale")
        if self.scale is not None:
            s = shape_of(self.scale)
            self._require(broadcast_shapes(s, x) == x and (not s or s[-1] == 1), "scale must broadcast to x [..., 1]")
        else:
            assert self.static_scale is not None
            self._require(self.static_scale.value.data > 0, "static_scale must be positive")


def fp8_max(elem: Attribute) -> float | None:
    """Largest finite value of an 8-bit float element type, None for other types."""
    if isinstance(elem, Float8E4M3FNType):
        return 448.0
    if isinstance(elem, Float8E5M2Type):
        return 57344.0
    return None


def _count(shape: Sequence[int]) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def is_float(typ: Attribute) -> bool:
    """Whether a tensor type or element type is a float type."""
    elem = typ.element_type if isinstance(typ, TensorType) else typ
    return isinstance(elem, AnyFloat)


Tfm = Dialect(
    "tfm",
    [
        WeightOp,
        UnaryOp,
        BinaryOp,
        ScalarOp,
        MatmulOp,
        LinearOp,
        LayerNormOp,
        RmsNormOp,
        SoftmaxOp,
        AttentionOp,
        EmbeddingOp,
        ReshapeOp,
        TransposeOp,
        SliceOp,
        ConcatOp,
        ExpandOp,
        WhereOp,
        CastOp,
        ReduceOp,
        IndexCopyOp,
        QuantizeOp,
        RopeOp,
        AllReduceOp,
        SendOp,
    ],
)
