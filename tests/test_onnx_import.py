"""The ONNX importer: small graphs and torch-exported models, compiled for `tiny` (f32), simulated, vs onnxruntime."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tasic.backend.target import load_target
from tasic.compiler import compile_module
from tasic.frontend.errors import FrontendError, UnsupportedOpError
from tasic.frontend.hf import import_model
from tasic.frontend.onnx_import import import_onnx
from tasic.ir import tfm
from tasic.isa_sim import simulate

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def _array(*dims: int) -> np.ndarray:
    return RNG.standard_normal(dims).astype(np.float32)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 18,
) -> onnx.ModelProto:
    """A model from nodes (outputs untyped: shape inference fills them in)."""
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_empty_tensor_value_info(name) for name in outputs],
        [numpy_helper.from_array(value, name) for name, value in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def _input(name: str, dims: list[int | str], element: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, element, dims)


def _simulate(model: onnx.ModelProto, feeds: dict[str, np.ndarray], **shapes: tuple[int, ...]) -> list[np.ndarray]:
    graph = import_onnx(model, shapes or None)
    target = load_target("tiny")
    binary = compile_module(graph.module, graph.weights, target, "f32")
    outputs = simulate(binary, target, {name: feeds[name] for name in graph.input_names}).outputs
    return [outputs[name] for name in graph.output_names]


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], **shapes: tuple[int, ...]) -> None:
    """Simulated outputs equal onnxruntime's to 1e-4."""
    expected = onnxruntime.InferenceSession(model.SerializeToString()).run(None, feeds)
    actual = _simulate(model, feeds, **shapes)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), atol=1e-4, rtol=1e-4)


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, name=f"{op.lower()}_{outputs[0]}", **attrs)


# ------------------------------------------------------------------ numerics


def test_mlp_matmul_add_relu_softmax() -> None:
    nodes = [
        _node("MatMul", ["x", "w"], ["h"]),
        _node("Add", ["h", "b"], ["h1"]),
        _node("Relu", ["h1"], ["h2"]),
        _node("Softmax", ["h2"], ["y"], axis=-1),
    ]
    model = _model(nodes, [_input("x", ["batch", 16])], ["y"], {"w": _array(16, 8), "b": _array(8)})
    _check(model, {"x": _array(4, 16)}, x=(4, 16))


def test_scalar_tensors_and_names_that_are_not_identifiers() -> None:
    """Rank-0 inputs and results (no rows for the norm patterns to look at), and value names with
    characters an SSA name may not have (non-ASCII, spaces, a leading digit) import and run."""
    nodes = [
        _node("Add", ["\u00efn", "b c"], ["9s"]),
        _node("Mul", ["9s", "\u00efn"], ["y"]),
        _node("Mul", ["y", "y"], ["y2"]),
        _node("ReduceSum", ["v"], ["total"], keepdims=0),
    ]
    inputs = [_input("\u00efn", []), _input("b c", []), _input("v", [5])]
    model = _model(nodes, inputs, ["y2", "total"])
    _check(model, {"\u00efn": np.array(1.5, np.float32), "b c": np.array(-0.25, np.float32), "v": _array(5)})


def test_gemm_attributes() -> None:
    nodes = [_node("Gemm", ["x", "w", "c"], ["y"], transA=1, transB=1, alpha=0.5, beta=2.0)]
    model = _model(nodes, [_input("x", [16, 4])], ["y"], {"w": _array(8, 16), "c": _array(8)})
    _check(model, {"x": _array(16, 4)})


def test_broadcasting_binary_ops_and_constants_on_the_left() -> None:
    nodes = [
        _node("Sub", ["one", "x"], ["a"]),
        _node("Div", ["a", "row"], ["b"]),
        _node("Max", ["b", "y", "col"], ["c"]),
        _node("Min", ["c", "three"], ["d"]),
        _node("Abs", ["d"], ["e"]),
        _node("Pow", ["e", "two"], ["f"]),
        _node("Mul", ["f", "y"], ["g"]),
        _node("Sqrt", ["e"], ["h"]),
        _node("Add", ["g", "h"], ["out"]),
    ]
    constants = {
        "one": np.array(1.0, np.float32),
        "row": np.array([1.5, 2.0, -3.0, 4.0], np.float32),
        "col": _array(3, 1),
        "three": np.array([3.0], np.float32),
        "two": np.array(2.0, np.float32),
    }
    model = _model(nodes, [_input("x", [2, 3, 4]), _input("y", [3, 4])], ["out"], constants)
    _check(model, {"x": _array(2, 3, 4), "y": _array(3, 4)})


def test_unary_functions() -> None:
    ops = ["Neg", "Exp", "Tanh", "Erf", "Sigmoid", "Reciprocal", "Log", "Relu", "Abs", "Sqrt"]
    nodes = [_node("Abs", ["x"], ["pos"])]
    nodes += [_node(op, ["pos"], [f"y{i}"]) for i, op in enumerate(ops)]
    model = _model(nodes, [_input("x", [3, 8])], [f"y{i}" for i in range(len(ops))])
    x = _array(3, 8)
    x[x == 0] = 0.5
    _check(model, {"x": x})


def test_layer_norm_gelu_rms_norm_opset_23() -> None:
    nodes = [
        _node("LayerNormalization", ["x", "g", "b"], ["ln"], epsilon=1e-5),
        _node("Gelu", ["ln"], ["ge"]),
        _node("Gelu", ["ln"], ["gt"], approximate="tanh"),
        _node("RMSNormalization", ["x", "g"], ["rms"], epsilon=1e-6),
        _node("Add", ["ge", "gt"], ["s"]),
        _node("Add", ["s", "rms"], ["y"]),
    ]
    model = _model(nodes, [_input("x", [2, 5, 16])], ["y"], {"g": _array(16), "b": _array(16)}, opset=23)
    # onnxruntime 1.31 has no RMSNormalization kernel at opset 23 on every build: compare with the reference evaluator
    graph_out = _simulate(model, {"x": (x := _array(2, 5, 16))})[0]
    expected = onnx.reference.ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(graph_out, expected, atol=1e-4, rtol=1e-4)


def test_layer_norm_mean_and_inv_std_outputs() -> None:
    nodes = [_node("LayerNormalization", ["x", "g"], ["y", "mean", "inv_std"], axis=1)]
    model = _model(nodes, [_input("x", [2, 3, 4])], ["y", "mean", "inv_std"], {"g": _array(3, 4)}, opset=17)
    _check(model, {"x": _array(2, 3, 4)})


def test_embedding_gather_and_shape_subgraph() -> None:
    """Gather of a constant table by run-time ids; a Reshape whose shape comes from Shape/Gather/Concat."""
    nodes = [
        _node("Gather", ["table", "ids"], ["emb"]),
        _node("Shape", ["emb"], ["shape"]),
        _node("Gather", ["shape", "zero"], ["batch"], axis=0),
        _node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        _node("Concat", ["batch1", "minus_one"], ["new_shape"], axis=0),
        _node("Reshape", ["emb", "new_shape"], ["flat"]),
        _node("Transpose", ["emb"], ["t"], perm=[0, 2, 1]),
        _node("Slice", ["t", "starts", "ends", "axes", "steps"], ["s"]),
        _node("ReduceMean", ["s", "axes_r"], ["m"], keepdims=0),
        _node("ReduceSum", ["emb", "axes_r"], ["r"], keepdims=1),
        _node("ReduceMax", ["emb"], ["mx"], keepdims=0),
    ]
    constants = {
        "table": _array(50, 8),
        "zero": np.array(0, np.int64),
        "axes0": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64),
        "starts": np.array([1, -6], np.int64),
        "ends": np.array([7, 100], np.int64),
        "axes": np.array([1, 2], np.int64),
        "steps": np.array([2, 1], np.int64),
        "axes_r": np.array([-1], np.int64),
    }
    model = _model(nodes, [_input("ids", [2, 6], TensorProto.INT64)], ["flat", "s", "m", "r", "mx"], constants)
    _check(model, {"ids": RNG.integers(0, 50, (2, 6))})
    graph = import_onnx(model)
    assert any(isinstance(op, tfm.EmbeddingOp) for op in graph.module.walk())


def test_where_compare_trilu_expand_squeeze_cast() -> None:
    nodes = [
        _node("Less", ["x", "zero"], ["neg"]),
        _node("Where", ["neg", "zero", "x"], ["relu"]),
        _node("Trilu", ["relu"], ["low"], upper=0),
        _node("Unsqueeze", ["low", "axes0"], ["u"]),
        _node("Expand", ["u", "shape"], ["e"]),
        _node("Squeeze", ["e", "axes1"], ["sq"]),
        _node("Greater", ["x", "y"], ["gt"]),
        _node("Not", ["gt"], ["le"]),
        _node("Cast", ["le"], ["le_f"], to=F),
        _node("Mul", ["sq", "le_f"], ["out"]),
        _node("Equal", ["x", "x"], ["eq"]),
        _node("Cast", ["eq"], ["eq_f"], to=F),
        _node("Identity", ["eq_f"], ["same"]),
    ]
    constants = {
        "zero": np.array(0.0, np.float32),
        "axes0": np.array([0], np.int64),
        "axes1": np.array([1], np.int64),
        "shape": np.array([3, 1, 1, 1], np.int64),
    }
    model = _model(nodes, [_input("x", [4, 4]), _input("y", [4, 4])], ["out", "same"], constants)
    _check(model, {"x": _array(4, 4), "y": _array(4, 4)})


def test_gather_nd_and_split() -> None:
    """GatherND with constant indices (negative, batch_dims 1, a contiguous run); Split by sizes and num_outputs."""
    nodes = [
        _node("GatherND", ["x", "idx"], ["g"]),
        _node("GatherND", ["x", "idx_b"], ["gb"], batch_dims=1),
        _node("GatherND", ["x", "idx_all"], ["ga"]),
        _node("Split", ["x", "sizes"], ["s0", "s1"], axis=-1),
        _node("Split", ["y"], ["t0", "t1", "t2"], axis=1, num_outputs=3),
        _node("Add", ["t0", "t1"], ["t"]),
    ]
    constants = {
        "idx": np.array([[0, 2], [1, -1], [0, 0]], np.int64),
        "idx_b": np.array([[[2], [0]], [[1], [1]]], np.int64),
        "idx_all": np.array([[[0, 0, 0], [0, 0, 1]], [[0, 0, 2], [0, 0, 3]]], np.int64),
        "sizes": np.array([1, 3], np.int64),
    }
    model = _model(nodes, [_input("x", [2, 3, 4]), _input("y", [2, 7])], ["g", "gb", "ga", "s0", "s1", "t"], constants)
    _check(model, {"x": _array(2, 3, 4), "y": _array(2, 7)})
    ops = list(import_onnx(model).module.walk())
    # one slice per run of consecutive rows (3 + 4 + 1), per Split output (2), per read Split output (t2 is not)
    assert sum(isinstance(op, tfm.SliceOp) for op in ops) == 3 + 4 + 1 + 2 + 2


def test_constant_folding_range_constant_of_shape() -> None:
    """Range, ConstantOfShape, Constant and Cast on constants fold; the result is an added weight."""
    nodes = [
        helper.make_node("Constant", [], ["n"], value=numpy_helper.from_array(np.array(6, np.int64))),
        helper.make_node("Constant", [], ["start"], value_int=0),
        helper.make_node("Constant", [], ["step"], value_int=1),
        _node("Range", ["start", "n", "step"], ["pos"]),
        _node("Cast", ["pos"], ["pos_f"], to=F),
        _node("ConstantOfShape", ["shape"], ["ones"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
        _node("Mul", ["pos_f", "ones"], ["bias"]),
        _node("Add", ["x", "bias"], ["y"]),
    ]
    model = _model(nodes, [_input("x", [2, 6])], ["y"], {"shape": np.array([6], np.int64)})
    _check(model, {"x": _array(2, 6)})
    graph = import_onnx(model)
    assert not any(isinstance(op, tfm.CastOp) for op in graph.module.walk())


def test_external_data_loads(tmp_path: Path) -> None:
    w = _array(64, 64)
    model = _model([_node("MatMul", ["x", "w"], ["y"])], [_input("x", [2, 64])], ["y"], {"w": w})
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="model.data", size_threshold=0)
    assert (tmp_path / "model.data").is_file()
    graph = import_onnx(path)
    np.testing.assert_array_equal(graph.weights["w.T"], w.T)


def test_import_model_dispatches_on_the_onnx_suffix(tmp_path: Path) -> None:
    model = _model([_node("Relu", ["x"], ["y"])], [_input("x", [1, 16])], ["y"])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    graph = import_model(str(path), batch=1, seq_len=16)
    assert graph.input_names == ["x"] and graph.output_names == ["y"]


# ------------------------------------------------------------ torch exports


EXPORTS = ["dynamo18", "dynamo23", "legacy"]
"""torch.onnx.export(dynamo=True) at opset 18 / 23, and the TorchScript exporter (dynamo=False) at opset 18."""


def _torch_export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    names: list[str],
    outs: list[str],
    mode: str = "legacy",
    path: Path | None = None,
) -> onnx.ModelProto:
    """`module` exported in `mode` (see EXPORTS), saved to `path` when given.

    The module is put in eval mode first: the legacy exporter exports in eval
    mode and then calls `module.train(<the module's own flag>)`, which puts
    every submodule of a wrapper left in training mode back in training mode
    (dropout on) for the eager calls that follow.
    """
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "legacy":
            buffer = io.BytesIO()
            torch.onnx.export(
                module, args, buffer, dynamo=False, input_names=names, output_names=outs, opset_version=18
            )
            model = onnx.load_from_string(buffer.getvalue())
        else:
            pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
            opset = int(mode.removeprefix("dynamo"))
            kwargs = {"input_names": names, "output_names": outs, "opset_version": opset}
            model = torch.onnx.export(module, args, dynamo=True, verbose=False, **kwargs).model_proto
    model.ir_version = min(model.ir_version, 10)
    if path is not None:
        onnx.save(model, str(path))
    return model


def test_torch_exported_mlp() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.LayerNorm(32), torch.nn.Linear(32, 8))
    model = _torch_export(mlp.eval(), (torch.randn(2, 16),), ["x"], ["y"])
    x = _array(2, 16)
    _check(model, {"x": x})
    with torch.no_grad():
        np.testing.assert_allclose(_simulate(model, {"x": x})[0], mlp(torch.from_numpy(x)).numpy(), atol=1e-4)


class _Bert(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=64,
        )
        self.bert = BertModel(config).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return output.last_hidden_state, output.pooler_output


class _CausalLM(torch.nn.Module):
    """A tiny random GPT-2 or Llama (2 layers, hidden 32, 4 heads; Llama with 2 kv heads), no cache, logits."""

    def __init__(self, family: str) -> None:
        super().__init__()
        import transformers

        if family == "gpt2":
            config = transformers.GPT2Config(
                n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64, bos_token_id=1, eos_token_id=2
            )
        else:
            config = transformers.LlamaConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
                vocab_size=100,
                max_position_embeddings=64,
                bos_token_id=1,
                eos_token_id=2,
                pad_token_id=0,
            )
        model_class = transformers.AutoModelForCausalLM._model_mapping[type(config)]
        self.lm = model_class._from_config(config, attn_implementation="sdpa").eval()
        self.lm.config.use_cache = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def _eager(module: torch.nn.Module, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The module's outputs in PyTorch (eval mode, no grad)."""
    assert not any(m.training for m in module.modules())
    with torch.no_grad():
        result = module(*(torch.from_numpy(feeds[name]) for name in ("input_ids", "attention_mask")))
    return [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]


def test_torch_exported_tiny_bert() -> None:
    """Legacy export: tasic matches onnxruntime, and both match the eager module."""
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, 8))
    mask = torch.tensor([[1] * 6 + [0] * 2])
    bert = _Bert()
    model = _torch_export(bert, (ids, mask), ["input_ids", "attention_mask"], ["last_hidden_state", "pooler_output"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    _check(model, feeds)
    for got, want in zip(_simulate(model, feeds), _eager(bert, feeds), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", EXPORTS)
@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_torch_exported_tiny_models(family: str, mode: str) -> None:
    """Tiny GPT-2 / BERT / Llama with a padded attention mask: tasic vs onnxruntime (and eager torch) to 1e-4.

    The model runs on other ids and another padding pattern than the export's
    example inputs, so nothing data-dependent may be baked into the graph.
    """
    torch.manual_seed(0)
    module = _Bert() if family == "bert" else _CausalLM(family)
    outs = ["last_hidden_state", "pooler_output"] if family == "bert" else ["logits"]
    example = (torch.randint(0, 100, (2, 8)), torch.tensor([[1] * 8, [1] * 6 + [0] * 2]))
    model = _torch_export(module, example, ["input_ids", "attention_mask"], outs, mode)
    feeds = {"input_ids": RNG.integers(0, 100, (2, 8)), "attention_mask": np.array([[1] * 5 + [0] * 3, [1] * 8])}
    _check(model, feeds)
    for got, want in zip(_simulate(model, feeds), _eager(module, feeds), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_minilm_onnx_embeddings_match_onnxruntime(tmp_path: Path) -> None:
    """all-MiniLM-L6-v2 (real weights) exported to a file: mean-pooled embeddings, cosine to onnxruntime's."""
    from transformers import AutoModel

    from tasic.frontend.packages import minilm_dir
    from tasic.frontend.sentences import DEMO_SENTENCES, cosine, mean_pool, tokenize

    directory = minilm_dir()
    feeds = tokenize(directory, DEMO_SENTENCES, 16)
    assert feeds["attention_mask"].sum(1).min() < 16  # padding is exercised
    module = AutoModel.from_pretrained(str(directory))
    args = (torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
    path = tmp_path / "minilm.onnx"
    _torch_export(
        module, args, ["input_ids", "attention_mask"], ["last_hidden_state", "pooler_output"], "dynamo18", path
    )
    session = onnxruntime.InferenceSession(str(path))
    expected = session.run(["last_hidden_state"], feeds)[0]
    graph = import_onnx(path, {"input_ids": (3, 16), "attention_mask": (3, 16)})
    target = load_target("tiny")
    binary = compile_module(graph.module, graph.weights, target, "f32")
    hidden = simulate(binary, target, feeds).outputs["last_hidden_state"]
    similarity = cosine(mean_pool(hidden, feeds["attention_mask"]), mean_pool(expected, feeds["attention_mask"]))
    assert similarity.min() >= 0.99999, similarity


# -------------------------------------------------------------------- errors


def test_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff\x00 this is not a protobuf \x12\x99")
    with pytest.raises(FrontendError, match=r"is not an ONNX model") as info:
        import_onnx(path)
    assert "\n" not in str(info.value)


def test_missing_path() -> None:
    with pytest.raises(FrontendError, match=r"model path 'nope.onnx' does not exist"):
        import_onnx("nope.onnx")


def test_unsupported_operator() -> None:
    model = _model([_node("Hardmax", ["x"], ["y"])], [_input("x", [2, 4])], ["y"])
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(model)
    assert str(info.value) == (
        "unsupported ONNX operator Hardmax (node 'hardmax_y', opset 18): supported operators are listed in docs/onnx.md"
    )


def test_gather_nd_with_run_time_indices() -> None:
    model = _model(
        [_node("GatherND", ["x", "i"], ["y"])], [_input("x", [2, 4]), _input("i", [3, 1], TensorProto.INT64)], ["y"]
    )
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(model)
    assert str(info.value) == (
        "unsupported ONNX operator GatherND (node 'gathernd_y', opset 18): indices must be a compile-time constant; "
        "supported operators are listed in docs/onnx.md"
    )


def test_dynamic_dimension_without_shape() -> None:
    model = _model([_node("Relu", ["x"], ["y"])], [_input("input_ids", ["batch", 8])], ["y"])
    model.graph.node[0].input[0] = "input_ids"
    with pytest.raises(FrontendError) as info:
        import_onnx(model)
    message = str(info.value)
    assert "'input_ids'" in message and "dimension 0 ('batch')" in message
    assert "--input-shape input_ids=" in message and "\n" not in message


@pytest.mark.parametrize(
    ("dims", "example"),
    [(["batch", 8], "1x8"), (["batch", "sequence"], "1x128"), (["N", "M", 8], "1x128x8"), (["seq_len", 16], "128x16")],
)
def test_dynamic_dimension_hint_is_a_plausible_shape(dims: list[int | str], example: str) -> None:
    """The --input-shape example keeps fixed sizes, takes 1 for a batch (named so, or an unnamed first dim
    of several) and 128 for a sequence."""
    model = _typed_model([_node("Relu", ["x"], ["y"])], [_input("x", dims)], [_input("y", dims)])
    with pytest.raises(FrontendError, match=rf"e\.g\. --input-shape x={example}$"):
        import_onnx(model)


def test_shapes_that_do_not_broadcast_blame_the_input_shapes_given() -> None:
    """Operands that disagree once --input-shape binds the dynamic dims: the message says to check those values."""
    model = _typed_model(
        [_node("Add", ["x", "b"], ["y"])], [_input("x", ["batch", 8])], [_input("y", ["batch", 8])], {"b": _array(3, 8)}
    )
    assert import_onnx(model, {"x": (3, 8)}).output_names == ["y"]
    with pytest.raises(FrontendError) as info:
        import_onnx(model, {"x": (2, 8)})
    assert str(info.value) == (
        "ONNX node 'add_y' (Add): shapes (2, 8) and (3, 8) do not broadcast; "
        "check the --input-shape values, which must agree with each other and the model"
    )


def test_dropout_at_inference_is_the_identity_with_a_true_mask() -> None:
    """Dropout without training_mode, or with it false, passes its input through; its mask is all true."""
    for training in (None, False):
        inputs, initializers = ["x", "ratio"], {"ratio": np.array(0.5, np.float32)}
        if training is not None:
            inputs.append("training")
            initializers["training"] = np.array(training)
        model = _model([_node("Dropout", inputs, ["y", "mask"])], [_input("x", [2, 5])], ["y", "mask"], initializers)
        x = _array(2, 5)
        y, mask = _simulate(model, {"x": x})
        np.testing.assert_array_equal(y, x)
        assert mask.dtype == np.bool_ and mask.shape == (2, 5) and mask.all()
        _check(model, {"x": x})


def test_dropout_in_training_mode_is_refused() -> None:
    initializers = {"ratio": np.array(0.5, np.float32), "training": np.array(True)}
    nodes = [_node("Dropout", ["x", "ratio", "training"], ["y"])]
    model = _model(nodes, [_input("x", [2, 5])], ["y"], initializers)
    with pytest.raises(
        UnsupportedOpError, match=r"training_mode=true \(random dropout; export the model in eval mode\)"
    ):
        import_onnx(model)


def test_missing_external_data(tmp_path: Path) -> None:
    model = _model([_node("MatMul", ["x", "w"], ["y"])], [_input("x", [2, 64])], ["y"], {"w": _array(64, 64)})
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(FrontendError, match=r"external data file 'weights.bin' of tensor 'w' not found") as info:
        import_onnx(path)
    assert "\n" not in str(info.value)


def test_attention_opset_23_three_d_gqa_causal() -> None:
    """Attention on [B, S, H*D] inputs with grouped kv heads and a causal mask: one tfm.attention."""
    nodes = [_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=4, kv_num_heads=2, is_causal=1)]
    inputs = [_input("q", [1, 6, 32]), _input("k", [1, 6, 16]), _input("v", [1, 6, 16])]
    model = _model(nodes, inputs, ["y"], opset=23)
    feeds = {"q": _array(1, 6, 32), "k": _array(1, 6, 16), "v": _array(1, 6, 16)}
    expected = onnx.reference.ReferenceEvaluator(model).run(None, feeds)[0]
    np.testing.assert_allclose(_simulate(model, feeds)[0], expected, atol=1e-4, rtol=1e-4)
    assert sum(isinstance(op, tfm.AttentionOp) for op in import_onnx(model).module.walk()) == 1


# ------------------------------------------------------- names and outputs


def _typed_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 18,
) -> onnx.ModelProto:
    """A model with typed outputs, as written (no shape inference)."""
    tensors = [numpy_helper.from_array(value, name) for name, value in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def test_output_that_is_an_input_is_copied() -> None:
    """A graph output that is its input (and one listed twice) is a copy under a distinct symbol name."""
    model = _typed_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_input("x", [2, 3])],
        [_input("x", [2, 3]), _input("y", [2, 3]), _input("y", [2, 3])],
    )
    graph = import_onnx(model)
    assert graph.input_names == ["x"] and graph.output_names == ["x_out", "y", "y_out"]
    x = _array(2, 3)
    x_out, y, y_again = _simulate(model, {"x": x})
    np.testing.assert_array_equal(x_out, x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(y_again, np.maximum(x, 0))


def test_unnamed_nodes_and_output_constants_get_distinct_weight_names() -> None:
    """Weights created for unnamed nodes (LayerNormalization without bias, Trilu), an initializer and a
    Constant that are graph outputs: no weight takes an input or output name; all compile and match."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma"], ["y"], axis=-1),
        helper.make_node("Trilu", ["x"], ["t"], upper=0),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(_array(2, 2))),
    ]
    outputs = [_input("y", [2, 4, 4]), _input("t", [2, 4, 4]), _input("w", [3]), _input("c", [2, 2])]
    initializers = {"gamma": _array(4), "w": _array(3)}
    model = _typed_model(nodes, [_input("x", [2, 4, 4])], outputs, initializers)
    graph = import_onnx(model)
    assert graph.output_names == ["y", "t", "w", "c"]
    assert not set(graph.weights) & {"x", "y", "t", "w", "c"}
    assert "gamma" in graph.weights  # an initializer keeps its name
    _check(model, {"x": _array(2, 4, 4)})


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes", ["omitted", "empty"])
def test_reduce_noop_with_empty_axes_passes_the_input_through(op: str, axes: str) -> None:
    """noop_with_empty_axes=1 without axes (omitted or an empty input) leaves the input unchanged."""
    inputs = ["x", "axes"] if axes == "empty" else ["x"]
    nodes = [helper.make_node(op, inputs, ["r"], noop_with_empty_axes=1), helper.make_node("Neg", ["r"], ["y"])]
    initializers = {"axes": np.zeros(0, np.int64)} if axes == "empty" else {}
    model = _typed_model(nodes, [_input("x", [2, 3])], [_input("y", [2, 3])], initializers)
    x = _array(2, 3)
    (y,) = _simulate(model, {"x": x})
    np.testing.assert_array_equal(y, -x)
    np.testing.assert_array_equal(onnx.reference.ReferenceEvaluator(model).run(None, {"x": x})[0], -x)


def test_unsupported_operator_of_an_unnamed_node_names_its_output() -> None:
    model = _model([helper.make_node("Hardmax", ["x"], ["probs"])], [_input("x", [2, 4])], ["probs"])
    with pytest.raises(UnsupportedOpError, match=r"^unsupported ONNX operator Hardmax \(node 'probs', opset 18\)"):
        import_onnx(model)


@pytest.mark.parametrize("file_name", ["m.ONNX", "model.bin", "model"])
def test_import_model_recognises_onnx_content(tmp_path: Path, file_name: str) -> None:
    """An ONNX file is recognised by its extension in any case, or by its content under another name."""
    model = _model([_node("Relu", ["x"], ["y"])], [_input("x", [1, 16])], ["y"])
    onnx.save(model, str(tmp_path / file_name))
    graph = import_model(str(tmp_path / file_name), batch=1, seq_len=16)
    assert graph.input_names == ["x"] and graph.output_names == ["y"]


def test_import_model_names_the_accepted_kinds_for_another_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a model\n")
    with pytest.raises(FrontendError) as info:
        import_model(str(path), batch=1, seq_len=16)
    assert str(info.value) == (
        f"'{path}' is not a model tasic reads: give a Hugging Face model directory (save_pretrained), "
        "a .gguf or .onnx file, or file.py:function"
    )
