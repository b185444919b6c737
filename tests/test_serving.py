"""The seed benchmark's step: configs, the analytical roofline, fit checks and `tasic compile --config`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from xdsl.parser import Parser

from tasic.backend.target import load_target
from tasic.cli import main
from tasic.compiler import CompileError, compile_module, default_pipeline
from tasic.frontend.errors import FrontendError
from tasic.frontend.llama_step import BatchStep, LlamaConfig, build_step, step_inputs
from tasic.ir.dialects import tasic_context
from tasic.isa_sim.simulator import Machine
from tasic.roofline import fold_cycles, prefill_attention_cycles, roofline
from tasic.serving import check_fits, load_config

TINY_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 50,
    "max_position_embeddings": 64,
    "rope_theta": 10000.0,
}


def test_shipped_llama_3_70b_config() -> None:
    config = load_config("llama-3-70b")
    assert (config.layers, config.hidden, config.heads, config.kv_heads) == (80, 8192, 64, 8)
    assert (config.ffn, config.vocab, config.rope_theta, config.head_dim) == (28672, 128256, 500000.0, 128)
    assert 70e9 < config.weight_count() < 71e9


def test_seed_step_is_etched_batch() -> None:
    """One 2048-token prompt and 127 decode tokens at contexts between 2049 and 2175."""
    step = BatchStep.seed()
    assert (step.prefill, step.decode_tokens, step.tokens) == (2048, 127, 2175)
    assert all(2048 < context <= 2176 for _, context in step.decode_groups)


def test_roofline_of_the_seed_step() -> None:
    """About 313 TFLOP per step in all (DESIGN.md), split over 8 chips; fp8 runs twice bf16's rate."""
    config, step, target = load_config("llama-3-70b"), BatchStep.seed(), load_target("sohu-like")
    bf16, fp8 = roofline(config, step, target, "bf16", 8), roofline(config, step, target, "bf16", 8, "fp8")
    assert 295e12 < 8 * bf16.flops < 320e12
    peak_bf16 = 2 * 32 * 256 * 256 * 1.2e9  # FLOP/s: 32 arrays of 256 x 256 MACs at 1.2 GHz
    assert bf16.compute_s == pytest.approx(bf16.flops / peak_bf16, rel=1e-9)
    # linears (all but attention's ~2 % of the FLOPs) at twice the rate, their weights in half the bytes
    assert 1.9 * fp8.compute_s < bf16.compute_s < 2 * fp8.compute_s
    assert fp8.hbm_bytes < 0.7 * bf16.hbm_bytes
    # each chip sends 2 x 80 all-reduces of 2175 x 8192 bf16 values, 2 x 7/8 of each
    assert bf16.link_bytes == pytest.approx(160 * 2175 * 8192 * 2 * 2 * 7 / 8)
    assert bf16.bound_s == max(bf16.compute_s, bf16.memory_s, bf16.link_s)


def test_array_floor_counts_whole_folds() -> None:
    """Each product pays whole folds of an array: 2175 rows take 9 folds of 256, an 8-row decode product
    a whole fold; a causal prefill's stacked rows see the keys of their last query."""
    mxu = load_target("sohu-like").mxu  # 256 x 256
    assert fold_cycles(mxu, 2175, 8192, 8192, 2.0) == 9 * 32 * 4096
    assert fold_cycles(mxu, 8, 128, 2112, 1.0) == fold_cycles(mxu, 128, 8, 2112, 1.0) == 2112
    assert fold_cycles(mxu, 300, 256, 10, 1.0) == fold_cycles(mxu, 256, 300, 10, 1.0) == 20
    # 512 queries of 2 heads: row folds see queries 0-127, 128-255, 256-383, 384-511; S then P V
    assert prefill_attention_cycles(mxu, 512, 2, 128, 1.0) == (128 + 128) + (128 + 256) + (256 + 384) + (256 + 512)


def test_array_floor_bounds_the_simulated_matrix_engine() -> None:
    """The simulator's MXU busy time never beats the floor (tiling adds folds, fill and drain); on the seed
    step sohu-like's 256-wide arrays cap MXU utilisation below 90 %, 128-wide ones of the same peak do not."""
    config, step, target = (
        LlamaConfig.from_dict(TINY_CONFIG, "tiny"),
        BatchStep(6, ((2, 9), (2, 12))),
        load_target("tiny"),
    )
    graph = build_step(config, step, "random")
    for tp in (1, 2):
        binary = compile_module(graph.module, graph.weights, target, "f32", tp=tp)
        report = Machine(binary, target, timing_only=True).run("main", step_inputs(config, step)).report
        floor = roofline(config, step, target, "f32", tp)
        assert floor.compute_s <= floor.arrays_s <= report.busy["MXU"] / target.clock_hz
    seed, sohu = load_config("llama-3-70b"), load_target("sohu-like")
    wide = roofline(seed, BatchStep.seed(), sohu, "bf16", 8, "fp8-static", kv_dtype="f8e4m3")
    mxu = dataclasses.replace(sohu.mxu, rows=128, cols=128, count=4 * sohu.mxu.count)
    narrow = roofline(seed, BatchStep.seed(), dataclasses.replace(sohu, mxu=mxu), "bf16", 8, "fp8-static")
    assert narrow.compute_s == pytest.approx(wide.compute_s)
    assert wide.mxu_ceiling < 0.8 < 0.9 < narrow.mxu_ceiling < 1


def test_fit_checks_name_the_fix() -> None:
    config, step, target = load_config("llama-3-70b"), BatchStep.seed(), load_target("sohu-like")
    with pytest.raises(CompileError, match=r"does not fit 1 chip\(s\) of 'sohu-like'.*it would fit on 2 chips"):
        check_fits(config, step, target, "bf16", 1)
    with pytest.raises(CompileError, match=r"--tp 3 does not divide llama-3-70b's 64 attention heads.*1, 2, 4, 8"):
        check_fits(config, step, target, "bf16", 3)
    check_fits(config, step, target, "bf16", 8)


def test_bad_configs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="no config 'llama-9'"):
        load_config("llama-9")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(FrontendError, match="is not JSON"):
        load_config(str(bad))
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(FrontendError, match="lacks num_hidden_layers"):
        load_config(str(bad))


def test_timing_only_equals_full_simulation_on_two_chips() -> None:
    """The same step binary (with weights) gives the same cycles with and without numerics."""
    config = LlamaConfig.from_dict(TINY_CONFIG, "tiny")
    step = BatchStep(6, ((2, 9), (2, 12)))
    graph = build_step(config, step, "random")
    target = load_target("tiny")
    binary = compile_module(graph.module, graph.weights, target, "f32", tp=2)
    inputs = step_inputs(config, step)
    full = Machine(binary, target).run("main", inputs).report
    timed = Machine(binary, target, timing_only=True).run("main", inputs).report
    assert full.total_cycles == timed.total_cycles > 0
    assert full.busy == timed.busy and full.link_bytes == timed.link_bytes > 0
    assert np.isfinite(full.mxu_utilization)


def test_cli_compiles_a_config_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    out = tmp_path / "step.tbin"
    args = ["compile", "--config", str(path), "--timing-only", "--tp", "2", "--prefill", "16", "--decode", "7"]
    assert main([*args, "--output-tokens", "16", "--decode-groups", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "one step = 16-token prefill + 7 decode tokens (23 tokens)" in text
    assert "tokens/s" in text and "step / bound =" in text
    busy = re.search(r"engines busy: (.*)", text)
    assert busy, text
    times = dict(re.findall(r"(\w+) ([0-9.]+) ms", busy.group(1)))
    assert {"MXU", "VPU", "DMA_LOAD", "DMA_STORE"} <= set(times), busy.group(1)
    assert all(float(ms) > 0 for ms in (times["MXU"], times["VPU"], times["DMA_LOAD"]))
    assert list(map(float, times.values())) == sorted(map(float, times.values()), reverse=True)
    assert out.exists()
    assert main(["run", str(out)]) == 1
    assert "compiled without weights (timing only): simulate it with --timing-only" in capsys.readouterr().err
    assert main(["run", str(out), "--timing-only"]) == 0


def test_cli_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--config", "llama-3-70b"]) == 1
    assert "add --timing-only" in capsys.readouterr().err
    assert main(["compile", "--config", "llama-3-70b", "--timing-only", "--tp", "3", "--target", "sohu-like"]) == 1
    assert "--tp 3 does not divide" in capsys.readouterr().err
    assert (
        main(["compile", "--config", "llama-3-70b", "--timing-only", "--target", "sohu-like", "--dtype", "bf16"]) == 1
    )
    assert "it would fit on 2 chips" in capsys.readouterr().err
    kv = ["compile", "--config", "llama-3-70b", "--timing-only", "--target", "sohu-like", "--tp", "8", "--kv-dtype"]
    assert main([*kv, "f16"]) == 1
    assert "unsupported KV-cache dtype 'f16': choose one of f32, bf16, f8e4m3, f8e5m2" in capsys.readouterr().err
    assert main(["compile", "model_dir", "--kv-dtype", "f8e4m3"]) == 1
    assert "--kv-dtype sets the KV cache of a --config serving step" in capsys.readouterr().err


def test_config_features_the_step_leaves_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config of another Llama-shaped family is timed as the Llama step of its sizes, and says what
    that leaves out; a plain Llama config has nothing to say."""
    assert LlamaConfig.from_dict(TINY_CONFIG).unmodelled == ()
    with pytest.raises(FrontendError, match="hidden_size 32 does not split into 3 attention heads"):
        LlamaConfig.from_dict({**TINY_CONFIG, "num_attention_heads": 3, "num_key_value_heads": 1})
    assert LlamaConfig.from_dict({**TINY_CONFIG, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 8})
    assert LlamaConfig.from_dict({**TINY_CONFIG, "model_type": "llama", "hidden_act": "silu"}).unmodelled == ()
    qwen = {**TINY_CONFIG, "model_type": "qwen2", "sliding_window": 32, "use_sliding_window": False}
    assert LlamaConfig.from_dict(qwen).unmodelled == ("q/k/v biases",)
    mistral = {**TINY_CONFIG, "model_type": "mistral", "sliding_window": 16}
    assert LlamaConfig.from_dict(mistral).unmodelled == ("sliding-window attention (16 tokens)",)
    gemma = {**TINY_CONFIG, "model_type": "gemma2", "hidden_activation": "gelu_pytorch_tanh"}
    assert LlamaConfig.from_dict({**gemma, "attn_logit_softcapping": 50.0}).unmodelled == (
        "the rest of model_type 'gemma2'",
        "hidden_act 'gelu_pytorch_tanh' (timed as SwiGLU)",
        "logit soft-capping",
    )
    path = tmp_path / "qwen.json"
    path.write_text(json.dumps(qwen))
    args = ["compile", "--config", str(path), "--timing-only", "--prefill", "8", "--decode", "3"]
    assert main([*args, "--output-tokens", "8", "--decode-groups", "1", "-o", str(tmp_path / "q.tbin")]) == 0
    assert "note: qwen is timed as a Llama-style decoder without q/k/v biases" in capsys.readouterr().err


def test_fp8_kv_cache_rounds_only_what_it_stores(tiny_llama) -> None:
    """kv_dtype=f8e4m3 stores the caches in FP8: from the same (FP8-representable) starting caches,
    layer 0's new keys and values are the f32 step's rounded to FP8, and the logits stay close."""
    target = load_target("tiny")
    graph = tiny_llama.graph()
    inputs = step_inputs(tiny_llama.config, tiny_llama.step)
    runs = {}
    for kv_dtype in ("f32", "f8e4m3"):
        pipeline = default_pipeline(target.spec, "f32", kv_dtype=kv_dtype)
        binary = compile_module(graph.module.clone(), graph.weights, target, "f32", pipeline=pipeline)
        kv_symbols = {s.dtype for s in binary.symbols if s.kind == "kv"}
        assert kv_symbols == {kv_dtype}
        machine = Machine(binary, target)
        for name in graph.state_names:
            start = tiny_llama.cache(name, machine.whole(binary.symbol(name)).shape)
            machine.write(name, start.astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
        outputs = machine.run("main", {n: inputs[n] for n in graph.input_names if n in inputs}).outputs
        runs[kv_dtype] = {**outputs, **{name: machine.read(name) for name in graph.state_names}}
    f32, fp8 = runs["f32"], runs["f8e4m3"]
    layer0 = [name for name in graph.state_names if name.startswith("model.layers.0.")]
    assert layer0
    for name in layer0:
        np.testing.assert_array_equal(fp8[name], f32[name].astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
    assert any(not np.array_equal(fp8[name], f32[name]) for name in layer0)  # new entries were rounded
    np.testing.assert_allclose(fp8["logits"], f32["logits"], atol=0.05 * np.abs(f32["logits"]).max())


def test_fp8_kv_cache_saturates_and_halves_the_roofline_bytes() -> None:
    """Keys beyond FP8's range are clamped to +-448 before the store (not NaN); the roofline counts
    1-byte KV entries."""
    config, step, target = load_config("llama-3-70b"), BatchStep.seed(), load_target("sohu-like")
    bf16 = roofline(config, step, target, "bf16", 8, "fp8")
    fp8 = roofline(config, step, target, "bf16", 8, "fp8", kv_dtype="f8e4m3")
    kv_bytes = 80 * 1 * 128 * 2 * (step.tokens + sum(n * c for n, c in step.decode_groups))  # 1 kv head per chip
    assert bf16.hbm_bytes - fp8.hbm_bytes == pytest.approx(kv_bytes)
    with pytest.raises(CompileError, match="unsupported KV-cache dtype 'f16'"):
        check_fits(config, step, target, "bf16", 8, kv_dtype="f16")
    ir = """
    func.func @main(%c: tensor<1x4x8xf32>, %i: tensor<2xi64>, %x: tensor<1x2x8xf32>) -> tensor<1x4x8xf32> attributes {tfm.input_names = ["cache", "slots", "x"], tfm.output_names = ["cache"], tfm.state_names = ["cache"]} {
      %u = tfm.index_copy %c, %i, %x {dim = 1 : i64} : (tensor<1x4x8xf32>, tensor<2xi64>, tensor<1x2x8xf32>) -> tensor<1x4x8xf32>
      func.return %u : tensor<1x4x8xf32>
    }"""
    tiny = load_target("tiny")
    module = Parser(tasic_context(), ir).parse_module()
    spec = "tile{target=tiny dtype=f32 kv_dtype=f8e4m3},plan-sram{target=tiny},insert-sync,lower-to-isa"
    machine = Machine(compile_module(module, {}, tiny, "f32", pipeline=spec), tiny)
    x = np.array([[[1000.0, -1000.0, 3.0, 0.1, 447.0, -500.0, 2.0, 0.0]] * 2], np.float32)
    machine.run("main", {"slots": np.array([1, 3]), "x": x})
    cache = machine.read("cache")
    assert np.isfinite(cache).all()
    np.testing.assert_array_equal(cache[0, 1], [448.0, -448.0, 3.0, 0.1015625, 448.0, -448.0, 2.0, 0.0])
    assert not cache[0, 0].any() and not cache[0, 2].any()
