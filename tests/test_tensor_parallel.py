"""Tensor parallelism: the same outputs on 1, 2 and 4 chips, and the binary that carries the shards.

The model is a 2-layer Llama-family serving step built from a config (frontend/llama_step.py) with
seeded random weights: a 6-token prompt and two groups of decoding sequences with their own KV
caches, so column- and row-parallel linears, rope, causal and batched decode attention, KV writes
and all-reduces are all on the path. A tiny Hugging Face Llama imported through torch.export is
split as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
import transformers

from tasic.backend.asm import assemble, disassemble
from tasic.backend.target import load_target
from tasic.backend.tbin import TbinError, from_bytes, to_bytes
from tasic.compiler import CompileError, compile_module, default_pipeline
from tasic.frontend.llama_step import step_inputs
from tasic.frontend.torch_import import import_module
from tasic.isa_sim.simulator import Machine

if TYPE_CHECKING:
    from conftest import TinyLlamaStep

Evaluate = Callable[..., list[np.ndarray]]


@pytest.fixture(scope="module")
def single_chip(tiny_llama: TinyLlamaStep) -> dict[str, np.ndarray]:
    """The step's outputs on one chip."""
    return tiny_llama.run(1)


def test_single_chip_step_matches_the_reference(
    single_chip: dict[str, np.ndarray], tfm_reference: Evaluate, tiny_llama: TinyLlamaStep
) -> None:
    """Rope, prefill and batched decode attention and the KV writes on the simulator equal numpy's."""
    graph = tiny_llama.graph()
    inputs = step_inputs(tiny_llama.config, tiny_llama.step)
    caches = {}
    for arg, name in zip(graph.module.ops.first.args, graph.input_names, strict=True):  # type: ignore[union-attr]
        caches[name] = inputs[name] if name in inputs else tiny_llama.cache(name, arg.type.get_shape())
    expected = tfm_reference(graph.module, graph.weights, [caches[name] for name in graph.input_names])
    for name, want in zip(graph.output_names, expected, strict=True):
        np.testing.assert_allclose(single_chip[name], want, atol=1e-4, err_msg=name)


@pytest.mark.parametrize(("tp", "tile_options"), [(2, ""), (4, ""), (2, "allreduce_overlap=false")])
def test_tensor_parallel_step_equals_one_chip(
    tp: int, tile_options: str, single_chip: dict[str, np.ndarray], tiny_llama: TinyLlamaStep
) -> None:
    """Logits and every KV cache (split by heads on the chips, joined back) equal the one-chip run;
    with the all-reduces inside the row-parallel matmuls' kernels (default) and in kernels of their own."""
    pipeline = default_pipeline("tiny", "f32", tp).replace("dtype=f32}", f"dtype=f32 {tile_options}}}")
    split = tiny_llama.run(tp, pipeline)
    assert split.keys() == single_chip.keys()
    for name, want in single_chip.items():
        np.testing.assert_allclose(split[name], want, atol=1e-5, err_msg=name)


def test_hugging_face_llama_splits_over_two_chips() -> None:
    """A tiny HF Llama (GQA) imported through torch.export: 2 chips give torch's logits."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=64,
        max_position_embeddings=32,
    )
    model = transformers.LlamaForCausalLM(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=ids).logits

    ids = torch.randint(0, 64, (1, 8))
    graph = import_module(Logits(), (ids,))
    target = load_target("tiny")
    binary = compile_module(graph.module, graph.weights, target, "f32", tp=2)
    assert binary.metadata["chips"] == 2
    assert sum(1 for i in binary.code if i.opcode == 0x40) >= 2  # an all-reduce after o_proj and down_proj
    outputs = Machine(binary, target).run("main", {"ids": ids.numpy()}).outputs
    with torch.no_grad():
        want = Logits()(ids).numpy()
    np.testing.assert_allclose(next(iter(outputs.values())), want, atol=1e-4)


def test_heads_that_do_not_divide_are_refused(tiny_llama: TinyLlamaStep) -> None:
    graph = tiny_llama.graph()
    with pytest.raises(CompileError, match=r"needs the attention heads to divide evenly.*8 query and 4 key/value"):
        compile_module(graph.module, graph.weights, load_target("sohu-like"), "f32", tp=8)


def test_more_chips_than_the_target_has_is_refused(tiny_llama: TinyLlamaStep) -> None:
    graph = tiny_llama.graph()
    with pytest.raises(CompileError, match="--tp 8 needs 8 chips, target 'tiny' has 4"):
        compile_module(graph.module, graph.weights, load_target("tiny"), "f32", tp=8)


def test_shard_section_round_trips_and_is_checked(tiny_llama: TinyLlamaStep) -> None:
    """chip 1's weights travel in the SHARDS section; a binary with the wrong amount is refused."""
    graph = tiny_llama.graph()
    binary = compile_module(graph.module, graph.weights, load_target("tiny"), "f32", tp=2)
    sharded = binary.sharded_weights()
    assert sharded and len(binary.shard_data) == sum(sym.nbytes for sym in sharded)
    again = from_bytes(to_bytes(binary))
    assert again.shard_data == binary.shard_data and again.metadata["shards"] == binary.metadata["shards"]
    assert to_bytes(assemble(disassemble(binary, with_data=True))) == to_bytes(binary)
    qkv = next(sym for sym in sharded if sym.name.startswith("model.layers.0.self_attn.q_proj"))
    assert "#cat2" in qkv.name, "q, k and v are fused (fuse-linears) in per-chip blocks"
    chip1 = dict((sym.name, data) for sym, data in again.chip_constants(1))[qkv.name]
    parts = [graph.weights[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]
    parts[0] = parts[0] * np.float32(1 / math.sqrt(tiny_llama.config.head_dim))  # fold-attention-scale
    want = np.concatenate([w[w.shape[0] // 2 :] for w in parts])  # chip 1's q, k and v rows
    np.testing.assert_array_equal(np.frombuffer(chip1, np.float32), want.T.reshape(-1))
    binary.shard_data = binary.shard_data[:-4]
    with pytest.raises(TbinError, match=r"SHARDS section is .* bytes, 2 chips' sharded weights need"):
        to_bytes(binary)
