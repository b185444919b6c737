"""Import an ONNX model into a tfm `func.func @main`.

    graph = import_onnx("model.onnx", {"input_ids": (1, 128)})
    graph.module   # func.func @main(%input_ids: tensor<1x128xi64>) -> ...
    graph.weights  # initializers (and folded constants used at run time)

Initializers become `tfm.weight` ops named as in the graph. A node whose
inputs are all compile-time constants (initializers, `Constant`, shapes of
run-time tensors, earlier folded values) is evaluated with onnx's reference
evaluator at import time; every other node goes to its handler in
`tasic.frontend.onnx_ops.ONNX_HANDLERS`. Every emitted op carries
`loc = "<node name>:<op type>"`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.ir import Block, BlockArgument, Region, SSAValue

from tasic.frontend.errors import FrontendError
from tasic.frontend.onnx_ops import (
    ONNX_HANDLERS,
    OnnxBuilder,
    Operand,
    element_of,
    fold_node,
    node_label,
    shape,
    tensor_type,
)
from tasic.frontend.tfm_emitter import distinct_output_names
from tasic.frontend.torch_import import ImportedGraph
from tasic.ir.weights import WeightStore

MIN_OPSET, MAX_OPSET = 17, 23
"""Default-domain opsets the handlers are written for."""

InputShapes = Mapping[str, tuple[int, ...]]


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """onnx.load with external data, as one-line FrontendErrors (missing file, not ONNX, missing data)."""
    file = Path(path)
    if not file.exists():
        raise FrontendError(f"model path '{file}' does not exist")
    if not file.is_file():
        raise FrontendError(f"'{file}' is not an ONNX model: it is a directory, not a file")
    try:
        model = onnx.load(str(file), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, TypeError) as err:
        raise FrontendError(f"'{file}' is not an ONNX model: {_first_line(err)}") from err
    if not model.HasField("graph") or not (model.graph.node or model.graph.output):
        raise FrontendError(f"'{file}' is not an ONNX model: it has no graph")
    base = file.parent
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            info = external_data_helper.ExternalDataInfo(tensor)
            location = base / info.location
            if not location.is_file():
                raise FrontendError(
                    f"external data file '{info.location}' of tensor '{tensor.name}' not found next to '{file}'"
                )
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as err:
        raise FrontendError(f"cannot load the external data of '{file}': {_first_line(err)}") from err
    return model


_MODEL_FIELDS = {(1, 0), (2, 2), (3, 2), (4, 2), (5, 0), (6, 2), (7, 2), (8, 2), (14, 2), (20, 2), (25, 2), (26, 2)}
"""(field number, wire type) of ModelProto's fields: an ONNX file starts with one of them."""


def is_onnx_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a regular file holding an ONNX model (with a graph), whatever its extension."""
    file = Path(path)
    if not file.is_file():
        return False
    with file.open("rb") as stream:
        head = stream.read(2)
    tag = head[0] if head else 0
    if tag & 0x80 and len(head) == 2:  # a two-byte varint tag (field numbers 16 and up)
        tag = (tag & 0x7F) | (head[1] & 0x7F) << 7
    if (tag >> 3, tag & 7) not in _MODEL_FIELDS:
        return False  # not a protobuf ModelProto: no need to read the whole file
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception:
        return False
    return model.HasField("graph") and bool(model.graph.node or model.graph.output)


def import_onnx(
    path_or_model: str | os.PathLike[str] | onnx.ModelProto, input_shapes: InputShapes | None = None
) -> ImportedGraph:
    """Translate an ONNX model (a path or a ModelProto) to tfm; `input_shapes` binds dynamic dimensions."""
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else load_onnx(path_or_model)
    opset = _default_opset(model)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    graph = model.graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    inferred = _infer_shapes(model, input_shapes or {}, initializers)

    block = Block()
    builder = OnnxBuilder(block, WeightStore(), opset)
    builder.bound_inputs = bool(input_shapes)
    values: dict[str, Operand | None] = {"": None}
    for name, array in initializers.items():
        builder.name_constant(array, name)
        values[name] = array
    input_names: list[str] = []
    for graph_input in graph.input:
        if graph_input.name in initializers:
            continue
        dims = _input_dims(graph_input, (input_shapes or {}).get(graph_input.name))
        element = element_of(graph_input.type.tensor_type.elem_type)
        argument = block.insert_arg(tensor_type(dims, element), len(block.args))
        argument.name_hint = _hint(graph_input.name)
        values[graph_input.name] = argument
        input_names.append(graph_input.name)

    output_names = distinct_output_names([output.name for output in graph.output], input_names)
    builder.io_names = {*input_names, *output_names}
    builder.value_names = _value_names(graph) | builder.io_names
    used = _used_names(graph)
    for node in graph.node:
        _import_node(builder, node, values, used)

    builder.node = None
    results: list[SSAValue] = []
    for output in graph.output:
        value = values.get(output.name)
        if value is None:
            raise FrontendError(f"graph output '{output.name}' is not computed")
        if isinstance(value, np.ndarray):
            builder.name_constant(value, output.name)
        result = builder.value(value)
        if isinstance(result, BlockArgument) or result in results:
            result = builder.unary("copy", result)  # a result must be computed, not an argument
        _check_shape(output.name, result, inferred)
        results.append(result)
    block.add_op(func.ReturnOp(*results))
    function = func.FuncOp("main", ([arg.type for arg in block.args], [r.type for r in results]), Region(block))
    function.attributes["tfm.input_names"] = ArrayAttr([StringAttr(n) for n in input_names])
    function.attributes["tfm.output_names"] = ArrayAttr([StringAttr(n) for n in output_names])
    module = ModuleOp([function])
    module.verify()
    return ImportedGraph(module, builder.weights, input_names, output_names)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _hint(name: str) -> str | None:
    """An SSA name hint from an ONNX name (None when it is not a valid identifier)."""
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "_." else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else None


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return MAX_OPSET


def _input_dims(graph_input: onnx.ValueInfoProto, given: tuple[int, ...] | None) -> tuple[int, ...]:
    """The static shape of a graph input: `given`, else its declared dimensions (all must be fixed)."""
    declared = graph_input.type.tensor_type.shape.dim
    if given is not None:
        given = tuple(int(n) for n in given)
        if len(given) != len(declared) and graph_input.type.tensor_type.HasField("shape"):
            raise FrontendError(
                f"input shape {'x'.join(map(str, given))} for '{graph_input.name}' has rank {len(given)}, "
                f"the model declares rank {len(declared)}"
            )
        return given
    dims = []
    for index, dim in enumerate(declared):
        if not dim.HasField("dim_value"):
            label = f" ('{dim.dim_param}')" if dim.dim_param else ""
            example = "x".join(_example_dim(position, d, len(declared)) for position, d in enumerate(declared))
            raise FrontendError(
                f"input '{graph_input.name}' has a dynamic dimension {index}{label}: pass its shape, "
                f"e.g. --input-shape {graph_input.name}={example or '1x128'}"
            )
        dims.append(int(dim.dim_value))
    return tuple(dims)


def _example_dim(position: int, dim: onnx.TensorShapeProto.Dimension, rank: int) -> str:
    """A plausible value for a declared dimension in an --input-shape example: its fixed size, 1 for a
    batch (named so, or the first of several), 128 for another dynamic one (a sequence)."""
    if dim.HasField("dim_value"):
        return str(dim.dim_value)
    named_batch = "batch" in dim.dim_param.lower()
    unnamed_first = position == 0 and rank > 1 and not any(w in dim.dim_param.lower() for w in ("seq", "len"))
    return "1" if named_batch or unnamed_first else "128"


def _infer_shapes(
    model: onnx.ModelProto, input_shapes: InputShapes, initializers: Mapping[str, np.ndarray]
) -> dict[str, tuple[int, ...]]:
    """Static shapes onnx.shape_inference finds once the inputs are bound (empty when it fails)."""
    if model.ByteSize() >= 2**31 - 1:  # shape inference serialises the model: protobuf's 2 GB limit
        return {}
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    for graph_input in bound.graph.input:
        if graph_input.name in input_shapes and graph_input.name not in initializers:
            dims = graph_input.type.tensor_type.shape.dim
            del dims[:]
            for n in input_shapes[graph_input.name]:
                dims.add().dim_value = int(n)
    try:
        inferred = onnx.shape_inference.infer_shapes(bound, data_prop=True)
    except Exception:
        return {}
    shapes: dict[str, tuple[int, ...]] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _check_shape(name: str, value: Operand, inferred: Mapping[str, tuple[int, ...]]) -> None:
    if name in inferred and inferred[name] != shape(value):
        raise FrontendError(f"ONNX shape inference gives '{name}' shape {inferred[name]}, the import {shape(value)}")


def _value_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a value or initializer of the graph has."""
    names = {tensor.name for tensor in graph.initializer}
    names.update(info.name for info in [*graph.input, *graph.output, *graph.value_info])
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    names.discard("")
    return names


def _used_names(graph: onnx.GraphProto) -> set[str]:
    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(node.input)
    return names


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        result[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return result


def _import_node(builder: OnnxBuilder, node: onnx.NodeProto, values: dict[str, Operand | None], used: set[str]) -> None:
    """Fold a node on constants or emit it through its handler; record its outputs."""
    builder.node = node
    builder.wanted = [bool(name) and name in used for name in node.output]
    if node.domain not in ("", "ai.onnx"):
        builder.unsupported(f"domain '{node.domain}'")
    missing = [name for name in node.input if name not in values]
    if missing:
        raise FrontendError(f"ONNX node '{node_label(node)}' ({node.op_type}) reads undefined value '{missing[0]}'")
    inputs = [values[name] for name in node.input]
    runtime = any(isinstance(x, SSAValue) for x in inputs)
    if not runtime:
        outputs: list[Operand | None] = list(fold_node(node, inputs, builder.opset))
    else:
        handler = ONNX_HANDLERS.get(node.op_type)
        if handler is None:
            builder.unsupported()
        result = handler(builder, inputs, _attributes(node))
        outputs = result if isinstance(result, list) else [result]
    for name, value in zip(node.output, outputs, strict=False):
        if isinstance(value, np.ndarray):
            builder.name_constant(value, name)
        elif isinstance(value, SSAValue) and value.name_hint is None:
            value.name_hint = _hint(name)
        values[name] = value
