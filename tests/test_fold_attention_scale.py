"""fold-attention-scale: the score scale moved into the query projection leaves the step's results
as they were (up to rounding), and the attentions it folds have scale 1."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from tasic.compiler import default_pipeline, run_pipeline
from tasic.ir import tfm
from tasic.ir.weights import resolve_weights
from tasic.passes.fold_attention_scale import FoldAttentionScalePass
from tasic.passes.registry import PASSES

if TYPE_CHECKING:
    from conftest import TfmEvaluator, TinyLlamaStep


def test_folded_step_equals_the_unfolded_one(tiny_llama: TinyLlamaStep) -> None:
    """Logits and KV caches of the tiny Llama step with and without the pass, on the simulator."""
    pipeline = default_pipeline("tiny", "f32", 1)
    assert "fold-attention-scale" in pipeline
    unfolded = pipeline.replace("fold-attention-scale,", "")
    folded, plain = tiny_llama.run(1, pipeline), tiny_llama.run(1, unfolded)
    for name, want in plain.items():
        np.testing.assert_allclose(folded[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_every_attention_of_the_step_is_folded(tiny_llama: TinyLlamaStep, tfm_reference: TfmEvaluator) -> None:
    """The prefill and decode attentions of both layers get scale 1 (the query reaches them through
    rope); the q weights become derived ones, and the folded graph computes what the original does
    (numpy reference)."""
    graph = tiny_llama.graph()
    module = graph.module.clone()
    run_pipeline(module, "raise-rope,fold-attention-scale")  # rope as tfm.rope, as in the default pipeline
    attentions = [op for op in module.walk() if isinstance(op, tfm.AttentionOp)]
    assert len(attentions) == 2 * (1 + len(tiny_llama.step.decode_groups))
    assert {op.scale.value.data for op in attentions} == {1.0}
    names = {op.sym.data for op in module.walk() if isinstance(op, tfm.WeightOp)}
    scale = 1 / math.sqrt(tiny_llama.config.head_dim)  # what the step builder gives its attentions
    assert f"model.layers.0.self_attn.q_proj.weight#scaled{scale!r}" in names
    assert "model.layers.0.self_attn.q_proj.weight" not in names
    weights = resolve_weights(graph.weights)
    assert weights is not None
    rng = np.random.default_rng(3)
    inputs = []
    for arg in graph.module.ops.first.args:  # type: ignore[union-attr]
        shape, elem = arg.type.get_shape(), arg.type.element_type
        inputs.append(
            rng.integers(0, 6, shape) if "i64" in str(elem) else rng.standard_normal(shape).astype(np.float32)
        )
    want = tfm_reference(graph.module, weights, inputs)
    got = tfm_reference(module, weights, inputs)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_pass_is_registered() -> None:
    assert PASSES["fold-attention-scale"]() is FoldAttentionScalePass
