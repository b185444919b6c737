"""The tile -> isa lowering computes what each tfm op means (numpy references).

Each case is compiled for `tiny` and for a target with a 24 KiB SRAM that
forces several tiles, loop remainders and K-loop accumulation, then run on
the simulator.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from xdsl.parser import Parser

from tasic.backend.target import TARGETS_DIR, Target, load_target
from tasic.compiler import compile_module
from tasic.ir import tile
from tasic.ir.dialects import tasic_context
from tasic.isa_sim import simulate
from tasic.passes.tiling import builder

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def small_sram_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny target with a 24 KiB scratchpad."""
    text = (TARGETS_DIR / "tiny.toml").read_text().replace("bytes = 262144", "bytes = 24576")
    text = text.replace('name = "tiny"', 'name = "tiny-24k"')
    path = tmp_path_factory.mktemp("targets") / "tiny-24k.toml"
    path.write_text(text)
    return path


def run(ir: str, inputs: dict[str, np.ndarray], weights: dict[str, np.ndarray], target: str, dtype: str = "f32"):
    """Compile tfm text for a target (name or toml path) and simulate it."""
    module = Parser(tasic_context(), ir).parse_module()
    tgt: Target = load_target(target)
    spec = f"tile{{target={tgt.name} dtype={dtype}}},plan-sram{{target={tgt.name}}},insert-sync,lower-to-isa"
    if target.endswith(".toml"):
        from tasic.ir.dialects import tasic_context as ctx_factory
        from tasic.passes.insert_sync import InsertSyncPass
        from tasic.passes.lower_to_isa import LowerToIsaPass
        from tasic.passes.plan_sram import PlanSramPass
        from tasic.passes.tile import TilePass

        ctx = ctx_factory()
        for compiler_pass in (TilePass(target, dtype), PlanSramPass(target), InsertSyncPass(), LowerToIsaPass()):
            compiler_pass.apply(ctx, module)
        spec = "lower-to-isa"  # already lowered: the remaining pipeline finds nothing to do
    binary = compile_module(module, weights, tgt, dtype, pipeline=spec)
    return simulate(binary, tgt, inputs).outputs


TARGETS = ["tiny", "small"]


def _target(name: str, small: Path) -> str:
    return str(small) if name == "small" else name


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("target", TARGETS)
def test_linear_gelu_layer_norm(target: str, small_sram_target: Path) -> None:
    """linear (+bias), gelu and layer_norm over rows that do not divide the tile."""
    ir = """
    func.func @main(%x: tensor<3x37x40xf32>) -> tensor<3x37x48xf32> attributes {tfm.input_names = ["x"], tfm.output_names = ["y"]} {
      %w = tfm.weight {name = "w"} : tensor<48x40xf32>
      %b = tfm.weight {name = "b"} : tensor<48xf32>
      %g = tfm.weight {name = "g"} : tensor<48xf32>
      %be = tfm.weight {name = "be"} : tensor<48xf32>
      %h = tfm.linear %x, %w, %b : (tensor<3x37x40xf32>, tensor<48x40xf32>, tensor<48xf32>) -> tensor<3x37x48xf32>
      %a = tfm.unary %h {fn = "gelu_erf"} : (tensor<3x37x48xf32>) -> tensor<3x37x48xf32>
      %y = tfm.layer_norm %a, %g, %be {eps = 1.0e-05 : f64} : (tensor<3x37x48xf32>, tensor<48xf32>, tensor<48xf32>) -> tensor<3x37x48xf32>
      func.return %y : tensor<3x37x48xf32>
    }"""
    x = RNG.standard_normal((3, 37, 40)).astype(np.float32)
    w = {k: RNG.standard_normal(s).astype(np.float32) for k, s in [("w", (48, 40)), ("b", 48), ("g", 48), ("be", 48)]}
    from math import erf, sqrt

    h = x @ w["w"].T + w["b"]
    a = h * 0.5 * (1 + np.vectorize(erf)(h / sqrt(2)))
    mu, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
    ref = (a - mu) / np.sqrt(var + 1e-5) * w["g"] + w["be"]
    got = run(ir, {"x": x}, w, _target(target, small_sram_target))["y"]
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)


def test_linear_residual_and_rms_norm_in_one_kernel() -> None:
    """A linear whose residual sum an rms_norm reads (o_proj, post_attention_layernorm) runs as chunks
    of whole rows with the weight loaded once, the norm of each chunk in the same kernel; both the
    residual sum and the norm are right."""
    ir = """
    func.func @main(%x: tensor<70x24xf32>, %r: tensor<70x32xf32>) -> (tensor<70x32xf32>, tensor<70x32xf32>) attributes {tfm.input_names = ["x", "r"], tfm.output_names = ["s", "n"]} {
      %w = tfm.weight {name = "w"} : tensor<32x24xf32>
      %g = tfm.weight {name = "g"} : tensor<32xf32>
      %h = tfm.linear %x, %w : (tensor<70x24xf32>, tensor<32x24xf32>) -> tensor<70x32xf32>
      %s = tfm.binary %r, %h {fn = "add"} : (tensor<70x32xf32>, tensor<70x32xf32>) -> tensor<70x32xf32>
      %n = tfm.rms_norm %s, %g {eps = 1.0e-05 : f64} : (tensor<70x32xf32>, tensor<32xf32>) -> tensor<70x32xf32>
      func.return %s, %n : tensor<70x32xf32>, tensor<70x32xf32>
    }"""
    x, r = RNG.standard_normal((70, 24)).astype(np.float32), RNG.standard_normal((70, 32)).astype(np.float32)
    w = {"w": RNG.standard_normal((32, 24)).astype(np.float32), "g": RNG.standard_normal(32).astype(np.float32)}
    module = Parser(tasic_context(), ir).parse_module()
    from tasic.passes.tile import TilePass

    TilePass("tiny", "f32").apply(tasic_context(), module)
    kernels = [op.loc.data for op in module.walk() if isinstance(op, tile.KernelOp)]
    assert len(kernels) == 1, kernels  # no kernel of the norm's own
    outputs = run(ir, {"x": x, "r": r}, w, "tiny")
    s = r + x @ w["w"].T
    np.testing.assert_allclose(outputs["s"], s, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(
        outputs["n"], s / np.sqrt((s * s).mean(-1, keepdims=True) + 1e-5) * w["g"], atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_one_output_tile_and_its_rms_norm_in_place(dtype: str) -> None:
    """A linear with one output tile (down_proj on a big chip) whose residual sum an rms_norm reads: the
    norm runs in the same kernel on the accumulator once the sum is stored, overwriting it; both outputs
    are right (bf16: the residual is loaded as bf16 and read widened; both round once, at their store)."""
    ir = """
    func.func @main(%x: tensor<12x48xf32>, %r: tensor<12x16xf32>) -> (tensor<12x16xf32>, tensor<12x16xf32>) attributes {tfm.input_names = ["x", "r"], tfm.output_names = ["s", "n"]} {
      %w = tfm.weight {name = "w"} : tensor<16x48xf32>
      %g = tfm.weight {name = "g"} : tensor<16xf32>
      %h = tfm.linear %x, %w : (tensor<12x48xf32>, tensor<16x48xf32>) -> tensor<12x16xf32>
      %s = tfm.binary %h, %r {fn = "add"} : (tensor<12x16xf32>, tensor<12x16xf32>) -> tensor<12x16xf32>
      %n = tfm.rms_norm %s, %g {eps = 1.0e-05 : f64} : (tensor<12x16xf32>, tensor<16xf32>) -> tensor<12x16xf32>
      func.return %s, %n : tensor<12x16xf32>, tensor<12x16xf32>
    }"""
    rounded = (lambda a: a.astype(ml_dtypes.bfloat16).astype(np.float32)) if dtype == "bf16" else (lambda a: a)
    x, r = (
        rounded(RNG.standard_normal((12, 48)).astype(np.float32)),
        rounded(RNG.standard_normal((12, 16)).astype(np.float32)),
    )
    w = {
        "w": rounded(RNG.standard_normal((16, 48)).astype(np.float32)),
        "g": rounded(RNG.standard_normal(16).astype(np.float32)),
    }
    module = Parser(tasic_context(), ir).parse_module()
    from tasic.passes.tile import TilePass

    TilePass("tiny", dtype).apply(tasic_context(), module)
    kernels = [op.loc.data for op in module.walk() if isinstance(op, tile.KernelOp)]
    assert len(kernels) == 1, kernels  # no kernel of the norm's own
    accumulators = [
        op for op in module.walk() if isinstance(op, tile.SramBufferOp) and op.result.type.get_shape() == (12, 16)
    ]
    assert len(accumulators) == 2, accumulators  # the accumulator and the residual's tile, no normed copy
    outputs = run(ir, {"x": x, "r": r}, w, "tiny", dtype)
    s = x @ w["w"].T + r
    n = s / np.sqrt((s * s).mean(-1, keepdims=True) + 1e-5) * w["g"]
    tolerance = 1e-5 if dtype == "f32" else 2**-8  # bf16: each output rounds once, at its store
    np.testing.assert_allclose(np.asarray(outputs["s"], np.float32), rounded(s), atol=tolerance, rtol=tolerance)
    np.testing.assert_allclose(np.asarray(outputs["n"], np.float32), rounded(n), atol=tolerance * 4, rtol=tolerance)


ROPE_IR = """
func.func @main(%x: tensor<20x16xf32>, %c: tensor<20x8xf32>, %s: tensor<20x8xf32>) -> (tensor<20x16xf32>, tensor<20x8xf32>, tensor<20x8xf32>) attributes {tfm.input_names = ["x", "cos", "sin"], tfm.output_names = ["q", "k", "v"]} {
  %cos = tfm.reshape %c : (tensor<20x8xf32>) -> tensor<20x1x8xf32>
  %sin = tfm.reshape %s : (tensor<20x8xf32>) -> tensor<20x1x8xf32>
  %w = tfm.weight {name = "qkv.weight"} : tensor<32x16xf32>
  %y = tfm.linear %x, %w {loc = "qkv"} : (tensor<20x16xf32>, tensor<32x16xf32>) -> tensor<20x32xf32>
  %q = tfm.slice %y {dim = 1, start = 0, end = 16, step = 1} : (tensor<20x32xf32>) -> tensor<20x16xf32>
  %k = tfm.slice %y {dim = 1, start = 16, end = 24, step = 1} : (tensor<20x32xf32>) -> tensor<20x8xf32>
  %v = tfm.slice %y {dim = 1, start = 24, end = 32, step = 1} : (tensor<20x32xf32>) -> tensor<20x8xf32>
  %q3 = tfm.reshape %q : (tensor<20x16xf32>) -> tensor<20x2x8xf32>
  %k3 = tfm.reshape %k : (tensor<20x8xf32>) -> tensor<20x1x8xf32>
  %qr = tfm.rope %q3, %cos, %sin {loc = "rope"} : (tensor<20x2x8xf32>, tensor<20x1x8xf32>, tensor<20x1x8xf32>) -> tensor<20x2x8xf32>
  %kr = tfm.rope %k3, %cos, %sin {loc = "rope"} : (tensor<20x1x8xf32>, tensor<20x1x8xf32>, tensor<20x1x8xf32>) -> tensor<20x1x8xf32>
  %qo = tfm.reshape %qr : (tensor<20x2x8xf32>) -> tensor<20x16xf32>
  %ko = tfm.reshape %kr : (tensor<20x1x8xf32>) -> tensor<20x8xf32>
  func.return %qo, %ko, %v : tensor<20x16xf32>, tensor<20x8xf32>, tensor<20x8xf32>
}
"""


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [T, heads, D] * cos + rotate_half(x) * sin, with cos and sin [T, D] the same for every head."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def test_rope_in_the_qkv_epilogue() -> None:
    """q and k rotated in the fused linear's output tile (vpu.rope) give the rope kernel's results bit for
    bit, and the reference's; v is left as the linear computed it; no kernel of the rope's own."""
    x, w = RNG.standard_normal((20, 16)).astype(np.float32), RNG.standard_normal((32, 16)).astype(np.float32)
    angles = RNG.uniform(0, 6, (20, 4)).astype(np.float32)
    cos, sin = np.cos(np.tile(angles, 2)).astype(np.float32), np.sin(np.tile(angles, 2)).astype(np.float32)
    inputs, target = {"x": x, "cos": cos, "sin": sin}, load_target("tiny")
    outputs = []
    for fusion in ("true", "false"):
        spec = f"tile{{target=tiny epilogue_fusion={fusion}}},plan-sram{{target=tiny}},insert-sync,lower-to-isa"
        module = Parser(tasic_context(), ROPE_IR).parse_module()
        binary = compile_module(module, {"qkv.weight": w}, target, "f32", pipeline=spec)
        outputs.append(simulate(binary, target, inputs).outputs)
        locs = binary.metadata["locs"]
        assert ("rope" in locs) == (fusion == "false"), locs  # the rope kernel only without fusion
    fused, separate = outputs
    for name in ("q", "k", "v"):
        np.testing.assert_array_equal(fused[name], separate[name])
    y = x @ w.T
    np.testing.assert_allclose(fused["q"], _rope(y[:, :16].reshape(20, 2, 8), cos, sin).reshape(20, 16), atol=1e-5)
    np.testing.assert_allclose(fused["k"], _rope(y[:, 16:24].reshape(20, 1, 8), cos, sin).reshape(20, 8), atol=1e-5)
    np.testing.assert_allclose(fused["v"], y[:, 24:], atol=1e-5)


def test_weight_loads_in_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A weight window larger than LOAD_CHUNK_BYTES is loaded by several DMA loads of row chunks that
    together give the same product."""
    monkeypatch.setattr(builder, "LOAD_CHUNK_BYTES", 1000)
    ir = """
    func.func @main(%x: tensor<8x24xf32>) -> tensor<8x32xf32> attributes {tfm.input_names = ["x"], tfm.output_names = ["y"]} {
      %w = tfm.weight {name = "w"} : tensor<32x24xf32>
      %y = tfm.linear %x, %w : (tensor<8x24xf32>, tensor<32x24xf32>) -> tensor<8x32xf32>
      func.return %y : tensor<8x32xf32>
    }"""
    module = Parser(tasic_context(), ir).parse_module()
    from tasic.passes.tile import TilePass

    TilePass("tiny", "f32").apply(tasic_context(), module)
    weight_loads = [
        op for op in module.walk()
        if isinstance(op, tile.DmaLoadOp) and isinstance(op.source.owner, tile.HbmBufferOp)
        and op.source.owner.kind.data == "weight"
    ]  # fmt: skip
    assert len(weight_loads) > 1 and all(op.int_prop("rows") * op.int_prop("cols") * 4 <= 1000 for op in weight_loads)
    x, w = RNG.standard_normal((8, 24)).astype(np.float32), RNG.standard_normal((32, 24)).astype(np.float32)
    np.testing.assert_allclose(run(ir, {"x": x}, {"w": w}, "tiny")["y"], x @ w.T, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_batched_matmul_long_k(target: str, small_sram_target: Path) -> None:
    """Broadcast batch dims and a K longer than one tile (accumulation)."""
    ir = """
    func.func @main(%a: tensor<2x3x5x300xf32>, %b: tensor<3x300x20xf32>) -> tensor<2x3x5x20xf32> attributes {tfm.input_names = ["a", "b"], tfm.output_names = ["c"]} {
      %c = tfm.matmul %a, %b : (tensor<2x3x5x300xf32>, tensor<3x300x20xf32>) -> tensor<2x3x5x20xf32>
      func.return %c : tensor<2x3x5x20xf32>
    }"""
    a = RNG.standard_normal((2, 3, 5, 300)).astype(np.float32)
    b = RNG.standard_normal((3, 300, 20)).astype(np.float32)
    got = run(ir, {"a": a, "b": b}, {}, _target(target, small_sram_target))["c"]
    np.testing.assert_allclose(got, a @ b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mask", ["causal", "bool", "float"])
def test_attention_gqa(target: str, mask: str, small_sram_target: Path) -> None:
    """GQA attention (4 query heads on 2 kv heads) with each kind of mask."""
    causal = "true" if mask == "causal" else "false"
    mask_arg = {"causal": "", "bool": ", %m", "float": ", %m"}[mask]
    mask_type = {"causal": "", "bool": ", tensor<2x1x1x24xi1>", "float": ", tensor<2x1x1x24xf32>"}[mask]
    names = '["q", "k", "v"]' if mask == "causal" else '["q", "k", "v", "m"]'
    sig = f"%q: tensor<2x4x24x8xf32>, %k: tensor<2x2x24x8xf32>, %v: tensor<2x2x24x8xf32>{mask_arg.replace(', %m', ', %m: ' + mask_type[2:]) if mask_arg else ''}"
    ir = f"""
    func.func @main({sig}) -> tensor<2x4x24x8xf32> attributes {{tfm.input_names = {names}, tfm.output_names = ["o"]}} {{
      %o = tfm.attention %q, %k, %v{mask_arg} {{causal = {causal}, scale = 0.35355339 : f64}} : (tensor<2x4x24x8xf32>, tensor<2x2x24x8xf32>, tensor<2x2x24x8xf32>{mask_type}) -> tensor<2x4x24x8xf32>
      func.return %o : tensor<2x4x24x8xf32>
    }}"""
    q = RNG.standard_normal((2, 4, 24, 8)).astype(np.float32)
    k = RNG.standard_normal((2, 2, 24, 8)).astype(np.float32)
    v = RNG.standard_normal((2, 2, 24, 8)).astype(np.float32)
    inputs = {"q": q, "k": k, "v": v}
    scores = q @ np.repeat(k, 2, axis=1).transpose(0, 1, 3, 2) * 0.35355339
    if mask == "causal":
        scores = np.where(np.tril(np.ones((24, 24), bool)), scores, -np.inf)
    else:
        keep = np.ones((2, 1, 1, 24), bool)
        keep[1, ..., 17:] = False
        inputs["m"] = keep if mask == "bool" else np.where(keep, 0.0, -1e9).astype(np.float32)
        scores = np.where(keep, scores, -np.inf)
    ref = _softmax(scores) @ np.repeat(v, 2, axis=1)
    got = run(ir, inputs, {}, _target(target, small_sram_target))["o"]
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)


def _gqa_attention(batch: int, sq: int, sk: int, causal: bool) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    """IR of a GQA attention (4 query heads on 2 KV heads of 8 dims; causal offset sk - sq), random inputs
    and the numpy reference output."""
    q_type, kv_type = f"tensor<{batch}x4x{sq}x8xf32>", f"tensor<{batch}x2x{sk}x8xf32>"
    ir = f"""
    func.func @main(%q: {q_type}, %k: {kv_type}, %v: {kv_type}) -> {q_type} attributes {{tfm.input_names = ["q", "k", "v"], tfm.output_names = ["o"]}} {{
      %o = tfm.attention %q, %k, %v {{causal = {str(causal).lower()}, scale = 0.35355339 : f64}} : ({q_type}, {kv_type}, {kv_type}) -> {q_type}
      func.return %o : {q_type}
    }}"""
    q = RNG.standard_normal((batch, 4, sq, 8)).astype(np.float32)
    k = RNG.standard_normal((batch, 2, sk, 8)).astype(np.float32)
    v = RNG.standard_normal((batch, 2, sk, 8)).astype(np.float32)
    scores = q @ np.repeat(k, 2, axis=1).transpose(0, 1, 3, 2) * 0.35355339
    if causal:
        scores = np.where(np.tril(np.ones((sq, sk), bool), k=sk - sq), scores, -np.inf)
    return ir, {"q": q, "k": k, "v": v}, _softmax(scores) @ np.repeat(v, 2, axis=1)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("causal", "sq", "sk"), [(True, 100, 130), (False, 70, 130), (True, 130, 130)])
def test_flash_attention(target: str, causal: bool, sq: int, sk: int, small_sram_target: Path) -> None:
    """Long attention in key blocks with an online softmax: GQA heads stacked, causal offset sk - sq."""
    ir, inputs, ref = _gqa_attention(1, sq, sk, causal)
    got = run(ir, inputs, {}, _target(target, small_sram_target))["o"]
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("rolled", [False, True])
def test_flash_attention_with_kv_heads_per_item(heads: int, rolled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Items of several KV heads (one batched product per head in each matrix instruction, their score rows
    stacked for the vector engine), pipelined and rolled, match the reference; the rolled kernel equals
    the pipelined one bit for bit."""
    from tasic.passes.tiling import attention, attention_pipeline

    monkeypatch.setattr(attention_pipeline, "_best_flash", lambda *_: (32, 48, heads))  # tq, kb, heads
    ir, inputs, ref = _gqa_attention(1, 100, 130, True)
    pipelined = run(ir, inputs, {}, "tiny")["o"]
    np.testing.assert_allclose(pipelined, ref, atol=2e-5, rtol=1e-5)
    if rolled:
        monkeypatch.setattr(attention, "GROUP_MAX_ITEMS", 0)
        monkeypatch.setattr(attention, "FLASH_MAX_ITEMS", 0)
        np.testing.assert_array_equal(run(ir, inputs, {}, "tiny")["o"], pipelined)


def test_seed_prefill_stacks_kv_heads_and_is_faster_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """On sohu-like, Llama-3-70B's 2048-token prefill attention (64 heads on 8 KV heads) is planned with
    several KV heads per item: each matrix instruction is a batch of products that fills more of the 32
    arrays than one 8-head group can, and the vector engine's instructions cover more rows. Timed, it
    beats the same query tiles and key blocks with one KV head per item."""
    from tasic.isa_sim import simulate_timing
    from tasic.passes.tiling import attention_pipeline

    q_type, kv_type = "tensor<1x64x2048x128xbf16>", "tensor<1x8x2048x128xbf16>"
    ir = f"""
    func.func @main(%q: {q_type}, %k: {kv_type}, %v: {kv_type}) -> {q_type} attributes {{tfm.input_names = ["q", "k", "v"], tfm.output_names = ["o"]}} {{
      %o = tfm.attention %q, %k, %v {{causal = true, scale = 0.088388 : f64}} : ({q_type}, {kv_type}, {kv_type}) -> {q_type}
      func.return %o : {q_type}
    }}"""
    target = load_target("sohu-like")
    chosen: list[tuple[int, int, int]] = []
    best_flash = attention_pipeline._best_flash

    def recorded(*args: object) -> tuple[int, int, int] | None:
        choice = best_flash(*args)  # type: ignore[arg-type]
        chosen.append(choice)  # type: ignore[arg-type]
        return choice

    def cycles() -> int:
        binary = compile_module(Parser(tasic_context(), ir).parse_module(), None, target, "bf16")
        return simulate_timing(binary, target).total_cycles

    monkeypatch.setattr(attention_pipeline, "_best_flash", recorded)
    stacked = cycles()
    tq, kb, heads = chosen[0]
    assert heads > 1
    monkeypatch.setattr(attention_pipeline, "_best_flash", lambda *_: (tq, kb, 1))
    assert stacked < cycles()


def test_pipelined_flash_attention_equals_the_rolled_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The software-pipelined flash kernel starts each query tile's statistics with its first block's
    softmax (no fills, no rescale by e^-inf, P V overwriting O); the rolled kernel (used past
    GROUP_MAX_ITEMS / FLASH_MAX_ITEMS blocks) fills them and rescales: the results are the same bit for
    bit."""
    from tasic.passes.tiling import attention

    ir, inputs, _ = _gqa_attention(1, 100, 130, True)

    def kernels_and_output() -> tuple[list[str], np.ndarray]:
        module = Parser(tasic_context(), ir).parse_module()
        binary = compile_module(module, {}, load_target("tiny"), "f32")
        mnemonics = [instr.opcode for instr in binary.code]
        return mnemonics, simulate(binary, load_target("tiny"), inputs).outputs["o"]

    pipelined_code, pipelined = kernels_and_output()
    monkeypatch.setattr(attention, "GROUP_MAX_ITEMS", 0)  # no pipelined kernel for the op ...
    monkeypatch.setattr(attention, "FLASH_MAX_ITEMS", 0)  # ... nor for its query tiles: rolled loops
    rolled_code, rolled = kernels_and_output()
    assert pipelined_code != rolled_code  # two different kernels
    np.testing.assert_array_equal(pipelined, rolled)


@pytest.mark.parametrize("target", TARGETS)
def test_batched_decode_attention(target: str, small_sram_target: Path) -> None:
    """One query per sequence, many sequences per matrix instruction (GQA heads stacked as rows)."""
    ir, inputs, ref = _gqa_attention(5, 1, 40, False)
    got = run(ir, inputs, {}, _target(target, small_sram_target))["o"]
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_embedding_reduce_where_concat(target: str, small_sram_target: Path) -> None:
    """Gather, mean over a middle dim, where with broadcasting, concat, strided slices."""
    ir = """
    func.func @main(%ids: tensor<2x9xi64>, %c: tensor<9x1xi1>) -> (tensor<2x16xf32>, tensor<2x9x32xf32>, tensor<2x5x16xf32>) attributes {tfm.input_names = ["ids", "c"], tfm.output_names = ["mean", "cat", "sl"]} {
      %t = tfm.weight {name = "table"} : tensor<50x16xf32>
      %e = tfm.embedding %t, %ids : (tensor<50x16xf32>, tensor<2x9xi64>) -> tensor<2x9x16xf32>
      %m = tfm.reduce %e {fn = "mean", dims = [1], keepdim = false} : (tensor<2x9x16xf32>) -> tensor<2x16xf32>
      %z = tfm.scalar %e {fn = "mul", value = -2.0 : f64} : (tensor<2x9x16xf32>) -> tensor<2x9x16xf32>
      %w = tfm.where %c, %e, %z : (tensor<9x1xi1>, tensor<2x9x16xf32>, tensor<2x9x16xf32>) -> tensor<2x9x16xf32>
      %cat = tfm.concat %w, %e {dim = 2} : (tensor<2x9x16xf32>, tensor<2x9x16xf32>) -> tensor<2x9x32xf32>
      %sl = tfm.slice %w {dim = 1, start = 1, end = 9, step = 2} : (tensor<2x9x16xf32>) -> tensor<2x4x16xf32>
      %one = tfm.slice %e {dim = 1, start = 0, end = 1, step = 1} : (tensor<2x9x16xf32>) -> tensor<2x1x16xf32>
      %sl2 = tfm.concat %sl, %one {dim = 1} : (tensor<2x4x16xf32>, tensor<2x1x16xf32>) -> tensor<2x5x16xf32>
      func.return %m, %cat, %sl2 : tensor<2x16xf32>, tensor<2x9x32xf32>, tensor<2x5x16xf32>
    }"""
    table = RNG.standard_normal((50, 16)).astype(np.float32)
    ids = RNG.integers(0, 50, (2, 9))
    cond = RNG.integers(0, 2, (9, 1)).astype(bool)
    out = run(ir, {"ids": ids, "c": cond}, {"table": table}, _target(target, small_sram_target))
    e = table[ids]
    w = np.where(cond, e, -2 * e)
    np.testing.assert_allclose(out["mean"], e.mean(1), atol=1e-6)
    np.testing.assert_allclose(out["cat"], np.concatenate([w, e], 2), atol=1e-6)
    np.testing.assert_allclose(out["sl"], np.concatenate([w[:, 1:9:2], e[:, :1]], 1), atol=1e-6)


def test_bf16_rounds_where_documented() -> None:
    """bf16 mode: within 2% of the output range of an f32 reference (docs/architecture.md, Numerics)."""
    ir = """
    func.func @main(%x: tensor<16x64xf32>) -> tensor<16x32xf32> attributes {tfm.input_names = ["x"], tfm.output_names = ["y"]} {
      %w = tfm.weight {name = "w"} : tensor<32x64xf32>
      %y = tfm.linear %x, %w : (tensor<16x64xf32>, tensor<32x64xf32>) -> tensor<16x32xf32>
      func.return %y : tensor<16x32xf32>
    }"""
    x = RNG.standard_normal((16, 64)).astype(np.float32)
    w = {"w": (RNG.standard_normal((32, 64)) / 8).astype(np.float32)}
    got = run(ir, {"x": x}, w, "tiny", dtype="bf16")["y"]
    ref = x @ w["w"].T
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert 0 < err < 2e-2
