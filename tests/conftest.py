"""Shared test fixtures: `tfm_reference`, a numpy interpreter of the tfm dialect, and `tiny_llama`, a
2-layer Llama-family serving step compiled and run for `tiny`.

Each op is computed in float64 (floats) and rounded to its result element
type, so results can be compared with torch and with the ISA simulator.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence

import ml_dtypes
import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, bf16, f16, f32, f64, i1, i8, i16, i32, i64
from xdsl.ir import Attribute, Operation, SSAValue

from tasic.backend.target import load_target
from tasic.backend.tbin import from_bytes, to_bytes
from tasic.compiler import compile_module, default_pipeline
from tasic.frontend.llama_step import BatchStep, LlamaConfig, PipelineStage, StepGraph, build_step, step_inputs
from tasic.ir import tfm
from tasic.isa_sim.simulator import Machine

TfmEvaluator = Callable[..., list[np.ndarray]]
"""evaluate_tfm(module, weights, inputs, function="main") -> results."""

_NUMPY_TYPES: dict[Attribute, type] = {
    f32: np.float32,
    f16: np.float16,
    bf16: ml_dtypes.bfloat16,
    f64: np.float64,
    i64: np.int64,
    i32: np.int32,
    i16: np.int16,
    i8: np.int8,
    i1: np.bool_,
}

_erf = np.vectorize(math.erf, otypes=[np.float64])

_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda x: x,
    "neg": np.negative,
    "exp": np.exp,
    "tanh": np.tanh,
    "erf": _erf,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "sqrt": np.sqrt,
    "recip": lambda x: 1 / x,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu_erf": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "abs": np.abs,
    "log": np.log,
    "relu": lambda x: np.maximum(x, 0),
    "cos": np.cos,
    "sin": np.sin,
}

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
    "pow": np.power,
    "rsub": lambda a, b: b - a,
    "rdiv": lambda a, b: b / a,
    "eq": np.equal,
    "lt": np.less,
    "gt": np.greater,
}

_REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}


def _wide(x: np.ndarray) -> np.ndarray:
    """Floats as float64 for computing; other types unchanged."""
    return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) or x.dtype == ml_dtypes.bfloat16 else x


def _attention(op: tfm.AttentionOp, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """scale, soft-cap, mask, causal / sliding window (query i sees keys up to i + Sk - Sq), softmax, @ v."""
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = q @ np.swapaxes(k, -1, -2) * op.scale.value.data
    if op.softcap is not None:
        cap = op.softcap.value.data
        scores = np.tanh(scores / cap) * cap
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
    rows, cols = np.indices(scores.shape[-2:])
    rows = rows + scores.shape[-1] - scores.shape[-2]  # each query's last visible key
    if op.causal.value.data:
        scores = np.where(cols <= rows, scores, -np.inf)
    if op.window is not None:
        scores = np.where(cols > rows - op.window.value.data, scores, -np.inf)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return scores / scores.sum(-1, keepdims=True) @ v


def _index_copy(op: tfm.IndexCopyOp, dest: np.ndarray, index: np.ndarray, source: np.ndarray) -> np.ndarray:
    result = dest.copy()
    dim = op.dim.value.data
    target = [slice(None)] * dest.ndim
    target[dim] = index
    result[tuple(target)] = source
    return result


def _evaluate_op(op: Operation, args: list[np.ndarray], weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """The value of one tfm op, before rounding to its result type."""
    match op:
        case tfm.WeightOp():
            return np.asarray(weights[op.sym.data])
        case tfm.UnaryOp():
            return _UNARY[op.fn.data](args[0])
        case tfm.BinaryOp():
            return _BINARY[op.fn.data](args[0], args[1])
        case tfm.ScalarOp():
            return _BINARY[op.fn.data](args[0], np.float64(op.value.value.data))
        case tfm.MatmulOp():
            return args[0] @ args[1]
        case tfm.LinearOp():
            y = args[0] @ args[1].T
            return y + args[2] if len(args) == 3 else y
        case tfm.LayerNormOp():
            x, gamma, beta = args
            centred = x - x.mean(-1, keepdims=True)
            variance = (centred**2).mean(-1, keepdims=True)
            return centred / np.sqrt(variance + op.eps.value.data) * gamma + beta
        case tfm.RmsNormOp():
            x, gamma = args
            return x / np.sqrt((x**2).mean(-1, keepdims=True) + op.eps.value.data) * gamma
        case tfm.SoftmaxOp():
            e = np.exp(args[0] - args[0].max(-1, keepdims=True))
            return e / e.sum(-1, keepdims=True)
        case tfm.AttentionOp():
            return _attention(op, *args[:3], args[3] if len(args) == 4 else None)
        case tfm.EmbeddingOp():
            return args[0][args[1]]
        case tfm.ReshapeOp():
            return args[0].reshape(tfm.shape_of(op.result))
        case tfm.TransposeOp():
            return np.transpose(args[0], op.permutation)
        case tfm.SliceOp():
            index = [slice(None)] * args[0].ndim
            index[op.dim.value.data] = slice(op.start.value.data, op.end.value.data, op.step.value.data)
            return args[0][tuple(index)]
        case tfm.ConcatOp():
            return np.concatenate(args, axis=op.dim.value.data)
        case tfm.ExpandOp():
            return np.broadcast_to(args[0], tfm.shape_of(op.result))
        case tfm.WhereOp():
            return np.where(*args)
        case tfm.CastOp():
            return args[0]
        case tfm.ReduceOp():
            return _REDUCE[op.fn.data](args[0], axis=tuple(op.reduced_dims), keepdims=op.keepdim.value.data)
        case tfm.IndexCopyOp():
            return _index_copy(op, *args)
        case tfm.RopeOp():
            x, cos, sin = args
            half = x.shape[-1] // 2
            return x * cos + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin
        case tfm.AllReduceOp():
            return args[0]  # one chip's view of a one-chip group
    raise NotImplementedError(f"no reference for {op.name}")


def evaluate_tfm(
    module: ModuleOp, weights: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray], function: str = "main"
) -> list[np.ndarray]:
    """Run `function` (@main by default) of a tfm module on numpy inputs; returns its results."""
    body = next(op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == function)
    values: dict[SSAValue, np.ndarray] = dict(zip(body.args, inputs, strict=True))
    for op in body.body.block.ops:
        args = [_wide(values[operand]) for operand in op.operands]
        if isinstance(op, func.ReturnOp):
            return [values[operand] for operand in op.operands]
        result_type = op.results[0].type
        assert isinstance(result_type, TensorType)
        value = np.asarray(_evaluate_op(op, args, weights))
        values[op.results[0]] = value.astype(_NUMPY_TYPES[result_type.element_type])
    raise AssertionError(f"@{function} has no func.return")


@pytest.fixture
def tfm_reference() -> TfmEvaluator:
    """The numpy tfm interpreter: evaluate(module, weights, inputs, function="main") -> outputs."""
    return evaluate_tfm


class TinyLlamaStep:
    """A 2-layer Llama-family serving step with seeded random weights: a 6-token prompt and two groups
    of decoding sequences with their own KV caches (frontend/llama_step.py)."""

    config = LlamaConfig(
        name="tiny-llama",
        hidden=32,
        layers=2,
        heads=8,
        kv_heads=4,
        head_dim=8,
        ffn=64,
        vocab=50,
        rms_eps=1e-5,
        rope_theta=10000.0,
        max_context=64,
    )
    step = BatchStep(6, ((3, 10), (1, 12)))

    def graph(self, stage: PipelineStage | None = None):
        """The step's tfm graph and weights (of one pipeline stage when given)."""
        return build_step(self.config, self.step, "random", stage=stage)

    def run(self, tp: int, pipeline: str | None = None) -> dict[str, np.ndarray]:
        """Logits and updated KV caches on `tp` chips of `tiny` (f32; default pipeline unless given),
        from seeded random caches; the binary goes through its byte encoding first."""
        return self.run_stage(self.graph(), tp, pipeline, step_inputs(self.config, self.step))

    def run_stages(self, pp: int, tp: int = 1) -> dict[str, np.ndarray]:
        """The step split into `pp` pipeline stages of `tp` chips each, run one after another: each
        stage's sent `hidden_out` is the next stage's `hidden`. Logits and every stage's KV caches."""
        inputs = step_inputs(self.config, self.step)
        outputs: dict[str, np.ndarray] = {}
        for index in range(pp):
            stage = PipelineStage(index, pp)
            if not stage.first:
                inputs = {**inputs, "hidden": outputs.pop("hidden_out")}
            outputs |= self.run_stage(self.graph(stage), tp, None, inputs)
        return outputs

    @staticmethod
    def cache(name: str, shape: Sequence[int]) -> np.ndarray:
        """The seeded random starting values of the KV cache `name` (the same in every stage split)."""
        return np.random.default_rng([1, zlib.crc32(name.encode())]).standard_normal(shape).astype(np.float32)

    def run_stage(
        self, graph: StepGraph, tp: int, pipeline: str | None, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Outputs and KV caches of one compiled graph, its caches seeded by name."""
        target = load_target("tiny")
        pipeline = pipeline or default_pipeline(target.spec, "f32", tp)
        binary = compile_module(graph.module, graph.weights, target, "f32", pipeline=pipeline, tp=tp)
        machine = Machine(from_bytes(to_bytes(binary)), target)
        for name in graph.state_names:
            machine.write(name, self.cache(name, machine.whole(binary.symbol(name)).shape))
        needed = {name: inputs[name] for name in graph.input_names if name in inputs}
        result = machine.run("main", needed)
        return {**result.outputs, **{name: machine.read(name) for name in graph.state_names}}


@pytest.fixture(scope="session")
def tiny_llama() -> TinyLlamaStep:
    """The tiny Llama serving step (see `TinyLlamaStep`)."""
    return TinyLlamaStep()
