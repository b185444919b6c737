"""Import a `torch.export.ExportedProgram` into a tfm `func.func @main`.

    program = export_module(model, {"input_ids": ids})
    graph = import_exported_program(program)
    # graph.module:
    #   func.func @main(%input_ids: tensor<1x8xi64>) -> tensor<1x8x100xf32>
    #       attributes {tfm.input_names = ["input_ids"], tfm.output_names = ["logits"]} {
    #     %0 = tfm.weight {loc = "transformer.wte:embedding", name = "transformer.wte.weight"} : tensor<100x32xf32>
    #     %embedding = tfm.embedding %0, %input_ids {loc = "transformer.wte:embedding"} : ...
    #     ...
    #   }

Parameters, buffers and lifted constants become `tfm.weight` ops whose data is
in `graph.weights`. A node whose inputs are all compile-time constants is run
with torch at import time and becomes a weight too (constant folding); every
other node goes to its handler in `tasic.frontend.torch_ops.ATEN_HANDLERS`.
Every emitted op carries `loc = "<module path>:<aten op>"`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import ConstantArgument, InputKind, OutputKind, TensorArgument
from torch.fx import Node
from torch.fx.node import map_arg
from torch.utils import _pytree as pytree
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.ir import Block, BlockArgument, Region, SSAValue

from tasic.frontend.errors import FrontendError
from tasic.frontend.graph_builder import GraphBuilder, module_path, tensor_type
from tasic.frontend.tfm_emitter import distinct_output_names
from tasic.frontend.torch_ops import ATEN_HANDLERS
from tasic.ir.weights import WeightStore


@dataclass
class ImportedGraph:
    """A tfm module with its weights and the names of @main's arguments and results.

    `state_names` are the mutated buffers (a KV cache): the last arguments,
    and the last results (updated), under the same names.
    """

    module: ModuleOp
    weights: WeightStore
    input_names: list[str]
    output_names: list[str]
    state_names: list[str] = field(default_factory=list)


_KEPT_WHOLE = (
    torch.ops.aten.scaled_dot_product_attention.default,
    torch.ops.aten.index_copy.default,
    torch.ops.aten.index_copy_.default,
)


def decomposition_table() -> dict[torch._ops.OperatorBase, Callable[..., object]]:
    """torch's default decompositions, keeping scaled_dot_product_attention and index_copy whole."""
    table = torch.export.default_decompositions()
    for overload in _KEPT_WHOLE:
        table.pop(overload, None)
    return table


@contextmanager
def _selected_outputs(module: torch.nn.Module, output_names: Sequence[str] | None) -> Iterator[None]:
    """Make `module` return just `output_names` of its dict-like result, as a tuple, for the duration."""
    if output_names is None:
        yield
        return
    forward = module.forward
    shadowed = module.__dict__.get("forward")

    @functools.wraps(forward)
    def selecting_forward(*args: object, **kwargs: object) -> tuple[torch.Tensor, ...]:
        result = forward(*args, **kwargs)
        missing = [name for name in output_names if name not in result]
        if missing:
            raise FrontendError(f"model outputs have no {missing}; available: {list(result.keys())}")
        return tuple(result[name] for name in output_names)

    module.forward = selecting_forward
    try:
        yield
    finally:
        if shadowed is None:
            del module.forward
        else:
            module.forward = shadowed


def export_module(
    module: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...],
    output_names: Sequence[str] | None = None,
    label: str | None = None,
) -> ExportedProgram:
    """torch.export (non-strict) + core ATen decompositions (SDPA kept).

    A dict of inputs is passed as keyword arguments, a tuple positionally.
    With `output_names`, the program returns only those entries of the
    module's dict-like output (e.g. a Hugging Face ModelOutput), in that order.
    An exception from torch (or from the module's forward) becomes a one-line
    FrontendError naming the model (`label`, else the module's class).
    """
    if isinstance(example_inputs, Mapping):
        args, kwargs = (), dict(example_inputs)
    else:
        args, kwargs = tuple(example_inputs), {}
    try:
        with _selected_outputs(module, output_names):
            program = torch.export.export(module, args, kwargs, strict=False)
        return program.run_decompositions(decomposition_table())
    except FrontendError:
        raise
    except Exception as err:
        name = f"{label} ({type(module).__name__})" if label else type(module).__name__
        raise FrontendError(f"torch.export failed on {name}: {_first_line(err)}") from err


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, prefixed by its type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def import_module(
    module: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...],
    output_names: Sequence[str] | None = None,
    label: str | None = None,
) -> ImportedGraph:
    """export_module + import_exported_program."""
    return import_exported_program(export_module(module, example_inputs, output_names, label), output_names)


def import_exported_program(
    program: ExportedProgram,
    output_names: Sequence[str] | None = None,
    function_name: str = "main",
    weights: WeightStore | None = None,
) -> ImportedGraph:
    """Translate the program's graph to tfm ops in `func.func @<function_name>`.

    Outputs are named `output_names` when given, else by the keys of a
    dict-like model output, else "output", "output_1", ... Mutated buffers
    become state (`ImportedGraph.state_names`). With `weights`, constants go
    to that store (shared by several functions: equal data keeps one name).
    """
    block = Block()
    builder = GraphBuilder(block, WeightStore() if weights is None else weights)
    values: dict[Node, object] = {}
    count = sum(spec.kind == OutputKind.USER_OUTPUT for spec in program.graph_signature.output_specs)
    names = list(output_names) if output_names is not None else _default_output_names(program, count)
    if len(names) != count:
        raise FrontendError(f"{len(names)} output names given for {count} outputs")
    input_names, state_names = _bind_inputs(program, block, builder, values)
    names = distinct_output_names(names, [*input_names, *state_names])
    builder.reserved = {*input_names, *state_names, *names}  # symbols of the binary: no weight takes them
    for node in program.graph.nodes:
        if node.op == "call_function":
            values[node] = _import_call(builder, node, values)

    results = _user_outputs(builder, program, values)
    results += _state_outputs(builder, program, values, state_names)
    block.add_op(func.ReturnOp(*results))
    function = func.FuncOp(function_name, ([arg.type for arg in block.args], [r.type for r in results]), Region(block))
    _name_list(function, "tfm.input_names", [*input_names, *state_names])
    _name_list(function, "tfm.output_names", [*names, *state_names])
    if state_names:
        _name_list(function, "tfm.state_names", state_names)
    module = ModuleOp([function])
    module.verify()
    return ImportedGraph(module, builder.weights, [*input_names, *state_names], [*names, *state_names], state_names)


def _name_list(function: func.FuncOp, attribute: str, names: Sequence[str]) -> None:
    function.attributes[attribute] = ArrayAttr([StringAttr(name) for name in names])


def _bind_inputs(
    program: ExportedProgram, block: Block, builder: GraphBuilder, values: dict[Node, object]
) -> tuple[list[str], list[str]]:
    """Give every placeholder its value: a block argument (user tensors, then mutated buffers) or a constant.

    Returns the user input names and the state (mutated buffer) names.
    """
    input_names: list[str] = []
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    mutated = set(program.graph_signature.buffers_to_mutate.values())
    states: list[tuple[str, Node]] = []
    for spec in program.graph_signature.input_specs:
        node = placeholders[spec.arg.name]
        if spec.kind == InputKind.USER_INPUT and isinstance(spec.arg, TensorArgument):
            values[node] = _add_argument(block, node, node.name)
            input_names.append(node.name)
        elif spec.kind == InputKind.USER_INPUT and isinstance(spec.arg, ConstantArgument):
            values[node] = spec.arg.value
        elif spec.kind == InputKind.BUFFER and spec.target in mutated:
            states.append((spec.target, node))
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            tensor = program.state_dict.get(spec.target, program.constants.get(spec.target))
            assert isinstance(tensor, torch.Tensor), f"no data for {spec.target}"
            builder.name_constant(tensor, spec.target)
            values[node] = tensor
        else:
            raise FrontendError(f"unsupported program input '{spec.arg.name}' of kind {spec.kind.name}")
    for name, node in states:
        values[node] = _add_argument(block, node, name)
    return input_names, [name for name, _ in states]


def _add_argument(block: Block, node: Node, name: str) -> SSAValue:
    fake = node.meta["val"]
    argument = block.insert_arg(tensor_type(fake.shape, fake.dtype), len(block.args))
    argument.name_hint = name
    return argument


def _import_call(builder: GraphBuilder, node: Node, values: dict[Node, object]) -> object:
    """The value of one call_function node: folded, picked from a tuple, or built by its handler."""
    builder.node = node
    args = map_arg(node.args, values.__getitem__)
    kwargs = map_arg(node.kwargs, values.__getitem__)
    if node.target is operator.getitem:
        results, index = args
        if results[index] is None and node.users:
            builder.node = node.args[0]
            builder.unsupported(f"its result {index} is not supported")
        return results[index]
    if not any(isinstance(leaf, SSAValue) for leaf in pytree.tree_leaves((args, kwargs))):
        return _fold(node, args, kwargs)
    handler = ATEN_HANDLERS.get(node.target)
    if handler is None:
        builder.unsupported()
    result = handler(builder, *args, **kwargs)
    if isinstance(result, SSAValue) and result.name_hint is None:
        result.name_hint = node.name
    return result


def _fold(node: Node, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
    """Run a node on constants with torch."""
    try:
        with torch.no_grad():
            return node.target(*args, **kwargs)
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FrontendError(
            f"cannot fold constant {node.target} in module '{module_path(node)}': {first_line}"
        ) from err


def _user_outputs(builder: GraphBuilder, program: ExportedProgram, values: dict[Node, object]) -> list[SSAValue]:
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    builder.node = output_node
    results = []
    for spec, arg in zip(program.graph_signature.output_specs, output_node.args[0], strict=True):
        if spec.kind != OutputKind.USER_OUTPUT:
            continue
        value = values[arg] if isinstance(arg, Node) else arg
        if not isinstance(value, SSAValue | torch.Tensor):
            raise FrontendError(f"model output '{spec.arg.name}' is not a tensor ({type(value).__name__})")
        result = builder.value(value)
        if isinstance(result, BlockArgument):
            result = builder.unary("copy", result)  # an output returning an input is computed: a copy
        results.append(result)
    return results


def _state_outputs(
    builder: GraphBuilder, program: ExportedProgram, values: dict[Node, object], state_names: Sequence[str]
) -> list[SSAValue]:
    """The updated value of every state buffer, in `state_names` order."""
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    updated: dict[str, SSAValue] = {}
    for spec, arg in zip(program.graph_signature.output_specs, output_node.args[0], strict=True):
        if spec.kind == OutputKind.BUFFER_MUTATION:
            assert spec.target is not None and isinstance(arg, Node)
            updated[spec.target] = builder.value(values[arg])
        elif spec.kind != OutputKind.USER_OUTPUT:
            raise FrontendError(f"unsupported program output '{spec.arg.name}' of kind {spec.kind.name}")
    return [updated[name] for name in state_names]


def _default_output_names(program: ExportedProgram, count: int) -> list[str]:
    """Keys of a flat dict-like output (e.g. ModelOutput: "logits"), else "output", "output_1", ..."""
    spec = program.call_spec.out_spec
    keys = spec.context if spec is not None else None
    if (
        isinstance(keys, list)
        and len(keys) == count
        and all(isinstance(key, str) for key in keys)
        and all(child.is_leaf() for child in spec.children())
    ):
        return list(keys)
    return ["output" if i == 0 else f"output_{i}" for i in range(count)]
