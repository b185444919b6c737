"""fuse-linears: fused q/k/v and gate/up linears compute what the separate linears compute.

The fused weight is a derived weight (ir/weights.py): concatenated in per-chip blocks when the
linears are split over chips. The tile pass computes a fused gate/up pair and silu(gate) * up as one
gated kernel. Checked on the tiny Llama serving step (conftest.py `tiny_llama`), in f32 and in FP8 with
static scales, on one and two chips.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tasic.compiler import default_pipeline, run_pipeline
from tasic.ir import tile
from tasic.ir.weights import concatenated_name, resolve_weights, scaled_name

if TYPE_CHECKING:
    from conftest import TinyLlamaStep


def test_concatenated_weights_split_per_chip() -> None:
    """`a|b#cat2`: part c of two equal parts is [a_c, b_c]; derivations nest (scaled, fp8 of a concatenation)."""
    a = np.arange(8, dtype=np.float32).reshape(4, 2)
    b = 100 + np.arange(4, dtype=np.float32).reshape(2, 2)
    weights = resolve_weights({"a": a, "b": b})
    assert weights is not None
    fused = weights[concatenated_name(["a", "b"], 2)]
    np.testing.assert_array_equal(fused[:3], np.concatenate([a[:2], b[:1]]))
    np.testing.assert_array_equal(fused[3:], np.concatenate([a[2:], b[1:]]))
    np.testing.assert_array_equal(weights[concatenated_name(["a", "b"])], np.concatenate([a, b]))
    np.testing.assert_array_equal(weights[scaled_name("a", 0.5)], a * np.float32(0.5))
    assert concatenated_name(["a", "b"], 2) in weights and concatenated_name(["a", "c"]) not in weights
    assert weights[concatenated_name(["a", "b"]) + "#fp8e4m3"].shape == (6, 2)


def _pipeline(tp: int, fused: bool, quantize: str | None = None, calibration: str | None = None) -> str:
    """The default pipeline; fused=False: separate linears and no epilogue fusion at all."""
    spec = default_pipeline("tiny", "f32", tp, quantize, calibration)
    if fused:
        return spec
    return spec.replace("fuse-linears,", "").replace("dtype=f32}", "dtype=f32 epilogue_fusion=false}")


def _calibration(tmp_path: Path, tiny_llama: TinyLlamaStep) -> str:
    names = [n for n in tiny_llama.graph().weights if n.endswith("_proj.weight") or n == "lm_head.weight"]
    path = tmp_path / "scales.json"
    path.write_text(json.dumps(dict.fromkeys(names, 6.0)))
    return str(path)


@pytest.mark.parametrize("tp", [1, 2])
def test_fused_step_equals_separate_linears(tp: int, tiny_llama: TinyLlamaStep) -> None:
    """Logits and KV caches with q/k/v and gate/up fused equal those of the separate linears (f32)."""
    fused, separate = tiny_llama.run(tp, _pipeline(tp, True)), tiny_llama.run(tp, _pipeline(tp, False))
    for name, want in separate.items():
        np.testing.assert_allclose(fused[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_fused_fp8_step_equals_separate_linears(tmp_path: Path, tiny_llama: TinyLlamaStep) -> None:
    """Static FP8 scales: fused linears and the quantisation fused into rms_norm and the gated kernel give the
    logits of separate kernels on 2 chips."""
    calibration = _calibration(tmp_path, tiny_llama)
    fused = tiny_llama.run(2, _pipeline(2, True, "fp8-static", calibration))
    separate = tiny_llama.run(2, _pipeline(2, False, "fp8-static", calibration))
    for name, want in separate.items():
        np.testing.assert_allclose(fused[name], want, rtol=1e-5, atol=1e-5, err_msg=name)
    assert np.abs(fused["logits"]).max() > 0.1


def test_gate_up_is_one_gated_kernel(tiny_llama: TinyLlamaStep) -> None:
    """The fused gate/up linear, silu and the product are one kernel per layer; q/k/v one matmul."""
    kernels = {}
    for fused in (True, False):
        graph = tiny_llama.graph()
        spec = _pipeline(2, fused)
        run_pipeline(graph.module, spec[: spec.index(",double-buffer")])
        kernels[fused] = [op.loc.data for op in graph.module.walk() if isinstance(op, tile.KernelOp)]
    assert (
        len(kernels[True]) < len(kernels[False]) - 3 * tiny_llama.config.layers
    )  # k, v, up and epilogue kernels are gone
    assert sum("gate_proj" in k and "up_proj" in k for k in kernels[True]) == tiny_llama.config.layers
    assert sum("q_proj" in k and "k_proj" in k and "v_proj" in k for k in kernels[True]) == tiny_llama.config.layers
    assert not any(k.endswith("silu") or k.endswith("mul") for k in kernels[True])
