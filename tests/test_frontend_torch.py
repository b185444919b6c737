"""The torch.export importer on tiny GPT-2, BERT and Llama, and on single operators.

Numerics are checked with the numpy tfm interpreter (`tfm_reference`, tests/conftest.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.nn import functional
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from xdsl.dialects import func

from tasic.backend.target import load_target
from tasic.compiler import compile_module
from tasic.frontend.attention import attention as capped_attention
from tasic.frontend.errors import FrontendError, UnsupportedOpError
from tasic.frontend.torch_import import ImportedGraph, export_module, import_exported_program, import_module
from tasic.ir import tfm
from tasic.ir.dialects import tasic_context
from tasic.isa_sim import simulate
from tasic.passes.registry import PASSES

Evaluate = Callable[..., list[np.ndarray]]

RAISE_PASSES = ["raise-linear", "raise-layer-norm", "raise-rms-norm", "raise-gelu", "raise-attention"]


@dataclass
class Case:
    """A model, its example inputs and its imported graph."""

    model: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    graph: ImportedGraph

    def expected(self) -> dict[str, np.ndarray]:
        """torch's outputs, by name."""
        with torch.no_grad():
            result = self.model(**self.inputs)
        return {name: result[name].numpy() for name in self.graph.output_names}

    def actual(self, evaluate: Evaluate) -> dict[str, np.ndarray]:
        """The reference interpreter's outputs of the imported graph, by name."""
        inputs = [self.inputs[name].numpy() for name in self.graph.input_names]
        return dict(zip(self.graph.output_names, evaluate(self.graph.module, self.graph.weights, inputs), strict=True))


def _tiny_model(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 8))
    if name == "gpt2":
        config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64, use_cache=False)
        return GPT2LMHeadModel(config), {"input_ids": ids}
    if name == "bert":
        config = BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100
        )
        padding = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
        return BertModel(config), {"input_ids": ids, "attention_mask": padding}
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=100,
        use_cache=False,
    )
    return LlamaForCausalLM(config), {"input_ids": ids}


@pytest.fixture(scope="module", params=["gpt2", "bert", "llama"])
def case(request: pytest.FixtureRequest) -> Case:
    """Each tiny model, imported once per module."""
    model, inputs = _tiny_model(request.param)
    model.eval()
    return Case(model, inputs, import_module(model, inputs))


def _main(graph: ImportedGraph) -> func.FuncOp:
    return next(op for op in graph.module.ops if isinstance(op, func.FuncOp))


def _op_kinds(graph: ImportedGraph) -> Counter[str]:
    """Counts of ops, tfm.unary/binary/scalar by function: 'tfm.unary.gelu_tanh'."""
    kinds: Counter[str] = Counter()
    for op in _main(graph).body.block.ops:
        fn = getattr(op, "fn", None)
        kinds[f"{op.name}.{fn.data}" if fn is not None else op.name] += 1
    return kinds


def _family(case: Case) -> str:
    return {"GPT2LMHeadModel": "gpt2", "BertModel": "bert", "LlamaForCausalLM": "llama"}[type(case.model).__name__]


def _raised(case: Case) -> ImportedGraph:
    """A copy of the case's graph after every raise pass."""
    graph = ImportedGraph(
        case.graph.module.clone(), case.graph.weights, case.graph.input_names, case.graph.output_names
    )
    ctx = tasic_context()
    for name in RAISE_PASSES:
        PASSES[name]()().apply(ctx, graph.module)
    graph.module.verify()
    return graph


def test_module_verifies_with_named_inputs_and_outputs(case: Case) -> None:
    """@main verifies; its arguments and results carry the torch names."""
    case.graph.module.verify()
    main = _main(case.graph)
    expected_outputs = {"gpt2": ["logits"], "llama": ["logits"], "bert": ["last_hidden_state", "pooler_output"]}
    assert case.graph.output_names == expected_outputs[_family(case)]
    assert case.graph.input_names == list(case.inputs)
    assert [name.data for name in main.attributes["tfm.input_names"].data] == case.graph.input_names
    assert [name.data for name in main.attributes["tfm.output_names"].data] == case.graph.output_names


def test_numerics_match_torch(case: Case, tfm_reference: Evaluate) -> None:
    """The imported graph computes what the model computes."""
    actual = case.actual(tfm_reference)
    for name, expected in case.expected().items():
        np.testing.assert_allclose(actual[name], expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_raise_passes_find_the_transformer_ops(case: Case, tfm_reference: Evaluate) -> None:
    """After the raise passes: linears, norms, activation and attention are single ops; numerics unchanged."""
    graph = _raised(case)
    kinds = _op_kinds(graph)
    expected = {
        "gpt2": {"tfm.linear": 9, "tfm.layer_norm": 5, "tfm.unary.gelu_tanh": 2, "tfm.attention": 2},
        "bert": {"tfm.linear": 13, "tfm.layer_norm": 5, "tfm.unary.gelu_erf": 2, "tfm.attention": 2},
        "llama": {"tfm.linear": 15, "tfm.rms_norm": 5, "tfm.attention": 2},
    }[_family(case)]
    assert {kind: kinds[kind] for kind in expected} == expected
    assert kinds["tfm.matmul"] == 0 and kinds["tfm.reduce"] == 0 and kinds["tfm.softmax"] == 0
    raised = Case(case.model, case.inputs, graph).actual(tfm_reference)
    for name, expected_value in case.expected().items():
        np.testing.assert_allclose(raised[name], expected_value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_every_op_carries_its_module_location(case: Case) -> None:
    """loc = '<module path>:<aten op>' on every tfm op."""
    locations = [op.attributes["loc"].data for op in _main(case.graph).body.block.ops if op.name.startswith("tfm.")]
    assert all(":" in loc for loc in locations)
    expected = {
        "gpt2": "transformer.h.0.attn.c_attn:addmm",
        "bert": "encoder.layer.0.attention.self.query:addmm",
        "llama": "model.layers.0.mlp.gate_proj:mm",
    }[_family(case)]
    assert expected in locations


def test_weights_stay_out_of_the_ir(case: Case) -> None:
    """Parameters are named weights in the store, each stored once (tied embeddings too)."""
    text = str(case.graph.module)
    weights = case.graph.weights
    assert "dense<" not in text
    for op in _main(case.graph).body.block.ops:
        if isinstance(op, tfm.WeightOp):
            assert weights[op.sym.data].shape == tfm.shape_of(op.result)
    parameter_bytes = sum(p.numel() * 4 for p in case.model.parameters())
    assert weights.total_bytes <= parameter_bytes + 64 * 1024


def test_decoder_masks_fold_to_causal_attention() -> None:
    """GPT-2's and Llama's mask arithmetic on aranges folds away: attention is causal with no mask operand."""
    for name in ("gpt2", "llama"):
        model, inputs = _tiny_model(name)
        graph = import_module(model.eval(), inputs)
        attentions = [op for op in _main(graph).body.block.ops if isinstance(op, tfm.AttentionOp)]
        assert attentions and all(op.causal.value.data and op.mask is None for op in attentions)
        assert not any(isinstance(op, tfm.UnaryOp) and op.fn.data in ("cos", "sin") for op in _main(graph).walk())


class _CumsumBlock(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.cumsum(-1)


class _WithCumsum(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4), _CumsumBlock()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](self.layers[0](x))


def test_unsupported_operator_names_op_and_module() -> None:
    """One line naming the ATen op, the module path and the source line."""
    with pytest.raises(UnsupportedOpError) as error:
        import_module(_WithCumsum(), (torch.randn(2, 4),))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("unsupported operator aten.cumsum.default in module 'layers.1'")
    assert "x.cumsum(-1)" in message and "docs/frontend.md" in message


class _ManyOps(torch.nn.Module):
    """One use of many operator handlers, each checked against torch."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(4, elementwise_affine=False)
        self.register_buffer("keep", torch.tril(torch.ones(3, 4, dtype=torch.bool)))
        self.register_buffer("table", torch.randn(10, 4))

    def forward(self, x: torch.Tensor, flags: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = x.transpose(0, 1)
        return (
            self.table[ids] + x[:, :, [1, 3]].sum(-1, keepdim=True),
            torch.softmax(x, dim=1),
            x.masked_fill(flags, -1e9),
            torch.where(flags, x, 0.0),
            1.0 - x,
            2.0 / (x.abs() + 1),
            self.norm(x),
            functional.gelu(x, approximate="tanh"),
            functional.scaled_dot_product_attention(x, x, x, is_causal=True),
            x.var(-1, keepdim=True),
            x.to(torch.bfloat16).float(),
            torch.where(self.keep, x, float("-inf")),
            torch.full_like(x, 3.0) + x.new_ones(4),
            x.max(-1, keepdim=True).values + x.amin(0),
            x @ y.transpose(0, 1).transpose(-1, -2),
            torch.split(x, [1, 3], dim=-1)[1],
            x[:, 1, ::2] * x[..., 1::2].sum(1),
            x.mean() + x.sum(dim=(0, 1)),
            x.clamp(-0.5, 0.5) + x.relu() + torch.sigmoid(x) + functional.silu(x) + torch.exp(-x.square()),
            (x > 0) & ~flags,
            torch.cat([x, x.neg()], dim=1).unsqueeze(1).squeeze(1),
            x.reshape(2, 12).t(),
            (x != 0.5) | (x <= 0),
            torch.maximum(x, y.transpose(0, 1)) - torch.minimum(x, 0.5 * x) + torch.pow(x.abs() + 1, x),
            torch.logical_and(x < 0.5 * y.transpose(0, 1), ~torch.logical_or(x > 1, flags)) != (x.abs() >= 0.1),
            x.masked_fill(flags, torch.tensor(2.0)) + torch.log(x.abs() + 1).sum() + x.amax(dim=(0, 1)),
            torch.stack(torch.unbind(x, 1), 1).min(-1).values + torch.var_mean(x, -1, correction=0)[0],
            torch.zeros_like(x) + torch.ones_like(x) * 2 + x.new_zeros(4) + x.new_full((3, 1), 7.0),
            torch.div(x, x.abs() + 1, rounding_mode=None) + x.clamp(min=0) - x.clamp(max=0) + torch.rsub(x, 1.0),
            x.unsqueeze(0).squeeze() + x.to(torch.float16).float() + x.var(-1, unbiased=True, keepdim=True),
        )


@pytest.mark.parametrize("decomposed", [True, False], ids=["core-aten", "raw-export"])
def test_many_operators_match_torch(decomposed: bool, tfm_reference: Evaluate) -> None:
    """Handlers agree with torch, on core ATen and on an undecomposed torch.export program."""
    torch.manual_seed(1)
    inputs = (torch.randn(2, 3, 4), torch.rand(2, 3, 4) > 0.5, torch.randint(0, 10, (2, 3)))
    model = _ManyOps().eval()
    program = export_module(model, inputs) if decomposed else torch.export.export(model, inputs, strict=False)
    graph = import_exported_program(program)
    assert graph.input_names == ["x", "flags", "ids"]
    assert graph.output_names == ["output"] + [f"output_{i}" for i in range(1, 30)]
    actual = tfm_reference(graph.module, graph.weights, [tensor.numpy() for tensor in inputs])
    with torch.no_grad():
        expected = model(*inputs)
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        np.testing.assert_allclose(
            got.astype(np.float64), want.double().numpy(), rtol=1e-5, atol=1e-5, err_msg=str(index)
        )


class _Cache(torch.nn.Module):
    """A buffer written in place at run-time positions, like a KV cache."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("slots", torch.zeros(2, 6, 3))

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        self.slots.index_copy_(1, position, x)
        return self.slots.sum(1)


def test_mutated_buffer_becomes_state(tfm_reference: Evaluate) -> None:
    """index_copy_ on a buffer: tfm.index_copy, the buffer an argument and a result named in tfm.state_names."""
    graph = import_module(_Cache(), (torch.randn(2, 2, 3), torch.tensor([4, 1])))
    main = _main(graph)
    assert graph.state_names == ["slots"]
    assert graph.input_names == ["x", "position", "slots"] and graph.output_names == ["output", "slots"]
    assert [name.data for name in main.attributes["tfm.state_names"].data] == ["slots"]
    assert _op_kinds(graph)["tfm.index_copy"] == 1
    state = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    x, position = np.ones((2, 2, 3), np.float32), np.array([4, 1])
    total, updated = tfm_reference(graph.module, graph.weights, [x, position, state])
    expected = state.copy()
    expected[:, position] = x
    np.testing.assert_allclose(updated, expected)
    np.testing.assert_allclose(total, expected.sum(1), rtol=1e-6)


class _MaskedAttention(torch.nn.Module):
    """SDPA with a constant mask: a sliding window of 3 keys, bool or additive."""

    def __init__(self, additive: bool) -> None:
        super().__init__()
        keep = torch.ones(5, 5, dtype=torch.bool).tril().triu(-2)
        self.register_buffer("mask", torch.zeros(5, 5).masked_fill(~keep, float("-inf")) if additive else keep)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return functional.scaled_dot_product_attention(q, q, q, attn_mask=self.mask)


@pytest.mark.parametrize("additive", [False, True], ids=["bool", "additive"])
def test_sliding_window_mask_becomes_window(additive: bool, tfm_reference: Evaluate) -> None:
    """A constant causal sliding-window mask: causal = true, window = 3 keys, no mask operand."""
    q = torch.randn(1, 2, 5, 4)
    model = _MaskedAttention(additive)
    graph = import_module(model, (q,))
    (attention,) = [op for op in _main(graph).body.block.ops if isinstance(op, tfm.AttentionOp)]
    assert attention.causal.value.data and attention.mask is None and attention.window.value.data == 3
    (actual,) = tfm_reference(graph.module, graph.weights, [q.numpy()])
    np.testing.assert_allclose(actual, model(q).numpy(), rtol=1e-5, atol=1e-6)


class _OffsetCausal(torch.nn.Module):
    """SDPA over more keys than queries: is_causal, or the same top-left pattern as a constant mask."""

    def __init__(self, as_mask: bool) -> None:
        super().__init__()
        self.as_mask = as_mask
        self.register_buffer("keep", torch.ones(3, 5, dtype=torch.bool).tril())

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.as_mask:
            return functional.scaled_dot_product_attention(q, k, k, attn_mask=self.keep)
        return functional.scaled_dot_product_attention(q, k, k, is_causal=True)


@pytest.mark.parametrize("as_mask", [False, True], ids=["is_causal", "mask"])
def test_causal_attention_over_more_keys_than_queries(as_mask: bool, tfm_reference: Evaluate) -> None:
    """torch aligns is_causal's triangle at the top left, tfm.attention's causal at the bottom right (the
    queries as the last positions of the keys): with 3 queries on 5 keys the importer gives the pattern as
    a mask, and the simulator computes torch's result."""
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8)
    model = _OffsetCausal(as_mask).eval()
    graph = import_module(model, (q, k))
    (attention,) = [op for op in _main(graph).body.block.ops if isinstance(op, tfm.AttentionOp)]
    assert not attention.causal.value.data and attention.mask is not None
    expected = model(q, k).numpy()
    (reference,) = tfm_reference(graph.module, graph.weights, [q.numpy(), k.numpy()])
    np.testing.assert_allclose(reference, expected, rtol=1e-5, atol=1e-6)
    target = load_target("tiny")
    binary = compile_module(graph.module, graph.weights, target, "f32")
    outputs = simulate(binary, target, {"q": q.numpy(), "k": k.numpy()}).outputs
    np.testing.assert_allclose(outputs[graph.output_names[0]], expected, rtol=1e-5, atol=1e-5)


def test_soft_capped_attention_operator(tfm_reference: Evaluate) -> None:
    """tasic::attention (HF soft-capping) becomes tfm.attention {softcap}, GQA kept, numerics as torch."""
    q, k = torch.randn(1, 4, 6, 8) * 4, torch.randn(1, 2, 6, 8) * 4

    class Capped(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return capped_attention(q, k, k, None, 0.5, 2.0, True)

    graph = import_module(Capped(), (q, k))
    (attention,) = [op for op in _main(graph).body.block.ops if isinstance(op, tfm.AttentionOp)]
    assert attention.softcap.value.data == 2.0 and attention.causal.value.data
    assert tfm.shape_of(attention.key) == (1, 2, 6, 8)
    (actual,) = tfm_reference(graph.module, graph.weights, [q.numpy(), k.numpy()])
    np.testing.assert_allclose(actual, Capped()(q, k).numpy(), rtol=1e-5, atol=1e-5)


class _Passthrough(torch.nn.Module):
    """Returns its input (named `output`, like the default first output) and a constant."""

    def forward(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return output, torch.arange(3, dtype=torch.float32)


def test_output_that_is_an_input_is_a_copy_with_distinct_names() -> None:
    """An input returned as is becomes a copied output; no output or weight repeats an input's name, and the
    binary holds every output (simulated on `tiny`)."""
    graph = import_module(_Passthrough(), (torch.randn(2, 3),))
    assert graph.input_names == ["output"] and graph.output_names == ["output_out", "output_1"]
    assert not set(graph.weights) & {*graph.input_names, *graph.output_names}
    returned = _main(graph).body.block.last_op
    assert isinstance(returned, func.ReturnOp)
    copy = returned.operands[0].owner
    assert isinstance(copy, tfm.UnaryOp) and copy.fn.data == "copy"
    target = load_target("tiny")
    binary = compile_module(graph.module, graph.weights, target, "f32")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    outputs = simulate(binary, target, {"output": x}).outputs
    np.testing.assert_array_equal(outputs["output_out"], x)
    np.testing.assert_array_equal(outputs["output_1"], np.arange(3, dtype=np.float32))


class _Failing(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shapes do not line up\nmore detail")


def test_export_failure_is_one_line() -> None:
    """An exception escaping torch.export is a FrontendError naming the model and the first line."""
    with pytest.raises(FrontendError) as info:
        import_module(_Failing(), (torch.randn(2),), label="m.py:build")
    assert str(info.value) == "torch.export failed on m.py:build (_Failing): RuntimeError: shapes do not line up"
