"""An `onnx.backend.base.Backend` running ONNX models on the simulated chip (target `tiny`, f32).

    rep = TasicBackend.prepare(model)   # import_onnx + compile_module
    outputs = rep.run([x])              # simulate

Models the compiler does not handle (element types other than float32 at the
graph boundary, unsupported operators) raise
`onnx.backend.test.BackendIsNotSupposedToImplementIt`, which the ONNX backend
test runner reports as a skip.
"""

from __future__ import annotations

import functools
import unittest
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.base import Backend, BackendRep
from onnx.backend.test.runner import BackendIsNotSupposedToImplementIt

from tasic.frontend.errors import UnsupportedOpError
from tasic.frontend.onnx_import import import_onnx
from tasic.ir import tfm

_CONSTANT_INPUT_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL}
_OUTPUT_TYPES = {TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL}

TARGET = "tiny"
DTYPE = "f32"


class NotSupported(BackendIsNotSupposedToImplementIt):
    """A model this backend does not handle (the test runner treats it as not applicable)."""


SKIPPED: list[str] = []
"""Reasons of the NotSupported raised by `prepare` (the ONNX test runner swallows them; tests report skips)."""


def _not_supported(reason: str) -> NotSupported:
    SKIPPED.append(reason)
    return NotSupported(reason)


class TasicRep(BackendRep):
    """A model to simulate; compiled once, or once per distinct value of its integer (constant) inputs."""

    def __init__(self, model: onnx.ModelProto, constant_inputs: Sequence[str]) -> None:
        from tasic.backend.target import load_target

        self.model = model
        self.target = load_target(TARGET)
        initializers = {tensor.name for tensor in model.graph.initializer}
        self.input_names = [v.name for v in model.graph.input if v.name not in initializers]
        self.constant_inputs = list(constant_inputs)
        self._compiled: dict[bytes, tuple[Any, list[str], list[str]]] = {}
        if not self.constant_inputs:
            self._compile({})

    def _compile(self, constants: dict[str, np.ndarray]) -> tuple[Any, list[str], list[str]]:
        """import_onnx + compile_module with `constants` bound as initializers (cached by their values)."""
        from tasic.compiler import compile_module

        key = b"".join(
            name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes() for name, a in constants.items()
        )
        if key not in self._compiled:
            model = self.model
            if constants:
                model = onnx.ModelProto()
                model.CopyFrom(self.model)
                kept = [v for v in model.graph.input if v.name not in constants]
                del model.graph.input[:]
                model.graph.input.extend(kept)
                model.graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in constants.items())
            try:
                graph = import_onnx(model)
            except UnsupportedOpError as err:
                raise _not_supported(str(err)) from err
            function = graph.module.ops.first
            types = [*function.function_type.inputs.data, *function.function_type.outputs.data]
            if any(0 in tfm.shape_of(t) for t in types):
                raise _not_supported("zero-size tensors are not supported by the compiler")
            binary = compile_module(graph.module, graph.weights, self.target, DTYPE)
            self._compiled[key] = (binary, graph.input_names, graph.output_names)
        return self._compiled[key]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Simulate on positional (or named) inputs; outputs in graph order."""
        from tasic.isa_sim import simulate

        if isinstance(inputs, dict):
            feeds = {name: np.asarray(inputs[name]) for name in self.input_names}
        else:
            arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            feeds = {name: np.asarray(array) for name, array in zip(self.input_names, arrays, strict=True)}
        binary, input_names, output_names = self._compile({name: feeds[name] for name in self.constant_inputs})
        outputs = simulate(binary, self.target, {name: feeds[name] for name in input_names}).outputs
        return tuple(outputs[name] for name in output_names)


class TasicBackend(Backend):
    """ONNX backend: import, compile for `tiny` in f32, simulate.

    Graph inputs must be float32 (run-time tensors) or integer / bool: those
    are treated as compile-time constants (shapes, axes, indices), and the
    model is compiled when `run` sees their values. Outputs must be float32,
    int64 or bool.
    """

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Only the (simulated) CPU device."""
        return device == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> TasicRep:
        """Check the model's boundary types and compile it (now, or at `run` for constant inputs)."""
        super().prepare(model, device, **kwargs)
        initializers = {tensor.name for tensor in model.graph.initializer}
        constants = []
        for value in model.graph.input:
            if value.name in initializers:
                continue
            element = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else None
            if element in _CONSTANT_INPUT_TYPES:
                constants.append(value.name)
            elif element != TensorProto.FLOAT:
                raise _not_supported(f"input '{value.name}' is not a float32 tensor")
        for value in model.graph.output:
            element = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else None
            if element not in _OUTPUT_TYPES:
                raise _not_supported(f"output '{value.name}' is not a float32, int64 or bool tensor")
        return TasicRep(model, constants)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
        """Single nodes are run through `prepare` on a model by the test runner, not here."""
        raise _not_supported("run_node is not implemented; use prepare + run")


CONFORMANCE_TESTS: dict[str, str] = {
    "Add": "add",
    "Sum": "sum",
    "Sub": "sub",
    "Mul": "mul",
    "Div": "div",
    "Pow": "pow",
    "Max": "max",
    "Min": "min",
    "Neg": "neg",
    "Exp": "exp",
    "Tanh": "tanh",
    "Erf": "erf",
    "Sigmoid": "sigmoid",
    "Sqrt": "sqrt",
    "Reciprocal": "reciprocal",
    "Relu": "relu",
    "Abs": "abs",
    "Log": "log",
    "Cos": "cos",
    "Sin": "sin",
    "MatMul": "matmul",
    "Gemm": "gemm",
    "Softmax": "softmax",
    "LayerNormalization": "layer_normalization",
    "RMSNormalization": "rms_normalization",
    "Gelu": "gelu",
    "Attention": "attention",
    "Where": "where",
    "Gather": "gather(?!_elements)",
    "GatherND": "gathernd",
    "Concat": "concat",
    "Slice": "slice",
    "Split": "split(?!_to_sequence)",
    "Reshape": "reshape",
    "Transpose": "transpose",
    "Squeeze": "squeeze",
    "Unsqueeze": "unsqueeze",
    "Expand": "expand",
    "Cast": "cast",
    "Range": "range",
    "Trilu": "tri[lu]",
    "ReduceMean": "reduce_mean",
    "ReduceSum": "reduce_sum(?!_square)",
    "ReduceMax": "reduce_max",
    "Equal": "equal",
    "Less": "less(?!_equal)",
    "Greater": "greater(?!_equal)",
    "Not": "not",
    "Identity": "identity",
    "Constant": "constant(?!_pad)",
    "ConstantOfShape": "constantofshape",
    "Shape": "shape",
    "Size": "size",
}
"""ONNX node-test name stems (regexes) of the supported operators, by op type."""


def skipping(test: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a BackendTest test function so that a NotSupported raised inside it becomes unittest.SkipTest."""

    @functools.wraps(test)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        del SKIPPED[:]
        result = test(*args, **kwargs)
        if SKIPPED:
            raise unittest.SkipTest(SKIPPED[0])
        return result

    return wrapped


def conformance_patterns() -> dict[str, str]:
    """`include` regexes of onnx.backend.test.BackendTest, one per op type (with the `_expanded` variants)."""
    return {op: rf"^test_{stem}(_.*)?_cpu$" for op, stem in CONFORMANCE_TESTS.items()}


def conformance_test_case(
    op_types: Sequence[str] | None = None, name: str = "OnnxConformanceTest"
) -> type[unittest.TestCase]:
    """A TestCase with onnx's backend node tests of the supported op types (`conformance_patterns`).

    The tests are generated in-process by `onnx.backend.test.BackendTest`;
    a model the backend does not handle is reported as a skip.
    """
    import re
    import warnings

    import onnx.backend.test

    patterns = [p for op, p in conformance_patterns().items() if not op_types or op in op_types]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend_test = onnx.backend.test.BackendTest(TasicBackend, __name__)
    members: dict[str, Any] = {}
    for case in backend_test.test_cases.values():
        for test_name in unittest.defaultTestLoader.getTestCaseNames(case):
            if any(re.match(pattern, test_name) for pattern in patterns):
                members[test_name] = skipping(getattr(case, test_name))
    return type(name, (unittest.TestCase,), members)


def op_type_of(test_name: str) -> str:
    """The op type whose pattern matches a conformance test name ('?' when none)."""
    import re

    return next((op for op, p in conformance_patterns().items() if re.match(p, test_name)), "?")
